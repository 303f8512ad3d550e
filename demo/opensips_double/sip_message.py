"""One SIP message as the B2B node's socket reads it: first line, raw headers in order, body.

Headers are kept byte for byte (after the colon) because OpenSIPS relays them so in the events; compact header
names are understood. A datagram that is no SIP message raises `SipParseError` and is dropped, as OpenSIPS drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length"}
_COMPACT.update({"c": "content-type", "k": "supported", "s": "subject"})
TAG_PARAM = re.compile(r";\s*tag=([^;>\s]+)", re.IGNORECASE)


class SipParseError(ValueError):
    """A datagram that is not a SIP message the B2B node could read; it is dropped, as OpenSIPS drops it."""


@dataclass(slots=True)
class SipMessage:
    """One SIP message as received: the first line split, the headers raw and in order, the body."""

    first: tuple[str, str, str]  # (method, uri, "SIP/2.0") or ("SIP/2.0", code, reason)
    headers: list[tuple[str, str]]  # (name, everything after the colon): relayed byte for byte
    body: str
    source: tuple[str, int] = ("127.0.0.1", 0)

    @property
    def is_request(self) -> bool:
        return self.first[0] != "SIP/2.0"

    @property
    def method(self) -> str:
        return self.first[0] if self.is_request else self.cseq[1]

    @property
    def code(self) -> int:
        return 0 if self.is_request else int(self.first[1])

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value.strip() for header, value in self.headers if canonical(header) == wanted]

    def lines(self, name: str) -> list[str]:
        """The raw header lines for `name`, as they came (OpenSIPS copies Via lines into replies unchanged)."""
        wanted = name.lower()
        return [f"{header}:{value}" for header, value in self.headers if canonical(header) == wanted]

    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.get("cseq") or "").partition(" ")
        return int(number), method.strip().upper()

    @property
    def branch(self) -> str:
        via = self.get("via") or ""
        match = re.search(r";\s*branch=([^;,\s]+)", via, re.IGNORECASE)
        return match.group(1) if match else ""

    @property
    def to_tag(self) -> str | None:
        match = TAG_PARAM.search(self.get("to") or "")
        return match.group(1) if match else None

    @property
    def from_tag(self) -> str | None:
        match = TAG_PARAM.search(self.get("from") or "")
        return match.group(1) if match else None

    def raw_headers(self) -> str:
        return "".join(f"{name}:{value}\r\n" for name, value in self.headers)


def canonical(name: str) -> str:
    lowered = name.strip().lower()
    return _COMPACT.get(lowered, lowered)


def parse_sip(data: bytes, source: tuple[str, int] = ("127.0.0.1", 0)) -> SipMessage:
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        raise SipParseError("no end of headers")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError as exc:
        raise SipParseError("headers are not UTF-8") from exc
    parts = lines[0].split(" ", 2)
    if len(parts) != 3 or "SIP/2.0" not in (parts[0], parts[2]):
        raise SipParseError(f"not a SIP first line: {lines[0][:80]!r}")
    if parts[0] == "SIP/2.0" and not (parts[1].isdigit() and len(parts[1]) == 3):
        raise SipParseError(f"bad status code {parts[1][:10]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipParseError(f"bad header line {line[:80]!r}")
        headers.append((name.strip(), value))
    message = SipMessage((parts[0], parts[1], parts[2]), headers, "", source)
    length_text = message.get("content-length")
    length = int(length_text) if length_text and length_text.isdigit() else len(rest)
    if len(rest) < length:
        raise SipParseError(f"body shorter than Content-Length {length}")
    message.body = rest[:length].decode("utf-8", errors="replace")
    for required in ("via", "from", "to", "call-id", "cseq"):
        if message.get(required) is None:
            raise SipParseError(f"no {required} header")
    try:
        message.cseq  # noqa: B018 - validates the number
    except ValueError as exc:
        raise SipParseError("bad CSeq") from exc
    return message
