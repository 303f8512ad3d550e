"""One inbound call as the B2B node's UA session (b2b_entities) and the caller play it; the app drives the other
side over MI.

Headers are built like the SIPp caller's messages that OpenSIPS relayed (Max-Forwards 69 on the initial INVITE, 70
in dialog, the B2B key as To-tag after the first reply, hop-by-hop ACK without Contact after a negative reply...).
With the same key, Call-ID, tag and SIPp pid, scripted calls reproduce captures 02, 03, 08a, 08b and 09 byte for
byte.

Calls are scripted from the caller's side (`invite`, `bye`, `cancel`, `reinvite`, `info`, `options`), the app's
in-dialog requests are recorded, and for REFER the double can play the transferee (NOTIFY with sipfrag). Or a
caller that speaks SIP places them over UDP (`sip_socket.py`): the events then carry the headers that came over the
wire while the app's replies and requests go back on it (`leg`).
"""

# The helpers take a `timeout` argument because a test states how long it is willing to wait for the app.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from demo.opensips_double.edge_dialog import DLG_CONFIRMED, DLG_CONFIRMED_NA, DLG_DELETED, DLG_EARLY, DLG_UNCONFIRMED
from demo.opensips_double.errors import CallGone, DoubleUsageError
from demo.opensips_double.event_interface import UA_SESSION_EVENT
from demo.opensips_double.mi_params import MIFault
from demo.opensips_double.wire import B2B_CONTACT, compact_json, sip_hostport

if TYPE_CHECKING:
    from demo.opensips_double.caller_leg import CallerLeg
    from demo.opensips_double.double import OpenSIPSDouble
    from demo.opensips_double.edge_dialog import EdgeDialog
    from demo.opensips_double.sip_message import SipMessage

log = logging.getLogger(__name__)
_REFER_TO = re.compile(r"^(?:Refer-To|r)[ \t]*:", re.IGNORECASE | re.MULTILINE)

_T = TypeVar("_T")

# OpenSIPS `enum request_method` bit values: b2b_entities reports the last request it SENT as `last_method`.
METHOD_BITS: Mapping[str, int] = {
    "INVITE": 1,
    "CANCEL": 2,
    "ACK": 4,
    "BYE": 8,
    "INFO": 16,
    "OPTIONS": 32,
    "UPDATE": 64,
    "REGISTER": 128,
    "MESSAGE": 256,
    "SUBSCRIBE": 512,
    "NOTIFY": 1024,
    "PRACK": 2048,
    "REFER": 4096,
    "PUBLISH": 8192,
}

# b2b_entities `b2b_state_t`, as `ua_session_list` prints it.
B2B_NEW, B2B_EARLY, B2B_CONFIRMED, B2B_ESTABLISHED, B2B_MODIFIED, B2B_TERMINATED = 1, 3, 4, 5, 6, 7

_REASONS: Mapping[int, str] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    603: "Decline",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply the app sent with `ua_session_reply`, or one the double sent to the app's request."""

    code: int
    reason: str
    body: str | None = None
    content_type: str | None = None
    extra_headers: str | None = None


@dataclass(frozen=True, slots=True)
class AppRequest:
    """An in-dialog request the app sent with `ua_session_update`."""

    method: str
    cseq: int
    body: str | None
    content_type: str | None
    extra_headers: str | None


@dataclass(slots=True)
class _ServerTransaction:
    """A request from the caller's side that waits for the app's final reply."""

    method: str
    cseq: int
    branch: str
    final: asyncio.Future[Reply]
    replies: list[Reply] = field(default_factory=list)


class CallState(StrEnum):
    """Where a scripted call stands, from the caller's point of view."""

    OFFERED = "offered"  # NEW sent, no reply yet
    EARLY = "early"  # the app sent a provisional reply
    ANSWERED = "answered"  # the app sent 2xx, no ACK yet (only with auto_ack=False)
    CONFIRMED = "confirmed"  # 2xx ACKed
    CANCELLED = "cancelled"  # the caller sent CANCEL
    REJECTED = "rejected"  # the app answered the INVITE with 3xx-6xx
    ENDED = "ended"  # BYE either way, app terminate, or an OpenSIPS restart


class DoubleCall:
    """One inbound call as the caller (and OpenSIPS) play it; the app drives the other side over MI."""

    def __init__(
        self,
        double: OpenSIPSDouble,
        *,
        key: str,
        local_index: int,
        call_id: str,
        sipp_call: tuple[int, int],
        from_uri: str,
        display_name: str | None,
        from_tag: str,
        to_uri: str,
        sdp: str,
        extra_headers: Mapping[str, str],
        auto_ack: bool,
        dialog: EdgeDialog,
        leg: CallerLeg | None = None,
    ) -> None:
        self._double = double
        self.leg = leg  # a caller on the SIP socket; None when the test scripts the caller
        self.key = key
        self.call_id = call_id
        self.from_uri = from_uri
        self.display_name = display_name
        self.from_tag = from_tag
        self.to_uri = to_uri
        self.offer_sdp = sdp
        self.extra_headers = dict(extra_headers)
        self.auto_ack = auto_ack
        self.state = CallState.OFFERED
        self.answer_sdp: str | None = None
        self.replies: list[Reply] = []  # every reply the app sent to the initial INVITE
        self.app_requests: list[AppRequest] = []
        # Replies the caller gives to the app's requests, by method; default 200 OK. REFER follows refer_outcome.
        self.app_request_replies: dict[str, tuple[int, str]] = {}
        # REFER: the transferee answers 202, NOTIFYs "100 Trying", then the outcome (200: hangs up the AI leg,
        # 486: stays); None: no final NOTIFY, the transfer never completes.
        self.refer_outcome: int | None = 200
        self.notify_replies: list[Reply] = []
        self.terminated_by_app = False
        self.terminate_extra_headers: str | None = None
        self.events: list[bytes] = []  # every event datagram emitted for this call, in order
        self._local_index = local_index
        self._dialog = dialog
        self._sent_by = sip_hostport(from_uri)
        self._contact = dialog.caller_contact
        self._branch_prefix = f"z9hG4bK-{sipp_call[1]}-{sipp_call[0]}-"
        self._next_branch = 8  # SIPp numbers branches by scenario message; 0, 5 and 7 are INVITE, ACK and BYE
        self._b2b_state = B2B_NEW
        self._caller_cseq = 1
        self._local_cseq = 1
        self._last_invite_cseq = 1
        self._last_method = 0
        self._last_reply_code = 0
        self._invite_tx = _ServerTransaction("INVITE", 1, self._branch(0), double._loop.create_future())
        self._server_tx: dict[str, _ServerTransaction] = {"INVITE": self._invite_tx}
        self._ended = asyncio.Event()
        self._app_request_waiters: list[tuple[str, asyncio.Future[AppRequest]]] = []
        self._consumed: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what a test scripts --------------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    async def wait_final(self, timeout: float = 5.0) -> Reply:
        """The app's final reply to the initial INVITE (provisional ones are in `replies`)."""
        return await self._wait(self._invite_tx.final, timeout)

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Until the call ends: the caller's BYE, the app's `ua_session_terminate`, or an OpenSIPS restart."""
        await asyncio.wait_for(self._ended.wait(), timeout)

    async def wait_app_request(self, method: str, timeout: float = 5.0) -> AppRequest:
        """The app's next `ua_session_update` of `method` not yet returned by this helper (REFER, INFO...)."""
        method = method.upper()
        seen = self._consumed.get(method, 0)
        matching = [request for request in self.app_requests if request.method == method]
        if len(matching) > seen:
            self._consumed[method] = seen + 1
            return matching[seen]
        future: asyncio.Future[AppRequest] = self._double._loop.create_future()
        self._app_request_waiters.append((method, future))
        return await self._wait(future, timeout)

    async def ack(self) -> None:
        """The caller's ACK for the 2xx, when the call was placed with `auto_ack=False`."""
        if self.state is not CallState.ANSWERED:
            raise DoubleUsageError(f"nothing to ACK in state {self.state}")
        self._send_ack_2xx(1, self._branch(5))

    async def bye(self) -> None:
        """The caller hangs up: TERMINATED(BYE); the session is gone afterwards, as on the real server."""
        if self.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            raise DoubleUsageError(f"the caller cannot send BYE in state {self.state} (use cancel() before 2xx)")
        self._caller_bye()

    async def cancel(self) -> None:
        """The caller gives up before the answer: TERMINATED(CANCEL). OpenSIPS sends no 487: the app must."""
        if self.state not in (CallState.OFFERED, CallState.EARLY):
            raise DoubleUsageError(f"the caller cannot CANCEL in state {self.state}")
        headers = self._caller_headers(
            "CANCEL", self._invite_tx.cseq, self._invite_tx.branch, to_tag=False, contact=False
        )
        self._on_cancel(headers)

    def _on_cancel(self, headers: str) -> None:
        self.state = CallState.CANCELLED
        self._b2b_state = B2B_TERMINATED
        self._emit("TERMINATED", "CANCEL", "", headers)

    async def reinvite(self, sdp: str, timeout: float = 5.0) -> Reply:
        """A re-INVITE from the caller: UPDATED(INVITE) with the SDP; returns the app's final reply (then ACKs)."""
        self._require_confirmed("re-INVITE")
        return await self._request("INVITE", sdp, "application/sdp", {}, timeout)

    async def info(self, body: str, content_type: str = "application/dtmf-relay", timeout: float = 5.0) -> Reply:
        """An INFO from the caller: UPDATED(INFO); returns the app's final reply."""
        self._require_confirmed("INFO")
        return await self._request("INFO", body, content_type, {}, timeout)

    async def options(self, timeout: float = 5.0) -> Reply:
        """An in-dialog OPTIONS from the caller: UPDATED(OPTIONS); returns the app's final reply."""
        self._require_confirmed("OPTIONS")
        return await self._request("OPTIONS", "", None, {}, timeout)

    async def request(
        self,
        method: str,
        body: str = "",
        content_type: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Reply:
        """Any other in-dialog request from the caller (UPDATE, MESSAGE, NOTIFY...): UPDATED(method)."""
        method = method.upper()
        if method in ("INVITE", "ACK", "BYE", "CANCEL"):
            raise DoubleUsageError(f"use the dedicated helper for {method}")
        self._require_confirmed(method)
        return await self._request(method, body, content_type, extra_headers or {}, timeout)

    # -- the app's side, reached through MI ----------------------------------------------------------------------

    def _app_reply(self, method: str, reply: Reply) -> None:
        tx = self._server_tx.get(method)
        if tx is None or tx.final.done() or not 100 <= reply.code <= 699:
            raise MIFault(500, "Failed to send reply")
        tx.replies.append(reply)
        self._last_reply_code = reply.code
        if tx is self._invite_tx:
            self.replies.append(reply)
            self._on_initial_reply(reply)
        elif self.leg is not None:
            self.leg.reply_in_dialog(method, tx.branch, self.key, reply)
        if reply.code < 200:
            return
        del self._server_tx[method]
        tx.final.set_result(reply)
        if method == "INVITE" and tx is not self._invite_tx:
            # A re-INVITE: the caller ACKs whatever the answer, and the session is established again.
            self._b2b_state = B2B_ESTABLISHED
            if self.leg is not None:
                return
            if reply.code < 300:
                self._later(lambda: self._send_ack_2xx(tx.cseq, None))
            else:
                self._later(lambda: self._send_ack_negative(tx))

    def _on_initial_reply(self, reply: Reply) -> None:
        dialog = self._dialog
        if self.leg is not None:
            self.leg.reply_to_invite(self.key, reply)  # a caller on the wire ACKs for itself
        if reply.code < 200:
            if self.state is CallState.OFFERED:
                self.state = CallState.EARLY
                self._b2b_state = B2B_EARLY
            if dialog.state == DLG_UNCONFIRMED:
                dialog.state = DLG_EARLY
            dialog.callee_tag = self.key
            return
        dialog.callee_tag = self.key
        if reply.code < 300:
            self.answer_sdp = reply.body
            dialog.callee_sdp = reply.body
            dialog.state = DLG_CONFIRMED_NA
            dialog.start_ts = int(time.time())
            if self.state is CallState.CANCELLED:
                if self.leg is None:
                    self._later(lambda: self._send_ack_2xx(1, self._branch(5)))
                return
            self.state = CallState.ANSWERED
            self._b2b_state = B2B_CONFIRMED
            if self.auto_ack and self.leg is None:
                self._later(lambda: self._send_ack_2xx(1, self._branch(5)))
            return
        dialog.state = DLG_DELETED
        if self.state is not CallState.CANCELLED:
            self.state = CallState.REJECTED
        self._b2b_state = B2B_TERMINATED
        # The transaction layer ACKs a negative final reply hop by hop; with flag `a` it is reported (captures 08b/09).
        if self.leg is None:
            self._later(lambda: self._send_ack_negative(self._invite_tx))

    def _app_request(self, method: str, body: str | None, content_type: str | None, extra: str | None) -> None:
        if self.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            raise MIFault(500, "Failed to send sequential request")
        self._local_cseq += 1
        self._last_method = METHOD_BITS.get(method, 16384)
        request = AppRequest(method, self._local_cseq, body, content_type, extra)
        self.app_requests.append(request)
        for waiter in list(self._app_request_waiters):
            if waiter[0] == method and not waiter[1].done():
                waiter[1].set_result(request)
                self._app_request_waiters.remove(waiter)
                self._consumed[method] = self._consumed.get(method, 0) + 1
                break
        if self.leg is not None:
            self._send_on_wire(request)
            return
        if method == "BYE":
            # The caller answers 200 and the session is over; `ua_session_terminate` is the usual way.
            self.terminated_by_app = True
            self._later(lambda: self._answer_app_request(request, 200, "OK"))
            self._later(lambda: self._end(f"the app sent BYE on {self.key}"))
            return
        code, reason = self.app_request_replies.get(method, (202, "Accepted") if method == "REFER" else (200, "OK"))
        if method == "REFER" and not _REFER_TO.search(extra or ""):
            # A REFER without Refer-To (3.5.9 garbles headers sent without a body, capture 15) is refused by the
            # caller's side: SIPp answered 501 there; a PBX answers 400 (RFC 3515 2.4.1).
            code, reason = 400, "Missing Refer-To"
        # A re-INVITE from the app gets the caller's current SDP back; b2b_entities ACKs it itself, unreported.
        body = self.offer_sdp if method == "INVITE" and 200 <= code < 300 else ""
        self._later(lambda: self._answer_app_request(request, code, reason, body))
        if method == "INVITE" and 200 <= code < 300:
            self._last_method = METHOD_BITS["ACK"]
        if method == "REFER" and 200 <= code < 300:
            self._spawn(self._play_transferee())

    def _app_terminate(self, extra_headers: str | None) -> None:
        # OpenSIPS sends BYE to the caller when the call was answered, and raises no event (captures 03, 07, 08b).
        self.terminated_by_app = True
        self.terminate_extra_headers = extra_headers
        if self.leg is not None and self.state in (CallState.ANSWERED, CallState.CONFIRMED):
            self._local_cseq += 1
            bye = AppRequest("BYE", self._local_cseq, None, None, extra_headers)
            self.leg.send_request(self.key, bye, lambda _reply: None)  # its 200 raises no event either
        self._end(f"the app terminated {self.key}")

    def _send_on_wire(self, request: AppRequest) -> None:
        assert self.leg is not None

        def answered(response: SipMessage) -> None:
            body = response.body if request.method == "INVITE" else ""
            reason = response.first[2]
            self._answer_app_request(request, response.code, reason, body, response.raw_headers())

        self.leg.send_request(self.key, request, answered)
        if request.method == "BYE":
            self.terminated_by_app = True
            self._end(f"the app sent BYE on {self.key}")

    # -- building and emitting ------------------------------------------------------------------------------------

    def _branch(self, index: int) -> str:
        return f"{self._branch_prefix}{index}"

    def _new_branch(self) -> str:
        self._next_branch += 1
        return self._branch(self._next_branch)

    def _from_header(self) -> str:
        name = f'"{self.display_name}" ' if self.display_name else ""
        return f"{name}<{self.from_uri}>;tag={self.from_tag}"

    def _caller_headers(
        self,
        method: str,
        cseq: int,
        branch: str,
        *,
        to_tag: bool = True,
        contact: bool = True,
        max_forwards: int = 70,
        extra: Mapping[str, str] | None = None,
        body: str = "",
        content_type: str | None = None,
    ) -> str:
        """A request from the caller as OpenSIPS relays its headers (the SIPp scenarios' layout)."""
        lines = [
            f"Via: SIP/2.0/UDP {self._sent_by};branch={branch}",
            f"From: {self._from_header()}",
            f"To: <{self.to_uri}>" + (f";tag={self.key}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        if contact:
            lines.append(f"Contact: <{self._contact}>")
        lines.append(f"Max-Forwards: {max_forwards}")
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        if body:
            lines.append(f"Content-Type: {content_type or 'application/sdp'}")
            lines.append(f"Content-Length: {len(body.encode()):5d}")  # SIPp pads [len] to 5 columns
        else:
            lines.append("Content-Length: 0")
        return "".join(line + "\r\n" for line in lines)

    def _reply_headers(self, method: str, cseq: int, body: str, content_type: str | None) -> str:
        """The caller's reply to an app request, as the UAC-side events of capture 13 show replies."""
        rng = self._double._rng
        lines = [
            f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{rng.getrandbits(16):x}.{rng.getrandbits(32):08x}.0",
            f"From: <{self.to_uri}>;tag={self.key}",
            f"To: {self._from_header()}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <{self._contact}>",
        ]
        if body:
            lines.append(f"Content-Type: {content_type or 'application/sdp'}")
            lines.append(f"Content-Length: {len(body.encode()):5d}")
        else:
            lines.append("Content-Length: 0")
        return "".join(line + "\r\n" for line in lines)

    def _emit(
        self, event_type: str, method: str, body: str, headers: str, status: int = 0, reason: str | None = None
    ) -> None:
        datagram = compact_json(
            {
                "jsonrpc": "2.0",
                "method": UA_SESSION_EVENT,
                "params": {
                    "key": self.key,
                    "event_type": event_type,
                    "entity_type": "UAS",
                    "status": status,
                    "reason": reason,
                    "method": method,
                    "body": body,
                    "headers": headers,
                },
            }
        )
        self.events.append(datagram)
        self._double.send_raw_event(datagram)

    def _emit_new(self) -> None:
        if self.leg is not None:
            self._emit("NEW", "INVITE", self.offer_sdp, self.leg.relayed_invite_headers())
            return
        headers = self._caller_headers(
            "INVITE",
            1,
            self._invite_tx.branch,
            to_tag=False,
            max_forwards=69,  # the initial INVITE went through OpenSIPS's script, which decremented it
            extra=self.extra_headers,
            body=self.offer_sdp,
            content_type="application/sdp",
        )
        self._emit("NEW", "INVITE", self.offer_sdp, headers)

    def _send_ack_2xx(self, cseq: int, branch: str | None) -> None:
        if self.ended:
            return
        self._on_ack_2xx(self._caller_headers("ACK", cseq, branch or self._new_branch()))

    def _on_ack_2xx(self, headers: str) -> None:
        if self.ended:
            return
        if self.state is CallState.ANSWERED:
            self.state = CallState.CONFIRMED
            self._b2b_state = B2B_ESTABLISHED
            self._dialog.state = DLG_CONFIRMED
        self._emit("UPDATED", "ACK", "", headers)

    def _send_ack_negative(self, tx: _ServerTransaction) -> None:
        self._on_ack_negative(self._caller_headers("ACK", tx.cseq, tx.branch, contact=False))

    def _on_ack_negative(self, headers: str) -> None:
        if self.ended:
            return
        self._emit("UPDATED", "ACK", "", headers)

    def _answer_app_request(
        self, request: AppRequest, code: int, reason: str, body: str = "", headers: str | None = None
    ) -> None:
        if self.ended and request.method != "BYE":
            return
        event_type = "EARLY" if code < 200 else "ANSWERED" if code < 300 else "REJECTED"
        content_type = "application/sdp" if body and request.method == "INVITE" else None
        if headers is None:
            headers = self._reply_headers(request.method, request.cseq, body, content_type)
        self._emit(event_type, request.method, body, headers, status=code, reason=reason)

    async def _play_transferee(self) -> None:
        """The caller's phone after a REFER it accepted: NOTIFY progress, then maybe hang up the AI leg.

        The task's first step runs after the callback that sends the 202 (both were scheduled in that order).
        """
        await self._send_notify("SIP/2.0 100 Trying\r\n", "active;expires=60")
        outcome = self.refer_outcome
        if outcome is None or self.ended:
            return
        final = f"SIP/2.0 {outcome} {_REASONS.get(outcome, 'Unknown')}\r\n"
        await self._send_notify(final, "terminated;reason=noresource")
        if 200 <= outcome < 300 and not self.ended:
            await self.bye()  # the transferee is now talking to the agent and leaves the AI

    async def _send_notify(self, sipfrag: str, subscription_state: str) -> None:
        if self.ended:
            return
        extra = {"Event": "refer", "Subscription-State": subscription_state}
        timeout = self._double.notify_reply_timeout
        try:
            reply = await self._request("NOTIFY", sipfrag, "message/sipfrag", extra, timeout)
        except TimeoutError:
            log.warning("the app did not answer the NOTIFY on %s within %.1f s", self.key, timeout)
            return
        except (CallGone, DoubleUsageError) as exc:  # the call ended, or another REFER's NOTIFY is pending
            log.warning("NOTIFY on %s not sent or not answered: %s", self.key, exc)
            return
        self.notify_replies.append(reply)

    async def _request(
        self, method: str, body: str, content_type: str | None, extra: Mapping[str, str], timeout: float
    ) -> Reply:
        if method in self._server_tx:
            raise DoubleUsageError(f"a {method} is already waiting for the app's reply")
        self._caller_cseq += 1
        branch = self._new_branch()
        headers = self._caller_headers(
            method, self._caller_cseq, branch, extra=extra, body=body, content_type=content_type
        )
        tx = self._on_request(method, self._caller_cseq, branch, body, headers)
        try:
            return await self._wait(tx.final, timeout)
        finally:
            if not tx.final.done():
                self._server_tx.pop(method, None)

    def _on_request(self, method: str, cseq: int, branch: str, body: str, headers: str) -> _ServerTransaction:
        """An in-dialog request from the caller: UPDATED(method); the app's reply finishes the transaction."""
        self._caller_cseq = cseq
        if method == "INVITE":
            self._b2b_state = B2B_MODIFIED
            self._last_invite_cseq = cseq
        tx = _ServerTransaction(method, cseq, branch, self._double._loop.create_future())
        self._server_tx[method] = tx
        self._emit("UPDATED", method, body, headers)
        return tx

    def _caller_bye(self) -> None:
        self._caller_cseq += 1
        branch = self._branch(7) if self._caller_cseq == 2 else self._new_branch()
        self._on_bye(self._caller_headers("BYE", self._caller_cseq, branch))

    def _on_bye(self, headers: str) -> None:
        if self.ended:
            return
        self._emit("TERMINATED", "BYE", "", headers)
        self._end(f"the caller hung up {self.key}")

    # -- bookkeeping -------------------------------------------------------------------------------------------------

    def _refusal(self, method: str) -> tuple[int, str] | None:
        """Why a caller's in-dialog request from the wire cannot be taken now, as the SIP answer to give."""
        if self.state is not CallState.CONFIRMED:
            return 481, "Call/Transaction Does Not Exist"
        if method in self._server_tx:
            return 491, "Request Pending"  # one of its kind still waits for the app (RFC 3261 14.2)
        return None

    def _require_confirmed(self, what: str) -> None:
        if self.state is not CallState.CONFIRMED:
            raise DoubleUsageError(f"the caller cannot send {what} in state {self.state}")

    async def _wait(self, future: asyncio.Future[_T], timeout: float) -> _T:
        ended = asyncio.ensure_future(self._ended.wait())
        waitables: set[asyncio.Future[Any]] = {future, ended}
        try:
            done, _ = await asyncio.wait(waitables, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if future in done:
            return future.result()
        if ended in done:
            raise CallGone(f"call {self.key} ended ({self.state}) while waiting")
        raise TimeoutError(f"nothing from the app on {self.key} within {timeout} s")

    def _later(self, action: Callable[[], None]) -> None:
        # After the MI response is on its way: OpenSIPS answers the MI request before the caller's ACK arrives.
        def guarded() -> None:
            try:
                action()
            except Exception as exc:  # a bug in the double: keep serving, but make it visible
                log.exception("the double's step for %s failed", self.key)
                self._double.internal_errors.append(f"{self.key}: {exc!r}")

        self._double._loop.call_soon(guarded)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = self._double._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("the double's script for %s failed", self.key, exc_info=exc)
            self._double.internal_errors.append(f"{self.key}: {exc!r}")

    def _end(self, why: str) -> None:
        if self.ended:
            return
        log.debug("%s", why)
        self.state = CallState.ENDED
        self._dialog.state = DLG_DELETED
        self._double._forget(self)
        if self.leg is not None:
            self.leg.front.forget(self.call_id)
        self._ended.set()
        for _, waiter in self._app_request_waiters:
            if not waiter.done():
                waiter.set_exception(CallGone(f"call {self.key} ended"))
                waiter.exception()  # mark retrieved: nobody may be waiting any more
        self._app_request_waiters.clear()

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    @property
    def _b2b_contact(self) -> str:
        return f"sip:{self.leg.front.hostport}" if self.leg is not None else B2B_CONTACT

    def _session_item(self) -> dict[str, Any]:
        """This session as `ua_session_list` prints it (captures 02, 05, 08a, 09, 14); key order matters."""
        item: dict[str, Any] = {
            "dlg": self._local_index,
            "logic_key": "",
            "mod_name": "b2b_entities",
            "state": self._b2b_state,
            "last_invite_cseq": self._last_invite_cseq,
            "last_method": self._last_method,
        }
        if self._last_reply_code:  # printed only once a reply was sent
            item["last_reply_code"] = self._last_reply_code
        item.update(
            {
                "db_flag": 2,
                "ruri": self.to_uri,
                "callid": self.call_id,
                "from": f'"{self.display_name}"' if self.display_name else "",
                "from_uri": self.from_uri,
                "from_tag": self.from_tag,
                "to": "",
                "to_uri": self.to_uri,
                "to_tag": self.key,
                "cseq": {"caller": self._caller_cseq, "callee": self._local_cseq},
            }
        )
        if self.leg is not None and self.leg.route_set:  # the INVITE came record-routed (capture 14)
            item["route_set"] = {"caller": self.leg.route_set}
        item["contact"] = {"caller": self._contact, "callee": self._b2b_contact}
        item["send_sock"] = "127.0.0.1"
        if self._server_tx:  # a request from the caller still waits for the app's final reply (capture 08a)
            item["tm_tran"] = "uas"
        return item
