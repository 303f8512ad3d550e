"""The double's SIP side: callers that speak real SIP over UDP reach the B2B node like on the 3.5.9 server.

`OpenSIPSDouble.listen_sip()` opens this socket. A caller's INVITE becomes a UA session exactly as the scripted
`invite()` makes one, but the headers the app sees in the events are the ones that came over the wire, and what
the app does over MI goes back over the wire (`caller_leg.py`): its replies, its in-dialog requests and the BYE of
`ua_session_terminate`. The socket answers "100 Giving it a try" at once, refuses an INVITE without an SDP offer
(488, as the B2B node's script does), and answers what belongs to no call with 481.

Where the captures are silent (retransmission timers, `rport`, Record-Route in 1xx) the double follows RFC 3261,
RFC 3581 and the tm module's defaults, and says so. Where the app's extra headers go, and what 3.5.9 sends for
them without a body, is captured (15-17; `wire.app_lumps`, `wire.garbled_headers`). Like the rest of the double it
never imports `avc`, listens on loopback and sends only to loopback.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from demo.opensips_double.caller_leg import CallerLeg
from demo.opensips_double.sip_message import TAG_PARAM, SipMessage, SipParseError, parse_sip
from demo.opensips_double.wire import SERVER, T1, Datagrams, app_lumps, is_loopback

if TYPE_CHECKING:
    from demo.opensips_double.double import OpenSIPSDouble

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Sent:
    """A message this side sent and may retransmit; `stop` when the other side answered."""

    data: bytes
    target: tuple[str, int]
    handle: asyncio.TimerHandle | None = None
    done: bool = False


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
        if self._transport is None or not is_loopback(target[0]):
            return
        self.sent_messages.append(data)
        self._transport.sendto(data, target)

    def retransmit(self, data: bytes, target: tuple[str, int], *, cap: float, give_up: float) -> Sent:
        sent = Sent(data, target)
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

    def stop(self, sent: Sent) -> None:
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
        body: str | None = None,
        content_type: str | None = None,
        extra: str | None = None,
        contact: bool = False,
    ) -> bytes:
        """A reply in tm's layout: Via lines as received, Record-Route (101-299 to an INVITE), To (tagged), From,
        Call-ID, CSeq, then the app's lumps, Contact, Server, Content-Length."""
        vias = request.lines("via")
        if vias:
            vias[0] = self._with_rport(vias[0], request.source)
        to = request.get("to") or ""
        if to_tag is not None and TAG_PARAM.search(to) is None:
            to = f"{to};tag={to_tag}"
        lines = [f"SIP/2.0 {code} {reason}", *vias]
        if 100 < code < 300 and request.method == "INVITE" and request.to_tag is None:
            # A dialog-establishing reply carries the INVITE's Record-Route lines as they came, after the Vias
            # (capture 17's 200 OK; the 100 and capture 16's 503 have none). 1xx: RFC 3261 12.1.1, not captured.
            lines += request.lines("record-route")
        lines += [f"To: {to}", f"From: {request.get('from')}"]
        lines += [f"Call-ID: {request.call_id}", f"CSeq: {request.get('cseq')}"]
        head = "\r\n".join(lines) + "\r\n" + app_lumps(body, content_type, extra)  # before Contact (capture 16)
        tail = [f"Contact: <sip:{self.hostport}>"] if contact else []
        tail += [f"Server: {SERVER}", f"Content-Length: {len((body or '').encode())}"]
        return (head + "\r\n".join(tail) + "\r\n\r\n" + (body or "")).encode()

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
        try:
            self._received(data, addr)
        except Exception as exc:  # a bug in the double: keep serving, but make it visible
            log.exception("the OpenSIPS double's SIP socket failed on a datagram from %s:%d", addr[0], addr[1])
            self._double.internal_errors.append(f"SIP from {addr[0]}:{addr[1]}: {exc!r}")

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
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
