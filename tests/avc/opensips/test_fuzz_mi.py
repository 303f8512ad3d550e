"""Property-based fuzzing of avc.opensips.mi reply handling: hostile MI replies over mi_datagram and mi_http.

Contract: whatever OpenSIPS (or anything on its port) answers, a command returns a result or raises an
`MIError` (`MIRemoteError`, `MITransportError`, `MITimeout`), never another exception; the typed facade
(`OpenSIPSMI`) does the same for any JSON-RPC `result`. Replies are real datagrams from a UDP server on
127.0.0.1 and real HTTP responses from a TCP server on 127.0.0.1, seeded with the responses OpenSIPS 3.5.9 sent
(tests/support/captures.py) and mutated. `AVC_FUZZ_EXAMPLES` (default 300) sets the examples per test; runs are
derandomized. The settings and the shared mutators live in tests/support/fuzz.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, cast

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from avc.opensips.mi import DatagramMI, HttpMI, MIError, MIRemoteError, OpenSIPSMI
from tests.support.captures import http_body, mi_exchanges
from tests.support.fuzz import FUZZ, byte_mutants, json_bytes, json_scalars, json_values, nasty_text

EXCHANGES = mi_exchanges()
# Captured replies with their id replaced by a marker the fake servers swap for the live request's id.
ID_MARKER = b"424242424242"
CAPTURED_REPLIES = [
    re.sub(rb'"id":\s*-?\d+', b'"id":' + ID_MARKER, e.response if e.transport == "datagram" else http_body(e.response))
    for e in EXCHANGES
]
CAPTURED_RESULTS: list[Any] = [
    json.loads(reply.replace(ID_MARKER, b"1")).get("result") for reply in CAPTURED_REPLIES if b'"result"' in reply
]
CAPTURED_HTTP = [e.response for e in EXCHANGES if e.transport == "http"]
SENTINEL = "fuzz-sentinel"

hostile_text = nasty_text(["\r\n", "\U0001f4de", "OK", "5", "-1", "never"])
scalars = json_scalars(hostile_text)
values = json_values(hostile_text)


@st.composite
def json_replies(draw: st.DrawFn) -> bytes:
    """A JSON-RPC-shaped reply with members missing, retyped or added; the id is usually the live one."""
    reply: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "1.0", 2.0, None]))}
    shape = draw(st.sampled_from(("result", "error", "both", "neither")))
    if shape in ("result", "both"):
        reply["result"] = draw(st.sampled_from(CAPTURED_RESULTS) | values)
    if shape in ("error", "both"):
        error: Any = {
            "code": draw(st.sampled_from([-32601, -32602, -32000, 404, 500, True, 1.5, "500", None, 2**70])),
            "message": draw(hostile_text | scalars),
        }
        if draw(st.booleans()):
            error["data"] = draw(values)
        if draw(st.booleans()):
            error = draw(values)
        reply["error"] = error
    id_kind = draw(st.sampled_from(("live", "live", "live", "absent", "other")))
    if id_kind == "other":
        reply["id"] = draw(scalars)
    elif id_kind == "live":
        reply["id"] = "__ID__"
    return json_bytes(reply, ensure_ascii=draw(st.booleans())).replace(b'"__ID__"', ID_MARKER)


hostile_replies = (
    byte_mutants(CAPTURED_REPLIES)
    | json_replies()
    | st.sampled_from(CAPTURED_REPLIES)
    | st.binary(max_size=256)
    | values.map(json_bytes)
)


def live(reply: bytes, request: bytes) -> bytes:
    """The reply with the marker replaced by the request's id (when the request is JSON with one)."""
    try:
        request_id = json.loads(request)["id"]
    except (ValueError, KeyError, TypeError):
        return reply
    return reply.replace(ID_MARKER, str(request_id).encode())


def check_outcome(result: Callable[[], Awaitable[Any]]) -> None:
    async def run() -> None:
        try:
            await result()
        except MIError as exc:
            event(f"MIError: {type(exc).__name__}")
            return
        event("result")

    asyncio.run(run())


# --- mi_datagram: a real UDP server that answers every request with a fuzzed datagram -----------------------


class _FuzzedUdpServer(asyncio.DatagramProtocol):
    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # On 3.11 the datagram transport's class does not inherit asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.transport is not None
        for reply in self.replies:
            self.transport.sendto(live(reply, data), addr)
        # A reply the client drops (another id) must not cost a timeout: a valid one always follows.
        self.transport.sendto(
            live(b'{"jsonrpc":"2.0","result":"%s","id":%s}' % (SENTINEL.encode(), ID_MARKER), data), addr
        )


@FUZZ
@given(st.lists(hostile_replies, min_size=1, max_size=3))
@example([b"[" * 60_000])  # nesting deeper than the JSON decoder's recursion limit
@example([b'{"jsonrpc":"2.0","result":' + b"7" * 5000 + b',"id":' + ID_MARKER + b"}"])  # over int's digit limit
@example([b'\xff\xfe{\x00"\x00}\x00'])  # UTF-16 with a BOM: json.loads(bytes) decodes it
@example([b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Bad","data":NaN},"id":' + ID_MARKER + b"}"])
@example([b'{"jsonrpc":"2.0","error":{"code":1e400,"message":"x"},"id":' + ID_MARKER + b"}"])
@example([b'{"jsonrpc":"2.0","result":1,"id":' + ID_MARKER + b".5}"])
def test_any_datagram_reply_gives_a_result_or_an_mi_error(replies: list[bytes]) -> None:
    async def exchange() -> Any:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _FuzzedUdpServer(replies), local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        client = await DatagramMI.create("127.0.0.1", port, timeout=2.0)
        try:
            return await client.call("uptime")
        finally:
            await client.close()
            transport.close()

    check_outcome(exchange)


# --- mi_http: a real TCP server that answers every request with fuzzed HTTP bytes ----------------------------


class _FuzzedHttpServer:
    """A plain-socket HTTP/1.1 server in a thread: reads one request, writes `self.reply` raw, closes."""

    def __init__(self) -> None:
        self.reply = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mi"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2.0)
                try:
                    request = self._read_request(connection)
                    connection.sendall(live(self.reply, request))
                    connection.shutdown(socket.SHUT_WR)
                except OSError:
                    continue

    @staticmethod
    def _read_request(connection: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.search(rb"(?i)content-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
        return body

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()


@pytest.fixture(scope="module")
def http_server() -> Iterator[_FuzzedHttpServer]:
    server = _FuzzedHttpServer()
    yield server
    server.close()


@st.composite
def http_messages(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([b"200 OK", b"200 ", b"500 Server Error", b"404 Not Found", b"999 X", b"20 OK"]))
    body = draw(hostile_replies)
    headers = [b"Content-Type: application/json"]
    length = draw(st.sampled_from(("exact", "short", "long", "absent", "garbage", "chunked", "huge")))
    if length == "exact":
        headers.append(b"Content-Length: %d" % len(body))
    elif length == "short":
        headers.append(b"Content-Length: %d" % max(len(body) - draw(st.integers(1, 20)), 0))
    elif length == "long":
        headers.append(b"Content-Length: %d" % (len(body) + draw(st.integers(1, 20))))
    elif length == "garbage":
        headers.append(b"Content-Length: " + draw(st.sampled_from([b"-1", b"x", b"1e3", b"", b"0x10", b"12, 13"])))
    elif length == "huge":
        headers.append(b"Content-Length: 99999999999999999999")
    elif length == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        size = draw(st.sampled_from([b"%x" % len(body), b"zz", b"-1", b"ffffffffffffffff"]))
        body = size + b"\r\n" + body + draw(st.sampled_from([b"\r\n0\r\n\r\n", b"\r\n", b""]))
    extra = draw(st.lists(st.binary(max_size=30), max_size=2))
    return b"HTTP/1.1 " + status + b"\r\n" + b"\r\n".join(headers + extra) + b"\r\n\r\n" + body


hostile_http = http_messages() | byte_mutants(CAPTURED_HTTP) | st.binary(max_size=200)


@FUZZ
@given(hostile_http)
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[[[[[")
@example(b"HTTP/1.1 200 \xff\xfe\r\nContent-Length: 2\r\n\r\n{}")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
@example(b"")
def test_any_http_reply_gives_a_result_or_an_mi_error(http_server: _FuzzedHttpServer, reply: bytes) -> None:
    http_server.reply = reply

    async def exchange() -> Any:
        client = HttpMI(http_server.url, timeout=2.0)
        try:
            return await client.call("uptime")
        finally:
            await client.close()

    check_outcome(exchange)


# --- the typed facade over any JSON-RPC result ----------------------------------------------------------------


class _ResultClient:
    """An MIClient whose every command returns `result`."""

    def __init__(self, result: Any) -> None:
        self.result = result

    async def call(
        self,
        command: str,
        params: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - mirrors MIClient
    ) -> Any:
        return self.result

    async def close(self) -> None:
        return None


@st.composite
def mutated_results(draw: st.DrawFn) -> Any:
    """A captured result with some of its members retyped."""
    result = json.loads(json.dumps(draw(st.sampled_from(CAPTURED_RESULTS))))
    containers = [result] if isinstance(result, dict | list) else []
    for item in list(containers):
        if isinstance(item, list):
            containers.extend(value for value in item if isinstance(value, dict | list))
        else:
            containers.extend(value for value in item.values() if isinstance(value, dict | list))
    for _ in range(draw(st.integers(1, 4))):
        if not containers:
            break
        target = draw(st.sampled_from(containers))
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        if keys:
            target[draw(st.sampled_from(keys))] = draw(values)
    return result


FACADE_CALLS: dict[str, Callable[[OpenSIPSMI], Awaitable[Any]]] = {
    "uptime": lambda mi: mi.uptime(),
    "version": lambda mi: mi.version(),
    "ua_sessions": lambda mi: mi.ua_sessions(),
    "ua_session_list": lambda mi: mi.ua_session_list("key"),
    "ua_session_client_start": lambda mi: mi.ua_session_client_start("sip:a@b", "sip:a@b", "sip:c@d"),
    "subscribers_list": lambda mi: mi.subscribers_list("E_UA_SESSION"),
    "dlg_list_ctx": lambda mi: mi.dlg_list_ctx("call-id"),
    "ua_session_reply": lambda mi: mi.ua_session_reply("key", "INVITE", 200, "OK"),
}


@FUZZ
@given(st.sampled_from(sorted(FACADE_CALLS)), mutated_results() | st.sampled_from(CAPTURED_RESULTS) | values)
@example("ua_sessions", [{"to_tag": "k", "state": "established"}])
@example("ua_sessions", [{"to_tag": "k", "state": None}])
@example("ua_sessions", [{"to_tag": "k", "state": 1e400}])
@example("ua_sessions", [{"to_tag": "k", "state": [5]}])
@example("subscribers_list", {"Event": {"Subscribers": [{"socket": "udp:1.2.3.4:5", "expire": True}]}})
def test_facade_turns_any_result_into_a_value_or_an_mi_error(command: str, result: Any) -> None:
    mi = OpenSIPSMI(_ResultClient(result))
    check_outcome(lambda: FACADE_CALLS[command](mi))


def test_remote_errors_keep_any_code_and_message() -> None:
    """The narrow case behind the fuzzed `error` members: a well-formed error is an MIRemoteError."""
    reply = b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"\\u0000"},"id":' + ID_MARKER + b"}"

    async def exchange() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _FuzzedUdpServer([reply]), local_addr=("127.0.0.1", 0)
        )
        client = await DatagramMI.create("127.0.0.1", transport.get_extra_info("sockname")[1], timeout=2.0)
        try:
            with pytest.raises(MIRemoteError) as raised:
                await client.call("uptime")
            assert (raised.value.code, raised.value.message) == (-32000, "\x00")
        finally:
            await client.close()
            transport.close()

    asyncio.run(exchange())
