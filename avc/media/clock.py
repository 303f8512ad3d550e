"""The media clock: one 20 ms tick for every stream of the process.

One timer for all calls instead of one sleeping task per call: a tick costs a single loop wake-up, and
every stream sends in the same pass, so 150 calls cost 50 wake-ups a second, not 7,500. Each tick is
scheduled at `start + n * period` on the loop's monotonic clock (not `now + period`), so scheduling
delays never accumulate into drift. When the loop falls more than one period behind, the missed ticks
are skipped rather than replayed: replaying them would burst packets at the caller. Streams learn how
many periods passed so RTP timestamps stay locked to real time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from avc.media.audio_format import PACKET_S

log = logging.getLogger(__name__)


class Ticking(Protocol):
    def send(self, periods: int) -> None:
        """Send this period's packet; `periods` > 1 when the clock skipped ticks."""

    def receive(self, periods: int) -> None:
        """Take in what arrived since the last tick and do the period's processing."""

    def tick_failed(self, exc: Exception) -> None:
        """The clock dropped this stream after `tick` raised; its owner must end the call."""


class MediaClock:
    def __init__(self, period: float = PACKET_S, on_tick: Callable[[float], None] | None = None) -> None:
        self.period = period
        self._on_tick = on_tick  # told each tick's lateness, in seconds (a metrics histogram)
        self._streams: dict[int, Ticking] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start = 0.0
        self._n = 0
        self.ticks = 0
        self.skipped = 0
        self.max_lateness = 0.0

    def add(self, stream: Ticking) -> None:
        self._streams[id(stream)] = stream
        if self._handle is None:
            self._begin()

    def discard(self, stream: Ticking) -> None:
        self._streams.pop(id(stream), None)
        if not self._streams and self._handle is not None:
            # Idle node: stop waking up 50 times a second for nothing.
            self._handle.cancel()
            self._handle = None

    def __len__(self) -> int:
        return len(self._streams)

    def _begin(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._n = 0
        self._handle = self._loop.call_at(self._start, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        due = self._start + self._n * self.period
        lateness = now - due
        periods = 1
        if lateness >= self.period:
            missed = int(lateness // self.period)
            self.skipped += missed
            periods += missed
            self._n += missed
        self.max_lateness = max(self.max_lateness, lateness)
        if self._on_tick is not None:
            self._on_tick(lateness)
        self._n += 1
        self.ticks += 1
        streams = list(self._streams.values())
        # Every stream sends before any does its receive work, so send times depend on the timer alone.
        for stream in streams:
            self._run(stream, stream.send, periods)
        for stream in streams:
            self._run(stream, stream.receive, periods)
        if self._streams:
            self._handle = self._loop.call_at(self._start + self._n * self.period, self._tick)
        else:
            self._handle = None

    def _run(self, stream: Ticking, step: Callable[[int], None], periods: int) -> None:
        try:
            step(periods)
        except Exception as exc:
            if self._streams.pop(id(stream), None) is None:
                return  # already dropped in this tick's send phase
            # One broken stream must not silence every other call on the node.
            log.exception("media tick failed for a stream; removing it")
            stream.tick_failed(exc)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._streams.clear()
