"""What the cloud providers share: API keys, base URLs, options, and one pooled HTTP client each.

The cloud APIs are spoken directly with aiohttp (already a core dependency) rather than through
the `openai` and `elevenlabs` SDKs: those pull in httpx and pydantic, retry on their own (which
would hide failures from our breaker and delay the fallback), and cannot bound the time to the
first streamed byte, which is what a caller waiting in silence experiences.

Every failure leaves here as a typed `EngineError`, and no API key ever appears in a message:
keys live in `ApiKey`, whose repr is masked, travel only in request headers, and error bodies
from the server (which may echo part of the key) are reduced to their error code.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from yarl import URL

from engines.errors import EngineConfigError, EngineInputError
from engines.resilience import EngineUnavailableError, RetryPolicy

_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_ERROR_BODY_LIMIT: Final = 4096
_CODE_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# 408 timeout, 409 conflict, 425 too early, 429 rate limit: the same request may pass a moment later.
_RETRYABLE_STATUSES: Final = frozenset({408, 409, 425, 429})
# The request itself is wrong (bad text, prompt too long): another provider may still take it.
_INPUT_STATUSES: Final = frozenset({400, 413, 422})


class ApiKey:
    """A secret that never shows itself in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the request header and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey(***)"

    __str__ = __repr__


def api_key_from_env(variable: str, provider: str) -> ApiKey:
    """The key in environment variable `variable`; its absence stops start-up."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise EngineConfigError(f"{provider}: set the API key in the environment variable {variable}")
    if not value.isascii() or not value.isprintable() or any(char.isspace() for char in value):
        # Checked here because it travels in a header; the message must not quote it.
        raise EngineConfigError(f"{provider}: the API key in {variable} contains spaces or control characters")
    return ApiKey(value)


def base_url(option: str | None, variable: str, default: str, provider: str) -> URL:
    """The API's base URL: the option, else environment variable `variable`, else `default`.

    Plain http is refused except to loopback (a local test server), so the key never crosses
    a network in clear text.
    """
    raw = option or os.environ.get(variable, "").strip() or default
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise EngineConfigError(f"{provider}: base URL {raw!r} must be an absolute http(s) URL")
    if url.scheme == "http" and url.host not in _LOOPBACK_HOSTS:
        raise EngineConfigError(f"{provider}: refusing to send the API key over plain http to {url.host}")
    if url.query_string or url.fragment:
        raise EngineConfigError(f"{provider}: base URL {raw!r} must not carry a query or fragment")
    return url


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-request limits in seconds: to connect, to the first body byte, and for the whole answer."""

    connect: float = 1.0
    first_byte: float = 2.0
    total: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.connect <= self.total or not 0 < self.first_byte <= self.total:
            raise ValueError("timeouts must be > 0, with connect and first_byte no longer than total")


@dataclass(frozen=True, slots=True)
class CloudOptions:
    """Options every cloud provider takes; each provider's options dataclass extends this one."""

    base_url: str | None = None
    connect_timeout: float = 1.0
    first_byte_timeout: float = 2.0
    total_timeout: float = 20.0
    max_attempts: int = 2
    retry_base_delay: float = 0.1
    retry_max_delay: float = 1.0
    max_connections: int = 100

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        # Built once here so that bad values stop start-up with the option names in the message.
        self.timeouts()
        self.retry_policy()

    def timeouts(self) -> Timeouts:
        return Timeouts(connect=self.connect_timeout, first_byte=self.first_byte_timeout, total=self.total_timeout)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts, base_delay=self.retry_base_delay, max_delay=self.retry_max_delay
        )


def error_code(document: object) -> str:
    """A short error identifier from a parsed error body, never its free text (which may echo the key).

    Knows the OpenAI form `{"error": {"code"|"type": ...}}` and the ElevenLabs / FastAPI forms
    `{"detail": {"status": ...}}` and `{"detail": [{"type": ...}]}`.
    """
    candidates: list[object] = []
    if isinstance(document, dict):
        for key in ("error", "detail"):
            inner = document.get(key)
            if isinstance(inner, list) and inner:
                inner = inner[0]
            if isinstance(inner, dict):
                candidates += [inner.get("code"), inner.get("status"), inner.get("type")]
    for candidate in candidates:
        if isinstance(candidate, str) and _CODE_PATTERN.fullmatch(candidate):
            return candidate
    return "no error code"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    # Only the delta-seconds form; an HTTP date is rare from these APIs and ignored.
    try:
        seconds = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def _status_error(provider: str, response: aiohttp.ClientResponse) -> EngineInputError | EngineUnavailableError:
    body = bytearray()
    while len(body) < _ERROR_BODY_LIMIT and (piece := await response.content.read(_ERROR_BODY_LIMIT - len(body))):
        body += piece
    try:
        code = error_code(json.loads(body))
    except ValueError:
        code = "no JSON error body"
    status = response.status
    message = f"{provider}: HTTP {status} ({code})"
    if status in _INPUT_STATUSES:
        return EngineInputError(message)
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    return EngineUnavailableError(message, retryable=retryable, retry_after=_retry_after(response.headers))


class HttpClient:
    """One provider's pooled HTTPS connections, shared by every call of the process.

    The session is created on first use inside the running loop (providers are loaded before
    the loop starts) and kept, so calls reuse warm TLS connections instead of paying a
    handshake per request.
    """

    def __init__(self, provider: str, timeouts: Timeouts, *, max_connections: int = 100) -> None:
        self.provider = provider
        self.timeouts = timeouts
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Task[None] | None = None

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and (self._session.closed or self._loop is not loop):
            self._discard()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect),
                # Proxy variables from the environment must not silently redirect traffic (and keys).
                trust_env=False,
                raise_for_status=False,
            )
            self._loop = loop
        return self._session

    def _discard(self) -> None:
        """Forget the session, closing it as far as the calling context allows."""
        session, loop, self._session, self._loop = self._session, self._loop, None, None
        if session is None or loop is None or session.closed:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            # Kept in an attribute so the task is not garbage-collected before it runs.
            self._closing = running.create_task(session.close())
        elif not loop.is_closed():
            loop.run_until_complete(session.close())
        else:
            # Its loop has ended (a shutdown that skipped `aclose()`): a short-lived loop still
            # releases the connection pool, so nothing is reported unclosed at exit.
            asyncio.run(session.close())

    async def stream_post(
        self,
        url: URL,
        *,
        headers: Mapping[str, str],
        body: Mapping[str, Any],
        params: Mapping[str, str] | None = None,
        content_types: tuple[str, ...] = (),
        first_byte_timeout: float | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """POST `body` as JSON and yield the response body as it arrives.

        Raises `EngineUnavailableError` when the connection fails, no byte of the body arrives
        within the first-byte timeout, or the whole answer takes longer than the total timeout;
        `EngineInputError` when the server rejects the request as invalid. A response whose
        Content-Type starts with none of `content_types` (when given) is a protocol error.
        Deadlines are applied to each await separately, never across a `yield`, so the
        consumer's own time between items is not cancelled by them.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        total_at = started + self.timeouts.total
        first_byte = self.timeouts.first_byte if first_byte_timeout is None else first_byte_timeout
        first_byte_at = min(total_at, started + first_byte)
        session = self._open()
        phase = "first byte"
        try:
            async with asyncio.timeout_at(first_byte_at):
                response = await session.post(url, json=dict(body), headers=dict(headers), params=params)
            finished = False
            try:
                if response.status != 200:
                    async with asyncio.timeout_at(total_at):
                        raise await _status_error(self.provider, response)
                content_type = response.headers.get("Content-Type", "")
                if content_types and not content_type.startswith(content_types):
                    raise EngineUnavailableError(
                        f"{self.provider}: unexpected Content-Type {content_type[:64]!r}", retryable=False
                    )
                async with asyncio.timeout_at(first_byte_at):
                    chunk = await response.content.readany()
                phase = "total"
                while chunk:
                    yield chunk
                    async with asyncio.timeout_at(total_at):
                        chunk = await response.content.readany()
                finished = True
            finally:
                # An unfinished body cannot be reused, so its connection is dropped, not pooled.
                if finished:
                    response.release()
                else:
                    response.close()
        except aiohttp.ConnectionTimeoutError:
            raise EngineUnavailableError(
                f"{self.provider}: connect timeout after {self.timeouts.connect:.3g} s", retryable=True
            ) from None
        except TimeoutError:
            limit = first_byte_at - started if phase == "first byte" else self.timeouts.total
            raise EngineUnavailableError(
                f"{self.provider}: {phase} timeout after {limit:.3g} s", retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            # The exception text names host and port at most; request headers are never in it.
            raise EngineUnavailableError(f"{self.provider}: {type(exc).__name__}: {exc}"[:300], retryable=True) from exc

    async def post_json(self, url: URL, *, headers: Mapping[str, str], body: Mapping[str, Any]) -> object:
        """POST `body` and return the parsed JSON answer of a non-streaming endpoint.

        Such an answer's first byte comes only when the whole answer is ready, so only the
        connect and total timeouts apply.
        """
        parts: list[bytes] = []
        async for chunk in self.stream_post(
            url, headers=headers, body=body, content_types=("application/json",), first_byte_timeout=self.timeouts.total
        ):
            parts.append(chunk)
        try:
            return json.loads(b"".join(parts))
        except ValueError as exc:
            raise EngineUnavailableError(
                f"{self.provider}: answer is not valid JSON ({exc})", retryable=False
            ) from None

    async def aclose(self) -> None:
        """Close the pooled connections; the next request opens new ones."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def close(self) -> None:
        """Best-effort synchronous close for `Engines.close()`; prefer `await aclose()` while the loop runs."""
        self._discard()
