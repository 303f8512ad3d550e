"""The connector process: events in, calls out.

It owns what all calls share (MI clients, the event socket and subscription, the port pool, the media
clock, the dialog mirror, metrics) and routes each E_UA_SESSION event to its call by session key. A NEW
event is always answered: by a call, or by a 503 when the node is draining or full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import suppress

from avc.app import AppFactory, CallApp, CallControl
from avc.call import Call, CallServices, CallState
from avc.config import Settings
from avc.conversation.modes import EchoApp, ToneApp
from avc.media.clock import MediaClock
from avc.media.ports import PortPool
from avc.media.rtp import RtpSender
from avc.metrics import Metrics, RtpCounters
from avc.opensips.events import EventListener, UaSessionEvent
from avc.opensips.mi import MIError, OpenSIPSMI, UaSessionInfo, mi_client_from_url
from avc.opensips.mirror import DialogMirror
from avc.opensips.subscription import EventSubscription

log = logging.getLogger(__name__)

# Events that trail a call's end (the ACK of a 486, a BYE crossing our terminate) are expected: keys of
# recently ended calls are remembered so such events are not reported as unknown.
RECENT_KEYS = 4096
# OpenSIPS 3.5.9 keeps a UA session it rejected (state 7) until its `ua_default_timeout`, an hour here (capture 14),
# and deletes it only on `ua_session_terminate`, which sends nothing for such a session. That is sent once the
# caller's hop-by-hop ACK of the rejection is reported (terminating earlier makes OpenSIPS answer the INVITE
# again, with a 408), or after tm's wait for that ACK (64*T1 = 32 s, RFC 3261 timer H) if it never comes.
REJECTED_ACK_WAIT = 32.0
# The node's script answers OPTIONS and INVITE with 503 unless this cachedb_local key exists (opensips/ai-node.cfg):
# it lives LIVENESS_TTL seconds and is refreshed every LIVENESS_INTERVAL while this connector can take calls, so a
# dead, unsubscribed or draining connector takes its node out of the edge's rotation within its probe interval.
LIVENESS_KEY = "avc_alive"
LIVENESS_INTERVAL = 2.0
LIVENESS_TTL = 6
# An unanswered session this process does not know is looked at again this much later before it is refused: its
# NEW event may still be on its way to us.
UNANSWERED_RECHECK = 2.0
RECHECK_TASK = "refuse-unowned-sessions"


def builtin_app_factory(settings: Settings) -> AppFactory:
    if settings.mode == "echo":
        delay = settings.echo_delay_ms

        def echo(call: CallControl) -> CallApp:
            return EchoApp(call, delay)

        return echo
    if settings.mode == "tone":
        return ToneApp
    raise ValueError(f"mode {settings.mode!r} needs an application factory from the engine chain")


class Connector:
    """The connector process: owns what every call shares (MI clients, event socket and subscription, port pool,
    media clock, dialog mirror, metrics) and the table of live calls. `avc serve` (or a test) starts and stops it;
    OpenSIPS drives it through E_UA_SESSION events, each routed to its `Call` by session key."""

    def __init__(
        self,
        settings: Settings,
        app_factory: AppFactory | None = None,
        metrics: Metrics | None = None,
        rtp_sender_factory: Callable[[], RtpSender] = RtpSender,
    ):
        self.settings = settings
        self.metrics = metrics or Metrics()
        # Chain mode gets its factory once the models have loaded (see `avc serve`); until start() the node is
        # not ready, which is what its readiness probe reports meanwhile.
        self.app_factory: AppFactory | None = app_factory or (
            None if settings.mode == "chain" else builtin_app_factory(settings)
        )
        self._rtp_sender_factory = rtp_sender_factory
        self.calls: dict[str, Call] = {}
        self.ports = PortPool(settings.rtp_port_min, settings.rtp_port_max)
        self.clock = MediaClock(on_tick=self.metrics.tick_lateness.observe)
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._rejected: dict[str, asyncio.TimerHandle] = {}
        self._rejection_acked: set[str] = set()
        self._mi: OpenSIPSMI | None = None
        self._edge_mi: OpenSIPSMI | None = None
        self._listener: EventListener | None = None
        self.subscription: EventSubscription | None = None
        self._subscription_task: asyncio.Task[None] | None = None
        self._liveness_task: asyncio.Task[None] | None = None
        self._mirror: DialogMirror | None = None
        self._services: CallServices | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.metrics.add_rtp_source(self._live_counters)
        self.metrics.port_pool_size.set(self.ports.size)
        self.metrics.port_pool_free.set_function(lambda: self.ports.free)
        self.metrics.ready.set_function(lambda: 1.0 if self.ready else 0.0)

    @property
    def mi(self) -> OpenSIPSMI:
        assert self._mi is not None, "connector not started"
        return self._mi

    def open_mi(self) -> OpenSIPSMI:
        """The node's MI client, opened on first use: `avc serve` uses it before start() to end stranded calls."""
        if self._mi is None:
            s = self.settings
            self._mi = OpenSIPSMI(mi_client_from_url(s.mi_url, timeout=s.mi_timeout, metrics=self.metrics))
        return self._mi

    async def start(self) -> None:
        if self.app_factory is None:
            raise RuntimeError("chain mode needs an application factory (the engine chain) before start()")
        s = self.settings
        self.open_mi()
        assert self._mi is not None
        if s.edge_mi_url:
            self._edge_mi = OpenSIPSMI(mi_client_from_url(s.edge_mi_url, timeout=s.mi_timeout, metrics=self.metrics))
        self._mirror = DialogMirror(self._edge_mi, self.metrics)
        self._mirror.start()
        self._services = CallServices(
            settings=s,
            mi=self._mi,
            metrics=self.metrics,
            ports=self.ports,
            clock=self.clock,
            mirror=self._mirror,
            app_factory=self.app_factory,
            rtp_sender_factory=self._rtp_sender_factory,
        )
        self._listener = EventListener(self._on_event, host=s.event_host, port=s.event_port, metrics=self.metrics)
        await self._listener.start()
        self.subscription = EventSubscription(
            self._mi,
            self._listener.socket_uri,
            expire=s.event_expire,
            check_interval=s.subscription_check_interval,
            metrics=self.metrics,
            on_subscribed=lambda: self._spawn(self.reconcile()),
        )
        self._subscription_task = asyncio.create_task(self.subscription.run(), name="event-subscription")
        self._liveness_task = asyncio.create_task(self._keep_alive(), name="node-liveness")
        log.info("connector up: events on %s, MI %s, mode %s", self._listener.socket_uri, s.mi_url, s.mode)

    @property
    def event_address(self) -> tuple[str, int]:
        assert self._listener is not None
        return self._listener.address

    @property
    def ready(self) -> bool:
        return (
            not self.draining
            and self.subscription is not None
            and self.subscription.subscribed
            and self.ports.free > 0
            and len(self.calls) < self.settings.max_calls
        )

    # -- the node's view: liveness and reconciliation -------------------------------------------------

    async def _keep_alive(self) -> None:
        """Keep the node in the edge's rotation exactly while this connector can take calls (see LIVENESS_KEY)."""
        alive = False
        while True:
            try:
                if self.ready:
                    await self.mi.cache_store(LIVENESS_KEY, "1", LIVENESS_TTL)
                    alive = True
                elif alive:
                    await self.mi.cache_remove(LIVENESS_KEY)
                    alive = False
            except MIError as exc:
                # Counted by the MI client; the key expires on its own if this goes on.
                log.warning("node liveness key not %s: %s", "refreshed" if self.ready else "removed", exc)
            await asyncio.sleep(LIVENESS_INTERVAL)

    async def reconcile(self, *, recover_now: bool = True) -> None:
        """Match the sessions the node holds with this process's calls (at start-up and after every subscription).

        A session no call owns was stranded: by a crash of the connector before this one (answered: OpenSIPS sends
        BYE when it is ended, instead of the caller hearing silence until the node's one-hour timeout), by a
        rejection nobody deleted (state 7), or by a NEW event raised while nobody was subscribed (refused with 503
        and deleted, as a NEW over capacity is). An answered stranded session is taken back (`AVC_RECOVER_STRANDED`,
        on by default): a re-INVITE moves its media here and the app picks the conversation up (`Call._recover`);
        before the app can run (`recover_now=False`) it is left for the next reconcile. A call whose session the
        node no longer holds (the node restarted) ends as soon as its RTP stops. One connector per node is assumed:
        its events go to one subscriber.
        """
        try:
            sessions = await self.mi.ua_sessions()
        except MIError as exc:
            log.warning("could not list the node's sessions: %s", exc)
            return
        listed = {session.key for session in sessions}
        for call in list(self.calls.values()):
            if call.key not in listed and call.state is not CallState.ANSWERING:
                self.metrics.stranded_sessions.labels("session_lost").inc()
                call.session_lost()
        unanswered = []
        for session in sessions:
            if session.key in self.calls or session.key in self._rejected or session.key in self._recent:
                continue
            if session.ended:
                self.metrics.stranded_sessions.labels("deleted").inc()
                self._spawn(self._end_on_node(session.key))
            elif session.answered:
                if self.settings.recover_stranded:
                    if recover_now:
                        self._recover(session)
                    # else: left for the reconcile after start(), once the app can talk to the caller
                    continue
                log.warning(
                    "session %s (Call-ID %s) has no call here: a lost connector's; ending it",
                    session.key,
                    session.call_id,
                )
                self.metrics.stranded_sessions.labels("ended").inc()
                self._spawn(self._end_on_node(session.key))
            else:
                unanswered.append(session.key)
        if unanswered:
            self._spawn(self._refuse_unowned(unanswered), name=RECHECK_TASK)

    async def reconcile_before_start(self) -> None:
        """Before start(): end what a lost predecessor left on the node, without waiting for the models to load."""
        self.open_mi()
        await self.reconcile(recover_now=False)

    def _recover(self, session: UaSessionInfo) -> None:
        if self._services is None or len(self.calls) >= self.settings.max_calls or self.draining:
            log.warning("stranded session %s cannot be taken back now (no room); ending it", session.key)
            self.metrics.stranded_sessions.labels("ended").inc()
            self._spawn(self._end_on_node(session.key))
            return
        log.warning(
            "session %s (Call-ID %s) has no call here: a lost connector's; taking it back", session.key, session.call_id
        )
        self.metrics.stranded_sessions.labels("recovered").inc()
        call = Call(None, self._services, self._call_ended, stranded=session)
        self.calls[session.key] = call
        self._idle.clear()
        call.start()

    async def _refuse_unowned(self, keys: list[str]) -> None:
        await asyncio.sleep(UNANSWERED_RECHECK)
        try:
            still = {s.key: s for s in await self.mi.ua_sessions()}
        except MIError as exc:
            log.warning("could not list the node's sessions: %s", exc)
            return
        for key in keys:
            session = still.get(key)
            if session is None or session.answered or session.ended or key in self.calls or key in self._recent:
                continue
            self.metrics.stranded_sessions.labels("refused").inc()
            await self._reply_503(key, "its NEW event never reached a connector")

    # -- events -------------------------------------------------------------------------------------

    def _on_event(self, event: UaSessionEvent) -> None:
        call = self.calls.get(event.key)
        if call is not None:
            if call.rejecting and event.method == "ACK":
                self._rejection_acked.add(event.key)  # the rejected session can go as soon as the call is done
            if event.event_type == "NEW":
                log.warning("duplicate NEW for session %s ignored", event.key)
            else:
                call.deliver(event)
            return
        if event.event_type != "NEW":
            if event.key in self._rejected and event.method == "ACK":
                self._delete_rejected(event.key)
            elif event.key in self._recent:
                log.debug("%s(%s) for ended session %s ignored", event.event_type, event.method, event.key)
            else:
                self.metrics.events_unknown_key.inc()
                log.warning("%s(%s) for unknown session %s ignored", event.event_type, event.method, event.key)
            return
        if self.draining or len(self.calls) >= self.settings.max_calls:
            self._spawn(self._refuse(event, "draining" if self.draining else "at call limit"))
            return
        assert self._services is not None
        call = Call(event, self._services, self._call_ended)
        self.calls[event.key] = call
        self._idle.clear()
        call.start()

    async def _refuse(self, event: UaSessionEvent, why: str) -> None:
        await self._reply_503(event.key, why)

    async def _reply_503(self, key: str, why: str) -> None:
        log.warning("refusing session %s with 503: %s", key, why)
        self.metrics.call_rejects.labels("503").inc()
        self._remember(key)
        try:
            # Retry-After tells the edge's dispatcher this node will take calls again, later.
            await self.mi.ua_session_reply(
                key, "INVITE", 503, "Service Unavailable", extra_headers="Retry-After: 5\r\n"
            )
        except MIError as exc:
            # Counted in avc_mi_errors_total by the MI client; the edge times the INVITE out on its own.
            log.warning("503 for session %s was not sent: %s", key, exc)
            return
        self._await_rejected_ack(key)

    def _await_rejected_ack(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        self._rejected[key] = loop.call_later(REJECTED_ACK_WAIT, self._delete_rejected, key)

    def _delete_rejected(self, key: str) -> None:
        timer = self._rejected.pop(key, None)
        if timer is not None:
            timer.cancel()
            self._spawn(self._end_on_node(key))

    async def _end_on_node(self, key: str) -> None:
        try:
            await self.mi.ua_session_terminate(key)
        except MIError as exc:
            log.warning("session %s was not ended on the node: %s", key, exc)

    def _call_ended(self, call: Call) -> None:
        self.calls.pop(call.key, None)
        acked = call.key in self._rejection_acked
        self._rejection_acked.discard(call.key)
        if call.outcome.startswith("rejected_"):
            if acked:  # the caller's ACK beat the call's end: nothing left to wait for
                self._spawn(self._end_on_node(call.key))
            else:
                self._await_rejected_ack(call.key)
        if not self.calls:
            self._idle.set()
        self._remember(call.key)

    def _remember(self, key: str) -> None:
        self._recent[key] = None
        while len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)

    def _spawn(self, coro: object, name: str | None = None) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _live_counters(self) -> Iterator[RtpCounters]:
        for call in self.calls.values():
            counters = call.rtp_counters
            if counters is not None:
                yield counters

    # -- shutdown -----------------------------------------------------------------------------------

    async def drain(self, grace: float | None = None) -> None:
        """Stop taking calls (new ones get 503) and wait for active calls to end, up to `grace` seconds."""
        self.draining = True
        if self.calls:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout if grace is None else grace)

    async def stop(self) -> None:
        self.draining = True
        for key in list(self._rejected):
            self._delete_rejected(key)
        tasks = [call.task for call in self.calls.values() if call.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        if self._liveness_task is not None:
            self._liveness_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._liveness_task
            if self._mi is not None:
                try:  # out of rotation now, not when the key expires
                    await self._mi.cache_remove(LIVENESS_KEY)
                except MIError as exc:
                    log.warning("node liveness key not removed: %s", exc)
        for side in list(self._side_tasks):
            if side.get_name() == RECHECK_TASK:
                side.cancel()  # a stopping node refuses nothing more: its sessions go with it
            with suppress(asyncio.CancelledError):
                await side
        if self._subscription_task is not None:
            self._subscription_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._subscription_task
        if self._mirror is not None:
            await self._mirror.close()
        if self._listener is not None:
            self._listener.close()
        for mi in (self._mi, self._edge_mi):
            if mi is not None:
                await mi.close()
        self.clock.close()
        log.info("connector stopped")
