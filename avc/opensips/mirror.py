"""Mirror of call state into the edge proxy's dialog (`dlg_push_var` by Call-ID).

Operations read these values with `opensips-cli -x mi dlg_list_ctx` on the edge, and the edge persists
them to PostgreSQL. A push must never hold up a call, so pushes go through a queue drained by one
worker; when the edge is slow, only the newest value per (Call-ID, name) is kept.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from avc.metrics import Metrics
from avc.opensips.mi import MIError, OpenSIPSMI

log = logging.getLogger(__name__)


class DialogMirror:
    def __init__(self, mi: OpenSIPSMI | None, metrics: Metrics, max_pending: int = 10_000) -> None:
        self._mi = mi
        self._metrics = metrics
        self._pending: dict[tuple[str, str], str] = {}
        self._max_pending = max_pending
        self._wakeup = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._mi is not None

    def start(self) -> None:
        if self._mi is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="dialog-mirror")

    def push(self, call_id: str, name: str, value: str) -> None:
        if self._mi is None:
            return
        key = (call_id, name)
        if key not in self._pending and len(self._pending) >= self._max_pending:
            self._metrics.dialog_pushes.labels("dropped").inc()
            return
        # Re-inserting moves the key to the end: dict order is the send order.
        self._pending.pop(key, None)
        self._pending[key] = value
        self._empty.clear()
        self._wakeup.set()

    async def _run(self) -> None:
        assert self._mi is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                (call_id, name), value = next(iter(self._pending.items()))
                del self._pending[(call_id, name)]
                try:
                    await self._mi.dlg_push_var(call_id, name, value)
                    self._metrics.dialog_pushes.labels("ok").inc()
                except MIError as exc:
                    self._metrics.dialog_pushes.labels("error").inc()
                    log.warning("dlg_push_var %s=%s failed: %s", name, value, exc)
            self._empty.set()

    async def close(self, drain_timeout: float = 1.0) -> None:
        if self._task is None:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), drain_timeout)
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self._task = None
