"""Tests of avc.opensips.mi against real UDP and HTTP servers that answer with the exact bytes OpenSIPS 3.5.9 sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest

from avc.metrics import Metrics
from avc.opensips.mi import (
    MAX_DATAGRAM_BYTES,
    DatagramMI,
    HttpMI,
    MIError,
    MIInvalidParams,
    MIMethodNotFound,
    MIRemoteError,
    MITimeout,
    MITransportError,
    OpenSIPSMI,
    Subscriber,
    encode_request,
    mi_client_from_url,
)
from tests.support.captures import MIExchange, mi_exchanges, split_http

ALL_EXCHANGES = mi_exchanges()
DATAGRAM_EXCHANGES = [e for e in ALL_EXCHANGES if e.transport == "datagram"]
HTTP_EXCHANGES = [e for e in ALL_EXCHANGES if e.transport == "http"]


def _exchange_id(exchange: MIExchange) -> str:
    request = json.loads(exchange.request_json)
    return f"{exchange.file[:3]}{request['method']}-id{request['id']}"


def compact(message: dict[str, Any]) -> bytes:
    """JSON the way OpenSIPS writes it (no spaces)."""
    return json.dumps(message, separators=(",", ":")).encode()


def ok_reply(request: bytes, result: object = "OK") -> bytes:
    return compact({"jsonrpc": "2.0", "result": result, "id": json.loads(request)["id"]})


def http_response(body: bytes, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


# --- fake OpenSIPS MI servers ------------------------------------------------------------------------

Responder = Callable[[bytes], bytes | None]


class UdpMIServer(asyncio.DatagramProtocol):
    """mi_datagram stand-in on 127.0.0.1: records each request and answers with what `respond` returns."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_datagram_endpoint always hands a datagram transport, though on 3.11 its class does not
        # inherit asyncio.DatagramTransport, so an isinstance check would fail.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.requests.append(data)
        reply = self.respond(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class HttpRequest:
    start_line: bytes
    headers: dict[str, str]
    body: bytes


class HttpMIServer:
    """mi_http stand-in: a raw HTTP/1.1 server that writes back whole captured HTTP responses, byte for byte.

    Like the real mi_http it never answers a POST whose Content-Type is not application/json.
    """

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[HttpRequest] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/mi"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                start_line, headers, _ = split_http(head)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(HttpRequest(start_line, headers, body))
                self.bodies.append(body)
                if headers.get("content-type") != "application/json":
                    continue
                reply = self.respond(body)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def scripted(transport: str, exchanges: list[MIExchange]) -> Responder:
    """Answer each captured request with its captured response, byte for byte; any other request (the id
    priming below) with a plain success."""
    script = {exchange.request_json: exchange.response for exchange in exchanges}

    def respond(request: bytes) -> bytes:
        if request in script:
            return script[request]
        body = ok_reply(request, {})
        return body if transport == "datagram" else http_response(body)

    return respond


def captured(prefix: str, transport: str, method: str, nth: int = 0) -> MIExchange:
    """The `nth` exchange of `method` over `transport` in the capture file starting with `prefix`."""
    matches = [
        e
        for e in ALL_EXCHANGES
        if e.file.startswith(prefix) and e.transport == transport and json.loads(e.request_json)["method"] == method
    ]
    return matches[nth]


async def prime_ids(client: DatagramMI | HttpMI, request_id: int) -> None:
    """Advance the client's request ids so that its next request carries `request_id`, as in the capture."""
    for _ in range(request_id - 1):
        await client.call("uptime")


@asynccontextmanager
async def answering(exchange: MIExchange) -> AsyncIterator[tuple[DatagramMI | HttpMI, list[bytes]]]:
    """A client whose next request gets `exchange`'s id, talking to a server scripted with `exchange`.

    Also yields the list of JSON-RPC request bodies the server receives.
    """
    client: DatagramMI | HttpMI
    if exchange.transport == "datagram":
        udp = UdpMIServer(scripted("datagram", [exchange]))
        await udp.start()
        client = await DatagramMI.create("127.0.0.1", udp.port, timeout=1.0)
        bodies = udp.requests
    else:
        http = HttpMIServer(scripted("http", [exchange]))
        await http.start()
        client = HttpMI(http.url, timeout=1.0)
        bodies = http.bodies
    try:
        await prime_ids(client, json.loads(exchange.request_json)["id"])
        yield client, bodies
    finally:
        await client.close()
        if exchange.transport == "datagram":
            udp.close()
        else:
            await http.close()


# --- serialisation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", ALL_EXCHANGES, ids=_exchange_id)
def test_requests_serialise_byte_for_byte_like_the_captures(exchange: MIExchange) -> None:
    request = json.loads(exchange.request_json)
    assert encode_request(request["method"], request["params"], request["id"]) == exchange.request_json


def test_request_with_unserialisable_params_is_refused_before_sending() -> None:
    with pytest.raises(MIError, match="not JSON-serialisable"):
        encode_request("ua_session_reply", {"code": object()}, 1)


# --- replay of every captured exchange ----------------------------------------------------------------


@pytest.mark.parametrize("exchange", ALL_EXCHANGES, ids=_exchange_id)
async def test_client_sends_the_captured_request_and_returns_the_captured_outcome(exchange: MIExchange) -> None:
    request = json.loads(exchange.request_json)
    expected = json.loads(exchange.response_json)
    async with answering(exchange) as (client, bodies):
        if "error" in expected:
            with pytest.raises(MIRemoteError) as raised:
                await client.call(request["method"], request["params"])
            error = expected["error"]
            assert (raised.value.command, raised.value.code, raised.value.message, raised.value.data) == (
                request["method"],
                error["code"],
                error["message"],
                error.get("data"),
            )
        else:
            assert await client.call(request["method"], request["params"]) == expected["result"]
    assert bodies[-1] == exchange.request_json


@pytest.mark.parametrize("exchange", HTTP_EXCHANGES, ids=_exchange_id)
async def test_http_request_line_and_headers_match_the_capture(exchange: MIExchange) -> None:
    server = HttpMIServer(scripted("http", [exchange]))
    await server.start()
    client = HttpMI(server.url, timeout=1.0)
    try:
        await prime_ids(client, json.loads(exchange.request_json)["id"])
        with contextlib.suppress(MIRemoteError):
            await client.call(**_call_args(exchange))
    finally:
        await client.close()
        await server.close()
    sent = server.requests[-1]
    captured_start, captured_headers, _ = split_http(exchange.request)
    assert sent.start_line == captured_start == b"POST /mi HTTP/1.1"
    assert sent.headers["content-type"] == captured_headers["content-type"] == "application/json"
    assert sent.headers["content-length"] == captured_headers["content-length"]


def _call_args(exchange: MIExchange) -> dict[str, Any]:
    request = json.loads(exchange.request_json)
    return {"command": request["method"], "params": request["params"]}


# --- capture 10: error replies map to typed exceptions -------------------------------------------------


async def test_failed_reply_is_a_plain_remote_error_with_code_and_message() -> None:
    async with answering(captured("10_", "datagram", "ua_session_reply")) as (client, _):
        with pytest.raises(MIRemoteError) as raised:
            await OpenSIPSMI(client).ua_session_reply("B2B.1.2.3.4", "INVITE", 200, "OK")
    assert type(raised.value) is MIRemoteError
    assert (raised.value.code, raised.value.message, raised.value.data) == (500, "Failed to send reply", None)
    assert str(raised.value) == "MI ua_session_reply: error 500 Failed to send reply"


async def test_missing_reason_is_invalid_params_with_data() -> None:
    async with answering(captured("10_", "http", "ua_session_reply")) as (client, _):
        with pytest.raises(MIInvalidParams) as raised:
            await client.call("ua_session_reply", {"key": "B2B.1.2.3.4", "method": "INVITE", "code": 200})
    assert (raised.value.code, raised.value.data) == (-32602, "Too few or too many parameters")
    assert str(raised.value) == "MI ua_session_reply: error -32602 Invalid params: Too few or too many parameters"


async def test_unknown_command_is_method_not_found() -> None:
    async with answering(captured("10_", "http", "no_such_command")) as (client, _):
        with pytest.raises(MIMethodNotFound) as raised:
            await client.call("no_such_command")
    assert (raised.value.command, raised.value.code, raised.value.message) == (
        "no_such_command",
        -32601,
        "Method not found",
    )


async def test_did_as_string_is_invalid_params() -> None:
    async with answering(captured("10_", "datagram", "dlg_push_var", 0)) as (client, _):
        with pytest.raises(MIInvalidParams, match="Bad type for parameter 'DID'"):
            await client.call("dlg_push_var", {"dlg_val_name": "a", "dlg_val_value": "b", "DID": "some-callid"})


async def test_unknown_dialog_is_a_remote_error_404() -> None:
    async with answering(captured("10_", "http", "dlg_end_dlg")) as (client, _):
        with pytest.raises(MIRemoteError) as raised:
            await client.call("dlg_end_dlg", {"dialog_id": "some-callid"})
    assert (raised.value.code, raised.value.message) == (404, "Requested Dialog not found")


# --- the typed facade sends exactly the captured requests ---------------------------------------------

SDP_ANSWER = json.loads(captured("02_", "http", "ua_session_reply").request_json)["params"]["body"]
OUTBOUND = json.loads(captured("13_", "http", "ua_session_client_start").request_json)["params"]

FACADE_CASES: list[tuple[str, MIExchange, Callable[[OpenSIPSMI], Awaitable[object]], object]] = [
    ("version", captured("01_", "datagram", "version"), lambda mi: mi.version(), "OpenSIPS (3.5.9 (x86_64/linux))"),
    (
        "event_subscribe",
        captured("02_", "datagram", "event_subscribe"),
        lambda mi: mi.event_subscribe("E_UA_SESSION", "udp:127.0.0.1:9999", 3600),
        None,
    ),
    (
        "subscribers_list",
        captured("02_", "http", "subscribers_list"),
        lambda mi: mi.subscribers_list("E_UA_SESSION"),
        [Subscriber("udp:127.0.0.1:9999", 3600, 3600)],
    ),
    (
        "ua_session_reply-180",
        captured("02_", "datagram", "ua_session_reply"),
        lambda mi: mi.ua_session_reply("B2B.486.263.1795290824.547376897", "INVITE", 180, "Ringing"),
        None,
    ),
    (
        "ua_session_reply-200-sdp",
        captured("02_", "http", "ua_session_reply"),
        lambda mi: mi.ua_session_reply("B2B.486.263.1795290824.547376897", "INVITE", 200, "OK", body=SDP_ANSWER),
        None,
    ),
    (
        "ua_session_reply-487",
        captured("08b", "datagram", "ua_session_reply"),
        lambda mi: mi.ua_session_reply("B2B.393.100.1795290849.802003343", "INVITE", 487, "Request Terminated"),
        None,
    ),
    (
        "ua_session_terminate",
        captured("03_", "datagram", "ua_session_terminate"),
        lambda mi: mi.ua_session_terminate("B2B.302.5.1795290837.994057802"),
        None,
    ),
    ("ua_session_list-all", captured("02_", "http", "ua_session_list", 1), lambda mi: mi.ua_session_list(), []),
    (
        "dlg_push_var",
        captured("10_", "datagram", "dlg_push_var", 1),
        lambda mi: mi.dlg_push_var("some-callid", "a", "b"),
        None,
    ),
    (
        "ua_session_client_start",
        captured("13_", "http", "ua_session_client_start"),
        lambda mi: mi.ua_session_client_start(
            OUTBOUND["ruri"],
            OUTBOUND["to"],
            OUTBOUND["from"],
            body=OUTBOUND["body"],
            extra_headers=OUTBOUND["extra_headers"],
            flags=OUTBOUND["flags"],
        ),
        "B2B.475.524604.1795290955.1610287011",
    ),
]


@pytest.mark.parametrize(
    ("exchange", "command", "expected"), [c[1:] for c in FACADE_CASES], ids=[c[0] for c in FACADE_CASES]
)
async def test_facade_sends_the_captured_request(
    exchange: MIExchange, command: Callable[[OpenSIPSMI], Awaitable[object]], expected: object
) -> None:
    async with answering(exchange) as (client, bodies):
        assert await command(OpenSIPSMI(client)) == expected
    assert bodies[-1] == exchange.request_json


async def test_facade_ua_session_list_of_one_key_returns_its_state() -> None:
    exchange = captured("02_", "http", "ua_session_list", 0)
    async with answering(exchange) as (client, bodies):
        state = await OpenSIPSMI(client).ua_session_list("B2B.486.263.1795290824.547376897")
    assert bodies[-1] == exchange.request_json
    assert (state["callid"], state["last_reply_code"]) == ("1-5251@127.0.0.1", 200)


async def test_facade_dlg_list_ctx_shows_pushed_values() -> None:
    exchange = captured("04c", "datagram", "dlg_list_ctx")
    async with answering(exchange) as (client, bodies):
        dialog = await OpenSIPSMI(client).dlg_list_ctx("1-32415@127.0.0.1")
    assert bodies[-1] == exchange.request_json
    assert {"customer_id": "C-4711"} in dialog["Dialog"]["context"]["values"]


async def test_facade_validates_arguments_before_sending() -> None:
    mi = OpenSIPSMI(DatagramMI("127.0.0.1", closed_udp_port()))
    with pytest.raises(ValueError, match="expire"):
        await mi.event_subscribe("E_UA_SESSION", "udp:127.0.0.1:9999", -1)
    with pytest.raises(ValueError, match="from_tag needs call_id"):
        await mi.dlg_list_ctx(from_tag="abc")
    await mi.close()


async def test_ua_session_update_and_uptime_send_only_the_params_given() -> None:
    server = UdpMIServer(lambda request: ok_reply(request, {"Up time": "42 [sec]"} if b"uptime" in request else "OK"))
    await server.start()
    mi = OpenSIPSMI(await DatagramMI.create("127.0.0.1", server.port, timeout=1.0))
    try:
        await mi.ua_session_update("B2B.1.2.3.4", "OPTIONS")
        await mi.ua_session_update("B2B.1.2.3.4", "REFER", extra_headers="Refer-To: <sip:agent@127.0.0.1>\r\n")
        assert await mi.uptime() == {"Up time": "42 [sec]"}
    finally:
        await mi.close()
        server.close()
    assert server.requests == [
        b'{"jsonrpc": "2.0", "method": "ua_session_update", "params": {"key": "B2B.1.2.3.4", "method": "OPTIONS"}, '
        b'"id": 1}',
        # Headers always travel with a body, here an empty one: 3.5.9 garbles them without (captures 15-17).
        b'{"jsonrpc": "2.0", "method": "ua_session_update", "params": {"key": "B2B.1.2.3.4", "method": "REFER", '
        b'"body": "", "extra_headers": "Refer-To: <sip:agent@127.0.0.1>\\r\\n", '
        b'"content_type": "Content-Type: text/plain\\r\\n"}, "id": 2}',
        b'{"jsonrpc": "2.0", "method": "uptime", "params": {}, "id": 3}',
    ]


async def test_headers_never_travel_without_a_body_and_terminate_takes_none() -> None:
    server = UdpMIServer(lambda request: ok_reply(request, "OK"))
    await server.start()
    mi = OpenSIPSMI(await DatagramMI.create("127.0.0.1", server.port, timeout=1.0))
    try:
        await mi.ua_session_reply("k", "INVITE", 503, "Service Unavailable", extra_headers="Retry-After: 5")
        await mi.ua_session_reply("k", "INVITE", 486, "Busy Here")  # nothing to carry: no body either
        await mi.ua_session_update(
            "k", "REFER", body="", extra_headers="Refer-To: <sip:a@b>\r\n", content_type="message/sipfrag"
        )
        await mi.ua_session_terminate("k")
    finally:
        await mi.close()
        server.close()
    params = [json.loads(request)["params"] for request in server.requests]
    assert params[0] == {
        "key": "k",
        "method": "INVITE",
        "code": 503,
        "reason": "Service Unavailable",
        "body": "",
        "extra_headers": "Retry-After: 5\r\n",
        "content_type": "Content-Type: text/plain\r\n",
    }
    assert params[1] == {"key": "k", "method": "INVITE", "code": 486, "reason": "Busy Here"}
    assert params[2]["body"] == "" and params[2]["content_type"] == "Content-Type: message/sipfrag\r\n"
    assert params[3] == {"key": "k"}


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        DatagramMI("127.0.0.1", 8080, timeout=0)
    with pytest.raises(ValueError, match="positive number of seconds"):
        HttpMI("http://127.0.0.1:8888/mi", timeout=float("nan"))


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"Event": {}}, []),
        (
            {
                "Event": {
                    "name": "E_UA_SESSION",
                    "id": 7,
                    "Subscribers": [{"socket": "udp:127.0.0.1:1", "expire": "never"}],
                }
            },
            [Subscriber("udp:127.0.0.1:1", None, None)],
        ),
    ],
    ids=["nobody-subscribed", "never-expires"],
)
async def test_subscribers_list_parses_empty_and_permanent_entries(result: object, expected: list[Subscriber]) -> None:
    server = UdpMIServer(lambda request: ok_reply(request, result))
    await server.start()
    mi = OpenSIPSMI(await DatagramMI.create("127.0.0.1", server.port, timeout=1.0))
    try:
        assert await mi.subscribers_list("E_UA_SESSION") == expected
    finally:
        await mi.close()
        server.close()


async def test_subscribers_list_with_unexpected_shape_is_a_transport_error() -> None:
    server = UdpMIServer(lambda request: ok_reply(request, ["not", "an", "object"]))
    await server.start()
    mi = OpenSIPSMI(await DatagramMI.create("127.0.0.1", server.port, timeout=1.0))
    try:
        with pytest.raises(MITransportError, match="subscribers_list"):
            await mi.subscribers_list("E_UA_SESSION")
    finally:
        await mi.close()
        server.close()


# --- mi_datagram behaviour ----------------------------------------------------------------------------


def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_datagram_timeout_raises_and_cleans_the_pending_table() -> None:
    metrics = Metrics()
    silent = UdpMIServer(lambda request: None)
    await silent.start()
    client = await DatagramMI.create("127.0.0.1", silent.port, timeout=0.05, metrics=metrics)
    try:
        with pytest.raises(MITimeout, match="no reply"):
            await client.call("version")
        assert client.pending == 0
        assert metrics.registry.get_sample_value("avc_mi_errors_total", {"command": "version", "kind": "timeout"}) == 1
    finally:
        await client.close()
        silent.close()


async def test_datagram_to_closed_port_fails_fast_with_transport_error() -> None:
    client = await DatagramMI.create("127.0.0.1", closed_udp_port(), timeout=5.0)
    try:
        # ICMP port unreachable comes back at once; without it this would take the full 5 s timeout.
        async with asyncio.timeout(2.0):
            with pytest.raises(MITransportError, match="unreachable"):
                await client.call("version")
        assert client.pending == 0
    finally:
        await client.close()


async def test_datagram_replies_out_of_order_reach_their_own_callers() -> None:
    held: list[bytes] = []

    def hold_two_then_answer_backwards(request: bytes) -> None:
        held.append(request)
        if len(held) == 2:
            for earlier in reversed(held):
                assert server.transport is not None
                server.transport.sendto(ok_reply(earlier, json.loads(earlier)["method"]), client_address)

    server = UdpMIServer(hold_two_then_answer_backwards)
    await server.start()
    client = await DatagramMI.create("127.0.0.1", server.port, timeout=1.0)
    client_address = client.local_address
    try:
        first, second = await asyncio.gather(client.call("version"), client.call("uptime"))
        assert (first, second) == ("version", "uptime")
        assert [json.loads(r)["id"] for r in held] == [1, 2]
    finally:
        await client.close()
        server.close()


async def test_datagram_concurrent_calls_each_get_their_reply() -> None:
    server = UdpMIServer(lambda request: ok_reply(request, json.loads(request)["params"]["n"]))
    await server.start()
    client = await DatagramMI.create("127.0.0.1", server.port, timeout=1.0)
    try:
        results = await asyncio.gather(*(client.call("echo", {"n": n}) for n in range(50)))
        assert results == list(range(50))
        assert client.pending == 0
    finally:
        await client.close()
        server.close()


async def test_datagram_oversize_request_is_refused_before_sending() -> None:
    metrics = Metrics()
    server = UdpMIServer(lambda request: ok_reply(request))
    await server.start()
    client = await DatagramMI.create("127.0.0.1", server.port, timeout=1.0, metrics=metrics)
    try:
        with pytest.raises(MIError, match=f"over the {MAX_DATAGRAM_BYTES} byte datagram limit") as raised:
            await client.call("ua_session_reply", {"body": "x" * MAX_DATAGRAM_BYTES})
        assert not isinstance(raised.value, MITransportError | MITimeout | MIRemoteError)
        assert server.requests == []
        assert metrics.registry.get_sample_value("avc_mi_requests_total", {"command": "ua_session_reply"}) is None
    finally:
        await client.close()
        server.close()


async def test_datagram_late_reply_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    late: list[bytes] = []
    server = UdpMIServer(lambda request: late.append(request) if not late else ok_reply(request, "second"))
    await server.start()
    client = await DatagramMI.create("127.0.0.1", server.port, timeout=0.05)
    try:
        with pytest.raises(MITimeout):
            await client.call("version")
        assert server.transport is not None
        server.transport.sendto(ok_reply(late[0], "too late"), client.local_address)
        with caplog.at_level(logging.WARNING, logger="avc.opensips.mi"):
            assert await client.call("uptime") == "second"
        assert "reply for id 1 that no request is waiting for" in caplog.text
    finally:
        await client.close()
        server.close()


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"<html>not json</html>", "not JSON"),
        (b'{"jsonrpc":"1.0","result":"OK","id":1}', "jsonrpc='1.0'"),
        (b'{"jsonrpc":"2.0","id":1}', "exactly one of result and error"),
        (b'{"jsonrpc":"2.0","error":{"code":"500"},"id":1}', "malformed error member"),
        (b'["jsonrpc"]', "not an object"),
    ],
    ids=["not-json", "wrong-version", "no-result", "bad-error", "array"],
)
async def test_datagram_malformed_reply_is_a_transport_error(reply: bytes, reason: str) -> None:
    metrics = Metrics()
    server = UdpMIServer(lambda request: reply)
    await server.start()
    client = await DatagramMI.create("127.0.0.1", server.port, timeout=1.0, metrics=metrics)
    try:
        with pytest.raises(MITransportError, match=reason):
            await client.call("version")
        assert (
            metrics.registry.get_sample_value("avc_mi_errors_total", {"command": "version", "kind": "transport"}) == 1
        )
    finally:
        await client.close()
        server.close()


async def test_datagram_call_after_close_is_a_transport_error() -> None:
    client = DatagramMI("127.0.0.1", closed_udp_port())
    await client.close()
    with pytest.raises(MITransportError, match="closed"):
        await client.call("version")


async def test_datagram_calls_are_counted_with_their_latency() -> None:
    metrics = Metrics()
    exchange = captured("10_", "datagram", "ua_session_reply")
    server = UdpMIServer(scripted("datagram", [exchange]))
    await server.start()
    client = await DatagramMI.create("127.0.0.1", server.port, timeout=1.0, metrics=metrics)
    try:
        with pytest.raises(MIRemoteError):
            await client.call(**_call_args(exchange))
        assert await client.call("uptime") == {}
    finally:
        await client.close()
        server.close()
    sample = metrics.registry.get_sample_value
    assert sample("avc_mi_requests_total", {"command": "ua_session_reply"}) == 1
    assert sample("avc_mi_requests_total", {"command": "uptime"}) == 1
    assert sample("avc_mi_errors_total", {"command": "ua_session_reply", "kind": "jsonrpc"}) == 1
    assert sample("avc_mi_errors_total", {"command": "uptime", "kind": "jsonrpc"}) is None
    assert sample("avc_mi_latency_seconds_count", {"transport": "datagram"}) == 2


# --- mi_http behaviour --------------------------------------------------------------------------------


async def test_http_post_carries_json_content_type() -> None:
    server = HttpMIServer(scripted("http", []))
    await server.start()
    client = HttpMI(server.url, timeout=1.0)
    try:
        await client.call("version")
    finally:
        await client.close()
        await server.close()
    (request,) = server.requests
    assert request.start_line.startswith(b"POST /mi ")
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (http_response(b'{"jsonrpc":"2.0","result":"OK","id":1}', "500 Internal Server Error"), "HTTP 500"),
        (http_response(b"Bad request"), "not JSON"),
        (http_response(b'{"jsonrpc":"2.0","result":"OK"}'), "no id"),
        (http_response(b'{"jsonrpc":"2.0","result":"' + b"x" * 300 + b'","id":1}'), "over the 256 byte limit"),
    ],
    ids=["status-500", "not-json", "no-id", "oversize"],
)
async def test_http_unusable_reply_is_a_transport_error(reply: bytes, reason: str) -> None:
    server = HttpMIServer(lambda request: reply)
    await server.start()
    client = HttpMI(server.url, timeout=1.0, max_reply_bytes=256)
    try:
        with pytest.raises(MITransportError, match=reason):
            await client.call("version")
    finally:
        await client.close()
        await server.close()


async def test_http_connection_refused_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HttpMI(f"http://127.0.0.1:{port}/mi", timeout=1.0)
    try:
        with pytest.raises(MITransportError, match=r"POST .* failed"):
            await client.call("version")
    finally:
        await client.close()


async def test_http_no_answer_is_a_timeout() -> None:
    metrics = Metrics()
    server = HttpMIServer(lambda request: None)
    await server.start()
    client = HttpMI(server.url, timeout=0.05, metrics=metrics)
    try:
        with pytest.raises(MITimeout, match="no reply"):
            await client.call("version")
        assert metrics.registry.get_sample_value("avc_mi_errors_total", {"command": "version", "kind": "timeout"}) == 1
    finally:
        await client.close()
        await server.close()


async def test_http_keeps_one_connection_for_many_calls() -> None:
    server = HttpMIServer(scripted("http", []))
    await server.start()
    client = HttpMI(server.url, timeout=1.0)
    try:
        for _ in range(3):
            await client.call("version")
    finally:
        await client.close()
        await server.close()
    assert (len(server.requests), server.connections) == (3, 1)


# --- URLs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["udp:127.0.0.1:8080", "udp://127.0.0.1:8080", "UDP:127.0.0.1:8080"])
def test_udp_urls_give_a_datagram_client(url: str) -> None:
    client = mi_client_from_url(url, timeout=0.5)
    assert isinstance(client, DatagramMI)
    assert (client.host, client.port, client.timeout) == ("127.0.0.1", 8080, 0.5)


def test_http_url_gives_an_http_client() -> None:
    client = mi_client_from_url("http://127.0.0.1:8888/mi")
    assert isinstance(client, HttpMI)
    assert client.url == "http://127.0.0.1:8888/mi"


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8080", "udp:127.0.0.1", "udp:127.0.0.1:notaport", "tcp:127.0.0.1:8080", "http:///mi"]
)
def test_bad_mi_urls_are_rejected_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="MI URL"):
        mi_client_from_url(url)
