"""The demo's scripted caller: a minimal SIP user agent client over UDP (RFC 3261), written from the outside.

`make demo` places its call with this, either into the OpenSIPS test double's SIP port or into a real OpenSIPS 3.5
edge proxy, so what it sends has to be right on the wire and not merely understood by our own double. It plays the
outside world and therefore shares no code with `avc` (nor with the OpenSIPS double): a misreading of RFC 3261 on
our side cannot be hidden by the same misreading here.

What it does:
- Messages are laid out like the SIPp caller's in the real captures under `tests/fixtures/opensips-3.5.9/`: Route
  (when the dialog has a route set), Via, From, To, Call-ID, CSeq, Contact, Max-Forwards, other headers,
  Content-Type, Content-Length (exact, in bytes).
- INVITE, BYE and CANCEL are client transactions with the RFC 3261 timers (A/B, E/F; T1 = 0.5 s, T2 = 4 s).
- A 2xx sets up the dialog: remote target from its Contact, route set from its Record-Route (reversed, the UAC
  rule), and is ACKed (again for every retransmission). A non-2xx final is ACKed hop by hop on the INVITE's branch.
- In-dialog requests go through loose routers (`;lr`), and through a strict router the RFC 3261 16.12.1.1 way.
- The far end may send BYE, re-INVITE, UPDATE, OPTIONS, INFO or NOTIFY inside the call; each gets its answer once,
  and a retransmitted request gets the same answer again without being processed twice.

What it deliberately does not do:
- TCP, TLS, `sips:` URIs, or DNS NAPTR/SRV (RFC 3263): a host name is only looked up for its address record, and a
  missing port means 5060.
- Digest authentication: a 401/407 fails the call with a message telling the demo's operator what to change.
- Redirects (3xx are failures), reliable provisionals (100rel/PRACK), session timers, requests of its own other
  than INVITE/ACK/BYE/CANCEL, and media: the SDP offer is the script's to write, RTP is `rtp_peer.py`'s.
- Taking calls: an out-of-dialog INVITE is declined. A second 2xx from a forking proxy is ACKed and hung up.
"""

# The call methods take `timeout` because a demo script states how long it will wait for the far end.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

log = logging.getLogger(__name__)

T1 = 0.5  # seconds: RTT estimate (RFC 3261 17.1.1.1)
T2 = 4.0  # seconds: longest interval between retransmissions of non-INVITE requests and of INVITE 2xx responses
MAX_FORWARDS = 70
BRANCH_COOKIE = "z9hG4bK"  # RFC 3261 8.1.1.7: marks a branch as unique per transaction
DIGEST_NOT_SUPPORTED = (
    "digest authentication is not supported by the demo caller; let the demo's source address through in edge.cfg"
)

EndedBy = Literal["remote", "local", "rejected", "timeout"]

_COMPACT_FORMS: Mapping[str, str] = MappingProxyType(
    {
        "i": "call-id",
        "f": "from",
        "t": "to",
        "v": "via",
        "m": "contact",
        "l": "content-length",
        "c": "content-type",
        "k": "supported",
        "s": "subject",
        "e": "content-encoding",
        "o": "event",
        "r": "refer-to",
        "b": "referred-by",
        "u": "allow-events",
        "x": "session-expires",
        "a": "accept-contact",
        "j": "reject-contact",
        "d": "request-disposition",
        "y": "identity",
        "n": "identity-info",
    }
)
# Headers whose values may be folded into one line as a comma-separated list (RFC 3261 7.3.1).
_LIST_HEADERS = frozenset(
    {"via", "route", "record-route", "contact", "allow", "supported", "require", "proxy-require", "unsupported"}
)
# Set by the caller itself, so a script passing them as extra headers would produce a broken or ambiguous request.
_OWN_HEADERS = frozenset(
    {"via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "content-type", "content-length", "route"}
)
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?")
_REQUEST_LINE = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/2\.0")
_SIP_URI = re.compile(
    r"(?P<scheme>sips?):(?:[^@]*@)?(?P<host>\[[^\]]+\]|[^:;?]+)(?::(?P<port>\d+))?(?P<params>;[^?]*)?"
)
_VIA = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*(?P<transport>\w+)\s+(?P<host>\[[^\]]+\]|[^\s:;]+)(?:\s*:\s*(?P<port>\d+))?"
)
_BARE_RPORT = re.compile(r";\s*rport(?=\s*(?:;|$))", re.IGNORECASE)
_ANSWERED_IN_DIALOG = frozenset({"OPTIONS", "INFO", "NOTIFY", "UPDATE"})
_UNDERSTOOD = frozenset({"INVITE", "ACK", "BYE", "CANCEL", *_ANSWERED_IN_DIALOG})
_ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY, UPDATE"


class SipError(Exception):
    """A SIP operation the caller cannot carry out in the call's current state."""


class SipCallFailed(SipError):
    """The INVITE got a final response of 300 or more; `response` is that response."""

    def __init__(self, response: SipMessage, message: str | None = None) -> None:
        self.response = response
        super().__init__(message or f"call failed: {response.code} {response.reason}")


# -- messages ---------------------------------------------------------------------------------------------------------


def _canonical(name: str) -> str:
    lowered = name.strip().lower()
    return _COMPACT_FORMS.get(lowered, lowered)


def _split_list(value: str) -> list[str]:
    """Split a comma-separated header value, leaving commas inside quotes and <...> alone."""
    parts: list[str] = []
    start = 0
    depth = 0
    quoted = False
    index = 0
    while index < len(value):
        char = value[index]
        if quoted:
            if char == "\\":
                index += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(value[start:index].strip())
            start = index + 1
        index += 1
    parts.append(value[start:].strip())
    return [part for part in parts if part]


@dataclass(slots=True)
class SipMessage:
    """One parsed SIP request (`method`, `uri` set) or response (`code`, `reason` set).

    `headers` keeps every header line as (name as written, value) in wire order; look headers up with `header` and
    `headers_all`, which understand compact names and comma-folded lists. `raw` is the whole datagram.
    """

    method: str | None
    uri: str | None
    code: int | None
    reason: str | None
    headers: list[tuple[str, str]]
    body: str
    raw: bytes

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def headers_all(self, name: str) -> list[str]:
        """Every value of a header in order, compact forms included; list headers (Via, Route, ...) split at commas."""
        wanted = _canonical(name)
        values: list[str] = []
        for header_name, value in self.headers:
            if _canonical(header_name) != wanted:
                continue
            if wanted in _LIST_HEADERS:
                values.extend(_split_list(value))
            else:
                values.append(value)
        return values

    def header(self, name: str) -> str | None:
        """The first value of a header (for Via: the topmost one), or None."""
        values = self.headers_all(name)
        return values[0] if values else None

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) of the CSeq header."""
        value = self.header("CSeq") or ""
        number, _, method = value.strip().partition(" ")
        if not number.isdigit() or not _TOKEN.fullmatch(method.strip()):
            raise ValueError(f"malformed CSeq {value!r}")
        return int(number), method.strip()

    @property
    def summary(self) -> str:
        """The start line, for logs and error messages."""
        return f"{self.method} {self.uri}" if self.is_request else f"{self.code} {self.reason}"


def parse_sip(data: bytes) -> SipMessage:
    """Parse one SIP message from a UDP datagram; raises ValueError saying what is wrong with a malformed one."""
    message_bytes = data.lstrip(b"\r\n")  # CRLFs before a message are keep-alives (RFC 3261 7.5, RFC 5626)
    head, separator, rest = message_bytes.partition(b"\r\n\r\n")
    if not separator:
        head, separator, rest = message_bytes.partition(b"\n\n")  # bare LF line ends: tolerated on receipt
    if not separator:
        raise ValueError("not a SIP message: no empty line ends the header section")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not a SIP message: header section is not UTF-8 ({exc})") from None
    start, *lines = re.split(r"\r?\n", text)
    method = uri = reason = None
    code = None
    if start.startswith("SIP/"):
        status = _STATUS_LINE.fullmatch(start)
        if status is None:
            raise ValueError(f"malformed status line {start[:80]!r}")
        code, reason = int(status.group(1)), status.group(2) or ""
    else:
        request = _REQUEST_LINE.fullmatch(start)
        if request is None:
            raise ValueError(f"malformed request line {start[:80]!r}")
        method, uri = request.group(1), request.group(2)
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise ValueError("header section starts with a continuation line")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name.strip()):
            raise ValueError(f"malformed header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    message = SipMessage(method, uri, code, reason, headers, "", data)
    for mandatory in _MANDATORY:
        if message.header(mandatory) is None:
            raise ValueError(f"{message.summary}: no {mandatory} header")
    cseq_method = message.cseq[1]
    if method is not None and cseq_method != method:
        raise ValueError(f"{message.summary}: CSeq method {cseq_method} differs from the request's")
    length = message.header("Content-Length")
    if length is None:
        body = rest  # allowed over UDP: the datagram ends the message
    else:
        if not length.isdigit():
            raise ValueError(f"{message.summary}: malformed Content-Length {length!r}")
        if len(rest) < int(length):
            raise ValueError(f"{message.summary}: truncated body: Content-Length says {length} bytes, got {len(rest)}")
        body = rest[: int(length)]  # bytes past Content-Length are discarded (RFC 3261 18.3)
    message.body = body.decode("utf-8", errors="replace")
    return message


def _serialize(start_line: str, headers: Sequence[tuple[str, str]], body: str = "") -> bytes:
    payload = body.encode("utf-8")
    lines = [start_line, *(f"{name}: {value}" for name, value in headers), f"Content-Length: {len(payload)}", "", ""]
    return "\r\n".join(lines).encode("utf-8") + payload


# -- header values and URIs -------------------------------------------------------------------------------------------


def _params(text: str) -> dict[str, str | None]:
    """`;a=1;lr` -> {"a": "1", "lr": None}; names lower-cased."""
    found: dict[str, str | None] = {}
    for item in text.split(";"):
        name, equals, value = item.partition("=")
        if name.strip():
            found[name.strip().lower()] = value.strip() if equals else None
    return found


def _name_addr(value: str) -> tuple[str, str]:
    """(URI, header parameters) of a From/To/Contact/Route value, name-addr or addr-spec form."""
    rest = value.strip()
    if rest.startswith('"'):
        index = 1
        while index < len(rest) and rest[index] != '"':
            index += 2 if rest[index] == "\\" else 1
        rest = rest[index + 1 :]
    if "<" in rest:
        opening = rest.index("<")
        closing = rest.find(">", opening)
        if closing < 0:
            raise ValueError(f"unterminated <...> in {value!r}")
        return rest[opening + 1 : closing].strip(), rest[closing + 1 :]
    # In addr-spec form every ';' parameter belongs to the header, not to the URI (RFC 3261 20.10).
    uri, semicolon, params = rest.strip().partition(";")
    return uri, semicolon + params


def _tag(value: str | None) -> str | None:
    if value is None:
        return None
    return _params(_name_addr(value)[1]).get("tag")


@dataclass(frozen=True, slots=True)
class _Target:
    host: str  # without IPv6 brackets
    port: int
    params: Mapping[str, str | None]


def _uri_target(uri: str) -> _Target:
    """Where a SIP URI says to send a request: maddr or host, the port (5060 when absent), and the URI's params."""
    match = _SIP_URI.fullmatch(uri.strip().split("?", 1)[0])
    if match is None:
        raise ValueError(f"not a sip: URI: {uri!r}")
    if match.group("scheme").lower() == "sips":
        raise ValueError(f"{uri!r} is a sips: URI, which needs TLS; the demo caller speaks UDP only")
    params = _params(match.group("params") or "")
    transport = params.get("transport")
    if transport is not None and transport.lower() != "udp":
        log.warning("%s asks for transport=%s; sending over UDP anyway", uri, transport)
    host = params.get("maddr") or match.group("host")
    return _Target(host.strip("[]"), int(match.group("port") or 5060), params)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Via:
    host: str
    port: int | None
    params: Mapping[str, str | None]

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port or 5060}"


def _parse_via(value: str) -> _Via:
    match = _VIA.match(value)
    if match is None:
        raise ValueError(f"malformed Via {value!r}")
    port = match.group("port")
    return _Via(match.group("host").strip("[]"), int(port) if port else None, _params(value[match.end() :]))


def _new_branch() -> str:
    return BRANCH_COOKIE + secrets.token_hex(8)


def _crlf(text: str) -> str:
    """SDP lines end in CRLF (RFC 4566 5); scripts written with bare LFs are fixed up, CRLF input is kept as is."""
    text = re.sub(r"\r?\n", "\r\n", text)
    return text if text.endswith("\r\n") else text + "\r\n"


# -- transactions -----------------------------------------------------------------------------------------------------


class _Retransmitter:
    """Re-sends one datagram at a doubling interval, optionally capped, until stopped (Timers A, E, G; 13.3.1.4)."""

    def __init__(
        self,
        send: Callable[[], None],
        first: float,
        cap: float | None,
        *,
        lifetime: float | None = None,
        on_expire: Callable[[], None] | None = None,
    ) -> None:
        self._send = send
        self._interval = first
        self._cap = cap
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(first, self._fire)
        self._on_expire = on_expire
        self._expiry = None if lifetime is None else self._loop.call_later(lifetime, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self.stop()
        if self._on_expire is not None:
            self._on_expire()

    def _fire(self) -> None:
        self._send()
        self._interval *= 2
        if self._cap is not None:
            self._interval = min(self._interval, self._cap)
        self._handle = self._loop.call_later(self._interval, self._fire)

    def hold_at_cap(self) -> None:
        """From the next retransmission on, wait the cap (T2) each time: RFC 3261 17.1.2.2, Proceeding state."""
        if self._cap is not None:
            self._interval = self._cap

    def stop(self) -> None:
        for handle in (self._handle, self._expiry):
            if handle is not None:
                handle.cancel()
        self._handle = self._expiry = None


class _ClientTransaction:
    """An INVITE or non-INVITE client transaction over UDP (RFC 3261 17.1).

    Every response is passed to `on_response`, except retransmitted finals of a non-INVITE request; for an INVITE
    they are passed on too, because the UA has to ACK each copy. `on_timeout` runs when Timer B or F fires.
    """

    def __init__(
        self,
        caller: SipCaller,
        key: tuple[str, str],
        data: bytes,
        destination: tuple[str, int],
        on_response: Callable[[SipMessage], None],
        on_timeout: Callable[[], None],
    ) -> None:
        self.key = key
        self.invite = key[1] == "INVITE"
        self.final: SipMessage | None = None
        self._caller = caller
        self._on_response = on_response
        self._on_timeout = on_timeout
        self._loop = asyncio.get_running_loop()
        caller._send(data, destination)
        self._retransmitter: _Retransmitter | None = _Retransmitter(
            lambda: caller._send(data, destination), caller._t1, None if self.invite else caller._t2
        )
        self._deadline: asyncio.TimerHandle | None = self._loop.call_later(64 * caller._t1, self._expire)
        self._linger: asyncio.TimerHandle | None = None

    def _expire(self) -> None:
        self._deadline = None
        self.stop()
        self._caller._forget(self)
        if self.final is None:
            self._on_timeout()

    def give_up_after(self, seconds: float) -> None:
        """RFC 3261 9.1: an INVITE that got a CANCEL ends if no final response comes within 64*T1."""
        if self.final is None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self._loop.call_later(seconds, self._expire)

    def receive(self, response: SipMessage) -> None:
        code = response.code or 0
        if self.final is not None:
            if self.invite:
                self._on_response(response)
            return
        if self.invite and self._retransmitter is not None:
            self._retransmitter.stop()  # any response ends Timer A
            self._retransmitter = None
        if code < 200:
            if self.invite and self._deadline is not None:
                self._deadline.cancel()  # Timer B only runs in the Calling state; a proxy's Timer C takes over
                self._deadline = None
            elif self._retransmitter is not None:
                self._retransmitter.hold_at_cap()
            self._on_response(response)
            return
        self.final = response
        self.stop()
        if self.invite:
            # Stay matchable for 64*T1 so retransmitted finals are ACKed again (Timer D; RFC 6026 Timer M for 2xx).
            self._linger = self._loop.call_later(64 * self._caller._t1, self._caller._forget, self)
        else:
            self._caller._forget(self)
        self._on_response(response)

    def stop(self) -> None:
        for handle in (self._deadline, self._linger):
            if handle is not None:
                handle.cancel()
        self._deadline = self._linger = None
        if self._retransmitter is not None:
            self._retransmitter.stop()
            self._retransmitter = None


@dataclass(slots=True)
class _ServerEntry:
    """The response we gave to one received request, kept to answer its retransmissions."""

    response: bytes
    destination: tuple[str, int]
    expiry: asyncio.TimerHandle


@dataclass(slots=True)
class _Dialog:
    remote_tag: str
    remote_target: str
    route_set: list[str]


@dataclass(frozen=True, slots=True)
class _Answer:
    code: int
    reason: str
    body: str = ""
    allow: bool = False


# -- the call ---------------------------------------------------------------------------------------------------------


class SipCall:
    """One outgoing call: its INVITE transaction, then its dialog. Made by `SipCaller.invite`."""

    def __init__(
        self,
        caller: SipCaller,
        *,
        target: str,
        destination: tuple[str, int],
        local: str,
        user: str,
        display_name: str | None,
        sdp: str,
        extra_headers: list[tuple[str, str]],
    ) -> None:
        self.call_id = f"{secrets.token_hex(10)}@{local.rsplit(':', 1)[0]}"
        self.local_tag = secrets.token_hex(6)
        self.remote_tag: str | None = None
        self.answer_sdp: str | None = None
        self.provisional: list[SipMessage] = []
        self.final: SipMessage | None = None
        self.received_requests: list[SipMessage] = []
        self.ended = False
        self.ended_by: EndedBy | None = None
        self._caller = caller
        self._target = target
        self._destination = destination
        self._local = local
        display = "" if display_name is None else '"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '" '
        self._from = f"{display}<sip:{user}@{local}>;tag={self.local_tag}"
        self._to = f"<{target}>"
        self._contact = f"<sip:{user}@{local}>"
        self._sdp = sdp
        self._extra = extra_headers
        self._invite_cseq = 1
        self._cseq = self._invite_cseq
        self._invite_branch = _new_branch()
        self._dialog: _Dialog | None = None
        self._acks: dict[str, tuple[bytes, tuple[str, int]]] = {}  # To-tag -> the ACK of that 2xx
        self._cancel_requested = False
        self._remote_cseq: int | None = None
        self._unacked: dict[int, _Retransmitter] = {}  # CSeq of a received INVITE -> our 2xx being retransmitted
        self._timeout_reason = ""
        self._progress = asyncio.Event()  # any response to the INVITE, or its timeout
        self._final_event = asyncio.Event()
        self._ended_event = asyncio.Event()
        invite = self._request(
            "INVITE", target, self._invite_branch, self._invite_cseq, self._to, body=sdp, content_type="application/sdp"
        )
        self._invite_tx = caller._start_transaction(
            (self._invite_branch, "INVITE"), invite, destination, self._on_invite_response, self._on_invite_timeout
        )

    def __repr__(self) -> str:
        return f"<SipCall {self.call_id} final={self.final and self.final.code} ended_by={self.ended_by}>"

    # -- waiting ----------------------------------------------------------------------------------------------------

    async def wait_final(self, timeout: float = 15.0) -> SipMessage:
        """The INVITE's final response. TimeoutError if none came (Timer B, or `timeout`); SipCallFailed on 401/407."""
        await self._wait(self._final_event, timeout, "final response to the INVITE")
        if self.final is None:
            raise TimeoutError(self._timeout_reason)
        if self.final.code in (401, 407):
            raise SipCallFailed(self.final, f"{self.final.code} {self.final.reason}: {DIGEST_NOT_SUPPORTED}")
        return self.final

    async def wait_answered(self, timeout: float = 15.0) -> SipMessage:
        """The 2xx that answered the call; SipCallFailed carrying the final response if it was 300 or more."""
        final = await self.wait_final(timeout)
        if (final.code or 0) >= 300:
            raise SipCallFailed(final, f"INVITE {self._target} failed: {final.code} {final.reason}")
        return final

    async def wait_ended(self, timeout: float = 5.0) -> None:
        await self._wait(self._ended_event, timeout, "end of the call")

    async def _wait(self, event: asyncio.Event, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            raise TimeoutError(f"call {self.call_id}: no {what} within {timeout} s") from None

    # -- ending -----------------------------------------------------------------------------------------------------

    async def bye(self, timeout: float = 5.0) -> SipMessage:
        """Hang up an answered call; returns the BYE's final response. The call counts as ended by us either way."""
        if self.ended:
            raise SipError(f"call {self.call_id} has already ended ({self.ended_by})")
        if self._dialog is None:
            raise SipError(f"call {self.call_id} is not answered, so it has no dialog to BYE; use cancel()")
        self._cseq += 1
        outcome = self._send_bye(self._dialog, self._cseq)
        try:
            async with asyncio.timeout(timeout):
                response = await outcome
        except TimeoutError:
            raise TimeoutError(f"call {self.call_id}: no final response to BYE within {timeout} s") from None
        finally:
            self._end("local")
        if response is None:
            raise TimeoutError(f"call {self.call_id}: BYE got no final response within 64*T1 (Timer F)")
        return response

    async def cancel(self, timeout: float = 5.0) -> SipMessage:
        """CANCEL the INVITE before it is answered; returns the CANCEL's response (the INVITE's 487 is ACKed itself).

        RFC 3261 9.1 forbids a CANCEL before the first provisional response, so this waits for one first.
        """
        if self.final is not None or self.ended:
            raise SipError(f"cannot CANCEL call {self.call_id}: the INVITE already has its outcome ({self._outcome()})")
        if self._cancel_requested:
            raise SipError(f"call {self.call_id} is already being cancelled")
        self._cancel_requested = True
        waiting_for = "provisional response to the INVITE (a CANCEL may only follow one)"
        try:
            async with asyncio.timeout(timeout):
                await self._progress.wait()
                if self.final is not None or self.ended:
                    hint = " (it is being hung up with BYE)" if self._dialog is not None else ""
                    raise SipError(f"cannot CANCEL call {self.call_id}: the INVITE got {self._outcome()} first{hint}")
                waiting_for = "final response to the CANCEL"
                response = await self._send_cancel()
        except TimeoutError:
            raise TimeoutError(f"call {self.call_id}: no {waiting_for} within {timeout} s") from None
        if response is None:
            raise TimeoutError(f"call {self.call_id}: CANCEL got no final response within 64*T1 (Timer F)")
        return response

    def _outcome(self) -> str:
        if self.final is not None:
            return f"{self.final.code} {self.final.reason}"
        return f"ended by {self.ended_by}"

    def _end(self, by: EndedBy) -> None:
        if not self.ended:
            self.ended = True
            self.ended_by = by
            self._ended_event.set()

    def _stop_timers(self) -> None:
        for retransmitter in self._unacked.values():
            retransmitter.stop()
        self._unacked.clear()

    # -- building requests ------------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        uri: str,
        branch: str,
        cseq: int,
        to: str,
        *,
        routes: Sequence[str] = (),
        contact: bool = True,
        body: str = "",
        content_type: str | None = None,
    ) -> bytes:
        headers = [("Route", route) for route in routes]
        headers += [
            ("Via", f"SIP/2.0/UDP {self._local};branch={branch};rport"),
            ("From", self._from),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if contact:
            headers.append(("Contact", self._contact))
        headers.append(("Max-Forwards", str(MAX_FORWARDS)))
        if method == "INVITE":
            headers += self._extra
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        return _serialize(f"{method} {uri} SIP/2.0", headers, body)

    def _dialog_request(self, dialog: _Dialog, method: str, cseq: int, branch: str) -> tuple[bytes, tuple[str, int]]:
        """A request inside `dialog` and where to send it (RFC 3261 12.2.1.1 and 8.1.2)."""
        uri = dialog.remote_target
        routes = list(dialog.route_set)
        next_hop = _uri_target(uri)
        if routes:
            first = _name_addr(routes[0])[0]
            next_hop = _uri_target(first)
            if "lr" not in next_hop.params:
                # A strict router (RFC 2543) routes on the Request-URI, so it must find itself there.
                uri = first
                routes = [*routes[1:], f"<{dialog.remote_target}>"]
        to = f"{self._to};tag={dialog.remote_tag}" if dialog.remote_tag else self._to
        data = self._request(method, uri, branch, cseq, to, routes=routes)
        return data, (next_hop.host, next_hop.port)

    def _send_bye(self, dialog: _Dialog, cseq: int) -> asyncio.Future[SipMessage | None]:
        """Start a BYE transaction; the future gets its final response, or None when Timer F fired."""
        branch = _new_branch()
        data, destination = self._dialog_request(dialog, "BYE", cseq, branch)
        return self._start_non_invite((branch, "BYE"), data, destination)

    def _send_cancel(self) -> asyncio.Future[SipMessage | None]:
        # RFC 3261 9.1: same Request-URI, Call-ID, From, To (no tag), CSeq number and branch as the INVITE.
        data = self._request("CANCEL", self._target, self._invite_branch, self._invite_cseq, self._to, contact=False)
        self._invite_tx.give_up_after(64 * self._caller._t1)
        return self._start_non_invite((self._invite_branch, "CANCEL"), data, self._destination)

    def _start_non_invite(
        self, key: tuple[str, str], data: bytes, destination: tuple[str, int]
    ) -> asyncio.Future[SipMessage | None]:
        outcome: asyncio.Future[SipMessage | None] = asyncio.get_running_loop().create_future()

        def on_response(response: SipMessage) -> None:
            if (response.code or 0) >= 200 and not outcome.done():
                outcome.set_result(response)

        def on_timeout() -> None:
            if not outcome.done():
                outcome.set_result(None)

        self._caller._start_transaction(key, data, destination, on_response, on_timeout)
        return outcome

    # -- responses to our INVITE ------------------------------------------------------------------------------------

    def _on_invite_response(self, response: SipMessage) -> None:
        code = response.code or 0
        self._progress.set()
        if code < 200:
            if self.final is None:
                self.provisional.append(response)
                tag = _tag(response.header("To"))
                if tag and self._dialog is None:
                    self.remote_tag = tag  # an early dialog
        elif code < 300:
            self._on_success(response)
        else:
            self._on_failure(response)

    def _on_success(self, response: SipMessage) -> None:
        tag = _tag(response.header("To")) or ""
        known = self._acks.get(tag)
        if known is not None:
            self._caller._send(*known)  # the 2xx was retransmitted: our ACK got lost
            return
        contact = response.header("Contact")
        if contact is None:
            log.warning("call %s: 2xx without Contact; using the Request-URI as remote target", self.call_id)
        dialog = _Dialog(
            remote_tag=tag,
            remote_target=_name_addr(contact)[0] if contact is not None else self._target,
            route_set=list(reversed(response.headers_all("Record-Route"))),
        )
        ack = self._dialog_request(dialog, "ACK", self._invite_cseq, _new_branch())
        self._acks[tag] = ack
        self._caller._send(*ack)
        if self._dialog is None and self.final is None:
            self._dialog = dialog
            self.remote_tag = tag
            self.answer_sdp = response.body or None
            self.final = response
            self._final_event.set()
            if self._cancel_requested:
                log.info("call %s: answered although we cancelled it; hanging up", self.call_id)
                self._cseq += 1
                self._send_bye(dialog, self._cseq).add_done_callback(lambda _: self._end("local"))
        else:
            # A forking proxy let a second callee answer too: we keep the first dialog and hang this one up.
            log.info("call %s: extra 2xx with To-tag %s; ACK and BYE it", self.call_id, tag)
            self._send_bye(dialog, self._invite_cseq + 1)

    def _on_failure(self, response: SipMessage) -> None:
        # RFC 3261 17.1.1.3: the ACK of a non-2xx is hop by hop, part of the INVITE transaction, so it reuses the
        # INVITE's branch and Request-URI and takes the response's To (with the tag).
        to = response.header("To") or self._to
        ack = self._request("ACK", self._target, self._invite_branch, self._invite_cseq, to, contact=False)
        self._caller._send(ack, self._destination)
        if self.final is None:
            self.final = response
            self._end("local" if self._cancel_requested else "rejected")
            self._final_event.set()

    def _on_invite_timeout(self) -> None:
        if self.final is not None:
            return
        if self._cancel_requested:
            self._timeout_reason = f"call {self.call_id}: INVITE got no final response within 64*T1 of the CANCEL"
        else:
            self._timeout_reason = f"call {self.call_id}: no response to INVITE {self._target} (Timer B, 64*T1)"
        self._end("local" if self._cancel_requested else "timeout")
        self._progress.set()
        self._final_event.set()

    # -- requests from the far end ----------------------------------------------------------------------------------

    def _matches(self, request: SipMessage) -> bool:
        """Whether a request carries this call's dialog ID (RFC 3261 12.2.2): Call-ID, our tag, their tag."""
        if _tag(request.header("To")) != self.local_tag:
            return False
        return self.remote_tag is None or _tag(request.header("From")) == self.remote_tag

    def _answer(self, request: SipMessage) -> _Answer:
        """Process a new request inside the dialog (retransmissions never get here) and say how to answer it."""
        if self.ended:
            return _Answer(481, "Call/Transaction Does Not Exist")
        cseq = request.cseq[0]
        if self._remote_cseq is not None and cseq < self._remote_cseq:
            return _Answer(500, "Server Internal Error")  # out of order (RFC 3261 12.2.2)
        self._remote_cseq = cseq
        self.received_requests.append(request)
        method = request.method
        if method == "BYE":
            self._end("remote")
            return _Answer(200, "OK")
        if method in ("INVITE", "UPDATE"):
            contact = request.header("Contact")
            if contact is not None and self._dialog is not None:
                self._dialog.remote_target = _name_addr(contact)[0]  # a target refresh (RFC 3261 12.2.2)
            if method == "INVITE" or request.body:
                # Our media did not change, so the same SDP, o= version included, is the answer (RFC 3264 8).
                return _Answer(200, "OK", self._sdp)
            return _Answer(200, "OK")
        return _Answer(200, "OK", allow=method == "OPTIONS")

    def _retransmit_until_ack(self, cseq: int, send: Callable[[], None]) -> None:
        """A UAS re-sends its 2xx to an INVITE until the ACK comes (RFC 3261 13.3.1.4)."""

        def give_up() -> None:
            if self._unacked.pop(cseq, None) is not None:
                log.warning("call %s: no ACK for our 2xx to re-INVITE %d", self.call_id, cseq)

        lifetime = 64 * self._caller._t1
        self._unacked[cseq] = _Retransmitter(
            send, self._caller._t1, self._caller._t2, lifetime=lifetime, on_expire=give_up
        )

    def _on_ack(self, request: SipMessage) -> None:
        retransmitter = self._unacked.pop(request.cseq[0], None)
        if retransmitter is not None:
            retransmitter.stop()
            self.received_requests.append(request)


# -- the user agent ---------------------------------------------------------------------------------------------------


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, caller: SipCaller) -> None:
        self._caller = caller

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._caller._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transaction timers decide what it means.
        log.debug("UDP error on the caller's socket: %s", exc)


class SipCaller:
    """One UDP SIP user agent bound on a local address; places calls with `invite`. Make it with `start`."""

    def __init__(self, *, t1: float = T1, t2: float = T2) -> None:
        self._t1 = t1
        self._t2 = t2
        self._transport: asyncio.DatagramTransport | None = None
        self._address: tuple[str, int] = ("", 0)
        self._family = socket.AF_INET
        self._calls: dict[str, SipCall] = {}
        self._client_tx: dict[tuple[str, str], _ClientTransaction] = {}
        self._server_tx: dict[tuple[str, ...], _ServerEntry] = {}
        self._resolved: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int = 0, *, t1: float = T1, t2: float = T2) -> SipCaller:
        """Bind the caller's UDP socket. `t1`/`t2` exist so tests can run the RFC timers fast."""
        caller = cls(t1=t1, t2=t2)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(caller), local_addr=(host, port))
        caller._transport = transport
        sockname = transport.get_extra_info("sockname")
        caller._address = (str(sockname[0]), int(sockname[1]))
        caller._family = socket.AF_INET6 if ":" in caller._address[0] else socket.AF_INET
        return caller

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    async def invite(
        self,
        target: str,
        sdp: str,
        *,
        extra_headers: Mapping[str, str] | None = None,
        user: str = "caller",
        display_name: str | None = "demo caller",
        subject: str | None = None,
    ) -> SipCall:
        """Send an INVITE with `sdp` as its offer to `target` (e.g. `sip:ai@127.0.0.1:5060`) and return at once."""
        if self._closed or self._transport is None:
            raise SipError("the caller is closed")
        next_hop = _uri_target(target)
        if any(char in target for char in ' \t\r\n<>"'):
            raise ValueError(f"target {target!r} is not a bare SIP URI")
        if not _USER.fullmatch(user):
            raise ValueError(f"user {user!r} is not a valid SIP user part")
        if display_name is not None and ("\r" in display_name or "\n" in display_name):
            raise ValueError("display_name must be one line")
        if not sdp.strip():
            raise ValueError("an SDP offer is required: the demo caller does not send offerless INVITEs")
        headers = _extra_headers(extra_headers, subject)
        address = await self._resolve(next_hop.host, next_hop.port)
        local = _hostport(self._local_host_towards(address), self._address[1])
        call = SipCall(
            self,
            target=target,
            destination=(next_hop.host, next_hop.port),
            local=local,
            user=user,
            display_name=display_name,
            sdp=_crlf(sdp),
            extra_headers=headers,
        )
        self._calls[call.call_id] = call
        return call

    async def close(self) -> None:
        """Close the socket and cancel every timer. Ends no call gracefully; pending waits run into their timeouts."""
        if self._closed:
            return
        self._closed = True
        for transaction in list(self._client_tx.values()):
            transaction.stop()
        self._client_tx.clear()
        for entry in self._server_tx.values():
            entry.expiry.cancel()
        self._server_tx.clear()
        for call in self._calls.values():
            call._stop_timers()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()

    # -- sending ----------------------------------------------------------------------------------------------------

    def _local_host_towards(self, address: str) -> str:
        """The address to put in Via and Contact: the bound one, or, when bound to any, the one routing picks."""
        bound = self._address[0]
        if not ipaddress.ip_address(bound).is_unspecified:
            return bound
        with socket.socket(self._family, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 9))  # a UDP connect only selects the route; nothing is sent
            return str(probe.getsockname()[0])

    async def _resolve(self, host: str, port: int) -> str:
        if _is_ip(host):
            return host
        cached = self._resolved.get(host)
        if cached is not None:
            return cached
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=self._family, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"{host} has no address")
        address = str(infos[0][4][0])
        self._resolved[host] = address
        return address

    def _send(self, data: bytes, destination: tuple[str, int]) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        host, port = destination
        address = host if _is_ip(host) else self._resolved.get(host)
        if address is not None:
            self._transport.sendto(data, (address, port))
            return
        task = asyncio.get_running_loop().create_task(self._resolve_and_send(data, host, port))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_and_send(self, data: bytes, host: str, port: int) -> None:
        try:
            address = await self._resolve(host, port)
        except OSError as exc:
            log.warning("cannot send to %s:%d: %s", host, port, exc)
            return
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, (address, port))

    def _start_transaction(
        self,
        key: tuple[str, str],
        data: bytes,
        destination: tuple[str, int],
        on_response: Callable[[SipMessage], None],
        on_timeout: Callable[[], None],
    ) -> _ClientTransaction:
        transaction = _ClientTransaction(self, key, data, destination, on_response, on_timeout)
        self._client_tx[key] = transaction
        return transaction

    def _forget(self, transaction: _ClientTransaction) -> None:
        if self._client_tx.get(transaction.key) is transaction:
            del self._client_tx[transaction.key]

    # -- receiving --------------------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if not data.strip(b"\r\n"):
            return  # a CRLF keep-alive
        try:
            message = parse_sip(data)
        except ValueError as exc:
            log.warning("dropped a datagram from %s:%d that is not SIP: %s", *source, exc)
            return
        try:
            if message.is_request:
                self._on_request(message, source)
            else:
                self._on_response(message)
        except ValueError as exc:  # a header we need is malformed (a Via, a Contact, ...)
            log.warning("dropped %s from %s:%d: %s", message.summary, *source, exc)
        except Exception:
            log.exception("error handling %s from %s:%d; dropped", message.summary, *source)

    def _on_response(self, response: SipMessage) -> None:
        vias = response.headers_all("Via")
        if len(vias) != 1:
            log.debug("dropped %s with %d Via values: not ours (RFC 3261 8.1.3.3)", response.summary, len(vias))
            return
        key = (_parse_via(vias[0]).params.get("branch") or "", response.cseq[1])
        transaction = self._client_tx.get(key)
        if transaction is None:
            log.debug("ignored %s for unknown transaction %s", response.summary, key)
            return
        transaction.receive(response)

    def _on_request(self, request: SipMessage, source: tuple[str, int]) -> None:
        call = self._calls.get(request.header("Call-ID") or "")
        if request.method == "ACK":
            # An ACK is never answered; one for a 2xx we sent stops its retransmission, any other is absorbed.
            if call is not None and call._matches(request):
                call._on_ack(request)
            return
        key = _server_key(request)
        entry = self._server_tx.get(key)
        if entry is not None:
            self._send(entry.response, entry.destination)  # a retransmission: same answer, no second processing
            return
        answer, call = self._answer(request, call)
        contact = call._contact if call is not None and answer.code < 300 else None
        data, destination = _response(request, source, answer, contact)
        self._send(data, destination)
        expiry = asyncio.get_running_loop().call_later(64 * self._t1, self._server_tx.pop, key, None)
        self._server_tx[key] = _ServerEntry(data, destination, expiry)
        if call is not None and request.method == "INVITE" and 200 <= answer.code < 300:
            call._retransmit_until_ack(request.cseq[0], lambda: self._send(data, destination))

    def _answer(self, request: SipMessage, call: SipCall | None) -> tuple[_Answer, SipCall | None]:
        method = request.method or ""
        if method not in _UNDERSTOOD:
            return _Answer(501, "Not Implemented", allow=True), None
        if method == "CANCEL":
            # We answer every INVITE at once, so a CANCEL can only find an already finished transaction.
            invite_key = (*_server_key(request)[:-1], "INVITE")
            if invite_key in self._server_tx:
                return _Answer(200, "OK"), None
            return _Answer(481, "Call/Transaction Does Not Exist"), None
        if _tag(request.header("To")) is None:
            if method == "OPTIONS":
                return _Answer(200, "OK", allow=True), None  # a capabilities query (RFC 3261 11.2)
            if method == "INVITE":
                return _Answer(603, "Decline"), None  # the demo caller places calls; it does not take them
            return _Answer(481, "Call/Transaction Does Not Exist"), None
        if call is None or not call._matches(request):
            return _Answer(481, "Call/Transaction Does Not Exist"), None
        return call._answer(request), call


def _server_key(request: SipMessage) -> tuple[str, ...]:
    """What identifies a received request's transaction (RFC 3261 17.2.3)."""
    via = _parse_via(request.header("Via") or "")
    branch = via.params.get("branch") or ""
    method = request.method or ""
    if branch.startswith(BRANCH_COOKIE):
        return (branch, via.sent_by, method)
    # RFC 2543 peers have no unique branch: the dialog, the CSeq and the top Via identify the transaction instead.
    cseq = str(request.cseq[0])
    return (
        request.header("Call-ID") or "",
        _tag(request.header("From")) or "",
        cseq,
        request.header("Via") or "",
        method,
    )


def _response(
    request: SipMessage, source: tuple[str, int], answer: _Answer, contact: str | None
) -> tuple[bytes, tuple[str, int]]:
    """Our response to `request` and where it goes (RFC 3261 8.2.6, 18.2.1/18.2.2, RFC 3581)."""
    via_lines = [value for name, value in request.headers if _canonical(name) == "via"]
    first_values = _split_list(via_lines[0])
    top = _parse_via(first_values[0])
    fixed = first_values[0]
    source_ip, source_port = source
    rport = "rport" in top.params
    bare_rport = rport and top.params["rport"] is None
    if bare_rport:
        fixed = _BARE_RPORT.sub(f";rport={source_port}", fixed, count=1)
    moved = not _is_ip(top.host) or ipaddress.ip_address(top.host) != ipaddress.ip_address(source_ip)
    if (bare_rport or moved) and "received" not in top.params:  # RFC 3581 4 wants received= with every rport
        fixed += f";received={source_ip}"
    if fixed != first_values[0]:
        via_lines[0] = ", ".join([fixed, *first_values[1:]])
    to = request.header("To") or ""
    if _tag(to) is None and answer.code > 100:
        to += f";tag={secrets.token_hex(6)}"  # a UAS response outside a dialog carries a To-tag (8.2.6.2)
    headers = [("Via", value) for value in via_lines]
    headers += [
        ("From", request.header("From") or ""),
        ("To", to),
        ("Call-ID", request.header("Call-ID") or ""),
        ("CSeq", request.header("CSeq") or ""),
    ]
    if contact is not None:
        headers.append(("Contact", contact))
    if answer.allow:
        headers.append(("Allow", _ALLOW))
    if answer.body:
        headers.append(("Content-Type", "application/sdp"))
    data = _serialize(f"SIP/2.0 {answer.code} {answer.reason}", headers, answer.body)
    # With rport the response goes back where the request came from; without, to the sent-by port (18.2.2). The
    # host is the source address either way: whenever sent-by names another, we added received= for it above.
    return data, (source_ip, source_port if rport else top.port or 5060)


def _extra_headers(extra: Mapping[str, str] | None, subject: str | None) -> list[tuple[str, str]]:
    headers = [("Subject", subject)] if subject is not None else []
    for name, value in (extra or {}).items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        canonical = _canonical(name)
        if canonical in _OWN_HEADERS or (subject is not None and canonical == "subject"):
            raise ValueError(f"{name} is set by the caller itself and cannot be passed as an extra header")
        headers.append((name, value))
    for name, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} must be one line")
    return headers
