"""Keeping our E_UA_SESSION subscription alive on OpenSIPS.

OpenSIPS forgets every event subscription when it restarts, and each subscription expires after `expire`
seconds. Nothing tells the subscriber about either, so `EventSubscription` keeps it alive itself:

- it subscribes with `event_subscribe`, retrying with exponential backoff and jitter while OpenSIPS does not
  answer (every failure logged at WARNING and counted);
- it renews the subscription at half its lifetime;
- every `check_interval` it asks `subscribers_list` for our event. That one call proves OpenSIPS is alive and
  that our socket is still subscribed; if the socket is missing (OpenSIPS restarted) or OpenSIPS stops
  answering, it subscribes again at once, then with backoff until OpenSIPS answers.

With the defaults a restarted OpenSIPS has our subscription back within about 5 seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from avc.metrics import Metrics
from avc.opensips.mi import MIError, OpenSIPSMI, Subscriber

log = logging.getLogger(__name__)

# How long stopping waits for the unsubscribe reply; OpenSIPS may be the reason we are stopping.
UNSUBSCRIBE_TIMEOUT = 1.0


class EventSubscription:
    """Subscribes `socket_uri` to `event` on OpenSIPS and keeps it subscribed while `run()` runs."""

    def __init__(
        self,
        mi: OpenSIPSMI,
        socket_uri: str,
        event: str = "E_UA_SESSION",
        expire: int = 600,
        check_interval: float = 2.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        metrics: Metrics | None = None,
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(expire, bool) or not isinstance(expire, int) or expire < 1:
            raise ValueError(f"expire must be a positive number of seconds, not {expire!r}")
        if check_interval <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("check_interval and backoff_initial must be > 0 and backoff_max >= backoff_initial")
        self._mi = mi
        self.socket_uri = socket_uri
        self.event = event
        self.expire = expire
        self.check_interval = check_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._metrics = metrics
        self._up = asyncio.Event()
        self._random = random.Random()
        self.last_error: str | None = None
        """Why the subscription is down now; None while it is up (the history is in the log)."""
        self._on_subscribed = on_subscribed

    @property
    def subscribed(self) -> bool:
        """True while the subscription is believed active on OpenSIPS."""
        return self._up.is_set()

    async def wait_subscribed(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - returns False, not raise
        """Wait until subscribed; False if `timeout` seconds pass first."""
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Subscribe and keep the subscription alive until cancelled; then unsubscribe, best effort."""
        try:
            while True:
                await self._subscribe_with_backoff()
                await self._watch()
        finally:
            was_subscribed = self.subscribed
            self._set_up(False)
            if was_subscribed:
                await self._unsubscribe()

    async def _subscribe_with_backoff(self) -> None:
        delay = self.backoff_initial
        attempt = 1
        while True:
            try:
                await self._mi.event_subscribe(self.event, self.socket_uri, self.expire)
            except MIError as exc:
                self._failed(f"event_subscribe attempt {attempt} failed: {exc}")
                await asyncio.sleep(self._jittered(delay))
                delay = min(delay * 2, self.backoff_max)
                attempt += 1
                continue
            self._count_attempt("ok")
            log.info("subscribed %s to %s for %d s", self.socket_uri, self.event, self.expire)
            self.last_error = None
            self._set_up(True)
            if self._on_subscribed is not None:
                # Events raised while we were not subscribed went nowhere: the owner looks at what the node holds.
                self._on_subscribed()
            return

    async def _watch(self) -> None:
        """Return as soon as the subscription is found missing or OpenSIPS stops answering."""
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.expire / 2
        while True:
            await asyncio.sleep(max(0.0, min(self.check_interval, renew_at - loop.time())))
            if loop.time() >= renew_at:
                try:
                    await self._mi.event_subscribe(self.event, self.socket_uri, self.expire)
                except MIError as exc:
                    self._count_attempt("error")
                    self._lost(f"renewing the subscription failed: {exc}")
                    return
                self._count_attempt("ok")
                log.debug("renewed the %s subscription of %s", self.event, self.socket_uri)
                renew_at = loop.time() + self.expire / 2
                continue
            try:
                subscribers = await self._mi.subscribers_list(self.event)
            except MIError as exc:
                self._lost(f"subscribers_list failed: {exc}")
                return
            ours = self._find_ours(subscribers)
            if ours is None:
                if self._metrics is not None:
                    self._metrics.opensips_restarts.inc()
                self._lost(f"{self.socket_uri} is no longer subscribed to {self.event} (OpenSIPS restarted?)")
                return
            if ours.ttl is not None and ours.ttl <= self.check_interval:
                # OpenSIPS's clock says it expires before our next look: renew now rather than at our own schedule.
                renew_at = loop.time()

    def _find_ours(self, subscribers: list[Subscriber]) -> Subscriber | None:
        wanted = self.socket_uri.strip().lower()
        for subscriber in subscribers:
            if subscriber.socket.strip().lower() == wanted:
                return subscriber
        return None

    async def _unsubscribe(self) -> None:
        # expire=0 makes OpenSIPS drop the subscription (at the next event it raises): no event reaches a
        # connector that is shutting down.
        try:
            async with asyncio.timeout(UNSUBSCRIBE_TIMEOUT):
                await self._mi.event_subscribe(self.event, self.socket_uri, 0)
        except MIError as exc:
            log.warning("could not unsubscribe %s from %s: %s", self.socket_uri, self.event, exc)
            return
        except TimeoutError:
            log.warning(
                "could not unsubscribe %s from %s: no reply within %g s",
                self.socket_uri,
                self.event,
                UNSUBSCRIBE_TIMEOUT,
            )
            return
        log.info("unsubscribed %s from %s", self.socket_uri, self.event)

    def _jittered(self, delay: float) -> float:
        # Between half and all of the delay, so many connectors restarting together do not retry in lockstep.
        return delay * (0.5 + 0.5 * self._random.random())

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        self._count_attempt("error")
        log.warning("%s subscription of %s: %s", self.event, self.socket_uri, reason)

    def _lost(self, reason: str) -> None:
        self.last_error = reason
        self._set_up(False)
        log.warning("%s subscription of %s lost: %s; subscribing again", self.event, self.socket_uri, reason)

    def _count_attempt(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.subscription_attempts.labels(result=result).inc()

    def _set_up(self, up: bool) -> None:
        if up:
            self._up.set()
        else:
            self._up.clear()
        if self._metrics is not None:
            self._metrics.subscription_up.set(1 if up else 0)
