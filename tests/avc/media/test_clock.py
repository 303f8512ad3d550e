import asyncio
import time

from avc.media.clock import MediaClock


class Recorder:
    def __init__(self, block_first: float = 0.0, fail_at: int | None = None) -> None:
        self.periods: list[int] = []
        self.block_first = block_first
        self.fail_at = fail_at
        self.failure: Exception | None = None
        self.received: list[int] = []

    def receive(self, periods: int) -> None:
        self.received.append(periods)

    def send(self, periods: int) -> None:
        self.periods.append(periods)
        if len(self.periods) == 1 and self.block_first:
            time.sleep(self.block_first)  # a stalled event loop, on purpose
        if self.fail_at is not None and len(self.periods) == self.fail_at:
            raise RuntimeError("broken stream")

    def tick_failed(self, exc: Exception) -> None:
        self.failure = exc


async def test_every_stream_ticks_once_per_period() -> None:
    clock = MediaClock(period=0.01)
    a, b = Recorder(), Recorder()
    clock.add(a)
    clock.add(b)
    await asyncio.sleep(0.055)
    clock.close()
    assert len(a.periods) >= 3
    assert a.periods == b.periods == a.received


async def test_a_stalled_loop_skips_ticks_instead_of_bursting() -> None:
    clock = MediaClock(period=0.01)
    stream = Recorder(block_first=0.045)
    clock.add(stream)
    await asyncio.sleep(0.03)
    clock.close()
    # After the 45 ms stall the next tick reports the skipped periods in one call.
    assert stream.periods[1] >= 4
    assert clock.skipped >= 3


async def test_a_failing_stream_is_dropped_and_told_while_others_go_on() -> None:
    clock = MediaClock(period=0.01)
    bad, good = Recorder(fail_at=1), Recorder()
    clock.add(bad)
    clock.add(good)
    await asyncio.sleep(0.035)
    clock.close()
    assert isinstance(bad.failure, RuntimeError)
    assert len(bad.periods) == 1
    assert len(good.periods) >= 2


async def test_clock_stops_waking_when_no_stream_is_left() -> None:
    clock = MediaClock(period=0.01)
    stream = Recorder()
    clock.add(stream)
    await asyncio.sleep(0.015)
    clock.discard(stream)
    ticks = clock.ticks
    await asyncio.sleep(0.03)
    assert clock.ticks == ticks
