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
from avc.call import Call, CallServices
from avc.config import Settings
from avc.conversation.modes import EchoApp, ToneApp
from avc.media.clock import MediaClock
from avc.media.ports import PortPool
from avc.media.rtp import RtpSender
from avc.metrics import Metrics, RtpCounters
from avc.opensips.events import EventListener, UaSessionEvent
from avc.opensips.mi import MIError, OpenSIPSMI, mi_client_from_url
from avc.opensips.mirror import DialogMirror
from avc.opensips.subscription import EventSubscription

log = logging.getLogger(__name__)

# Events that trail a call's end (the ACK of a 486, a BYE crossing our terminate) are expected: keys of
# recently ended calls are remembered so such events are not reported as unknown.
RECENT_KEYS = 4096


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
        self._mi: OpenSIPSMI | None = None
        self._edge_mi: OpenSIPSMI | None = None
        self._listener: EventListener | None = None
        self.subscription: EventSubscription | None = None
        self._subscription_task: asyncio.Task[None] | None = None
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

    async def start(self) -> None:
        if self.app_factory is None:
            raise RuntimeError("chain mode needs an application factory (the engine chain) before start()")
        s = self.settings
        self._mi = OpenSIPSMI(mi_client_from_url(s.mi_url, timeout=s.mi_timeout, metrics=self.metrics))
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
        )
        self._subscription_task = asyncio.create_task(self.subscription.run(), name="event-subscription")
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

    # -- events -------------------------------------------------------------------------------------

    def _on_event(self, event: UaSessionEvent) -> None:
        call = self.calls.get(event.key)
        if call is not None:
            if event.event_type == "NEW":
                log.warning("duplicate NEW for session %s ignored", event.key)
            else:
                call.deliver(event)
            return
        if event.event_type != "NEW":
            if event.key in self._recent:
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
        log.warning("refusing session %s with 503: %s", event.key, why)
        self.metrics.call_rejects.labels("503").inc()
        self._remember(event.key)
        try:
            # Retry-After tells the edge's dispatcher this node will take calls again, later.
            await self.mi.ua_session_reply(
                event.key, "INVITE", 503, "Service Unavailable", extra_headers="Retry-After: 5\r\n"
            )
        except MIError as exc:
            # Counted in avc_mi_errors_total by the MI client; the edge times the INVITE out on its own.
            log.warning("503 for session %s was not sent: %s", event.key, exc)

    def _call_ended(self, call: Call) -> None:
        self.calls.pop(call.key, None)
        if not self.calls:
            self._idle.set()
        self._remember(call.key)

    def _remember(self, key: str) -> None:
        self._recent[key] = None
        while len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
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
        tasks = [call.task for call in self.calls.values() if call.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        for side in list(self._side_tasks):
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
