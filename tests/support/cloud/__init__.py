"""Local stand-ins for the cloud APIs (OpenAI, ElevenLabs), speaking their real wire formats.

Each double is an aiohttp.web server on 127.0.0.1 with an ephemeral port, so no test traffic
leaves the machine. A test queues what the next requests get (a normal answer, an HTTP error, a
stall, garbage, a cut connection) and reads back what the client sent.

What the engine tests share is here too: the keys the doubles accept, the engine options that keep failure
paths to milliseconds, `serving()` (a double in the environment the provider reads) and `drain()`.
The pytest fixtures built on them are in `tests/engines/conftest.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self, TypeVar

from aiohttp import web

from engines.manifest import Manifest

if TYPE_CHECKING:
    import pytest

_T = TypeVar("_T")
_D = TypeVar("_D", bound="CloudDouble")

OPENAI_KEY = "sk-proj-test0123456789SECRETKEY"
ELEVENLABS_KEY = "sk_0123456789abcdefSECRETVOICEKEY"
# The cloud engines read no model files: an empty manifest is all `load` needs.
CLOUD_MANIFEST = Manifest(root=Path("."), entries={})
# Engine options for the tests: short timeouts and retry delays, so failure paths take milliseconds.
FAST = {
    "connect_timeout": 0.5,
    "first_byte_timeout": 0.5,
    "total_timeout": 2.0,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
}


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


class CloudDouble(LoopbackServer):
    """A provider's API on loopback: the key it accepts and the environment variables its client reads."""

    key_env: ClassVar[str]
    base_url_env: ClassVar[str]

    def __init__(self, app: web.Application, api_key: str) -> None:
        super().__init__(app)
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        return self.origin


@asynccontextmanager
async def serving(double: _D, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[_D]:
    """Start `double` and point its provider at it the way production configures one: key and URL in the env."""
    async with double:
        monkeypatch.setenv(double.key_env, double.api_key)
        monkeypatch.setenv(double.base_url_env, double.base_url)
        yield double


async def drain(stream: AsyncGenerator[_T, None], into: list[_T] | None = None) -> list[_T]:
    """Everything a stream yields (into `into` as it comes, when given), closing it even when a test fails."""
    items = [] if into is None else into
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            items.append(chunk)
    return items
