"""The double's SIP side: callers that speak real SIP over UDP reach the B2B node like on the 3.5.9 server.

`OpenSIPSDouble.listen_sip()` opens this socket. A caller's INVITE becomes a UA session exactly as the scripted
`invite()` makes one, but the headers the app sees in the events are the ones that came over the wire, and what
the app does over MI goes back over the wire: its replies, its in-dialog requests and the BYE of
`ua_session_terminate`. The formats come from the SIPp logs of the captures (`*_sipp_messages.log`):

- "100 Giving it a try" at once, then the app's replies with the session key as To-tag, the B2B Contact and the
  Server header, in the header order OpenSIPS writes (Via, To, From, Call-ID, CSeq, ...; captures 02, 08b, 09);
- the caller's ACK, BYE, CANCEL and in-dialog requests raise the captures' events with the request's own headers
  (Max-Forwards decremented on the initial INVITE only, as the script's `mf_process_maxfwd_header` does);
- BYE and other requests from the app leave from the B2B socket with OpenSIPS's layout (capture 03);
- CANCEL gets "200 canceling" and the app must reply 487 itself (capture 08b).

Where the captures are silent (retransmission timers, `rport`, where extra headers go) the double follows RFC 3261,
RFC 3581 and the tm module's defaults, and says so. Like the rest of the double it never imports `avc`, listens on
loopback and sends only to loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from demo.opensips_double import AppRequest, DoubleCall, OpenSIPSDouble, Reply

log = logging.getLogger(__name__)

SERVER = "OpenSIPS (3.5.9 (x86_64/linux))"
T1 = 0.5
T2 = 4.0
_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length"}
_COMPACT.update({"c": "content-type", "k": "supported", "s": "subject"})
_TAG = re.compile(r";\s*tag=([^;>\s]+)", re.IGNORECASE)


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
        return [value.strip() for header, value in self.headers if _canonical(header) == wanted]

    def lines(self, name: str) -> list[str]:
        """The raw header lines for `name`, as they came (OpenSIPS copies Via lines into replies unchanged)."""
        wanted = name.lower()
        return [f"{header}:{value}" for header, value in self.headers if _canonical(header) == wanted]

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
        match = _TAG.search(self.get("to") or "")
        return match.group(1) if match else None

    @property
    def from_tag(self) -> str | None:
        match = _TAG.search(self.get("from") or "")
        return match.group(1) if match else None

    def raw_headers(self) -> str:
        return "".join(f"{name}:{value}\r\n" for name, value in self.headers)


def _canonical(name: str) -> str:
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


def sip_hostport(uri: str) -> str:
    """`sip:user@host:port;params` -> `host:port` (default port 5060)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    hostport = rest.split("@", 1)[-1].split(";", 1)[0]
    return hostport if ":" in hostport else f"{hostport}:5060"


def name_addr(value: str) -> tuple[str | None, str]:
    """`"Name" <sip:uri>;tag=x` -> ("Name", "sip:uri"); a bare URI has no display name."""
    if "<" in value:
        name, _, rest = value.partition("<")
        display = name.strip().strip('"') or None
        return display, rest.split(">", 1)[0]
    return None, value.split(";", 1)[0].strip()


def _uri_address(uri: str) -> tuple[str, int]:
    host, _, port = sip_hostport(uri).rpartition(":")
    return host, int(port) if port.isdigit() else 5060


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(slots=True)
class _Sent:
    """A message this side sent and may retransmit; `stop` when the other side answered."""

    data: bytes
    target: tuple[str, int]
    handle: asyncio.TimerHandle | None = None
    done: bool = False


@dataclass(slots=True)
class _ClientTx:
    """A request the app sent to the caller through the B2B node (BYE, INFO, re-INVITE, REFER...)."""

    method: str
    cseq: int
    branch: str
    on_final: Callable[[SipMessage], None]
    sent: _Sent


@dataclass(slots=True)
class CallerLeg:
    """The caller's side of one UA session on the wire: its INVITE, its address and the transactions in flight."""

    front: SipFront
    invite: SipMessage
    peer: tuple[str, int]
    call: DoubleCall | None = None
    local_cseq: int = 1
    invite_responses: dict[int, bytes] = field(default_factory=dict)
    last_invite_response: bytes | None = None
    invite_code: int = 0  # the code of that response
    invite_final: _Sent | None = None  # the final reply to the INVITE, retransmitted until the ACK
    server_replies: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (branch, method) -> last reply
    pending: dict[tuple[str, str], SipMessage] = field(default_factory=dict)  # (method, branch) waiting for the app
    client_txs: dict[str, _ClientTx] = field(default_factory=dict)  # by branch

    # -- what the app's MI commands turn into ---------------------------------------------------------------------

    def relayed_invite_headers(self) -> str:
        """The INVITE's headers as the NEW event carries them: Max-Forwards decremented by the script."""
        headers = []
        for name, value in self.invite.headers:
            if _canonical(name) == "max-forwards" and value.strip().isdigit():
                value = f" {max(int(value) - 1, 0)}"
            headers.append((name, value))
        return "".join(f"{name}:{value}\r\n" for name, value in headers)

    def _reply(self, request: SipMessage, key: str, reply: Reply) -> bytes:
        return self.front.response(
            request,
            reply.code,
            reply.reason,
            to_tag=key,
            body=reply.body or "",
            content_type=reply.content_type,
            extra=reply.extra_headers,
            contact=True,
        )

    def reply_to_invite(self, key: str, reply: Reply) -> None:
        data = self._reply(self.invite, key, reply)
        self.last_invite_response = data
        self.invite_code = reply.code
        if reply.code >= 200:
            # RFC 3261 13.3.1.4 and 17.2.1: a final reply goes again (T1 doubling up to T2) until the ACK comes.
            self.invite_final = self.front.retransmit(data, self.peer, cap=T2, give_up=64 * T1)
        else:
            self.front.send(data, self.peer)

    def reply_in_dialog(self, method: str, branch: str, key: str, reply: Reply) -> None:
        request = self.pending.get((method, branch))
        if request is None:
            return
        if reply.code >= 200:
            del self.pending[(method, branch)]
        data = self._reply(request, key, reply)
        self.server_replies[(request.branch, method)] = data
        self.front.send(data, self.peer)

    def send_request(self, key: str, request: AppRequest, on_final: Callable[[SipMessage], None]) -> None:
        """A request from the B2B node to the caller, in capture 03's layout (the BYE)."""
        self.local_cseq = request.cseq
        branch = self.front.branch()
        target_uri = name_addr(self.invite.get("contact") or "")[1] or self.invite.first[1]
        host, port = _uri_address(target_uri)
        # A Contact off this machine is never dialled; the source address of the INVITE is (the caller is there).
        target = (host, port) if _is_loopback(host) else self.peer
        from_uri = name_addr(self.invite.get("to") or "")[1]
        lines = [
            f"{request.method} {target_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.front.hostport};branch={branch}",
            f"To: {self.invite.get('from')}",
            f"From: <{from_uri or self.invite.first[1]}>;tag={key}",
            f"CSeq: {request.cseq} {request.method}",
            f"Call-ID: {self.invite.call_id}",
            "Max-Forwards: 70",
        ]
        body = request.body or ""
        lines.append(f"Content-Length: {len(body.encode())}")
        lines += [f"User-Agent: {SERVER}", f"Contact: <sip:{self.front.hostport}>"]
        # Not captured: b2b_entities adds the body's type and the app's extra headers after its own.
        if body:
            lines.append(f"Content-Type: {request.content_type or 'application/sdp'}")
        if request.extra_headers:
            lines += [line for line in request.extra_headers.split("\r\n") if line]
        data = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
        sent = self.front.retransmit(data, target, cap=T2, give_up=64 * T1)
        self.client_txs[branch] = _ClientTx(request.method, request.cseq, branch, on_final, sent)

    def close(self) -> None:
        if self.invite_final is not None:
            self.front.stop(self.invite_final)
        for tx in self.client_txs.values():
            self.front.stop(tx.sent)
        self.client_txs.clear()

    # -- what the caller sends ----------------------------------------------------------------------------------

    def on_request(self, message: SipMessage) -> None:
        call = self.call
        if call is None:
            return
        method = message.method
        answered = self.server_replies.get((message.branch, method))
        if answered is not None:  # a retransmission: the same answer again, nothing raised twice
            self.front.send(answered, self.peer)
            return
        if method == "ACK":
            self._on_ack(message)
            return
        if method == "CANCEL":
            self._on_cancel(message)
            return
        if message.to_tag != call.key:
            self.front.reply(message, 481, "Call/Transaction Does Not Exist")
            return
        if method == "BYE":
            data = self.front.response(message, 200, "OK", contact=True)
            self.server_replies[(message.branch, method)] = data
            self.front.send(data, self.peer)
            call._on_bye(message.raw_headers())
            return
        if (method, message.branch) in self.pending:
            return  # still with the app; the caller retransmits until it answers
        refusal = call._refusal(method)
        if refusal is not None:
            self.front.reply(message, *refusal)
            return
        self.pending[(method, message.branch)] = message
        call._on_request(method, message.cseq[0], message.branch, message.body, message.raw_headers())

    def on_response(self, message: SipMessage) -> None:
        tx = self.client_txs.get(message.branch)
        if tx is None or message.cseq[1] != tx.method:
            log.debug("a response for no transaction of %s: %s", self.invite.call_id, message.first)
            return
        if message.code < 200:
            self.front.stop(tx.sent)  # provisional: the request arrived, Timer E stops (RFC 3261 17.1.2.2)
            return
        del self.client_txs[message.branch]
        self.front.stop(tx.sent)
        if tx.method == "INVITE" and message.code >= 200:
            self._ack_response(message)
        tx.on_final(message)

    def _on_ack(self, message: SipMessage) -> None:
        call = self.call
        assert call is not None
        if message.cseq[0] != self.invite.cseq[0]:
            call._on_ack_2xx(message.raw_headers())  # a re-INVITE's answer: b2b_entities reports it like the first
            return
        final = self.invite_final
        if final is None:
            return  # nothing final sent yet, or this ACK was already taken: a retransmission is absorbed
        self.front.stop(final)
        self.invite_final = None
        if self.invite_code >= 300:
            call._on_ack_negative(message.raw_headers())
        else:
            call._on_ack_2xx(message.raw_headers())

    def _on_cancel(self, message: SipMessage) -> None:
        call = self.call
        assert call is not None
        if message.branch != self.invite.branch or self.invite_code >= 200:
            self.front.reply(message, 481, "Call/Transaction Does Not Exist")
            return
        # tm answers the CANCEL itself with its own To-tag; the INVITE's 487 is the app's job (capture 08b).
        data = self.front.response(message, 200, "canceling", to_tag=self.front.tm_tag())
        self.server_replies[(message.branch, "CANCEL")] = data
        self.front.send(data, self.peer)
        call._on_cancel(message.raw_headers())

    def _ack_response(self, message: SipMessage) -> None:
        """The ACK b2b_entities sends for the answer to its own re-INVITE (never reported to the app)."""
        to_uri = name_addr(message.get("contact") or self.invite.get("contact") or "")[1]
        lines = [
            f"ACK {to_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.front.hostport};branch={self.front.branch()}",
            f"To: {message.get('to')}",
            f"From: {message.get('from')}",
            f"CSeq: {message.cseq[0]} ACK",
            f"Call-ID: {message.call_id}",
            "Max-Forwards: 70",
            "Content-Length: 0",
            f"User-Agent: {SERVER}",
        ]
        self.front.send(("\r\n".join(lines) + "\r\n\r\n").encode(), self.peer)


class Datagrams(asyncio.DatagramProtocol):
    """One of the double's UDP sockets (SIP, MI): every datagram to one callback."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None], name: str) -> None:
        self._on_datagram = on_datagram
        self._name = name

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s socket: %s", self._name, exc)


class SipFront:
    """The B2B node's SIP socket (udp, loopback): INVITEs become UA sessions of the double."""

    def __init__(self, double: OpenSIPSDouble) -> None:
        self._double = double
        self._transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = (double.host, 0)
        self.legs: dict[str, CallerLeg] = {}  # by Call-ID
        self.received_messages: list[SipMessage] = []
        self.sent_messages: list[bytes] = []
        self.dropped: list[str] = []  # why each unreadable datagram was dropped

    @property
    def hostport(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    async def start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Datagrams(self.received, "SIP"), local_addr=(self._double.host, port)
        )
        self._transport = transport
        self.address = transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        for leg in self.legs.values():
            leg.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- sending ----------------------------------------------------------------------------------------------------

    def send(self, data: bytes, target: tuple[str, int]) -> None:
        if self._transport is None or not _is_loopback(target[0]):
            return
        self.sent_messages.append(data)
        self._transport.sendto(data, target)

    def retransmit(self, data: bytes, target: tuple[str, int], *, cap: float, give_up: float) -> _Sent:
        sent = _Sent(data, target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + give_up

        def again(interval: float) -> None:
            if sent.done or loop.time() + interval > deadline:
                return
            self.send(data, target)
            sent.handle = loop.call_later(min(interval * 2, cap), again, min(interval * 2, cap))

        self.send(data, target)
        sent.handle = loop.call_later(T1, again, T1)
        return sent

    def stop(self, sent: _Sent) -> None:
        sent.done = True
        if sent.handle is not None:
            sent.handle.cancel()

    def branch(self) -> str:
        rng = self._double._rng
        return f"z9hG4bK{rng.getrandbits(16):x}.{rng.getrandbits(32):08x}.0"

    def tm_tag(self) -> str:
        rng = self._double._rng
        return f"{rng.getrandbits(16):x}-{rng.getrandbits(128):032x}"

    def response(
        self,
        request: SipMessage,
        code: int,
        reason: str,
        *,
        to_tag: str | None = None,
        body: str = "",
        content_type: str | None = None,
        extra: str | None = None,
        contact: bool = False,
    ) -> bytes:
        """A reply in tm's layout: Via lines as received, To (tagged), From, Call-ID, CSeq, then the lumps."""
        vias = request.lines("via")
        if vias:
            vias[0] = self._with_rport(vias[0], request.source)
        to = request.get("to") or ""
        if to_tag is not None and _TAG.search(to) is None:
            to = f"{to};tag={to_tag}"
        lines = [f"SIP/2.0 {code} {reason}", *vias, f"To: {to}", f"From: {request.get('from')}"]
        lines += [f"Call-ID: {request.call_id}", f"CSeq: {request.get('cseq')}"]
        if body:
            lines.append(f"Content-Type: {content_type or 'application/sdp'}")
        if contact:
            lines.append(f"Contact: <sip:{self.hostport}>")
        if extra:
            lines += [line for line in extra.split("\r\n") if line]  # not captured: the app's lumps after Contact
        lines += [f"Server: {SERVER}", f"Content-Length: {len(body.encode())}"]
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def reply(self, request: SipMessage, code: int, reason: str) -> None:
        self.send(self.response(request, code, reason), request.source)

    def _with_rport(self, via_line: str, source: tuple[str, int]) -> str:
        # RFC 3581: a bare `rport` is filled with the source port, and `received` added when the host differs.
        if not re.search(r";\s*rport(?=;|$|\s)", via_line):
            return via_line
        line = re.sub(r";\s*rport(?=;|$|\s)", f";rport={source[1]}", via_line, count=1)
        sent_by = via_line.split(None, 2)[2].split(";", 1)[0] if len(via_line.split(None, 2)) > 2 else ""
        if sent_by.split(":", 1)[0] != source[0]:
            line += f";received={source[0]}"
        return line

    # -- receiving ------------------------------------------------------------------------------------------------

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._double.down or data.strip() == b"":  # keep-alive CRLFs, or a dead process
            return
        try:
            message = parse_sip(data, addr)
        except (SipParseError, ValueError) as exc:
            log.warning("SIP datagram from %s:%d dropped: %s", addr[0], addr[1], exc)
            self.dropped.append(str(exc))
            return
        self.received_messages.append(message)
        leg = self.legs.get(message.call_id)
        if not message.is_request:
            if leg is not None:
                leg.on_response(message)
            return
        if message.method == "INVITE" and message.to_tag is None:
            self._initial_invite(message, leg)
            return
        if leg is None or leg.call is None:
            if message.method != "ACK":  # an ACK is never answered
                self.reply(message, 481, "Call/Transaction Does Not Exist")
            return
        leg.on_request(message)

    def _initial_invite(self, message: SipMessage, leg: CallerLeg | None) -> None:
        if leg is not None:
            if message.branch == leg.invite.branch:  # a retransmission: the last answer again
                self.send(leg.last_invite_response or self.response(message, 100, "Giving it a try"), leg.peer)
            else:
                self.reply(message, 482, "Loop Detected")
            return
        if not message.body or "application/sdp" not in (message.get("content-type") or "").lower():
            # The B2B node's script (ai-node.cfg) takes offers only; a late-offer INVITE is refused.
            self.reply(message, 488, "Not Acceptable Here")
            return
        self.send(self.response(message, 100, "Giving it a try"), message.source)
        leg = CallerLeg(self, message, message.source)
        self.legs[message.call_id] = leg
        try:
            leg.call = self._double._call_from_wire(leg)
        except Exception:
            del self.legs[message.call_id]
            self.reply(message, 500, "Server Internal Error")
            raise

    def forget(self, call_id: str) -> None:
        """The session is over; its leg keeps answering retransmissions for a while, as tm's wait timer does."""
        leg = self.legs.get(call_id)
        if leg is None:
            return

        def drop() -> None:
            leg.close()
            if self.legs.get(call_id) is leg:
                del self.legs[call_id]

        asyncio.get_running_loop().call_later(5.0, drop)
