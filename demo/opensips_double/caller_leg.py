"""The caller's side of one UA session on the B2B node's SIP socket: what the app's MI commands turn into on
the wire, and what the caller's requests raise as events. The formats come from the SIPp logs of the captures
(`*_sipp_messages.log`):

- the app's replies go out with the session key as To-tag, the B2B Contact and the Server header, in the header
  order OpenSIPS writes (Via, To, From, Call-ID, CSeq, ...; captures 02, 08b, 09); a final reply to the INVITE
  is retransmitted until the ACK;
- the caller's ACK, BYE, CANCEL and in-dialog requests raise the captures' events with the request's own headers
  (Max-Forwards decremented on the initial INVITE only, as the script's `mf_process_maxfwd_header` does);
- BYE and other requests from the app leave from the B2B socket with OpenSIPS's layout (capture 03); when the
  INVITE came through a record-routing proxy (the edge), the 2xx copies its Record-Route and the node's requests
  carry the route set as Route and go back to that proxy (capture 17);
- the app's extra headers sit just before Contact, after the body's Content-Type; sent without a body they are
  garbage of the same length, as 3.5.9 sends them (captures 15-17, `wire.garbled_headers`);
- CANCEL gets "200 canceling" and the app must reply 487 itself (capture 08b).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from demo.opensips_double.sip_message import SipMessage, canonical
from demo.opensips_double.wire import SERVER, T1, T2, app_lumps, is_loopback, name_addr, uri_address

if TYPE_CHECKING:
    from demo.opensips_double.session import AppRequest, DoubleCall, Reply
    from demo.opensips_double.sip_socket import Sent, SipFront

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _ClientTx:
    """A request the app sent to the caller through the B2B node (BYE, INFO, re-INVITE, REFER...)."""

    method: str
    cseq: int
    branch: str
    on_final: Callable[[SipMessage], None]
    sent: Sent


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
    invite_final: Sent | None = None  # the final reply to the INVITE, retransmitted until the ACK
    server_replies: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (branch, method) -> last reply
    pending: dict[tuple[str, str], SipMessage] = field(default_factory=dict)  # (method, branch) waiting for the app
    client_txs: dict[str, _ClientTx] = field(default_factory=dict)  # by branch

    # -- what the app's MI commands turn into ---------------------------------------------------------------------

    def relayed_invite_headers(self) -> str:
        """The INVITE's headers as the NEW event carries them: Max-Forwards decremented by the script."""
        headers = []
        for name, value in self.invite.headers:
            if canonical(name) == "max-forwards" and value.strip().isdigit():
                value = f" {max(int(value) - 1, 0)}"
            headers.append((name, value))
        return "".join(f"{name}:{value}\r\n" for name, value in headers)

    def _reply(self, request: SipMessage, key: str, reply: Reply) -> bytes:
        return self.front.response(
            request,
            reply.code,
            reply.reason,
            to_tag=key,
            body=reply.body,
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

    @property
    def route_set(self) -> str:
        """The dialog's route set as a UAS learns it: the INVITE's Record-Route values, in order ("" without)."""
        return ",".join(self.invite.all("record-route"))

    def _route_lines(self) -> list[str]:
        # After Call-ID, before Max-Forwards (capture 17's REFER).
        return [f"Route: {self.route_set}"] if self.route_set else []

    def send_request(self, key: str, request: AppRequest, on_final: Callable[[SipMessage], None]) -> None:
        """A request from the B2B node to the caller, in capture 03's layout (the BYE), with the dialog's Route
        (capture 17's REFER)."""
        self.local_cseq = request.cseq
        branch = self.front.branch()
        target_uri = name_addr(self.invite.get("contact") or "")[1] or self.invite.first[1]
        host, port = uri_address(target_uri)
        # With a route set the request goes to the first Route, the proxy that record-routed the INVITE: where the
        # INVITE came from (capture 17: the edge). That address is the INVITE's source, not the Route URI's, whose
        # port (none: 5060) means nothing on a test's ephemeral ports. Without one it goes to the Contact, unless
        # that is off this machine (never dialled): then to the INVITE's source too (the caller is there).
        target = self.peer if self.route_set or not is_loopback(host) else (host, port)
        from_uri = name_addr(self.invite.get("to") or "")[1]
        lines = [
            f"{request.method} {target_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.front.hostport};branch={branch}",
            f"To: {self.invite.get('from')}",
            f"From: <{from_uri or self.invite.first[1]}>;tag={key}",
            f"CSeq: {request.cseq} {request.method}",
            f"Call-ID: {self.invite.call_id}",
            *self._route_lines(),
            "Max-Forwards: 70",
        ]
        body = request.body or ""
        lines += [f"Content-Length: {len(body.encode())}", f"User-Agent: {SERVER}"]
        # The body's type and the app's headers, then Contact (capture 17; without a body, capture 15's garbage).
        lumps = app_lumps(request.body, request.content_type, request.extra_headers)
        data = ("\r\n".join(lines) + "\r\n" + lumps + f"Contact: <sip:{self.front.hostport}>\r\n\r\n" + body).encode()
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
            *self._route_lines(),  # not captured: placed as in the REFER of capture 17
            "Max-Forwards: 70",
            "Content-Length: 0",
            f"User-Agent: {SERVER}",
        ]
        self.front.send(("\r\n".join(lines) + "\r\n\r\n").encode(), self.peer)
