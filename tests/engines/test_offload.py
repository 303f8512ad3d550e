"""The inference pool runs blocking work off the event loop, never more at once than its workers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engines.offload import InferencePool


async def test_work_runs_off_the_event_loop_thread() -> None:
    pool = InferencePool("test", 1)
    try:
        assert await pool.run(threading.get_ident) != threading.get_ident()
    finally:
        pool.close()


async def test_no_more_than_workers_tasks_run_at_once() -> None:
    pool = InferencePool("test", 2)
    guard = threading.Lock()
    running = peak = 0

    def work() -> None:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with guard:
            running -= 1

    try:
        await asyncio.gather(*(pool.run(work) for _ in range(6)))
    finally:
        pool.close()
    assert peak <= 2


async def test_arguments_are_passed_through() -> None:
    pool = InferencePool("test", 1)
    try:
        assert await pool.run(divmod, 17, 5) == (3, 2)
        assert await pool.run(int, "ff", base=16) == 255
    finally:
        pool.close()


async def test_a_closed_pool_refuses_work() -> None:
    pool = InferencePool("test", 1)
    pool.close()
    with pytest.raises(RuntimeError):
        await pool.run(time.monotonic)


def test_at_least_one_worker_is_required() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        InferencePool("test", 0)
