"""Local stand-ins for the cloud APIs (OpenAI, ElevenLabs), speaking their real wire formats.

Each double is an aiohttp.web server on 127.0.0.1 with an ephemeral port, so no test traffic
leaves the machine. A test queues what the next requests get (a normal answer, an HTTP error, a
stall, garbage, a cut connection) and reads back what the client sent.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from aiohttp import web


class LoopbackServer:
    """An aiohttp application served on 127.0.0.1:<ephemeral port> for the length of an `async with`.

    `hold()` parks a handler until the server stops, which is how a double plays a stalled
    provider without sleeping for a guessed amount of time.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def hold(self) -> None:
        await self._released.wait()

    async def __aenter__(self) -> Self:
        # Handlers are cancelled when their client goes away, as a real server stops generating.
        self._runner = web.AppRunner(self._app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
