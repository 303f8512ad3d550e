"""Tests for avc.opensips.sdp, fed with the SDP offers of real OpenSIPS 3.5.9 captures and variations of them."""

from __future__ import annotations

import pytest

from avc.opensips.sdp import (
    MAX_SDP_BYTES,
    MediaDescription,
    Negotiated,
    NoCommonCodec,
    RtpMap,
    SdpError,
    SessionDescription,
    build_answer,
    build_offer,
    negotiate,
    parse_sdp,
)
from tests.support.captures import capture_files, event_params, mi_requests, sipp_messages


def captured_offer(capture: str) -> str:
    """The SDP body of the capture's NEW (initial INVITE) event."""
    body: str = event_params(capture, "NEW")[0]["body"]
    return body


def sipp_bodies(log: str) -> list[str]:
    """The SDP bodies of every message in a SIPp message log, with LF line ends.

    SIPp logs the bytes it sent (CRLF); the LF-only variant some UAs send is made here from them.
    """
    bodies = [message.body.decode("utf-8").replace("\r\n", "\n").strip("\n") for message in sipp_messages(log)]
    return [body + "\n" for body in bodies if body]


# The offer every test below varies: sipp's PCMU + telephone-event INVITE from capture 02.
OFFER = captured_offer("02_call1_caller_hangs_up.txt")
CAPTURES_WITH_OFFERS = sorted(
    path.name for path in capture_files() if any(e["body"] for e in event_params(path.name, "NEW"))
)


def offer_with(*replacements: tuple[str, str]) -> SessionDescription:
    text = OFFER
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return parse_sdp(text)


def answer_lines(offer: SessionDescription, negotiated: Negotiated, version: int = 1) -> list[str]:
    return build_answer(offer, negotiated, "127.0.0.1", 40000, 4242, version).split("\r\n")


# --- the captured offers ---------------------------------------------------------------------


@pytest.mark.parametrize("capture", CAPTURES_WITH_OFFERS)
def test_every_captured_offer_negotiates_pcmu_with_dtmf(capture: str) -> None:
    negotiated = negotiate(parse_sdp(captured_offer(capture)))
    assert (negotiated.codec, negotiated.payload_type) == ("PCMU", 0)
    assert (negotiated.dtmf_payload_type, negotiated.dtmf_fmtp) == (101, "0-16")
    assert negotiated.remote_addr == "127.0.0.1"
    assert negotiated.media_index == 0


def test_captured_offer_is_parsed_field_by_field() -> None:
    offer = parse_sdp(OFFER)
    assert offer.origin.username == "caller"
    assert (offer.origin.session_id, offer.origin.session_version) == ("53655765", "2353687637")
    assert offer.connection == "127.0.0.1"
    assert offer.direction is None
    [audio] = offer.media
    assert (audio.kind, audio.port, audio.proto, audio.formats) == ("audio", 6000, "RTP/AVP", [0, 101])
    assert audio.rtpmap == {0: RtpMap("PCMU", 8000, 1), 101: RtpMap("telephone-event", 8000, 1)}
    assert audio.fmtp == {101: "0-16"}
    assert (audio.ptime, audio.direction, audio.connection) == (20, "sendrecv", None)


def test_captured_offer_negotiates_remote_endpoint_and_sendrecv() -> None:
    negotiated = negotiate(parse_sdp(OFFER))
    assert (negotiated.remote_addr, negotiated.remote_port) == ("127.0.0.1", 6000)
    assert (negotiated.local_direction, negotiated.remote_direction) == ("sendrecv", "sendrecv")
    assert negotiated.ptime == 20
    assert negotiated.may_send and negotiated.may_receive


def test_answer_matches_the_one_the_real_caller_accepted() -> None:
    # Capture 02's app answered with this SDP and SIPp accepted it; ours differs only in o=/s= names.
    accepted_request = next(
        request
        for request in mi_requests("02_call1_caller_hangs_up.txt", "ua_session_reply")
        if request["params"]["code"] == 200
    )
    accepted: str = accepted_request["params"]["body"]
    offer = parse_sdp(OFFER)
    answer = build_answer(offer, negotiate(offer), "127.0.0.1", 40000, session_id=4242, session_version=1)
    assert answer == accepted.replace("o=ai ", "o=avc ").replace("s=ai", "s=avc")


def test_rtpengine_fork_offer_is_sendonly_so_we_only_receive() -> None:
    # Capture 12b: media_fork through rtpengine offers a=sendonly plus a=rtcp.
    negotiated = negotiate(parse_sdp(captured_offer("12b_media_fork_caller_leg_to_ai_rtpengine.txt")))
    assert negotiated.remote_port == 30062
    assert (negotiated.remote_direction, negotiated.local_direction) == ("sendonly", "recvonly")
    assert negotiated.may_receive and not negotiated.may_send


def test_lf_only_offers_from_the_sipp_logs_parse() -> None:
    bodies = sipp_bodies("06_media_exchange_then_media_terminate_caller_sipp_messages.log")
    assert len(bodies) == 6 and all("\r" not in body for body in bodies)
    for body in bodies:
        negotiated = negotiate(parse_sdp(body))
        assert negotiated.codec == "PCMU" and negotiated.dtmf_payload_type == 101
    assert negotiate(parse_sdp(bodies[0])).remote_port == 6200


# --- codec choice ----------------------------------------------------------------------------


def test_pcma_only_offer_without_rtpmap_uses_the_static_payload_type() -> None:
    offer = offer_with(
        ("RTP/AVP 0 101", "RTP/AVP 8"),
        ("a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n", ""),
    )
    negotiated = negotiate(offer)
    assert (negotiated.codec, negotiated.payload_type, negotiated.dtmf_payload_type) == ("PCMA", 8, None)
    lines = answer_lines(offer, negotiated)
    assert "m=audio 40000 RTP/AVP 8" in lines and "a=rtpmap:8 PCMA/8000" in lines
    assert not any("telephone-event" in line or line.startswith("a=fmtp") for line in lines)


def test_offer_order_wins_when_pcma_comes_first() -> None:
    offer = offer_with(("RTP/AVP 0 101", "RTP/AVP 8 0 101"), ("a=rtpmap:0", "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0"))
    negotiated = negotiate(offer)
    assert (negotiated.codec, negotiated.payload_type, negotiated.dtmf_payload_type) == ("PCMA", 8, 101)
    assert "m=audio 40000 RTP/AVP 8 101" in answer_lines(offer, negotiated)


def test_supported_list_restricts_the_choice() -> None:
    offer = offer_with(("RTP/AVP 0 101", "RTP/AVP 0 8 101"))
    assert negotiate(offer, supported=("PCMA",)).codec == "PCMA"
    with pytest.raises(NoCommonCodec):
        negotiate(parse_sdp(OFFER), supported=("pcma",))


def test_offer_without_g711_raises_no_common_codec() -> None:
    offer = offer_with(
        ("RTP/AVP 0 101", "RTP/AVP 18 9 96 101"),
        ("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:96 opus/48000/2"),
    )
    with pytest.raises(NoCommonCodec, match="offered: 18 G729/8000, 9 G722/8000, 96 opus/48000") as caught:
        negotiate(offer)
    assert isinstance(caught.value, SdpError)


def test_pcmu_at_another_clock_rate_or_stereo_is_not_g711() -> None:
    offer = offer_with(
        ("RTP/AVP 0 101", "RTP/AVP 96 97 101"),
        ("a=rtpmap:0 PCMU/8000", "a=rtpmap:96 PCMU/16000\r\na=rtpmap:97 PCMA/8000/2"),
    )
    with pytest.raises(NoCommonCodec):
        negotiate(offer)


def test_dynamic_pcmu_payload_type_is_kept() -> None:
    offer = offer_with(("RTP/AVP 0 101", "RTP/AVP 98 101"), ("a=rtpmap:0 PCMU/8000", "a=rtpmap:98 pcmu/8000"))
    negotiated = negotiate(offer)
    assert (negotiated.codec, negotiated.payload_type) == ("PCMU", 98)
    assert "a=rtpmap:98 PCMU/8000" in answer_lines(offer, negotiated)


def test_dynamic_telephone_event_96_without_fmtp_gets_default_events() -> None:
    offer = offer_with(
        ("RTP/AVP 0 101", "RTP/AVP 0 96"),
        ("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n", "a=rtpmap:96 telephone-event/8000\r\n"),
    )
    negotiated = negotiate(offer)
    assert (negotiated.dtmf_payload_type, negotiated.dtmf_fmtp) == (96, "0-15")
    lines = answer_lines(offer, negotiated)
    assert "m=audio 40000 RTP/AVP 0 96" in lines
    assert "a=rtpmap:96 telephone-event/8000" in lines and "a=fmtp:96 0-15" in lines


def test_telephone_event_at_48000_hz_is_not_used_with_g711() -> None:
    offer = offer_with(("telephone-event/8000", "telephone-event/48000"))
    negotiated = negotiate(offer)
    assert (negotiated.dtmf_payload_type, negotiated.dtmf_fmtp) == (None, None)


def test_odd_telephone_event_fmtp_is_not_echoed() -> None:
    negotiated = negotiate(offer_with(("a=fmtp:101 0-16", "a=fmtp:101 0-16;x=<evil>")))
    assert negotiated.dtmf_fmtp == "0-15"


def test_telephone_event_list_fmtp_is_echoed() -> None:
    assert negotiate(offer_with(("a=fmtp:101 0-16", "a=fmtp:101 0-15,66,70"))).dtmf_fmtp == "0-15,66,70"


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        (("RTP/AVP 0 101", "RTP/SAVP 0 101"), "transport RTP/SAVP"),
        (("m=audio 6000", "m=audio 0"), "no active audio stream"),
    ],
)
def test_unusable_audio_stream_raises_no_common_codec(replacement: tuple[str, str], message: str) -> None:
    with pytest.raises(NoCommonCodec, match=message):
        negotiate(offer_with(replacement))


def test_audio_stream_without_any_address_is_an_sdp_error() -> None:
    with pytest.raises(SdpError, match="no c= address") as caught:
        negotiate(offer_with(("c=IN IP4 127.0.0.1\r\n", "")))
    assert not isinstance(caught.value, NoCommonCodec)


def test_media_level_connection_overrides_session_level() -> None:
    negotiated = negotiate(offer_with(("a=rtpmap:0", "c=IN IP4 192.0.2.10\r\na=rtpmap:0")))
    assert negotiated.remote_addr == "192.0.2.10"


# --- ptime ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ptime_line", "expected"),
    [
        ("a=ptime:30", 30),
        ("a=ptime:10", 10),
        ("a=ptime:60", 60),
        ("a=ptime:20.0", 20),
        ("a=ptime:25", 20),
        ("a=ptime:80", 20),
        ("a=ptime:0", 20),
        ("a=ptime:abc", 20),
        ("", 20),
    ],
)
def test_ptime_is_taken_when_sane_and_we_always_send_20_ms(ptime_line: str, expected: int) -> None:
    offer = offer_with(("a=ptime:20\r\n", f"{ptime_line}\r\n" if ptime_line else ""))
    negotiated = negotiate(offer)
    assert negotiated.ptime == expected
    assert "a=ptime:20" in answer_lines(offer, negotiated)


# --- other m-lines, IPv6 --------------------------------------------------------------------


def test_video_m_line_is_answered_with_port_0() -> None:
    offer = offer_with(("a=sendrecv\r\n", "a=sendrecv\r\nm=video 6002 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\n"))
    negotiated = negotiate(offer)
    assert negotiated.media_index == 0
    lines = answer_lines(offer, negotiated)
    assert [line for line in lines if line.startswith("m=")] == [
        "m=audio 40000 RTP/AVP 0 101",
        "m=video 0 RTP/AVP 96 97",
    ]
    assert lines.index("m=video 0 RTP/AVP 96 97") == len(lines) - 2  # its attributes are not echoed
    assert not any("H264" in line for line in lines)


def test_audio_after_video_and_a_second_audio_stream() -> None:
    offer = offer_with(
        ("m=audio 6000", "m=video 6002 RTP/AVP 96\r\nm=audio 6000"),
        ("a=sendrecv\r\n", "a=sendrecv\r\nm=audio 6004 RTP/AVP 8\r\nm=image 6006 udptl t38\r\n"),
    )
    negotiated = negotiate(offer)
    assert negotiated.media_index == 1 and negotiated.remote_port == 6000
    assert [line for line in answer_lines(offer, negotiated) if line.startswith("m=")] == [
        "m=video 0 RTP/AVP 96",
        "m=audio 40000 RTP/AVP 0 101",
        "m=audio 0 RTP/AVP 8",
        "m=image 0 udptl t38",
    ]


def test_disabled_first_audio_stream_is_skipped_for_the_next() -> None:
    offer = offer_with(("m=audio 6000 RTP/AVP 0 101", "m=audio 0 RTP/AVP 0\r\nm=audio 7000 RTP/AVP 0 101"))
    negotiated = negotiate(offer)
    assert (negotiated.media_index, negotiated.remote_port) == (1, 7000)
    assert "m=audio 0 RTP/AVP 0" in answer_lines(offer, negotiated)


def test_rejected_hand_built_m_line_still_lists_a_format() -> None:
    offer = parse_sdp(OFFER)
    offer.media.append(MediaDescription(kind="video", port=6002, proto="RTP/AVP", formats=[96]))
    assert "m=video 0 RTP/AVP 96" in answer_lines(offer, negotiate(offer))


def test_ipv6_connection_is_kept() -> None:
    offer = offer_with(("c=IN IP4 127.0.0.1", "c=IN IP6 2001:DB8::1"), ("IN IP4 127.0.0.1", "IN IP6 2001:db8::1"))
    negotiated = negotiate(offer)
    assert negotiated.remote_addr == "2001:db8::1"
    answer = build_answer(offer, negotiated, "::1", 40000, 7, 1)
    assert "o=avc 7 1 IN IP6 ::1\r\n" in answer and "c=IN IP6 ::1\r\n" in answer


# --- hold, resume and other re-INVITEs -------------------------------------------------------


@pytest.mark.parametrize(
    ("replacements", "remote", "local"),
    [
        ([("a=sendrecv", "a=sendonly")], "sendonly", "recvonly"),
        ([("a=sendrecv", "a=inactive")], "inactive", "inactive"),
        ([("a=sendrecv", "a=recvonly")], "recvonly", "sendonly"),
        ([("a=sendrecv\r\n", "")], "sendrecv", "sendrecv"),
        ([("a=sendrecv\r\n", ""), ("t=0 0", "t=0 0\r\na=sendonly")], "sendonly", "recvonly"),
        ([("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")], "sendrecv", "recvonly"),
        ([("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"), ("a=sendrecv", "a=recvonly")], "recvonly", "inactive"),
        ([("c=IN IP4 127.0.0.1", "c=IN IP6 ::")], "sendrecv", "recvonly"),
    ],
)
def test_answer_direction_follows_rfc_3264(replacements: list[tuple[str, str]], remote: str, local: str) -> None:
    offer = offer_with(*replacements)
    negotiated = negotiate(offer)
    assert (negotiated.remote_direction, negotiated.local_direction) == (remote, local)
    assert negotiated.may_send == (local in ("sendrecv", "sendonly"))
    assert f"a={local}" in answer_lines(offer, negotiated)


def test_reinvite_hold_then_resume() -> None:
    initial = negotiate(parse_sdp(OFFER))
    hold = negotiate(offer_with(("a=sendrecv", "a=sendonly"), ("2353687637", "2353687638")))
    resume = negotiate(offer_with(("2353687637", "2353687639")))
    assert [n.may_send for n in (initial, hold, resume)] == [True, False, True]
    assert [n.local_direction for n in (initial, hold, resume)] == ["sendrecv", "recvonly", "sendrecv"]
    assert hold.remote_port == resume.remote_port == 6000


def test_reinvite_rfc_2543_hold_with_zero_address() -> None:
    hold = negotiate(offer_with(("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")))
    assert hold.remote_addr == "0.0.0.0"
    assert not hold.may_send and hold.may_receive


def test_reinvite_with_a_new_remote_address_and_port() -> None:
    moved = negotiate(offer_with(("c=IN IP4 127.0.0.1", "c=IN IP4 192.0.2.7"), ("m=audio 6000", "m=audio 31000")))
    assert (moved.remote_addr, moved.remote_port) == ("192.0.2.7", 31000)
    assert moved.codec == "PCMU"


def test_reinvite_codec_change() -> None:
    first = negotiate(parse_sdp(OFFER))
    changed_offer = offer_with(("RTP/AVP 0 101", "RTP/AVP 8 101"), ("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"))
    changed = negotiate(changed_offer)
    assert (first.codec, changed.codec) == ("PCMU", "PCMA")
    assert changed.payload_type == 8
    assert "a=rtpmap:8 PCMA/8000" in answer_lines(changed_offer, changed, version=2)


def test_answer_version_is_what_the_dialog_passes_in() -> None:
    offer = parse_sdp(OFFER)
    negotiated = negotiate(offer)
    versions = [answer_lines(offer, negotiated, version)[1] for version in (1, 2, 3)]
    assert versions == [
        "o=avc 4242 1 IN IP4 127.0.0.1",
        "o=avc 4242 2 IN IP4 127.0.0.1",
        "o=avc 4242 3 IN IP4 127.0.0.1",
    ]


def test_answer_is_itself_a_valid_sdp() -> None:
    offer = offer_with(("a=sendrecv\r\n", "a=sendrecv\r\nm=video 6002 RTP/AVP 96\r\n"))
    answer = build_answer(offer, negotiate(offer), "127.0.0.1", 40000, 1, 1)
    assert answer.endswith("\r\n") and "\n" not in answer.replace("\r\n", "")
    reparsed = parse_sdp(answer)
    assert [(m.kind, m.port) for m in reparsed.media] == [("audio", 40000), ("video", 0)]
    assert negotiate(reparsed).codec == "PCMU"


@pytest.mark.parametrize(
    ("local_addr", "local_port", "session_version", "message"),
    [
        ("localhost", 40000, 1, "not an IP address"),
        ("127.0.0.1", 0, 1, "local_port"),
        ("127.0.0.1", 70000, 1, "local_port"),
        ("127.0.0.1", 40000, -1, "negative"),
    ],
)
def test_build_answer_rejects_bad_local_parameters(
    local_addr: str, local_port: int, session_version: int, message: str
) -> None:
    offer = parse_sdp(OFFER)
    with pytest.raises(ValueError, match=message):
        build_answer(offer, negotiate(offer), local_addr, local_port, 1, session_version)


def test_build_answer_rejects_a_negotiation_of_another_offer() -> None:
    two_streams = offer_with(("m=audio 6000", "m=video 6002 RTP/AVP 96\r\nm=audio 6000"))
    with pytest.raises(ValueError, match="media_index"):
        build_answer(parse_sdp(OFFER), negotiate(two_streams), "127.0.0.1", 40000, 1, 1)


# --- garbage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "does not start with a v=0"),
        ("hello world", "line 1 is not '<letter>=<value>'"),
        (OFFER.replace("v=0\r\n", ""), "does not start with a v=0"),
        (OFFER.replace("v=0", "v=1"), "does not start with a v=0"),
        (OFFER.replace("t=0 0", "t=0 0\r\nv=0"), "second v="),
        (OFFER.replace("o=caller 53655765 2353687637 IN IP4 127.0.0.1\r\n", ""), "no o= line"),
        (OFFER.replace("o=caller 53655765", "o=caller"), "o= needs 6 fields"),
        (OFFER.replace("m=audio 6000 RTP/AVP 0 101", "m=audio 6000 RTP/AVP"), "m= needs media"),
        (OFFER.replace("m=audio 6000", "m=audio six"), "port 'six' is not a number"),
        (OFFER.replace("m=audio 6000", "m=audio -1"), "port '-1' is not a number"),
        (OFFER.replace("m=audio 6000", "m=audio 65536"), "port 65536 is above 65535"),
        (OFFER.replace("m=audio 6000", "m=audio 99999999999"), "is not a number"),
        (OFFER.replace("RTP/AVP 0 101", "RTP/AVP 0 300"), "payload type '300'"),
        (OFFER.replace("RTP/AVP 0 101", "RTP/AVP 0 pcmu"), "payload type 'pcmu'"),
        (OFFER.replace("m=audio 6000 RTP/AVP", "m=video 6000 RTP/AVP"), "no audio m= line"),
        (OFFER.split("m=audio")[0], "no audio m= line"),
        (OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 pbx.example"), "is not an IP address"),
        (OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 ::1"), "does not match"),
        (OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4"), "c= must be"),
        (OFFER.replace("PCMU/8000", "PCMU"), "rtpmap must be"),
        (OFFER.replace("PCMU/8000", "PCMU/fast"), "clock rate 'fast'"),
        (OFFER.replace("PCMU/8000", "PCMU/8000/0"), "channel count '0'"),
        (OFFER.replace("a=fmtp:101", "a=fmtp:x"), "fmtp payload type 'x'"),
        (OFFER.replace("s=-", "s=a\x00b"), "control characters"),
        (OFFER.replace("s=-\r\n", "s=-\rX=injected\r\n"), "control characters"),
        (OFFER.replace("s=-", "S=-"), "line 3 is not"),
    ],
)
def test_garbage_sdp_raises_sdp_error_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        parse_sdp(text)


def test_sdp_over_16_kib_is_rejected() -> None:
    padding = "a=x-pad:" + "p" * 100 + "\r\n"
    fits = OFFER + padding * ((MAX_SDP_BYTES - len(OFFER)) // len(padding))
    assert negotiate(parse_sdp(fits)).codec == "PCMU"
    with pytest.raises(SdpError, match="larger than"):
        parse_sdp(fits + padding)


def test_multicast_ttl_suffix_and_stray_blank_lines_are_tolerated() -> None:
    offer = parse_sdp("\n" + OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 233.252.0.1/127 ").replace("\r\n", "\n\n"))
    assert offer.connection == "233.252.0.1"


def test_our_own_offer_lists_every_codec_and_dtmf_and_reads_back() -> None:
    offer = build_offer("192.0.2.10", 40002, 7, 2)
    assert offer.endswith("\r\n") and "\n" not in offer.replace("\r\n", "")
    parsed = parse_sdp(offer)
    audio = parsed.media[0]
    assert (audio.port, audio.proto, audio.formats) == (40002, "RTP/AVP", [0, 8, 101])
    assert parsed.origin is not None and parsed.origin.session_version == "2"
    mine = negotiate(parsed)  # what a phone answering it would pick first, read as the connector reads answers
    assert (mine.codec, mine.remote_addr, mine.remote_port, mine.dtmf_payload_type) == (
        "PCMU",
        "192.0.2.10",
        40002,
        101,
    )
    assert mine.local_direction == "sendrecv"


@pytest.mark.parametrize(("addr", "port"), [("not-an-ip", 40000), ("192.0.2.1", 0), ("192.0.2.1", 70000)])
def test_an_offer_is_refused_for_an_unusable_address_or_port(addr: str, port: int) -> None:
    with pytest.raises(ValueError):
        build_offer(addr, port, 1, 1)
