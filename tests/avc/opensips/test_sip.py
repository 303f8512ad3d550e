"""Tests for avc.opensips.sip, fed with the header blocks of real OpenSIPS 3.5.9 E_UA_SESSION events."""

from __future__ import annotations

import pytest

from avc.opensips.sip import (
    MAX_HEADER_BLOCK_BYTES,
    NameAddr,
    SipHeaders,
    SipParseError,
    call_facts,
    format_extra_headers,
    parse_name_addr,
    split_header_values,
    uri_user,
)
from tests.support.captures import capture_files, event_params, mi_requests


def new_headers(capture: str) -> str:
    headers: str = event_params(capture, "NEW")[0]["headers"]
    return headers


CAPTURES_WITH_NEW = sorted(path.name for path in capture_files() if event_params(path.name, "NEW"))


@pytest.mark.parametrize("capture", CAPTURES_WITH_NEW)
def test_every_captured_invite_yields_call_facts(capture: str) -> None:
    raw = new_headers(capture)
    headers = SipHeaders.parse(raw)
    facts = call_facts(headers)
    assert facts.call_id and facts.call_id in raw
    assert facts.from_uri.startswith("sip:") and facts.to_uri == "sip:ai@127.0.0.1:5060"
    assert facts.from_tag is not None and f"tag={facts.from_tag}" in raw


def test_direct_call_facts_match_the_captured_invite() -> None:
    facts = call_facts(SipHeaders.parse(new_headers("02_call1_caller_hangs_up.txt")))
    assert facts.call_id == "1-5251@127.0.0.1"
    assert facts.from_uri == "sip:caller@127.0.0.1:5061"
    assert facts.from_tag == "5251SIPpTag001"
    assert facts.to_uri == "sip:ai@127.0.0.1:5060"
    assert facts.ani == "caller"
    assert facts.display_name == "sipp caller"
    assert facts.orig_call_id is None
    assert facts.user_agent is None


def test_media_exchange_session_carries_the_original_call_id() -> None:
    facts = call_facts(SipHeaders.parse(new_headers("05_media_exchange_to_ai.txt")))
    assert facts.call_id == "B2B.264.1139335.1795290421.1875415206"
    assert facts.orig_call_id == "1-799@127.0.0.1"
    assert facts.user_agent == "OpenSIPS (3.5.9 (x86_64/linux))"
    assert facts.display_name is None
    assert facts.from_tag == "8a51afdccfaf92918f1b428fc5650e2a-43af"


def test_lookup_is_case_insensitive_and_trims_stray_spaces() -> None:
    headers = SipHeaders.parse(new_headers("02_call1_caller_hangs_up.txt"))
    assert headers.get("content-length") == "210"  # captured as "Content-Length:   210"
    assert headers.get("CALL-ID") == "1-5251@127.0.0.1"
    assert "cseq" in headers
    assert headers.get("X-Not-There") is None
    assert len(headers) == 10


def test_compact_header_names_are_expanded() -> None:
    full = new_headers("02_call1_caller_hangs_up.txt")
    compact = (
        full.replace("Via:", "v:")
        .replace("From:", "f:")
        .replace("To:", "t:")
        .replace("Call-ID:", "i:")
        .replace("Contact:", "m:")
        .replace("Content-Type:", "c:")
        .replace("Content-Length:", "l:")
    )
    headers = SipHeaders.parse(compact + "k: timer\r\n")
    assert call_facts(headers) == call_facts(SipHeaders.parse(full))
    assert headers.get("Content-Type") == "application/sdp"
    assert headers.get("content-length") == "210"
    assert headers.get("Supported") == "timer"
    assert headers.get("v") == "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-5251-1-0"


def test_repeated_headers_are_kept_in_order() -> None:
    headers = SipHeaders.parse("Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nv: SIP/2.0/UDP b;branch=z9hG4bK2\r\nVIA: c\r\n")
    assert headers.get_all("via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2", "c"]
    assert headers.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert headers.get_all("Route") == []


def test_folded_continuation_lines_join_the_previous_header() -> None:
    headers = SipHeaders.parse(
        "Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\nCall-ID: x\r\n"
    )
    assert headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert headers.get("Call-ID") == "x"


def test_lf_only_line_endings_parse_like_crlf() -> None:
    raw = new_headers("02_call1_caller_hangs_up.txt")
    assert call_facts(SipHeaders.parse(raw.replace("\r\n", "\n"))) == call_facts(SipHeaders.parse(raw))


def test_malformed_lines_are_skipped_without_raising() -> None:
    raw = " orphan continuation\r\nno colon here\r\nINVITE sip:ai@127.0.0.1 SIP/2.0\r\n: empty name\r\nCall-ID: abc\r\n"
    headers = SipHeaders.parse(raw)
    assert headers.get("Call-ID") == "abc"
    assert len(headers) == 1


def test_blank_line_ends_the_header_block() -> None:
    headers = SipHeaders.parse("\r\nCall-ID: abc\r\nContent-Length: 3\r\n\r\nv=0\r\na=rtpmap:0 PCMU/8000\r\n")
    assert headers.get("Call-ID") == "abc"
    assert headers.get("a=rtpmap") is None
    assert len(headers) == 2


def test_header_block_over_64_kib_is_rejected() -> None:
    line = "X-Pad: " + "a" * 90 + "\r\n"
    at_limit = line * (MAX_HEADER_BLOCK_BYTES // len(line))
    assert len(SipHeaders.parse(at_limit)) == MAX_HEADER_BLOCK_BYTES // len(line)
    with pytest.raises(SipParseError, match="larger than"):
        SipHeaders.parse("X: " + "a" * MAX_HEADER_BLOCK_BYTES)


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(SipParseError):
        SipHeaders.parse("Subject: " + "\u00e9" * (MAX_HEADER_BLOCK_BYTES // 2))


def test_repr_does_not_reveal_header_values() -> None:
    headers = SipHeaders.parse(new_headers("02_call1_caller_hangs_up.txt"))
    assert "caller@" not in repr(headers)
    assert "call-id" in repr(headers)


def test_quoted_display_name_with_escapes() -> None:
    parsed = parse_name_addr(r'"Doe, \"JD\" John" <sip:jd@bank.example;transport=udp>;tag=a1;Expires=60;lr')
    assert parsed == NameAddr(
        display='Doe, "JD" John',
        uri="sip:jd@bank.example;transport=udp",
        params={"tag": "a1", "expires": "60", "lr": ""},
    )


def test_unquoted_display_name_and_angle_uri() -> None:
    assert parse_name_addr("AI  Agent <sip:ai@127.0.0.1>;tag=927ad").display == "AI Agent"
    assert parse_name_addr("<sip:ai@127.0.0.1:5060>") == NameAddr(None, "sip:ai@127.0.0.1:5060", {})


def test_bare_uri_parameters_belong_to_the_header() -> None:
    assert parse_name_addr("sip:bob@example.com;tag=xyz") == NameAddr(None, "sip:bob@example.com", {"tag": "xyz"})


def test_quoted_parameter_values_are_unquoted() -> None:
    assert parse_name_addr('<sip:a@b>;note="x;y"').params == {"note": "x;y"}


def test_empty_quoted_display_name_is_none() -> None:
    assert parse_name_addr('"" <sip:a@b>').display is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ('"unterminated <sip:a@b>', "unterminated"),
        ("<sip:a@b;tag=1", "missing '>'"),
        ('"Name" sip:a@b', "followed by <uri>"),
        ("<>", "empty URI"),
        ("John sip:a@b", "whitespace"),
        ("<sip:a@b> junk", "after the URI"),
    ],
)
def test_malformed_name_addr_raises_sip_parse_error(value: str, message: str) -> None:
    with pytest.raises(SipParseError, match=message):
        parse_name_addr(value)


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:caller@127.0.0.1:5061", "caller"),
        ("SIPS:+4930123456@carrier.example;user=phone", "+4930123456"),
        ("sip:alice:secret@example.com", "alice"),
        ("sip:+4930123;npdi;rn=+4930999@example.com", "+4930123"),
        ("tel:+49-30-123456;phone-context=+49", "+49-30-123456"),
        ("tel:+4930123456", "+4930123456"),
        ("sip:%2B4930123@example.com", "+4930123"),
        ("sip:127.0.0.1:5060", None),
        ("mailto:a@b", None),
        ("caller", None),
        ("sip:@example.com", None),
        ("sip:a%0d%0aX-Evil:1@example.com", None),
    ],
)
def test_uri_user(uri: str, user: str | None) -> None:
    assert uri_user(uri) == user


def _with_header(capture: str, extra: str) -> SipHeaders:
    return SipHeaders.parse(new_headers(capture) + extra)


def test_p_asserted_identity_tel_uri_wins_over_from() -> None:
    headers = _with_header(
        "02_call1_caller_hangs_up.txt",
        'P-Asserted-Identity: "Jane Doe" <sip:jane@carrier.example>, <tel:+49301234567;phone-context=+49>\r\n',
    )
    facts = call_facts(headers)
    assert facts.ani == "+49301234567"
    assert facts.display_name == "sipp caller"  # the tel identity has no display name of its own


def test_p_asserted_identity_sip_user_and_display_name() -> None:
    facts = call_facts(
        _with_header(
            "02_call1_caller_hangs_up.txt",
            'P-Asserted-Identity: "Jane Doe" <sip:+49301234567@carrier.example;user=phone>\r\n',
        )
    )
    assert facts.ani == "+49301234567"
    assert facts.display_name == "Jane Doe"


def test_p_asserted_identity_on_separate_lines() -> None:
    facts = call_facts(
        _with_header(
            "05_media_exchange_to_ai.txt",
            "P-Asserted-Identity: <sip:carrier.example>\r\nP-Asserted-Identity: <tel:+4940555>\r\n",
        )
    )
    assert facts.ani == "+4940555"


def test_malformed_p_asserted_identity_falls_back_to_from() -> None:
    facts = call_facts(_with_header("02_call1_caller_hangs_up.txt", 'P-Asserted-Identity: "broken <tel:+4930\r\n'))
    assert facts.ani == "caller"


def test_split_header_values_respects_quotes_and_brackets() -> None:
    assert split_header_values('"Doe, J" <sip:a@b>, <sip:c@d;x=1,2>,') == ['"Doe, J" <sip:a@b>', "<sip:c@d;x=1,2>"]


@pytest.mark.parametrize("header", ["Call-ID", "From", "To"])
def test_missing_required_header_raises(header: str) -> None:
    raw = new_headers("02_call1_caller_hangs_up.txt")
    without = "".join(line for line in raw.splitlines(keepends=True) if not line.startswith(f"{header}:"))
    with pytest.raises(SipParseError, match=f"missing {header}"):
        call_facts(SipHeaders.parse(without))


def test_empty_call_id_counts_as_missing() -> None:
    raw = new_headers("02_call1_caller_hangs_up.txt").replace("Call-ID: 1-5251@127.0.0.1", "i:   ")
    with pytest.raises(SipParseError, match="missing Call-ID"):
        call_facts(SipHeaders.parse(raw))


def test_extra_headers_match_what_opensips_accepted_for_media_exchange() -> None:
    # The exact MI `headers` value that made OpenSIPS put X-Orig-Call-ID on the INVITE in capture 05.
    [request] = mi_requests("05_media_exchange_to_ai.txt", "media_exchange_from_call_to_uri")
    assert format_extra_headers({"X-Orig-Call-ID": "1-799@127.0.0.1"}) == request["params"]["headers"]


def test_extra_headers_several_and_empty() -> None:
    assert format_extra_headers({"X-A": "1", "Reason": 'Q.850;cause=16;text="Normal"'}) == (
        'X-A: 1\r\nReason: Q.850;cause=16;text="Normal"\r\n'
    )
    assert format_extra_headers({}) == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Orig-Call-ID", "1-799@127.0.0.1\r\nBYE sip:victim SIP/2.0"),
        ("X-Note", "line\nbreak"),
        ("X-Note", "carriage\rreturn"),
        ("X-Note", "nul\x00byte"),
        ("X-Evil\r\nContact", "x"),
        ("X-Evil: y", "x"),
        ("", "x"),
    ],
)
def test_extra_headers_reject_header_injection(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="header injection"):
        format_extra_headers({name: value})


def test_header_injection_error_does_not_echo_the_value() -> None:
    with pytest.raises(ValueError) as caught:
        format_extra_headers({"X-Card": "4111111111111111\r\n"})
    assert "4111" not in str(caught.value)
