"""OpenSIPS Management Interface (MI) client: JSON-RPC 2.0 over mi_datagram (UDP) or mi_http (HTTP POST).

The connector drives B2B sessions with MI commands. OpenSIPS 3.5 answers them on two transports:

- mi_datagram: one JSON-RPC request per UDP datagram; the reply comes back to the sending socket. Replies
  are matched to requests by their JSON-RPC `id`, so several requests may be in flight on one socket.
- mi_http: a POST of the JSON-RPC request. OpenSIPS only answers a POST carrying
  `Content-Type: application/json`; without it the request hangs until the client gives up.

Requests are serialised exactly like the recorded wire captures (`json.dumps` with its default separators):
`{"jsonrpc": "2.0", "method": ..., "params": {...}, "id": N}`.

`OpenSIPSMI` is the typed facade over either transport and the only place MI command names are spelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import aiohttp

from avc.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
# The largest UDP payload over IPv4 (65,535 - 8 byte UDP header - 20 byte IP header).
MAX_DATAGRAM_BYTES = 65_507
# mi_http replies are not bounded by a datagram; a full `dlg_list` on a busy box is large but never this large.
MAX_HTTP_REPLY_BYTES = 8 * 1024 * 1024

JSONRPC_METHOD_NOT_FOUND = -32601
JSONRPC_INVALID_PARAMS = -32602

# JSON-RPC ids wrap before 2**31 so they always fit the int OpenSIPS parses them into.
_MAX_REQUEST_ID = 2**31 - 1


class MIError(Exception):
    """An MI command failed; `command` names it."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"MI {command}: {reason}")
        self.command = command
        self.reason = reason


class MIRemoteError(MIError):
    """OpenSIPS answered with a JSON-RPC `error` member."""

    def __init__(self, command: str, code: int, message: str, data: object = None) -> None:
        reason = f"error {code} {message}" if data is None else f"error {code} {message}: {data}"
        super().__init__(command, reason)
        self.code = code
        self.message = message
        self.data = data


class MIMethodNotFound(MIRemoteError):
    """-32601: OpenSIPS has no such command (module not loaded, or a typo)."""


class MIInvalidParams(MIRemoteError):
    """-32602: the parameters match no signature of the command, or one has the wrong type."""


class MITimeout(MIError):
    """No reply within the timeout. The command may or may not have been executed."""


class MITransportError(MIError):
    """The request could not be delivered or the reply is unusable (refused, bad HTTP status, not JSON-RPC)."""


def remote_error(command: str, code: int, message: str, data: object = None) -> MIRemoteError:
    """The `MIRemoteError` subclass matching a JSON-RPC error code."""
    if code == JSONRPC_METHOD_NOT_FOUND:
        return MIMethodNotFound(command, code, message, data)
    if code == JSONRPC_INVALID_PARAMS:
        return MIInvalidParams(command, code, message, data)
    return MIRemoteError(command, code, message, data)


class MIClient(Protocol):
    """What the rest of the connector needs from an MI transport."""

    async def call(
        self,
        command: str,
        params: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-command deadline, surfacing as MITimeout
    ) -> Any:
        """Run one MI command and return its JSON-RPC `result`; raise an `MIError` otherwise."""
        ...

    async def close(self) -> None: ...


# --- JSON-RPC encoding shared by both transports ---------------------------------------------------------


class _BadReply(ValueError):
    """A reply that is not a JSON-RPC 2.0 response; the caller turns it into an MITransportError."""


def encode_request(command: str, params: Mapping[str, object] | None, request_id: int) -> bytes:
    """Serialise one request exactly as the wire captures show it."""
    request = {"jsonrpc": "2.0", "method": command, "params": dict(params or {}), "id": request_id}
    try:
        return json.dumps(request, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise MIError(command, f"parameters are not JSON-serialisable: {exc}") from None


def _load_reply(raw: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _BadReply(f"reply is not JSON ({exc}): {raw[:120]!r}") from None
    if not isinstance(reply, dict):
        raise _BadReply(f"reply is a JSON {type(reply).__name__}, not an object")
    if reply.get("jsonrpc") != "2.0":
        raise _BadReply(f"reply has jsonrpc={reply.get('jsonrpc')!r}, expected '2.0'")
    if "id" not in reply:
        raise _BadReply("reply has no id")
    if ("result" in reply) == ("error" in reply):
        raise _BadReply("reply must have exactly one of result and error")
    if "error" in reply:
        error = reply["error"]
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), int)
            or isinstance(error.get("code"), bool)
            or not isinstance(error.get("message"), str)
        ):
            raise _BadReply(f"malformed error member: {error!r}")
    return reply


def _reply_id(reply: Mapping[str, Any]) -> int | None:
    request_id = reply.get("id")
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        return request_id
    return None


def _result_of(command: str, reply: Mapping[str, Any]) -> Any:
    if "error" in reply:
        error = reply["error"]
        raise remote_error(command, error["code"], error["message"], error.get("data"))
    return reply["result"]


def _error_kind(exc: MIError) -> str:
    if isinstance(exc, MIRemoteError):
        return "jsonrpc"
    if isinstance(exc, MITimeout):
        return "timeout"
    if isinstance(exc, MITransportError):
        return "transport"
    return "request"


async def _instrumented(metrics: Metrics | None, transport: str, command: str, exchange: Awaitable[Any]) -> Any:
    """Await one request/reply exchange, recording it in `metrics`."""
    started = time.perf_counter()
    if metrics is not None:
        metrics.mi_requests.labels(command=command).inc()
    try:
        result = await exchange
    except MIError as exc:
        if metrics is not None:
            metrics.mi_errors.labels(command=command, kind=_error_kind(exc)).inc()
            if isinstance(exc, MIRemoteError):
                # A JSON-RPC error is still a full round trip; its latency is as real as a success's.
                metrics.mi_latency.labels(transport=transport).observe(time.perf_counter() - started)
        raise
    if metrics is not None:
        metrics.mi_latency.labels(transport=transport).observe(time.perf_counter() - started)
    return result


def _check_timeout(timeout: float) -> float:
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"MI timeout must be a positive number of seconds, not {timeout!r}")
    return timeout


def _refused(metrics: Metrics | None, error: MIError) -> MIError:
    """Count a request refused before it was sent (it never reaches mi_requests)."""
    if metrics is not None:
        metrics.mi_errors.labels(command=error.command, kind=_error_kind(error)).inc()
    return error


class _RequestIds:
    """Request ids 1, 2, 3, ... wrapping before they overflow OpenSIPS's int."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = self._last % _MAX_REQUEST_ID + 1
        return self._last


# --- mi_datagram -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    command: str
    reply: asyncio.Future[dict[str, Any]]


class DatagramMI(asyncio.DatagramProtocol):
    """MI over mi_datagram: one connected UDP socket, many requests in flight, replies matched by id.

    The socket is connected to OpenSIPS, so the kernel drops datagrams from anyone else and reports an ICMP
    port unreachable (OpenSIPS not listening) through `error_received`.
    """

    transport_name = "datagram"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        metrics: Metrics | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = _check_timeout(timeout)
        self._metrics = metrics
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = _RequestIds()
        self._start_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def create(
        cls,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the client's default per-call timeout, as in __init__
        metrics: Metrics | None = None,
    ) -> DatagramMI:
        client = cls(host, port, timeout=timeout, metrics=metrics)
        await client.start()
        return client

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The (host, port) our socket sends from and OpenSIPS replies to; None before `start`."""
        if self._transport is None:
            return None
        sockname = self._transport.get_extra_info("sockname")
        return str(sockname[0]), int(sockname[1])

    @property
    def pending(self) -> int:
        """Requests sent and still waiting for their reply."""
        return len(self._pending)

    async def start(self) -> None:
        """Open the socket; `call` does this itself on first use."""
        async with self._start_lock:
            if self._closed:
                raise MITransportError("mi_datagram", "client is closed")
            if self._transport is not None:
                return
            loop = asyncio.get_running_loop()
            try:
                await loop.create_datagram_endpoint(lambda: self, remote_addr=(self.host, self.port))
            except OSError as exc:
                raise MITransportError(
                    "mi_datagram", f"cannot open UDP socket to {self.host}:{self.port}: {exc}"
                ) from exc

    async def call(
        self,
        command: str,
        params: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-command deadline, surfacing as MITimeout
    ) -> Any:
        wait = _check_timeout(self.timeout if timeout is None else timeout)
        request_id = self._ids.next()
        try:
            payload = encode_request(command, params, request_id)
        except MIError as exc:
            raise _refused(self._metrics, exc) from None
        if len(payload) > MAX_DATAGRAM_BYTES:
            reason = f"request is {len(payload)} bytes, over the {MAX_DATAGRAM_BYTES} byte datagram limit"
            raise _refused(self._metrics, MIError(command, reason))
        if self._transport is None:
            try:
                await self.start()
            except MITransportError as exc:
                raise MITransportError(command, exc.reason) from exc
        return await _instrumented(
            self._metrics, self.transport_name, command, self._exchange(command, request_id, payload, wait)
        )

    async def _exchange(self, command: str, request_id: int, payload: bytes, wait: float) -> Any:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise MITransportError(command, "client is closed")
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(command, reply)
        try:
            transport.sendto(payload)
            async with asyncio.timeout(wait):
                response = await reply
        except TimeoutError:
            raise MITimeout(command, f"no reply from {self.host}:{self.port} within {wait:g} s") from None
        finally:
            self._pending.pop(request_id, None)
        return _result_of(command, response)

    async def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()
        self._fail_all(lambda command: MITransportError(command, "client closed"))

    # asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_datagram_endpoint always hands a datagram transport, though on 3.11 its class does not
        # inherit asyncio.DatagramTransport, so an isinstance check would fail.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        reason = f"socket lost: {exc}" if exc is not None else "socket closed"
        self._fail_all(lambda command: MITransportError(command, reason))

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            reply = _load_reply(data)
        except _BadReply as exc:
            self._unmatched_reply(str(exc))
            return
        request_id = _reply_id(reply)
        if request_id is None:
            # JSON-RPC answers a request it could not parse with id null; it is a reply to one of ours.
            self._unmatched_reply(f"reply has id {reply.get('id')!r}: {_describe(reply)}")
            return
        pending = self._pending.get(request_id)
        if pending is None:
            log.warning(
                "MI %s:%d: dropped a reply for id %d that no request is waiting for (late after a timeout?)",
                self.host,
                self.port,
                request_id,
            )
            return
        if not pending.reply.done():
            pending.reply.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        # On a connected UDP socket this is the ICMP error for one of our datagrams; we cannot tell which,
        # and the port is closed for all of them, so every waiting request fails at once instead of timing out.
        if isinstance(exc, ConnectionRefusedError):
            reason = f"{self.host}:{self.port} unreachable, nothing listens there (ICMP port unreachable)"
        else:
            reason = f"socket error towards {self.host}:{self.port}: {exc}"
        log.warning("MI over mi_datagram: %s", reason)
        self._fail_all(lambda command: MITransportError(command, reason))

    def _unmatched_reply(self, reason: str) -> None:
        if len(self._pending) == 1:
            # With one request in flight the bad reply can only be its answer: fail it now rather than time out.
            (pending,) = self._pending.values()
            if not pending.reply.done():
                pending.reply.set_exception(MITransportError(pending.command, reason))
            return
        log.warning("MI %s:%d: dropped an unusable reply: %s", self.host, self.port, reason)

    def _fail_all(self, error: Callable[[str], MIError]) -> None:
        for pending in list(self._pending.values()):
            if not pending.reply.done():
                pending.reply.set_exception(error(pending.command))


def _describe(reply: Mapping[str, Any]) -> str:
    if "error" in reply:
        error = reply["error"]
        return f"error {error.get('code')} {error.get('message')}"
    return "result"


# --- mi_http -----------------------------------------------------------------------------------------


class HttpMI:
    """MI over mi_http, on one persistent aiohttp session (keep-alive connections to OpenSIPS)."""

    transport_name = "http"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        metrics: Metrics | None = None,
        max_reply_bytes: int = MAX_HTTP_REPLY_BYTES,
    ) -> None:
        self.url = url
        self.timeout = _check_timeout(timeout)
        self.max_reply_bytes = max_reply_bytes
        self._metrics = metrics
        self._ids = _RequestIds()
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def call(
        self,
        command: str,
        params: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-command deadline, surfacing as MITimeout
    ) -> Any:
        wait = _check_timeout(self.timeout if timeout is None else timeout)
        try:
            payload = encode_request(command, params, self._ids.next())
        except MIError as exc:
            raise _refused(self._metrics, exc) from None
        return await _instrumented(self._metrics, self.transport_name, command, self._exchange(command, payload, wait))

    async def _exchange(self, command: str, payload: bytes, wait: float) -> Any:
        session = self._open_session(command)
        try:
            async with asyncio.timeout(wait):
                raw = await self._post(session, command, payload)
        except TimeoutError:
            raise MITimeout(command, f"no reply from {self.url} within {wait:g} s") from None
        except aiohttp.ClientError as exc:
            raise MITransportError(command, f"POST {self.url} failed: {str(exc) or type(exc).__name__}") from exc
        try:
            reply = _load_reply(raw)
        except _BadReply as exc:
            raise MITransportError(command, str(exc)) from None
        return _result_of(command, reply)

    async def _post(self, session: aiohttp.ClientSession, command: str, payload: bytes) -> bytes:
        # mi_http never answers a POST without this exact Content-Type: it would hang until our timeout.
        headers = {"Content-Type": "application/json"}
        async with session.post(self.url, data=payload, headers=headers) as response:
            if response.status != 200:
                raise MITransportError(command, f"HTTP {response.status} {response.reason or ''} from {self.url}")
            if response.content_length is not None and response.content_length > self.max_reply_bytes:
                raise MITransportError(
                    command, f"reply of {response.content_length} bytes is over the {self.max_reply_bytes} byte limit"
                )
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > self.max_reply_bytes:
                    raise MITransportError(command, f"reply is over the {self.max_reply_bytes} byte limit")
            return bytes(body)

    def _open_session(self, command: str) -> aiohttp.ClientSession:
        if self._closed:
            raise MITransportError(command, "client is closed")
        if self._session is None:
            # Our own asyncio.timeout bounds each call; aiohttp's default 5-minute total must not interfere.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


def mi_client_from_url(url: str, *, timeout: float = DEFAULT_TIMEOUT, metrics: Metrics | None = None) -> MIClient:
    """An MI client for `udp:HOST:PORT`, `udp://HOST:PORT` (mi_datagram) or `http(s)://HOST:PORT/PATH` (mi_http).

    A datagram client opens its socket on its first call.
    """
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"MI URL {url!r} has no scheme; expected udp:HOST:PORT or http://HOST:PORT/PATH")
    if scheme in ("http", "https"):
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"MI URL {url!r} has no host")
        return HttpMI(url, timeout=timeout, metrics=metrics)
    if scheme == "udp":
        parts = urlsplit("udp://" + rest.removeprefix("//"))
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"MI URL {url!r} has an invalid port") from None
        if not parts.hostname or port is None or parts.path not in ("", "/"):
            raise ValueError(f"MI URL {url!r} must look like udp:HOST:PORT")
        return DatagramMI(parts.hostname, port, timeout=timeout, metrics=metrics)
    raise ValueError(f"MI URL {url!r}: unsupported scheme {scheme!r}; expected udp or http")


# --- typed facade ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One entry of `subscribers_list`: the socket events go to, its expire and remaining time (seconds).

    `expire` and `ttl` are None for a subscription that never expires.
    """

    socket: str
    expire: int | None
    ttl: int | None


def _optional(params: dict[str, object], **optional: object) -> dict[str, object]:
    """`params` plus those optional ones that are set: OpenSIPS picks the signature by the names sent."""
    params.update((name, value) for name, value in optional.items() if value is not None)
    return params


# b2b_entities' entity states as `ua_session_list` prints them (b2b_entities/dlg.h in 3.5: 1 new, 3 early,
# 4 confirmed, 5 established, 6 re-INVITE pending, 7 terminated; capture 14 shows 5 and 7).
B2B_STATE_CONFIRMED = (4, 5, 6)
B2B_STATE_TERMINATED = 7


@dataclass(frozen=True, slots=True)
class UaSessionInfo:
    """One entry of `ua_session_list`: the session key (the UAS's To-tag), b2b state, Call-ID, last reply sent."""

    key: str
    state: int
    call_id: str
    last_reply_code: int | None
    from_uri: str = ""  # the caller's From, tag and display name: enough to address and name a recovered call
    from_tag: str = ""
    display: str = ""
    to_uri: str = ""

    @property
    def answered(self) -> bool:
        return self.state in B2B_STATE_CONFIRMED

    @property
    def ended(self) -> bool:
        return self.state >= B2B_STATE_TERMINATED


# What an empty body is labelled when headers must travel without anything to send (see `_with_body`).
EMPTY_BODY_TYPE = "text/plain"


def _with_body(
    params: dict[str, object], body: str | None, extra_headers: str | None, content_type: str | None
) -> dict[str, object]:
    """`params` plus a body and its headers, in the form OpenSIPS 3.5.9 sends intact.

    b2b_entities (ua_build_hdrs) reserves room for `extra_headers` but copies them only when a body is given:
    without one the SIP message carries uninitialised memory where the headers should be, so a REFER loses its
    Refer-To and a 503 its Retry-After (captures 15 and 16). With a body, even an empty one, they arrive intact
    after the body's Content-Type (capture 17). So headers never go without a body: an empty one, labelled
    `EMPTY_BODY_TYPE` unless the caller names a type. `content_type` is a MIME type; MI wants the whole header
    line, which is built here.
    """
    if extra_headers and body is None:
        body = ""
        content_type = content_type or EMPTY_BODY_TYPE
    if body is not None:
        params["body"] = body
    if extra_headers:
        params["extra_headers"] = extra_headers if extra_headers.endswith("\r\n") else extra_headers + "\r\n"
    if content_type is not None:
        params["content_type"] = f"Content-Type: {content_type}\r\n"
    return params


class OpenSIPSMI:
    """Typed MI commands of OpenSIPS 3.5 (b2b_entities, dialog, event interface, core)."""

    def __init__(self, client: MIClient) -> None:
        self.client = client

    async def close(self) -> None:
        await self.client.close()

    async def ua_session_reply(
        self,
        key: str,
        method: str,
        code: int,
        reason: str,
        body: str | None = None,
        extra_headers: str | None = None,
        content_type: str | None = None,
    ) -> None:
        """Reply `code reason` to the pending `method` request of a session; a body is `content_type`
        (application/sdp when not given). Headers always travel with a body (`_with_body`)."""
        params = _with_body(
            {"key": key, "method": method, "code": code, "reason": reason}, body, extra_headers, content_type
        )
        await self.client.call("ua_session_reply", params)

    async def ua_session_update(
        self,
        key: str,
        method: str,
        body: str | None = None,
        extra_headers: str | None = None,
        content_type: str | None = None,
    ) -> None:
        """Send a sequential request (re-INVITE, INFO, REFER, ...) within a session."""
        await self.client.call(
            "ua_session_update", _with_body({"key": key, "method": method}, body, extra_headers, content_type)
        )

    async def ua_session_terminate(self, key: str) -> None:
        """End a session: OpenSIPS sends BYE when it was answered, and deletes it (no event follows).

        It takes no headers: 3.5.9 would send them garbled (it copies `extra_headers` only with a body, and
        this command has none), so the BYE carries only what OpenSIPS puts in it.
        """
        await self.client.call("ua_session_terminate", {"key": key})

    async def ua_session_client_start(
        self,
        ruri: str,
        to: str,
        from_: str,
        body: str | None = None,
        extra_headers: str | None = None,
        content_type: str | None = None,
        flags: str | None = None,
        proxy: str | None = None,
        socket: str | None = None,
    ) -> str:
        """Start an outgoing call (OpenSIPS sends the INVITE); returns the new session key."""
        params = _optional(
            _with_body({"ruri": ruri, "to": to, "from": from_}, body, extra_headers, content_type),
            flags=flags,
            proxy=proxy,
            socket=socket,
        )
        key = await self.client.call("ua_session_client_start", params)
        if not isinstance(key, str) or not key:
            raise MITransportError("ua_session_client_start", f"expected a session key, got {key!r}")
        return key

    async def ua_session_list(self, key: str | None = None) -> Any:
        """One session's state (an object) for `key`, else the list of all sessions."""
        return await self.client.call("ua_session_list", _optional({}, key=key))

    async def ua_sessions(self) -> list[UaSessionInfo]:
        """Every UA server session the node holds (capture 14's fields); entries without a key are skipped."""
        result = await self.ua_session_list()
        if not isinstance(result, list):
            raise MITransportError("ua_session_list", f"expected a list of sessions, got {type(result).__name__}")
        sessions = []
        for item in result:
            if isinstance(item, dict) and isinstance(item.get("to_tag"), str) and item["to_tag"]:
                code = item.get("last_reply_code")
                state = item.get("state", 0)
                if isinstance(state, str) and state.isascii() and state.isdecimal():
                    state = int(state)
                if isinstance(state, bool) or not isinstance(state, int):
                    # A misread state would end or refuse a live call: an unusable reply, not a guess.
                    raise MITransportError("ua_session_list", f"session {item['to_tag']!r} has state {state!r}")
                sessions.append(
                    UaSessionInfo(
                        key=item["to_tag"],
                        state=state,
                        call_id=str(item.get("callid", "")),
                        last_reply_code=code if isinstance(code, int) else None,
                        from_uri=str(item.get("from_uri", "")),
                        from_tag=str(item.get("from_tag", "")),
                        display=str(item.get("from", "")).strip().strip('"'),
                        to_uri=str(item.get("to_uri", "")),
                    )
                )
        return sessions

    async def cache_store(self, attr: str, value: str, expire: int, system: str = "local") -> None:
        """Store `attr` = `value` in the node's cachedb `system` for `expire` seconds (0 would keep it for ever)."""
        await self.client.call("cache_store", {"system": system, "attr": attr, "value": value, "expire": expire})

    async def cache_remove(self, attr: str, system: str = "local") -> None:
        await self.client.call("cache_remove", {"system": system, "attr": attr})

    async def event_subscribe(self, event: str, socket: str, expire: int) -> None:
        """Subscribe `socket` (e.g. `udp:127.0.0.1:9999`) to `event` for `expire` seconds.

        Subscribing an already subscribed socket renews it. `expire=0` unsubscribes: OpenSIPS keeps the entry
        with a zero lifetime and drops it the next time the event is raised.
        """
        if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0:
            raise ValueError(f"expire must be a non-negative int, not {expire!r}")
        await self.client.call("event_subscribe", {"event": event, "socket": socket, "expire": expire})

    async def subscribers_list(self, event: str) -> list[Subscriber]:
        """The sockets subscribed to `event` (an empty list when there are none)."""
        command = "subscribers_list"
        result = await self.client.call(command, {"event": event})
        return _parse_subscribers(command, result)

    async def dlg_push_var(self, call_id: str, name: str, value: str) -> None:
        """Set dialog variable `name` on the dialog with this Call-ID (an unknown Call-ID still answers OK)."""
        # DID must be a JSON array: OpenSIPS 3.5.9 rejects a plain string with -32602 "Bad type for parameter 'DID'".
        await self.client.call("dlg_push_var", {"dlg_val_name": name, "dlg_val_value": value, "DID": [call_id]})

    async def dlg_list_ctx(self, call_id: str | None = None, from_tag: str | None = None) -> Any:
        """Dialogs with their context (dialog values under `context.values`); one dialog when `call_id` is given."""
        if from_tag is not None and call_id is None:
            raise ValueError("from_tag needs call_id")
        return await self.client.call("dlg_list_ctx", _optional({}, callid=call_id, from_tag=from_tag))

    async def uptime(self) -> dict[str, Any]:
        """OpenSIPS's uptime report; also the cheapest proof that it answers."""
        result = await self.client.call("uptime")
        if not isinstance(result, dict):
            raise MITransportError("uptime", f"expected an object, got {result!r}")
        return result

    async def version(self) -> str:
        """The server string, e.g. `OpenSIPS (3.5.9 (x86_64/linux))`."""
        result = await self.client.call("version")
        server = result.get("Server") if isinstance(result, dict) else None
        if not isinstance(server, str):
            raise MITransportError("version", f"expected {{'Server': str}}, got {result!r}")
        return server


def _parse_subscribers(command: str, result: object) -> list[Subscriber]:
    # OpenSIPS prints an empty "Event" object when nobody is subscribed, and the list under "Subscribers".
    event = result.get("Event") if isinstance(result, dict) else None
    if not isinstance(event, dict):
        raise MITransportError(command, f"expected {{'Event': {{...}}}}, got {result!r}")
    entries = event.get("Subscribers", [])
    if not isinstance(entries, list):
        raise MITransportError(command, f"Subscribers is not a list: {entries!r}")
    subscribers: list[Subscriber] = []
    for entry in entries:
        socket = entry.get("socket") if isinstance(entry, dict) else None
        if not isinstance(socket, str):
            raise MITransportError(command, f"malformed subscriber entry: {entry!r}")
        subscribers.append(Subscriber(socket, _seconds(entry.get("expire")), _seconds(entry.get("ttl"))))
    return subscribers


def _seconds(value: object) -> int | None:
    # "never" (a subscription without expiry) and a missing field both mean no limit.
    return value if isinstance(value, int) and not isinstance(value, bool) else None
