"""Run blocking inference off the event loop, on a small bounded pool of threads.

Each loaded model owns one pool sized to the concurrency the model supports (one thread for a
llama.cpp context, which is not thread-safe; a few for ONNX or CTranslate2 sessions). Work beyond
that waits in the pool's queue, so a burst of calls degrades latency instead of oversubscribing
the CPU that the RTP pacing also needs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class InferencePool:
    """A bounded thread pool awaited from asyncio."""

    def __init__(self, name: str, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"{name}: workers must be >= 1, got {workers}")
        self.name = name
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on a pool thread; cancelling the await abandons the result, not the thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Drop queued work and let running work finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)
