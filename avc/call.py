"""The life of one call, from the NEW event to the last released resource.

Everything that changes a call happens in the call's own task, one item at a time: E_UA_SESSION events
from OpenSIPS and commands from the application (hang up, transfer) go through one queue. So a BYE that
races a transfer, or a CANCEL that races the answer, is handled in a defined order with no locks.

Paths to the end, and what each owes OpenSIPS:
- TERMINATED(BYE): nothing (b2b_entities answered the BYE);
- application hang-up, RTP timeout, max duration, failed media: `ua_session_terminate` (no event follows);
- TERMINATED(CANCEL): reply 487 to the INVITE, then `ua_session_terminate` (OpenSIPS sends no 487 itself).
Whatever the path, `_release` frees the port, the stream, the application task and the call's memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from avc.app import AppFactory, CallApp, TransferResult
from avc.config import Settings
from avc.logs import CALL_ID, CALL_KEY
from avc.media.clock import MediaClock
from avc.media.dtmf import DtmfError, parse_dtmf_info
from avc.media.g711 import codec_by_name
from avc.media.ports import PortPool, PortPoolExhausted
from avc.media.rtp import RtpSender
from avc.media.stream import MediaParams, RtpStream
from avc.metrics import Metrics, RtpCounters
from avc.opensips.events import UaSessionEvent
from avc.opensips.mi import MIError, OpenSIPSMI, UaSessionInfo
from avc.opensips.mirror import DialogMirror
from avc.opensips.sdp import (
    Negotiated,
    NoCommonCodec,
    SdpError,
    SessionDescription,
    build_answer,
    build_offer,
    negotiate,
    parse_sdp,
)
from avc.opensips.sip import CallFacts, SipHeaders, SipParseError, call_facts, format_extra_headers, uri_user

log = logging.getLogger(__name__)

TRANSFER_TIMEOUT = 30.0
# After a successful transfer the transferee normally hangs up our leg; if it does not, we do.
TRANSFER_BYE_GRACE = 5.0
# A call whose session the node lost (an OpenSIPS restart) ends after this much silence on its RTP, not the usual
# timeout: the caller hanging up is the only thing that stops RTP, and no BYE will be reported.
SESSION_LOST_RTP_TIMEOUT = 2.0
# How long the caller's side has to answer the re-INVITE that takes a stranded call back.
RECOVERY_ANSWER_TIMEOUT = 4.0
SIPFRAG_STATUS = re.compile(r"^SIP/2\.0\s+(\d{3})", re.MULTILINE)


class CallState(StrEnum):
    ANSWERING = "answering"
    ACTIVE = "active"
    TRANSFERRING = "transferring"
    ENDED = "ended"


class Reject(Exception):
    """A NEW session the connector answers with an error code instead of 200."""

    def __init__(self, code: int, reason: str, detail: str) -> None:
        super().__init__(f"{code} {reason}: {detail}")
        self.code = code
        self.reason = reason
        self.detail = detail


@dataclass
class _Hangup:
    reason: str


@dataclass
class _Transfer:
    target: str
    context: Mapping[str, str]
    result: asyncio.Future[TransferResult]


_Item = UaSessionEvent | _Hangup | _Transfer


@dataclass(frozen=True)
class CallServices:
    """What every call of a connector shares."""

    settings: Settings
    mi: OpenSIPSMI
    metrics: Metrics
    ports: PortPool
    clock: MediaClock
    mirror: DialogMirror
    app_factory: AppFactory
    # Injectable so tests can start a stream just below the sequence/timestamp wrap.
    rtp_sender_factory: Callable[[], RtpSender] = RtpSender


class Call:
    """One call from its NEW event to its last released resource: owns the call's RTP port and stream, its
    application (engine chain, echo or tone) and the session's state towards OpenSIPS. The `Connector` creates it
    and delivers its events; the call's own task handles them, and the application's commands, one at a time."""

    def __init__(
        self,
        new: UaSessionEvent | None,
        services: CallServices,
        on_end: Callable[[Call], None],
        *,
        stranded: UaSessionInfo | None = None,
    ) -> None:
        if (new is None) == (stranded is None):
            raise ValueError("a call starts from a NEW event or from a stranded session, not both")
        self._new = new
        self._stranded = stranded  # a session a lost connector left answered on the node: taken back by re-INVITE
        self._svc = services
        self._on_end = on_end
        origin = new or stranded
        assert origin is not None
        self.key = origin.key
        self.state = CallState.ANSWERING
        self.outcome = ""
        self.created = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self._facts: CallFacts | None = None
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._stream: RtpStream | None = None
        self._port: int | None = None
        self._app: CallApp | None = None
        self._app_task: asyncio.Task[None] | None = None
        self._offer: SessionDescription | None = None
        self._negotiated: Negotiated | None = None
        self._sdp_session_id = secrets.randbelow(2**31)
        self._sdp_version = 0
        self._transfer: _Transfer | None = None
        self._final_sent = False  # a final reply to the INVITE has been sent (or is in flight)
        self._transfer_deadline: asyncio.TimerHandle | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._session_lost = False
        self.recovered = False
        self.rejecting = False
        self.task: asyncio.Task[None] | None = None

    # -- CallControl, for the application ---------------------------------------------------------

    @property
    def facts(self) -> CallFacts:
        assert self._facts is not None
        return self._facts

    @property
    def media(self) -> RtpStream:
        assert self._stream is not None
        return self._stream

    async def hangup(self, reason: str = "app_hangup") -> None:
        self._inbox.put_nowait(_Hangup(reason))

    async def transfer(self, target: str | None = None, context: Mapping[str, str] | None = None) -> TransferResult:
        result: asyncio.Future[TransferResult] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Transfer(target or self._svc.settings.transfer_uri, dict(context or {}), result))
        return await result

    @property
    def rtp_counters(self) -> RtpCounters | None:
        stream = self._stream
        return stream.counters if stream is not None and not stream.closed else None

    def mirror(self, name: str, value: str) -> None:
        if self._facts is not None:
            self._svc.mirror.push(self._facts.call_id, name, value)

    # -- entry points for the connector -------------------------------------------------------------

    def deliver(self, event: UaSessionEvent) -> None:
        self._inbox.put_nowait(event)

    def session_lost(self) -> None:
        """The node no longer holds this session (it restarted): no event will tell of the caller's hang-up, so
        the call ends, as `session_lost`, once the caller's RTP stops for `SESSION_LOST_RTP_TIMEOUT` seconds."""
        if self.state is CallState.ENDED or self._session_lost:
            return
        log.warning("session %s is gone from the node; the call ends when its RTP stops", self.key)
        self._session_lost = True
        if self._stream is not None:
            self._stream.shorten_timeout(SESSION_LOST_RTP_TIMEOUT)

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._run(), name=f"call {self.key}")
        return self.task

    def snapshot(self) -> dict[str, Any]:
        facts = self._facts
        stream = self._stream
        now = time.time()
        return {
            "key": self.key,
            "call_id": facts.call_id if facts else None,
            "state": str(self.state),
            "duration_s": round(now - (self.answered_at or self.created), 1),
            "ani_last4": facts.ani[-4:] if facts and facts.ani else None,
            "codec": stream.params.codec.name if stream else None,
            "rtp_port": self._port,
            "direction": stream.params.direction if stream else None,
            "rtp": vars(stream.counters).copy() if stream else None,
            **(self._app.snapshot() if self._app is not None else {}),
        }

    # -- the call's task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        CALL_KEY.set(self.key)
        try:
            if not await (self._answer() if self._stranded is None else self._recover()):
                return
            while self.state is not CallState.ENDED:
                item = await self._inbox.get()
                await self._handle(item)
        except asyncio.CancelledError:
            # Connector shutdown: hang up cleanly so OpenSIPS does not keep a dead session, and never leave a
            # NEW unanswered. A 200 OK in flight counts as answered: OpenSIPS may already have sent it.
            if self.state is not CallState.ENDED:
                if self._final_sent:
                    await self._terminate("shutdown")
                else:
                    await self._reject(503, "Service Unavailable")
            raise
        except Exception:
            log.exception("call failed; hanging up")
            if self.state is not CallState.ENDED:
                await self._terminate("internal_error")
        finally:
            await self._release()

    async def _recover(self) -> bool:
        """Take back a call a lost connector left answered on the node: a re-INVITE moves its media to a port of
        ours, then the app starts as for a new call (the banking dialogue resumes from its Redis context, with an
        apology). Anything that goes wrong ends the session with a BYE: never silence."""
        session = self._stranded
        assert session is not None
        self._facts = _facts_of_session(session)
        CALL_ID.set(self._facts.call_id)
        self._final_sent = True  # answered long ago: from here on, only a BYE ends it
        try:
            self._port = self._acquire_port()
        except Reject as rej:
            log.warning("stranded session %s not recovered: %s", self.key, rej)
            await self._terminate("recovery_refused")
            return False
        self._sdp_version += 1
        offer = build_offer(self._svc.settings.advertised_ip, self._port, self._sdp_session_id, self._sdp_version)
        try:
            await self._svc.mi.ua_session_update(self.key, "INVITE", body=offer)
        except MIError as exc:
            log.warning("re-INVITE of stranded session %s failed: %s", self.key, exc)
            self._finish("session_lost")
            return False
        answer = await self._await_answer("INVITE", RECOVERY_ANSWER_TIMEOUT)
        if answer is None:
            return False  # the caller hung up meanwhile
        if answer.event_type != "ANSWERED" or not answer.body.strip():
            log.warning("stranded session %s: re-INVITE answered %s %s", self.key, answer.status, answer.reason)
            await self._terminate("recovery_failed")
            return False
        try:
            params = self._negotiate(answer.body)
            self._stream = await self._open_stream(params)
        except Reject as rej:
            log.warning("stranded session %s: unusable answer: %s", self.key, rej)
            await self._terminate("recovery_failed")
            return False
        log.info(
            "recovered call from %s, codec %s, RTP %s:%s -> :%s",
            _masked(self._facts.ani),
            params.codec.name,
            params.remote_addr,
            params.remote_port,
            self._port,
        )
        self.recovered = True
        self.mirror("ai_session", f"{self._svc.settings.node_id}/{self.key}")
        self._go_active()
        return True

    async def _await_answer(self, method: str, within_s: float) -> UaSessionEvent | None:
        """The reply event to our `method` request; None when the caller hung up (the call is then finished) and
        a synthetic 408 REJECTED when nothing came in time."""

        def wanted(item: _Item) -> bool:
            return isinstance(item, UaSessionEvent) and (
                item.event_type == "TERMINATED"
                or (item.method == method and item.event_type in ("ANSWERED", "REJECTED"))
            )

        item = await self._wait_for(wanted, within_s)
        if isinstance(item, UaSessionEvent):
            if item.event_type == "TERMINATED":
                self._finish("caller_hangup")
                return None
            return item
        return UaSessionEvent(
            key=self.key,
            event_type="REJECTED",
            entity_type="UAS",
            status=408,
            reason="Request Timeout",
            method=method,
            body="",
            headers="",
        )

    async def _wait_for(self, wanted: Callable[[_Item], bool], within_s: float) -> _Item | None:
        """The first inbox item `wanted` within `within_s` seconds (None if none came); whatever else arrived
        meanwhile goes back to the inbox, in order, to be handled once the call is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        deferred: list[_Item] = []
        try:
            while (remaining := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(self._inbox.get(), remaining)
                except TimeoutError:
                    return None
                if wanted(item):
                    return item
                deferred.append(item)
            return None
        finally:
            for item in deferred:
                self._inbox.put_nowait(item)

    async def _answer(self) -> bool:
        new = self._new
        assert new is not None
        try:
            self._facts = _facts_of(new)
            CALL_ID.set(self._facts.call_id)
            params = self._negotiate(new.body)
            self._port = self._acquire_port()
            self._stream = await self._open_stream(params)
        except Reject as rej:
            log.warning("rejecting call: %s", rej)
            await self._reject(rej.code, rej.reason)
            return False
        log.info(
            "new call from %s, codec %s, RTP %s:%s -> :%s",
            _masked(self._facts.ani),
            params.codec.name,
            params.remote_addr,
            params.remote_port,
            self._port,
        )
        self.mirror("ai_state", "answering")
        self.mirror("ai_session", f"{self._svc.settings.node_id}/{self.key}")
        if not await self._ring_then_wait():
            return False
        body = self._answer_sdp()
        self._final_sent = True
        try:
            await self._svc.mi.ua_session_reply(self.key, "INVITE", 200, "OK", body=body)
        except MIError as exc:
            # The session is gone on the OpenSIPS side (CANCEL raced us, or OpenSIPS restarted).
            log.warning("200 OK for the INVITE failed: %s", exc)
            self._finish("answer_failed")
            return False
        self._go_active()
        return True

    def _go_active(self) -> None:
        """The call is up (answered, or taken back): count it, start its app and its duration limit."""
        self.answered_at = time.time()
        self.state = CallState.ACTIVE
        self.mirror("ai_state", "active")
        self._svc.metrics.calls_active.inc()
        self._start_app()
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self._svc.settings.max_duration, self._expire))

    async def _ring_then_wait(self) -> bool:
        """Optional ringing before the answer; a CANCEL during it ends the call with 487."""
        delay = self._svc.settings.answer_delay_ms / 1000.0
        if delay <= 0:
            return True
        await self._reply("INVITE", 180, "Ringing")
        item = await self._wait_for(
            lambda item: (
                isinstance(item, _Hangup) or (isinstance(item, UaSessionEvent) and item.event_type == "TERMINATED")
            ),
            delay,
        )
        if isinstance(item, UaSessionEvent):
            await self._on_terminated(item)
            return False
        if isinstance(item, _Hangup):
            await self._reject(480, "Temporarily Unavailable")
            return False
        return True

    def _negotiate(self, body: str) -> MediaParams:
        if not body.strip():
            raise Reject(488, "Not Acceptable Here", "INVITE without SDP offer (late offer is not supported)")
        try:
            offer = parse_sdp(body)
            neg = negotiate(offer)
        except NoCommonCodec as exc:
            raise Reject(488, "Not Acceptable Here", str(exc)) from None
        except SdpError as exc:
            raise Reject(400, "Bad Request", f"malformed SDP: {exc}") from None
        self._offer = offer
        self._negotiated = neg
        return MediaParams(
            remote_addr=neg.remote_addr,
            remote_port=neg.remote_port,
            codec=codec_by_name(neg.codec),
            dtmf_payload_type=neg.dtmf_payload_type,
            direction=neg.local_direction,
        )

    def _acquire_port(self) -> int:
        if len(self._svc.clock) >= self._svc.settings.max_calls:
            raise Reject(503, "Service Unavailable", "node at its call limit")
        try:
            return self._svc.ports.acquire()
        except PortPoolExhausted as exc:
            raise Reject(503, "Service Unavailable", str(exc)) from None

    async def _open_stream(self, params: MediaParams) -> RtpStream:
        settings = self._svc.settings
        # A port another process holds fails to bind: try a few others before giving up.
        for _ in range(8):
            assert self._port is not None
            stream = RtpStream(
                local_ip=settings.rtp_bind_ip,
                port=self._port,
                params=params,
                clock=self._svc.clock,
                rtp_timeout=settings.rtp_timeout,
                on_timeout=lambda: self._inbox.put_nowait(
                    _Hangup("session_lost" if self._session_lost else "rtp_timeout")
                ),
                on_failure=lambda exc: self._inbox.put_nowait(_Hangup("media_failure")),
                nat_latching=settings.nat_latching,
                jitter_prefetch=settings.jitter_prefetch,
                sender=self._svc.rtp_sender_factory(),
            )
            try:
                await stream.open()
                return stream
            except OSError as exc:
                log.warning("RTP port %s unusable (%s); trying another", self._port, exc)
                self._svc.ports.release(self._port)
                self._port = None
                self._port = self._acquire_port()
        raise Reject(503, "Service Unavailable", "no bindable RTP port")

    def _answer_sdp(self) -> str:
        assert self._offer is not None and self._negotiated is not None and self._port is not None
        self._sdp_version += 1
        return build_answer(
            self._offer,
            self._negotiated,
            self._svc.settings.advertised_ip,
            self._port,
            self._sdp_session_id,
            self._sdp_version,
        )

    def _start_app(self) -> None:
        app = self._svc.app_factory(self)
        self._app = app
        self.media.set_sink(app)
        self._app_task = asyncio.create_task(self._run_app(app), name=f"app {self.key}")

    async def _run_app(self, app: CallApp) -> None:
        CALL_KEY.set(self.key)
        try:
            await app.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call application failed")
            self._inbox.put_nowait(_Hangup("app_error"))

    # -- events and commands ------------------------------------------------------------------------

    async def _handle(self, item: _Item) -> None:
        if isinstance(item, _Hangup):
            await self._terminate(item.reason)
        elif isinstance(item, _Transfer):
            await self._start_transfer(item)
        elif item.event_type == "TERMINATED":
            await self._on_terminated(item)
        elif item.event_type == "UPDATED":
            await self._on_request(item)
        elif item.event_type in ("EARLY", "ANSWERED", "REJECTED"):
            self._on_reply(item)
        else:
            log.warning("ignoring %s event for an established call", item.event_type)

    async def _on_terminated(self, event: UaSessionEvent) -> None:
        if event.method == "CANCEL":
            if self.answered_at is None:
                await self._reply("INVITE", 487, "Request Terminated")
            await self._terminate("caller_cancel")
            return
        self._finish("caller_hangup")

    async def _on_request(self, event: UaSessionEvent) -> None:
        method = event.method
        if method == "ACK":
            return
        if method in ("INVITE", "UPDATE"):
            await self._on_reinvite(event)
        elif method == "INFO":
            await self._on_info(event)
        elif method == "OPTIONS":
            await self._reply("OPTIONS", 200, "OK")
        elif method == "NOTIFY":
            await self._reply("NOTIFY", 200, "OK")
            self._on_notify(event)
        else:
            log.info("answering in-dialog %s with 501", method)
            await self._reply(method, 501, "Not Implemented")

    async def _on_reinvite(self, event: UaSessionEvent) -> None:
        if not event.body.strip():
            # Offerless re-INVITE: our current SDP is the offer; the answer arrives in the ACK.
            await self._reply(event.method, 200, "OK", body=self._answer_sdp())
            return
        try:
            params = self._negotiate(event.body)
        except Reject as rej:
            log.warning("re-INVITE refused, keeping the current media: %s", rej)
            await self._reply(event.method, 488, "Not Acceptable Here")
            return
        self.media.update(params)
        log.info(
            "media updated: %s %s:%s %s", params.codec.name, params.remote_addr, params.remote_port, params.direction
        )
        await self._reply(event.method, 200, "OK", body=self._answer_sdp())

    async def _on_info(self, event: UaSessionEvent) -> None:
        content_type = SipHeaders.parse(event.headers).get("Content-Type") or ""
        try:
            dtmf = parse_dtmf_info(content_type, event.body)
        except DtmfError:
            await self._reply("INFO", 415, "Unsupported Media Type")
            return
        await self._reply("INFO", 200, "OK")
        self._svc.metrics.dtmf.labels("sip-info").inc()
        if self._app is not None:
            self._app.on_dtmf(dtmf)

    # -- transfer -----------------------------------------------------------------------------------

    async def _start_transfer(self, request: _Transfer) -> None:
        if self._transfer is not None or self.state is not CallState.ACTIVE:
            request.result.set_result(TransferResult(False, None, f"cannot transfer while {self.state}"))
            return
        headers = {"Refer-To": f"<{request.target}>", **request.context}
        try:
            extra = format_extra_headers(headers)
            await self._svc.mi.ua_session_update(self.key, "REFER", extra_headers=extra)
        except (ValueError, MIError) as exc:
            # The call stays with the bot, which tells the caller; operations see it here and in the metrics.
            log.warning("transfer to %s failed: REFER not sent: %s", request.target, exc)
            self._svc.metrics.transfers.labels("failed").inc()
            request.result.set_result(TransferResult(False, None, f"REFER not sent: {exc}"))
            return
        self._transfer = request
        self.state = CallState.TRANSFERRING
        self.mirror("ai_state", "transferring")
        self._transfer_deadline = asyncio.get_running_loop().call_later(
            TRANSFER_TIMEOUT, self._inbox.put_nowait, _transfer_timeout_event(self.key)
        )
        log.info("transfer to %s requested", request.target)

    def _on_reply(self, event: UaSessionEvent) -> None:
        if event.method != "REFER" or self._transfer is None:
            return
        if event.event_type == "REJECTED":
            self._transfer_done(False, event.status, f"REFER rejected: {event.status} {event.reason}")

    def _on_notify(self, event: UaSessionEvent) -> None:
        if self._transfer is None:
            return
        match = SIPFRAG_STATUS.search(event.body)
        if match is None:
            return
        status = int(match.group(1))
        if status < 200:
            return
        if status < 300:
            self._transfer_done(True, status, "transfer target answered")
            # The transferee hangs up our leg; if it does not, we do after a grace period.
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(TRANSFER_BYE_GRACE, self._inbox.put_nowait, _Hangup("transferred")))
        else:
            self._transfer_done(False, status, f"transfer target answered {status}")

    def _transfer_done(self, ok: bool, status: int | None, detail: str) -> None:
        request = self._transfer
        if request is None:
            return
        self._transfer = None
        if self._transfer_deadline is not None:
            self._transfer_deadline.cancel()
            self._transfer_deadline = None
        if ok:
            self.outcome = "transferred"
        else:
            # The conversation resumes: the application decides what to tell the caller.
            self.state = CallState.ACTIVE
            self.mirror("ai_state", "active")
        log.info("transfer %s: %s", "succeeded" if ok else "failed", detail)
        self._svc.metrics.transfers.labels("ok" if ok else "failed").inc()
        if not request.result.done():
            request.result.set_result(TransferResult(ok, status, detail))

    # -- ending -------------------------------------------------------------------------------------

    def _expire(self) -> None:
        self._inbox.put_nowait(_Hangup("max_duration"))

    async def _reply(self, method: str, code: int, reason: str, body: str | None = None) -> bool:
        try:
            await self._svc.mi.ua_session_reply(self.key, method, code, reason, body=body)
            return True
        except MIError as exc:
            log.warning("reply %s %s to %s failed: %s", code, reason, method, exc)
            return False

    async def _reject(self, code: int, reason: str) -> None:
        self._final_sent = True
        self.rejecting = True  # the caller's ACK may come back before this call has finished
        self._svc.metrics.call_rejects.labels(str(code)).inc()
        await self._reply("INVITE", code, reason)
        self._finish(f"rejected_{code}")

    async def _terminate(self, reason: str) -> None:
        if self.state is CallState.ENDED:
            return
        try:
            await self._svc.mi.ua_session_terminate(self.key)
        except MIError as exc:
            # Usually the session already ended on the OpenSIPS side; our resources go either way.
            log.warning("ua_session_terminate failed: %s", exc)
        self._finish(self.outcome or reason)

    def _finish(self, outcome: str) -> None:
        if self.state is CallState.ENDED:
            return
        if self._transfer is not None:
            self._transfer_done(False, None, "call ended during transfer")
        self.outcome = self.outcome or outcome
        if self.answered_at is not None:
            self._svc.metrics.calls_active.dec()
            self._svc.metrics.call_duration.observe(time.time() - self.answered_at)
        self.state = CallState.ENDED
        self.ended_at = time.time()
        self._svc.metrics.calls.labels(self.outcome).inc()
        self.mirror("ai_state", "ended")
        log.info("call ended: %s", self.outcome)

    async def _release(self) -> None:
        self._finish(self.outcome or "internal_error")
        for timer in self._timers:
            timer.cancel()
        if self._transfer_deadline is not None:
            self._transfer_deadline.cancel()
        if self._app_task is not None:
            self._app_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._app_task
        if self._stream is not None:
            self._stream.set_sink(None)
            self._stream.close()
            self._svc.metrics.rtp_finished.add(self._stream.counters)
        if self._port is not None:
            self._svc.ports.release(self._port)
            self._port = None
        self._app = None
        self._on_end(self)


def _facts_of(event: UaSessionEvent) -> CallFacts:
    try:
        return call_facts(SipHeaders.parse(event.headers))
    except SipParseError as exc:
        raise Reject(400, "Bad Request", f"unusable SIP headers: {exc}") from None


def _facts_of_session(session: UaSessionInfo) -> CallFacts:
    """A stranded session's facts, from what `ua_session_list` keeps of its INVITE (no P-Asserted-Identity)."""
    return CallFacts(
        call_id=session.call_id,
        from_uri=session.from_uri,
        from_tag=session.from_tag or None,
        to_uri=session.to_uri,
        ani=uri_user(session.from_uri) if session.from_uri else None,
        display_name=session.display or None,
        orig_call_id=None,
        user_agent=None,
    )


def _transfer_timeout_event(key: str) -> UaSessionEvent:
    # Reuses the REJECTED path so a timeout and a refusal resume the conversation the same way.
    return UaSessionEvent(
        key=key,
        event_type="REJECTED",
        entity_type="UAS",
        status=408,
        reason="Transfer Timeout",
        method="REFER",
        body="",
        headers="",
    )


def _masked(ani: str | None) -> str:
    if not ani:
        return "unknown"
    return "*" * max(0, len(ani) - 4) + ani[-4:]
