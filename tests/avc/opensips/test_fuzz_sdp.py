"""Property-based fuzzing of avc.opensips.sdp: hostile SDP offers through parse, negotiate and answer.

Contract: any text either parses into a `SessionDescription` or raises `SdpError`; a parsed offer either
negotiates or raises `SdpError` (`NoCommonCodec` included); a negotiated offer always yields an answer, which
is itself a valid SDP without stray CR/LF. Seeds are the offers of the real OpenSIPS 3.5.9 and SIPp captures,
mutated line by line, token by token and byte by byte. `AVC_FUZZ_EXAMPLES` (default 300) sets the examples per
test; runs are derandomized. The settings and the shared mutators live in tests/support/fuzz.py.
"""

from __future__ import annotations

from hypothesis import event, example, given
from hypothesis import strategies as st

from avc.opensips.sdp import (
    ANSWER_PROTO,
    DIRECTIONS,
    MAX_SDP_BYTES,
    SEND_PTIME_MS,
    SdpError,
    SessionDescription,
    build_answer,
    negotiate,
    parse_sdp,
)
from tests.support.fuzz import FUZZ, all_sipp_messages, any_text, event_param_texts, mutate_lines, nasty_text


def _captured_offers() -> list[str]:
    bodies = event_param_texts("body") | {message.body.decode("utf-8", "replace") for message in all_sipp_messages()}
    return sorted(body for body in bodies if body.startswith("v=0"))


# A few shapes the captures lack: several streams, IPv6, PCMA only, a T.38 image stream, held audio.
HAND_OFFERS = [
    "v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 ::1\nt=0 0\nm=video 0 RTP/AVP 96\nm=audio 4000 RTP/AVP 8 18 96\n"
    "a=rtpmap:96 telephone-event/8000\na=fmtp:96 0-15\na=ptime:30\n",
    "v=0\r\no=- 7 8 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=image 5000 udptl t38\r\nc=IN IP4 10.0.0.1\r\n"
    "m=audio 5002 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\n",
    "v=0\no=x 1 1 IN IP4 224.2.1.1\ns= \nc=IN IP4 224.2.1.1/127/3\na=recvonly\nt=0 0\nm=audio 6000/2 RTP/AVP 0 8\n",
]
SEEDS = _captured_offers() + HAND_OFFERS

hostile_text = nasty_text(
    [" ", "\t", "\r", "\x85", "\u2028", "\U0001f4de", "e\u0301", "\ufeff", "\u0663", "\uff11", "/"]
)
numbers = st.integers(-5, 70_000).map(str) | st.sampled_from(["0", "00", "127", "128", "65535", "65536", "99999"])
addresses = st.sampled_from(
    [
        "127.0.0.1",
        "0.0.0.0",
        "::",
        "::1",
        "fe80::1%eth0",
        "::ffff:1.2.3.4",
        "224.2.1.1/127/3",
        "ff15::101/3",
        "host.example",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.2.3.4%x",
        "",
    ]
) | st.ip_addresses().map(str)
encodings = st.sampled_from(["PCMU", "pcma", "PCMA", "telephone-event", "G729", "opus", "L16", "", "-x", "é"])
clock = st.sampled_from(["8000", "16000", "48000", "0", "", "8000.0", "9999999"]) | numbers


@st.composite
def sdp_lines(draw: st.DrawFn) -> str:
    """One SDP line, usually well-formed enough to reach the value parsers."""
    kind = draw(st.sampled_from(("m", "c", "o", "rtpmap", "fmtp", "ptime", "direction", "v", "other", "raw")))
    if kind == "m":
        media = draw(st.sampled_from(["audio", "AUDIO", "video", "image", "application"]) | hostile_text)
        port = draw(numbers | st.builds("{}/{}".format, numbers, numbers))
        proto = draw(st.sampled_from(["RTP/AVP", "rtp/avp", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udptl", "TCP/RTP/AVP"]))
        formats = draw(st.lists(numbers | st.sampled_from(["t38", "*", "101"]) | hostile_text, max_size=6))
        return f"m={media} {port} {proto} {' '.join(formats)}"
    if kind == "c":
        network = draw(st.sampled_from(["IN", "in", "XX"]))
        return f"c={network} {draw(st.sampled_from(['IP4', 'IP6', 'ip4', 'IP5']))} {draw(addresses)}"
    if kind == "o":
        fields = draw(
            st.lists(
                st.text(st.characters(exclude_categories=("Z", "Cc")), min_size=1, max_size=9), min_size=4, max_size=7
            )
        )
        return "o=" + " ".join(fields)
    if kind == "rtpmap":
        channels = draw(st.sampled_from(["", "/1", "/2", "/0", "/", "/99"]))
        return f"a=rtpmap:{draw(numbers)} {draw(encodings)}/{draw(clock)}{channels}"
    if kind == "fmtp":
        events = draw(st.sampled_from(["0-15", "0-16", "0-15,32-", "0 - 15", "", "1,2,3", "999-1000"]) | hostile_text)
        return f"a=fmtp:{draw(numbers)} {events}"
    if kind == "ptime":
        return f"a=ptime:{draw(st.sampled_from(['20', '20.0', '10', '60', '70', '0', '', 'x', '20.5']) | numbers)}"
    if kind == "direction":
        return "a=" + draw(st.sampled_from(sorted(DIRECTIONS)) | st.sampled_from(["SENDRECV", "a=inactive"]))
    if kind == "v":
        return "v=" + draw(st.sampled_from(["0", "1", ""]))
    if kind == "other":
        return f"{draw(st.sampled_from('sitbzkuera'))}={draw(hostile_text)}"
    return draw(hostile_text)


@st.composite
def mutated_offers(draw: st.DrawFn) -> str:
    """A seed offer mutated line by line (`mutate_lines`, new lines from `sdp_lines`), with any line separator."""
    lines = draw(st.sampled_from(SEEDS)).replace("\r\n", "\n").split("\n")
    lines = mutate_lines(draw, lines, sdp_lines(), hostile_text)
    separator = draw(st.sampled_from(("\r\n", "\n", "\r\n", " \n", "\n\n")))
    return separator.join(lines)


hostile_sdp = (
    mutated_offers()
    | st.lists(sdp_lines(), max_size=12).map(lambda lines: "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\n" + "\r\n".join(lines))
    | any_text(max_size=300)
)


def check_offer(text: str) -> None:
    """The whole offer path: parse, negotiate and answer, each either working or raising SdpError."""
    try:
        offer = parse_sdp(text)
    except SdpError:
        event("offer refused: SdpError")
        return
    assert isinstance(offer, SessionDescription)
    assert any(media.kind.lower() == "audio" for media in offer.media)
    try:
        negotiated = negotiate(offer)
    except SdpError as exc:
        event(f"offer parsed, not negotiated: {type(exc).__name__}")
        return
    event("offer answered")
    assert negotiated.payload_type in offer.media[negotiated.media_index].formats
    assert 1 <= negotiated.remote_port <= 65535
    assert negotiated.local_direction in DIRECTIONS
    # A negotiated offer must always be answerable: build_answer's ValueError is for programming errors only.
    answer = build_answer(offer, negotiated, "192.0.2.10", 40_000, 123, 124)
    assert answer.endswith("\r\n")
    assert "\n" not in answer.replace("\r\n", "") and "\r" not in answer.replace("\r\n", "")
    echoed = parse_sdp(answer)
    assert len(echoed.media) == len(offer.media)
    accepted = echoed.media[negotiated.media_index]
    assert (accepted.port, accepted.proto, accepted.ptime) == (40_000, ANSWER_PROTO, SEND_PTIME_MS)
    assert accepted.formats[0] == negotiated.payload_type
    assert all(media.port == 0 for index, media in enumerate(echoed.media) if index != negotiated.media_index)
    # Our own answer, read back as an offer, negotiates the same codec.
    again = negotiate(echoed)
    assert (again.codec, again.payload_type, again.dtmf_payload_type) == (
        negotiated.codec,
        negotiated.payload_type,
        negotiated.dtmf_payload_type,
    )


@FUZZ
@given(hostile_sdp)
@example("v=0\no=- 1 1 IN IP4 1.1.1.1\nm=audio 1 RTP/AVP 0\nc=IN IP6 fe80::1%eth0\n")  # scoped IPv6
@example("v=0\no=- 1 1 IN IP4 1.1.1.1\nm=audio 1 RTP/AVP 0 101\nc=IN IP4 1.1.1.1\na=rtpmap:101 telephone-event/8000")
@example("v=0\no=- 1 1 IN IP4 1.1.1.1\nm=audio 1 RTP/AVP\nc=IN IP4 1.1.1.1\n")
@example("v=0\no=- 1 1 IN IP4 1.1.1.1\nm=x 1 RTP/AVP 0\nm=audio 2 RTP/AVP 8\nc=IN IP4 1.1.1.1\n")
@example("\ud800v=0")
@example("v=0\r\n" + "a=x\r\n" * (MAX_SDP_BYTES // 5))
def test_any_offer_parses_negotiates_and_answers_or_raises_sdp_error(text: str) -> None:
    check_offer(text)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.sampled_from(["PCMU", "PCMA", "pcmu", "G729", "", "ß", "İ"]), max_size=3))
def test_negotiating_with_any_supported_list_raises_only_sdp_error(text: str, supported: list[str]) -> None:
    offer = parse_sdp(text)
    try:
        negotiated = negotiate(offer, supported)
    except SdpError:
        return
    assert negotiated.codec in {name.upper() for name in supported}
    build_answer(offer, negotiated, "::1", 1, 0, 0)
