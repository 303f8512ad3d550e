"""SIP header parsing for the calls OpenSIPS hands to the connector (RFC 3261 sections 7.3, 20 and 25).

OpenSIPS' `E_UA_SESSION` event carries the raw header block of the request (CRLF-separated, no start
line, no body) in its `headers` field. This module turns that block into a case-insensitive multimap,
reads the call's facts from it (Call-ID, From, To, caller number) and builds the `extra_headers`
string that MI `ua_session_reply`/`ua_session_update` accept.

The parser is deliberately forgiving about what real user agents send (compact header names, folded
lines, odd spacing, LF-only endings) and strict only where a mistake would matter: a missing Call-ID,
an oversized block, or CR/LF smuggled into headers we send.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote

MAX_HEADER_BLOCK_BYTES: Final = 64 * 1024

# RFC 3261 section 7.3.3 and the IANA SIP parameters registry. Keys are lower case because
# compact forms are case-insensitive like every other header name.
COMPACT_FORMS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "i": "call-id",
        "f": "from",
        "t": "to",
        "m": "contact",
        "c": "content-type",
        "l": "content-length",
        "v": "via",
        "k": "supported",
        "s": "subject",
        "e": "content-encoding",
        "o": "event",
        "r": "refer-to",
        "b": "referred-by",
        "x": "session-expires",
        "u": "allow-events",
    }
)

# RFC 3261 section 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


class SipParseError(ValueError):
    """A SIP header block or header value that cannot be used."""


def _canonical_name(name: str) -> str:
    lowered = name.lower()
    return COMPACT_FORMS.get(lowered, lowered)


class SipHeaders:
    """Case-insensitive multimap over a SIP header block, in the order the headers appeared.

    Compact names are expanded, so `get("Call-ID")` finds an `i:` header. A header that appears on
    several lines yields one entry per line; comma-separated values within one line are not split
    (see `split_header_values`), because only some headers are comma lists.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str]] = [(_canonical_name(name), value) for name, value in fields]

    @classmethod
    def parse(cls, raw: str) -> SipHeaders:
        """Parse a raw header block; lines without a colon or with an invalid name are skipped.

        A blank line after the first header ends the block (RFC 3261 section 7: the body follows),
        so passing a whole message without its start line is safe. Raises SipParseError only for a
        block over MAX_HEADER_BLOCK_BYTES, which no legitimate INVITE comes near.
        """
        if len(raw) > MAX_HEADER_BLOCK_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_HEADER_BLOCK_BYTES:
            raise SipParseError(f"SIP header block is larger than {MAX_HEADER_BLOCK_BYTES} bytes")
        fields: list[tuple[str, str]] = []
        # Folded continuation lines (RFC 3261 section 7.3.1) are glued to the field before them.
        continues_field = False
        for line in raw.split("\n"):
            line = line.removesuffix("\r")
            if not line.strip():
                if fields:
                    break
                continue
            if line[0] in " \t":
                if continues_field:
                    name, value = fields[-1]
                    fields[-1] = (name, f"{value} {line.strip()}".strip())
                continue
            name, colon, value = line.partition(":")
            name = name.strip()
            continues_field = bool(colon) and _TOKEN.fullmatch(name) is not None
            if continues_field:
                fields.append((name, value.strip()))
        return cls(fields)

    def get(self, name: str) -> str | None:
        """The value of the first header called `name` (or its compact form), or None."""
        wanted = _canonical_name(name)
        for field_name, value in self._fields:
            if field_name == wanted:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """The values of every header called `name` (or its compact form), in order."""
        wanted = _canonical_name(name)
        return [value for field_name, value in self._fields if field_name == wanted]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        # Names only: values carry caller identities that do not belong in logs.
        return f"SipHeaders({[name for name, _ in self._fields]!r})"


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/P-Asserted-Identity value: optional display name, URI and header parameters.

    `params` holds the header parameters after the URI (`tag`, `expires`, ...) with lower-case names;
    a parameter without a value maps to "".
    """

    display: str | None
    uri: str
    params: dict[str, str]


def _read_quoted(text: str) -> tuple[str, str]:
    """Split `"quoted \\"string\\"" rest` into the unescaped string and the rest (RFC 3261 quoted-pair)."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            chars.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(chars), text[index + 1 :]
        chars.append(char)
        index += 1
    raise SipParseError("unterminated quoted string")


def _split_outside_quotes(text: str, separator: str, brackets: bool = False) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    in_quotes = False
    depth = 0
    index = 0
    while index < len(text):
        char = text[index]
        if in_quotes and char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if char == '"':
            in_quotes = not in_quotes
        elif brackets and not in_quotes and char == "<":
            depth += 1
        elif brackets and not in_quotes and char == ">":
            depth = max(0, depth - 1)
        elif char == separator and not in_quotes and depth == 0:
            parts.append("".join(current))
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for segment in _split_outside_quotes(text, ";"):
        name, _, value = segment.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        value = value.strip()
        if value.startswith('"'):
            value, _ = _read_quoted(value)
        # The first occurrence wins: a duplicated tag is malformed and the first is what proxies saw.
        params.setdefault(name, value)
    return params


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value (RFC 3261 section 7.3.1), respecting quotes and <uri>s."""
    return [part.strip() for part in _split_outside_quotes(value, ",", brackets=True) if part.strip()]


def parse_name_addr(value: str) -> NameAddr:
    """Parse `"Display" <uri>;params`, `Display <uri>;params` or a bare `uri;params`.

    In the bare form the parameters belong to the header, not the URI (RFC 3261 section 20.10).
    An empty display name is reported as None. Raises SipParseError for an empty value, an
    unterminated quoted string or a missing `>`.
    """
    text = value.strip()
    if not text:
        raise SipParseError("empty name-addr")
    display: str | None
    if text.startswith('"'):
        display, rest = _read_quoted(text)
        rest = rest.lstrip()
        if not rest.startswith("<"):
            raise SipParseError("a quoted display name must be followed by <uri>")
        uri, params_text = _read_angle_uri(rest)
    elif "<" in text:
        opening = text.index("<")
        display = " ".join(text[:opening].split())
        uri, params_text = _read_angle_uri(text[opening:])
    else:
        display = None
        uri, _, params_text = text.partition(";")
        uri = uri.strip()
        params_text = ";" + params_text if params_text else ""
        if any(char.isspace() for char in uri):
            raise SipParseError("a bare URI must not contain whitespace")
    if not uri:
        raise SipParseError("empty URI")
    params_text = params_text.strip()
    if params_text and not params_text.startswith(";"):
        raise SipParseError("unexpected text after the URI")
    return NameAddr(display=display or None, uri=uri, params=_parse_params(params_text))


def _read_angle_uri(text: str) -> tuple[str, str]:
    closing = text.find(">")
    if closing < 0:
        raise SipParseError("missing '>' after '<uri'")
    return text[1:closing].strip(), text[closing + 1 :]


def uri_user(uri: str) -> str | None:
    """The user part of a sip:, sips: or tel: URI without its parameters, percent-decoded.

    Returns None for other schemes, a URI without a user part, or a user part that decodes to
    control characters (which would otherwise travel into logs and headers).
    """
    scheme, colon, rest = uri.strip().partition(":")
    if not colon:
        return None
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        userinfo, at, _ = rest.partition("@")
        if not at:
            return None
        user = userinfo.partition(":")[0]
    elif scheme == "tel":
        user = rest
    else:
        return None
    # sip:+4930123;npdi@host and tel:+4930123;phone-context=... both carry parameters after ';'.
    user = unquote(user.partition(";")[0]).strip()
    if not user or any(unicodedata.category(char) == "Cc" for char in user):
        return None
    return user


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the connector needs to know about a call, read from its INVITE's headers.

    `ani` is the caller's number as the network asserted it (P-Asserted-Identity), else the From
    user part. `orig_call_id` is set when media_exchange handed an existing call to the AI: it is
    the Call-ID of that original call, which the dialog-tracking proxy knows the call by.
    """

    call_id: str
    from_uri: str
    from_tag: str | None
    to_uri: str
    ani: str | None
    display_name: str | None
    orig_call_id: str | None
    user_agent: str | None


def _asserted_identity(headers: SipHeaders) -> NameAddr | None:
    """The P-Asserted-Identity entry that carries the caller's number.

    RFC 3325 allows one sip/sips and one tel identity. A tel: URI is a telephone number by
    definition, while a sip: user may be a name, so tel: wins; otherwise the first sip:/sips:
    identity with a user part. Malformed entries are skipped: PAI is optional, From is the fallback.
    PAI is only trustworthy because the edge proxy strips it from untrusted peers (RFC 3325 section 5).
    """
    first_sip: NameAddr | None = None
    for header_value in headers.get_all("P-Asserted-Identity"):
        for entry in split_header_values(header_value):
            try:
                identity = parse_name_addr(entry)
            except SipParseError:
                continue
            if uri_user(identity.uri) is None:
                continue
            if identity.uri.lower().startswith("tel:"):
                return identity
            if first_sip is None:
                first_sip = identity
    return first_sip


def _required(headers: SipHeaders, name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SipParseError(f"missing {name} header")
    return value.strip()


def _optional(headers: SipHeaders, name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return value.strip() or None


def call_facts(headers: SipHeaders) -> CallFacts:
    """Read a call's facts from its INVITE headers.

    Raises SipParseError when Call-ID, From or To is missing or From/To cannot be parsed: without
    them the call cannot be addressed. For a session created by media_exchange, From is OpenSIPS
    itself, so `ani` only means something once looked up through `orig_call_id`.
    """
    call_id = _required(headers, "Call-ID")
    sender = parse_name_addr(_required(headers, "From"))
    recipient = parse_name_addr(_required(headers, "To"))
    asserted = _asserted_identity(headers)
    ani = uri_user(asserted.uri) if asserted is not None else uri_user(sender.uri)
    display_name = asserted.display if asserted is not None and asserted.display else sender.display
    return CallFacts(
        call_id=call_id,
        from_uri=sender.uri,
        from_tag=sender.params.get("tag") or None,
        to_uri=recipient.uri,
        ani=ani,
        display_name=display_name,
        orig_call_id=_optional(headers, "X-Orig-Call-ID"),
        user_agent=_optional(headers, "User-Agent"),
    )


def format_extra_headers(headers: Mapping[str, str]) -> str:
    """Build the CRLF-terminated `extra_headers` string for MI ua_session_reply/ua_session_update.

    Raises ValueError for a name that is not a SIP token or a value containing CR, LF or another
    control character: either would let a caller-controlled string add headers of its own.
    """
    lines: list[str] = []
    for name, value in headers.items():
        if _TOKEN.fullmatch(name) is None:
            raise ValueError(f"invalid SIP header name {name!r} (header injection?)")
        if any(unicodedata.category(char) == "Cc" and char != "\t" for char in value):
            raise ValueError(f"value of SIP header {name} contains CR/LF or control characters (header injection?)")
        lines.append(f"{name}: {value.strip()}\r\n")
    return "".join(lines)
