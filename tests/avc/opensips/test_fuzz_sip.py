"""Property-based fuzzing of avc.opensips.sip: hostile SIP header blocks, name-addrs, URIs and extra headers.

Contract: parsing any text yields a result or `SipParseError` (never another exception); what the parser
hands on (Call-ID, caller number) carries no control characters where the module promises so; and
`format_extra_headers` refuses (ValueError) any name or value that could add a header of its own, while what
it accepts reads back header for header. Seeds are the header blocks of the real OpenSIPS 3.5.9 events and
SIPp messages. `AVC_FUZZ_EXAMPLES` (default 300) sets the examples per test; runs are derandomized. The settings
and the shared mutators live in tests/support/fuzz.py.
"""

from __future__ import annotations

import re
import unicodedata

from hypothesis import event, example, given
from hypothesis import strategies as st

from avc.opensips.sip import (
    COMPACT_FORMS,
    MAX_HEADER_BLOCK_BYTES,
    CallFacts,
    SipHeaders,
    SipParseError,
    call_facts,
    format_extra_headers,
    parse_name_addr,
    split_header_values,
    uri_user,
)
from tests.support.fuzz import FUZZ, all_sipp_messages, any_text, event_param_texts, mutate_lines, nasty_text


def _captured_blocks() -> list[str]:
    blocks = event_param_texts("headers")
    for message in all_sipp_messages():
        head = message.raw.decode("utf-8", "replace").partition("\r\n\r\n")[0]
        blocks.add(head.partition("\r\n")[2])  # without the start line, as E_UA_SESSION sends it
    return sorted(block for block in blocks if block)


SEEDS = _captured_blocks()
# RFC 3261 section 25.1 token: what a header name may be.
RFC3261_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")

hostile_text = nasty_text(
    [" ", "\t", "\r", "\n", "\r\n", "\x85", "\u2028", "\U0001f4de", "\ufeff", '"', "\\", "<", ">"]
)
user_parts = st.sampled_from(
    [
        "+4930123",
        "alice",
        "",
        "%2B49",
        "%0d%0aX-Evil: 1",
        "%00",
        "%ZZ",
        "%",
        "a%20b",
        "+49;npdi",
        "\u202e123",
        "\u0663\u0663",
    ]
) | st.text(max_size=12)
uris = (
    st.builds(
        "{}:{}@{}{}".format,
        st.sampled_from(["sip", "sips", "SIP", "tel", "mailto", ""]),
        user_parts,
        st.sampled_from(["example.com", "127.0.0.1:5060", "[::1]", "", "h;x=y"]),
        st.sampled_from(["", ";user=phone", ";transport=udp", ";lr;", "?Subject=x"]),
    )
    | st.builds("tel:{}{}".format, user_parts, st.sampled_from(["", ";phone-context=+49", ";"]))
    | hostile_text
)
displays = (
    st.builds(lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '" ', hostile_text)
    | st.sampled_from(['"unterminated ', '"esc\\" ', "Bob ", "", "  ", '"" ', '"a\\'])
    | hostile_text
)
params = st.lists(
    st.sampled_from([";tag=abc", ';tag="q\\"t"', ";tag=", ";tag", ";;", ";=x", ";expires=60", ';tag="open', "x"])
    | hostile_text.map(lambda text: ";" + text),
    max_size=4,
).map("".join)
name_addrs = (
    st.builds("{}<{}>{}".format, displays, uris, params)
    | st.builds("{}{}".format, uris, params)
    | st.builds("{}<{}".format, displays, uris)
    | hostile_text
)
header_names = (
    st.sampled_from(
        ["Call-ID", "i", "I", "From", "f", "To", "t", "P-Asserted-Identity", "X-Orig-Call-ID", "User-Agent", "Via"]
    )
    | st.sampled_from(sorted(COMPACT_FORMS))
    | hostile_text
)


@st.composite
def header_lines(draw: st.DrawFn) -> str:
    name = draw(header_names)
    separator = draw(st.sampled_from([": ", ":", " : ", "", "::", ":\t"]))
    value = draw(name_addrs | st.lists(name_addrs, max_size=3).map(", ".join) | hostile_text)
    line = f"{name}{separator}{value}"
    if draw(st.booleans()):
        line += draw(st.sampled_from(["\r\n ", "\n\t", "\r\n  "])) + draw(hostile_text)  # a folded continuation
    return line


@st.composite
def mutated_blocks(draw: st.DrawFn) -> str:
    """A seed block mutated line by line (`mutate_lines`, new lines from `header_lines`), with CRLF or LF."""
    lines = mutate_lines(draw, draw(st.sampled_from(SEEDS)).split("\r\n"), header_lines(), hostile_text)
    return draw(st.sampled_from(["\r\n", "\n", "\r\n"])).join(lines)


hostile_blocks = mutated_blocks() | st.lists(header_lines(), max_size=10).map("\r\n".join) | any_text(max_size=300)


def has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def facts_or_parse_error(raw: str) -> CallFacts | None:
    try:
        headers = SipHeaders.parse(raw)
    except SipParseError:
        assert len(raw.encode("utf-8", "surrogatepass")) > MAX_HEADER_BLOCK_BYTES
        event("block refused: oversize")
        return None
    for name in ("Call-ID", "from", "T", "p-asserted-identity", "x", ""):
        headers.get(name)
        headers.get_all(name)
        assert (name in headers) == (headers.get(name) is not None)
    repr(headers)
    try:
        facts = call_facts(headers)
    except SipParseError:
        event("block parsed, no call facts: SipParseError")
        return None
    event("call facts read")
    return facts


@FUZZ
@given(hostile_blocks)
@example("Call-ID: x\r\nFrom: <sip:%0d%0aX@h>\r\nTo: <sip:b@h>\r\n")  # percent-encoded CR/LF in the caller's user
@example('Call-ID: x\r\nFrom: "unterminated <sip:a@h>\r\nTo: <sip:b@h>\r\n')
@example("Call-ID: x\r\nFrom: <sip:a@h\r\nTo: sip:b@h\r\nP-Asserted-Identity: <tel:>, <tel:%00>, \r\n")
@example(" folded first line\r\ni: x\r\nf: a\r\nt: b")
@example("\ud800: x\r\nCall-ID: \udfff\r\nFrom: \ud800\r\nTo: t")
@example("X: " + "y" * MAX_HEADER_BLOCK_BYTES)
def test_any_header_block_yields_call_facts_or_sip_parse_error(raw: str) -> None:
    facts = facts_or_parse_error(raw)
    if facts is None:
        return
    assert facts.call_id and facts.call_id == facts.call_id.strip()
    assert facts.from_uri and facts.to_uri
    assert facts.ani is None or (facts.ani and not has_control(facts.ani))


@FUZZ
@given(name_addrs)
@example('"a\\')
@example("<")
@example('"x" y <sip:a@h>')
def test_any_name_addr_parses_or_raises_sip_parse_error(value: str) -> None:
    try:
        parsed = parse_name_addr(value)
    except SipParseError:
        event("refused: SipParseError")
        return
    event("parsed")
    assert parsed.uri
    assert parsed.display is None or parsed.display
    assert all(name == name.strip().lower() and name for name in parsed.params)


@FUZZ
@given(uris | hostile_text)
def test_uri_user_is_none_or_a_clean_user_part(uri: str) -> None:
    user = uri_user(uri)
    assert user is None or (user and user == user.strip() and not has_control(user))


@FUZZ
@given(st.lists(name_addrs, max_size=4).map(", ".join) | hostile_text)
def test_split_header_values_never_raises(value: str) -> None:
    parts = split_header_values(value)
    assert all(part and part == part.strip() for part in parts)


header_values = (
    st.text(max_size=40) | st.text(st.characters(codec=None, exclude_categories=()), max_size=40) | hostile_text
)


@FUZZ
@given(
    st.dictionaries(
        header_names | st.from_regex(RFC3261_TOKEN, fullmatch=True) | st.text(max_size=12), header_values, max_size=5
    )
)
@example({"X-Ok": "fine", "X-Evil": "a\r\nVia: SIP/2.0/UDP evil"})
@example({"X-Evil\r\nVia": "x"})
@example({"X-Next-Line": "\u0085Via: x"})
def test_format_extra_headers_refuses_injection_and_round_trips_the_rest(headers: dict[str, str]) -> None:
    try:
        block = format_extra_headers(headers)
    except ValueError:
        event("refused: ValueError")
        assert any(RFC3261_TOKEN.fullmatch(name) is None for name in headers) or any(
            has_control(value.replace("\t", "")) for value in headers.values()
        )
        return
    event("formatted")
    assert block.count("\r\n") == len(headers) and block.endswith("\r\n" if headers else "")
    lines = block.split("\r\n")[:-1]
    assert all("\r" not in line and "\n" not in line for line in lines)
    parsed = SipHeaders.parse(block)
    assert len(parsed) == len(headers)
    for name, value in headers.items():
        assert value.strip() in parsed.get_all(name)


@FUZZ
@given(
    st.sampled_from(["X-Avc-Reason", "Retry-After", "Refer-To", "Reason"]),
    header_values,
    st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85"]),
    st.integers(0, 40),
)
def test_format_extra_headers_refuses_any_value_with_cr_lf_or_control_characters(
    name: str, value: str, control: str, position: int
) -> None:
    hostile = value[:position] + control + value[position:]
    try:
        format_extra_headers({"X-Ok": "fine", name: hostile})
    except ValueError:
        return
    raise AssertionError(f"format_extra_headers accepted {hostile!r}")
