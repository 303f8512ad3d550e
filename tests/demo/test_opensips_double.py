"""Tests of the OpenSIPS protocol double against the real 3.5.9 captures.

The test plays the connector's part with plain sockets: it subscribes over MI, sends the captures' own request
bytes, and compares what the double answers and emits with what the real server did, byte for byte wherever the
capture is deterministic (same session key, Call-ID, tags and SIPp pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from demo.opensips_double import (
    CallGone,
    CallState,
    DoubleInternalError,
    DoubleUsageError,
    OpenSIPSDouble,
    sdp_offer,
)
from demo.opensips_double.mi_commands import MICommands
from tests.support.captures import Block, events, mi_pairs

CAPTURE_SOCKET = "udp:127.0.0.1:9999"
EVENT_KEYS = ["key", "event_type", "entity_type", "status", "reason", "method", "body", "headers"]
SHORT = 0.2  # how long "nothing arrives" is watched for


class _Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


class App:
    """The connector's part, with bare sockets: an event socket and an MI datagram client."""

    def __init__(self, osips: OpenSIPSDouble) -> None:
        self.osips = osips
        self.events = _Queue()
        self.replies = _Queue()
        self._transports: list[asyncio.DatagramTransport] = []
        self.next_id = 100

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        events, _ = await loop.create_datagram_endpoint(lambda: self.events, local_addr=("127.0.0.1", 0))
        mi, _ = await loop.create_datagram_endpoint(lambda: self.replies, remote_addr=self.osips.mi_datagram_address)
        self._transports += [events, mi]
        self.event_port = events.get_extra_info("sockname")[1]
        self._mi = mi

    def close(self) -> None:
        for transport in self._transports:
            transport.close()

    @property
    def socket(self) -> str:
        return f"udp:127.0.0.1:{self.event_port}"

    async def datagram(self, payload: bytes, wait: float = 1.0) -> bytes:
        self._mi.sendto(payload)
        data, _ = await asyncio.wait_for(self.replies.queue.get(), wait)
        return data

    async def mi(self, method: str, params: dict[str, Any] | list[Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params if params is not None else {}}
        request["id"] = self.next_id
        answer: dict[str, Any] = json.loads(await self.datagram(json.dumps(request).encode()))
        assert answer["id"] == self.next_id
        return answer

    async def subscribe(self, expire: int = 3600) -> None:
        answer = await self.mi("event_subscribe", {"event": "E_UA_SESSION", "socket": self.socket, "expire": expire})
        assert answer["result"] == "OK"

    async def event(self, wait: float = 1.0) -> bytes:
        data, (host, _) = await asyncio.wait_for(self.events.queue.get(), wait)
        assert host == "127.0.0.1"
        assert list(json.loads(data)["params"]) == EVENT_KEYS  # the key order of every capture
        return data

    async def no_event(self) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.events.queue.get(), SHORT)


async def http_exchange(osips: OpenSIPSDouble, request: bytes, wait: float = 1.0) -> bytes:
    """Send raw bytes to mi_http and read one whole response (head and Content-Length body)."""
    reader, writer = await asyncio.open_connection(*osips.mi_http_address)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        return head + await reader.readexactly(length)
    finally:
        writer.close()


def http_request(body: bytes, content_type: str | None = "application/json") -> bytes:
    lines = ["POST /mi HTTP/1.1", "Host: 127.0.0.1"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response_body(message: bytes) -> bytes:
    head, _, body = message.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nDate: ")
    assert b"\r\nContent-Type: application/json\r\n" in head
    return body


async def replay(app: App, request: Block) -> bytes:
    """Send a captured MI request over its own transport; the JSON-RPC response bytes come back."""
    if request.kind == "mi_datagram_request":
        return await app.datagram(request.raw)
    return response_body(await http_exchange(app.osips, request.raw))


@contextlib.asynccontextmanager
async def double_and_app(**options: Any) -> AsyncIterator[tuple[OpenSIPSDouble, App]]:
    async with OpenSIPSDouble(**options) as double:
        client = App(double)
        await client.open()
        try:
            yield double, client
        finally:
            client.close()
        assert double.internal_errors == []


@pytest.fixture
async def osips_and_app() -> AsyncIterator[tuple[OpenSIPSDouble, App]]:
    async with double_and_app(seed=7) as pair:
        yield pair


@pytest.fixture
def osips(osips_and_app: tuple[OpenSIPSDouble, App]) -> OpenSIPSDouble:
    return osips_and_app[0]


@pytest.fixture
def app(osips_and_app: tuple[OpenSIPSDouble, App]) -> App:
    return osips_and_app[1]


async def answered_call(osips: OpenSIPSDouble, app: App) -> Any:
    """A call the app has answered and the caller ACKed; the NEW and ACK events are consumed."""
    await app.subscribe()
    call = await osips.invite(sdp_offer("127.0.0.1", 6000))
    await app.event()
    answer = await app.mi(
        "ua_session_reply",
        {"key": call.key, "method": "INVITE", "code": 200, "reason": "OK", "body": sdp_offer("127.0.0.1", 40000)},
    )
    assert answer["result"] == "OK"
    assert json.loads(await app.event())["params"]["method"] == "ACK"
    return call


# -- formats and static commands --------------------------------------------------------------------------------


def test_sdp_offer_reproduces_the_sipp_callers_bodies() -> None:
    assert sdp_offer("127.0.0.1", 6000) == json.loads(events("02")[0].raw)["params"]["body"]
    assert sdp_offer("127.0.0.1", 6000, ptime=None) == json.loads(events("08b")[0].raw)["params"]["body"]


async def test_core_commands_answer_like_capture_01(app: App) -> None:
    for request, response in mi_pairs("01"):
        answer = await replay(app, request)
        if request.json["method"] == "ps":
            # PIDs differ per process; the process table itself must read the same.
            got = [(p["ID"], p["Type"].split(" ")[0]) for p in json.loads(answer)["result"]["Processes"]]
            want = [(p["ID"], p["Type"].split(" ")[0]) for p in response.json["result"]["Processes"]]
            assert got == want
        else:
            assert answer == response.body


async def test_error_cases_answer_byte_for_byte_like_capture_10(app: App) -> None:
    pairs = mi_pairs("10")
    assert len(pairs) == 7
    for request, response in pairs:
        assert await replay(app, request) == response.body, request.json


async def test_dlg_push_var_type_errors_and_unknown_dids_match_capture_04(app: App) -> None:
    for request, response in mi_pairs("04c"):
        if request.json["method"] == "dlg_push_var":
            assert await replay(app, request) == response.body


async def test_a_crash_of_the_double_answers_internal_error_and_fails_its_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: MICommands, params: object) -> object:
        raise RuntimeError("the double has a bug")

    monkeypatch.setattr(MICommands, "_cmd_version", broken)
    double = OpenSIPSDouble()
    await double.start()
    app = App(double)
    await app.open()
    try:
        answer = await app.mi("version")
    finally:
        app.close()
    assert answer["error"] == {"code": -32603, "message": "Internal error"}
    assert double.internal_errors == ["version: RuntimeError('the double has a bug')"]
    with pytest.raises(DoubleInternalError, match="the double has a bug"):
        await double.close()
    double.internal_errors.clear()  # what a test that provokes a crash on purpose does before the double closes
    await double.close()


async def test_a_failing_block_keeps_its_own_exception_with_the_doubles_crashes_noted() -> None:
    with pytest.raises(ValueError, match="the test's own failure") as caught:
        async with OpenSIPSDouble() as double:
            double.internal_errors.append("ua_session_list: KeyError('x')")
            raise ValueError("the test's own failure")
    assert any("KeyError('x')" in note for note in caught.value.__notes__)


async def test_mi_http_without_json_content_type_gets_no_answer_at_all(osips: OpenSIPSDouble) -> None:
    # What `curl -d` sent in capture 10: a form-encoded POST. The real server logged "empty request" and hung.
    body = b'{"jsonrpc":"2.0","method":"version","id":1}'
    reader, writer = await asyncio.open_connection(*osips.mi_http_address)
    writer.write(http_request(body, content_type="application/x-www-form-urlencoded"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), SHORT)
    writer.close()
    answer = await http_exchange(osips, http_request(body))
    assert json.loads(response_body(answer)) == {
        "jsonrpc": "2.0",
        "result": {"Server": "OpenSIPS (3.5.9 (x86_64/linux))"},
        "id": 1,
    }


async def test_mi_http_serves_several_requests_on_one_connection(osips: OpenSIPSDouble) -> None:
    reader, writer = await asyncio.open_connection(*osips.mi_http_address)
    for request_id in (1, 2):
        writer.write(http_request(json.dumps({"jsonrpc": "2.0", "method": "version", "id": request_id}).encode()))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert json.loads(await reader.readexactly(length))["id"] == request_id
    writer.close()
    assert [(r.transport, r.method, r.id) for r in osips.requests] == [("http", "version", 1), ("http", "version", 2)]


async def test_hostile_mi_input_gets_json_rpc_errors_and_the_double_keeps_serving(
    osips: OpenSIPSDouble, app: App
) -> None:
    assert json.loads(await app.datagram(b"\xff\xfe not json")) == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }
    assert json.loads(await app.datagram(b"[1,2]"))["error"]["code"] == -32600
    answer = json.loads(
        await app.datagram(
            b'{"jsonrpc":"2.0","method":"ua_session_reply","params":{"key":{},'
            b'"method":"INVITE","code":"x","reason":"OK"},"id":9}'
        )
    )
    assert answer["error"] == {"code": -32602, "message": "Invalid params", "data": "Bad type for parameter 'key'"}
    reader, writer = await asyncio.open_connection(*osips.mi_http_address)
    writer.write(b"NONSENSE\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 1) == b""  # dropped, not crashed
    writer.close()
    assert (await app.mi("version"))["result"]["Server"].startswith("OpenSIPS (3.5.9")


async def test_positional_params_fill_the_matching_recipe(app: App) -> None:
    # opensips-cli sends positional parameters (capture 04: `dlg_push_var (positional)`).
    assert (await app.mi("dlg_push_var", ["cli_var", "cli_value", ["no-such-call"]]))["result"] == "OK"
    answer = await app.mi("dlg_push_var", ["only", "two"])
    assert answer["error"]["data"] == "Too few or too many parameters"


# -- subscriptions -------------------------------------------------------------------------------------------------


async def test_event_subscribe_and_subscribers_list_answer_like_capture_02(app: App) -> None:
    (subscribe, subscribed), (listing, listed) = mi_pairs("02")[:2]
    ours = app.socket.encode()
    assert await app.datagram(subscribe.raw.replace(CAPTURE_SOCKET.encode(), ours)) == subscribed.body
    assert await replay(app, listing) == listed.body.replace(CAPTURE_SOCKET.encode(), ours)
    everything = (await app.mi("subscribers_list"))["result"]["Events"]
    assert [bool(item) for item in everything] == [False] * 7 + [True, False]  # events nobody listens to print {}


async def test_subscriptions_expire_and_expire_zero_unsubscribes() -> None:
    now = [1000.0]
    async with double_and_app(clock=lambda: now[0]) as (osips, app):
        await app.subscribe(expire=10)
        now[0] += 4
        listed = await app.mi("subscribers_list", {"event": "E_UA_SESSION"})
        assert listed["result"]["Event"]["Subscribers"] == [{"socket": app.socket, "expire": 10, "ttl": 6}]
        now[0] += 6
        assert (await app.mi("subscribers_list", {"event": "E_UA_SESSION"}))["result"] == {"Event": {}}
        assert osips.send_raw_event(b"{}") == 0
        await app.subscribe(expire=10)
        await app.subscribe(expire=0)
        assert osips.subscribers == []


async def test_events_reach_only_live_subscribers_as_raw_bytes(osips: OpenSIPSDouble, app: App) -> None:
    assert osips.send_raw_event(b"garbage") == 0
    await app.subscribe()
    assert await osips.wait_subscribed(1) == app.socket
    assert osips.send_raw_event(b"\x00garbage") == 1
    data, _ = await asyncio.wait_for(app.events.queue.get(), 1)
    assert data == b"\x00garbage"


async def test_subscribe_errors_follow_the_event_interface(app: App) -> None:
    bad_event = await app.mi("event_subscribe", {"event": "E_NOPE", "socket": app.socket})
    assert bad_event["error"] == {"code": 400, "message": "Bad parameter value"}
    bad_socket = await app.mi("event_subscribe", {"event": "E_UA_SESSION", "socket": "tcp:1.2.3.4"})
    assert bad_socket["error"] == {"code": 400, "message": "Bad parameter value"}
    negative = await app.mi("event_subscribe", {"event": "E_UA_SESSION", "socket": app.socket, "expire": -1})
    assert negative["error"]["data"] == "Negative expire value"
    unknown = await app.mi("subscribers_list", {"event": "E_NOPE"})
    assert unknown["error"] == {"code": 404, "message": "Event not published"}


async def test_restart_forgets_subscribers_sessions_and_dialogs(osips: OpenSIPSDouble, app: App) -> None:
    call = await answered_call(osips, app)
    osips.restart()
    assert (await app.mi("subscribers_list", {"event": "E_UA_SESSION"}))["result"] == {"Event": {}}
    assert (await app.mi("ua_session_list"))["result"] == []
    reply = await app.mi("ua_session_reply", {"key": call.key, "method": "INVITE", "code": 200, "reason": "OK"})
    assert reply["error"] == {"code": 500, "message": "Failed to send reply"}
    assert call.state is CallState.ENDED
    uptime = (await app.mi("uptime"))["result"]
    assert list(uptime) == ["Now", "Up since", "Up time"]
    assert re.fullmatch(r"[0-9] \[sec\]", uptime["Up time"])  # a fresh process
    time.strptime(uptime["Up since"], "%a %b %d %H:%M:%S %Y")  # ctime() without the newline
    await osips.invite(sdp_offer("127.0.0.1", 6002))
    await app.no_event()  # the subscription did not survive the restart
    await app.subscribe()
    await osips.invite(sdp_offer("127.0.0.1", 6004))
    assert json.loads(await app.event())["params"]["event_type"] == "NEW"


async def test_a_down_double_answers_nothing_and_refuses_http_until_it_is_up(osips: OpenSIPSDouble, app: App) -> None:
    await app.subscribe()
    osips.set_down(True)
    with pytest.raises(TimeoutError):
        await app.datagram(b'{"jsonrpc":"2.0","method":"version","id":1}', wait=SHORT)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*osips.mi_http_address)
    assert osips.send_raw_event(b"{}") == 0
    with pytest.raises(DoubleUsageError):
        await osips.invite(sdp_offer("127.0.0.1", 6000))
    osips.set_down(False)
    answer = await http_exchange(osips, http_request(b'{"jsonrpc":"2.0","method":"version","id":2}'))
    assert json.loads(response_body(answer))["id"] == 2
    assert json.loads(await app.datagram(b'{"jsonrpc":"2.0","method":"version","id":3}'))["id"] == 3


# -- calls, replayed from the captures --------------------------------------------------------------------------


async def test_caller_hangs_up_exactly_like_capture_02() -> None:
    captured = events("02")
    pairs = mi_pairs("02")
    async with double_and_app(caller_pid=5251) as (osips, app):
        await app.subscribe()
        call = await osips.invite(
            sdp_offer("127.0.0.1", 6000),
            key="B2B.486.263.1795290824.547376897",
            extra_headers={"Subject": "acceptance test (caller hangs up)"},
        )
        assert await app.event() == captured[0].raw
        for request, response in pairs[2:5]:  # 180 (datagram), 200 + SDP (http), ua_session_list key (http)
            assert await replay(app, request) == response.body
            if request.json["params"].get("code") == 200:
                assert await app.event() == captured[1].raw  # the caller's ACK, UPDATED
        assert call.state is CallState.CONFIRMED
        assert [r.code for r in call.replies] == [180, 200]
        await call.bye()
        assert await app.event() == captured[2].raw
        request, response = pairs[5]
        assert await replay(app, request) == response.body  # the session is gone: []
        answer = await app.mi("ua_session_terminate", {"key": call.key})
        assert answer["error"] == {"code": 500, "message": "Failed to terminate session"}


async def test_app_terminate_raises_no_event_exactly_like_capture_03() -> None:
    captured = events("03")
    async with double_and_app(caller_pid=5324) as (osips, app):
        await app.subscribe()
        call = await osips.invite(
            sdp_offer("127.0.0.1", 6000),
            key="B2B.302.5.1795290837.994057802",
            extra_headers={"Subject": "acceptance test (remote (ai) hangs up via MI ua_session_terminate)"},
        )
        assert await app.event() == captured[0].raw
        for request, response in mi_pairs("03")[2:]:
            assert await replay(app, request) == response.body
            if request.json["params"].get("code") == 200:
                assert await app.event() == captured[1].raw
        await app.no_event()
        assert call.terminated_by_app
        assert call.state is CallState.ENDED
        assert osips.sessions == []


async def test_cancel_then_487_and_terminate_exactly_like_capture_08b() -> None:
    captured = events("08b")
    async with double_and_app(caller_pid=5511) as (osips, app):
        await app.subscribe()
        call = await osips.invite(
            sdp_offer("127.0.0.1", 6000, ptime=None),
            key="B2B.393.100.1795290849.802003343",
            from_tag="5511SIPpTag021",
            extra_headers={"Subject": "acceptance test (caller cancels)"},
        )
        assert await app.event() == captured[0].raw
        await call.cancel()
        assert await app.event() == captured[1].raw
        for request, response in mi_pairs("08b")[2:]:  # 487, terminate, list
            assert await replay(app, request) == response.body
            if request.json["params"].get("code") == 487:
                assert await app.event() == captured[2].raw  # the hop-by-hop ACK of the 487
        assert (await call.wait_final()).code == 487
        assert call.terminated_by_app


async def test_unanswered_cancel_lingers_in_ua_session_list_exactly_like_capture_08a() -> None:
    captured = events("08a")
    async with double_and_app(caller_pid=1864) as (osips, app):
        await app.subscribe()
        call = await osips.invite(
            sdp_offer("127.0.0.1", 6000, ptime=None),
            key="B2B.259.22.1795290530.1904835914",
            from_tag="1864SIPpTag021",
            extra_headers={"Subject": "acceptance test (caller cancels)"},
        )
        assert await app.event() == captured[0].raw
        await call.cancel()
        assert await app.event() == captured[1].raw
        request, response = mi_pairs("08a")[2]
        assert await replay(app, request) == response.body  # state 7, tm_tran uas, no last_reply_code


async def test_reject_486_exactly_like_capture_09() -> None:
    captured = events("09")
    async with double_and_app(caller_pid=5707) as (osips, app):
        await app.subscribe()
        # The capture's ua_session_list also shows an earlier rejected call of the same run.
        earlier = await osips.invite(
            sdp_offer("127.0.0.1", 6000, ptime=None),
            key="B2B.428.352.1795290862.2028153700",
            call_id="1-5597@127.0.0.1",
            from_tag="5597SIPpTag021",
        )
        await app.event()
        await app.mi("ua_session_reply", {"key": earlier.key, "method": "INVITE", "code": 486, "reason": "Busy Here"})
        await app.event()
        call = await osips.invite(
            sdp_offer("127.0.0.1", 6000, ptime=None),
            key="B2B.115.312.1795290877.1907211151",
            call_id="1-5707@127.0.0.1",
            from_tag="5707SIPpTag021",
            extra_headers={"Subject": "acceptance test (app rejects with 486)"},
        )
        assert await app.event() == captured[0].raw
        for request, response in mi_pairs("09")[2:]:
            assert await replay(app, request) == response.body  # 486, then the list of both lingering sessions
            if request.json["params"].get("code") == 486:
                assert await app.event() == captured[1].raw
        assert call.state is CallState.REJECTED
        assert (await call.wait_final()).reason == "Busy Here"


# -- call scripting beyond the captures ----------------------------------------------------------------------------


async def test_a_second_final_reply_or_a_reply_to_nothing_fails_to_send(osips: OpenSIPSDouble, app: App) -> None:
    call = await answered_call(osips, app)
    again = await app.mi("ua_session_reply", {"key": call.key, "method": "INVITE", "code": 200, "reason": "OK"})
    assert again["error"] == {"code": 500, "message": "Failed to send reply"}
    nothing = await app.mi("ua_session_reply", {"key": call.key, "method": "INFO", "code": 200, "reason": "OK"})
    assert nothing["error"] == {"code": 500, "message": "Failed to send reply"}


async def test_reinvite_info_and_options_arrive_as_updated_and_wait_for_the_apps_reply(
    osips: OpenSIPSDouble, app: App
) -> None:
    call = await answered_call(osips, app)

    async def answer(method: str, code: int, body: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(await app.event())["params"]
        assert (event["event_type"], event["method"]) == ("UPDATED", method)
        params: dict[str, Any] = {"key": call.key, "method": method, "code": code, "reason": "OK"}
        if body is not None:
            params["body"] = body
        assert (await app.mi("ua_session_reply", params))["result"] == "OK"
        return event

    new_offer = sdp_offer("127.0.0.1", 6100, direction="sendonly")
    reinvite = asyncio.create_task(call.reinvite(new_offer))
    event = await answer("INVITE", 200, sdp_offer("127.0.0.1", 40000, direction="recvonly"))
    assert event["body"] == new_offer
    assert "CSeq: 2 INVITE\r\n" in event["headers"]
    assert (await reinvite).code == 200
    ack = json.loads(await app.event())["params"]
    assert (ack["method"], "CSeq: 2 ACK\r\n" in ack["headers"]) == ("ACK", True)

    info = asyncio.create_task(call.info("Signal=5\r\nDuration=160\r\n"))
    event = await answer("INFO", 200)
    assert "Content-Type: application/dtmf-relay\r\n" in event["headers"]
    assert (await info).code == 200
    options = asyncio.create_task(call.options())
    await answer("OPTIONS", 200)
    assert (await options).reason == "OK"


async def test_refer_plays_the_transferee_with_notify_and_hangs_up_after_200(osips: OpenSIPSDouble, app: App) -> None:
    call = await answered_call(osips, app)
    refer = {"key": call.key, "method": "REFER", "body": "", "extra_headers": "Refer-To: <sip:agents@127.0.0.1>\r\n"}
    assert (await app.mi("ua_session_update", refer))["result"] == "OK"
    accepted = json.loads(await app.event())["params"]
    assert (accepted["event_type"], accepted["method"], accepted["status"], accepted["reason"]) == (
        "ANSWERED",
        "REFER",
        202,
        "Accepted",
    )
    for fragment in ("SIP/2.0 100 Trying\r\n", "SIP/2.0 200 OK\r\n"):
        notify = json.loads(await app.event())["params"]
        assert (notify["event_type"], notify["method"], notify["body"]) == ("UPDATED", "NOTIFY", fragment)
        assert "Content-Type: message/sipfrag\r\n" in notify["headers"]
        reply = {"key": call.key, "method": "NOTIFY", "code": 200, "reason": "OK"}
        assert (await app.mi("ua_session_reply", reply))["result"] == "OK"
    bye = json.loads(await app.event())["params"]
    assert (bye["event_type"], bye["method"]) == ("TERMINATED", "BYE")
    assert (await call.wait_app_request("REFER")).extra_headers == "Refer-To: <sip:agents@127.0.0.1>\r\n"
    assert [r.code for r in call.notify_replies] == [200, 200]
    assert call.state is CallState.ENDED


async def test_extra_headers_reach_the_wire_only_with_a_body_like_captures_15_and_17(
    osips: OpenSIPSDouble, app: App
) -> None:
    call = await answered_call(osips, app)
    call.refer_outcome = 486  # the transfer fails: the call stays up for the second REFER
    headers = "Refer-To: <sip:agents@127.0.0.1>\r\nX-AI-Transfer-Reason: caller_request\r\n"
    for params, intact in (({}, False), ({"body": ""}, True)):
        refer = {"key": call.key, "method": "REFER", "extra_headers": headers, **params}
        assert (await app.mi("ua_session_update", refer))["result"] == "OK"
        answer = json.loads(await app.event())["params"]
        sent = call.app_requests[-1].extra_headers
        assert sent is not None and len(sent.encode()) == len(headers.encode())  # the room is kept either way
        if intact:
            assert sent == headers
            assert (answer["event_type"], answer["status"]) == ("ANSWERED", 202)
            for _ in range(2):
                await app.event()
                await app.mi("ua_session_reply", {"key": call.key, "method": "NOTIFY", "code": 200, "reason": "OK"})
        else:  # 3.5.9 reserves the room but copies nothing into it: no Refer-To, no line end of its own
            assert "Refer-To" not in sent and "X-AI-Transfer-Reason" not in sent and not sent.endswith("\r\n")
            # and the caller's side refuses a REFER without Refer-To (capture 15: 501 from SIPp; a PBX: 400)
            assert (answer["event_type"], answer["status"]) == ("REJECTED", 400)
    assert call.state is CallState.CONFIRMED


async def test_a_busy_transfer_target_leaves_the_call_up(osips: OpenSIPSDouble, app: App) -> None:
    call = await answered_call(osips, app)
    call.refer_outcome = 486
    refer = {"key": call.key, "method": "REFER", "body": "", "extra_headers": "Refer-To: <sip:agents@127.0.0.1>\r\n"}
    await app.mi("ua_session_update", refer)
    await app.event()  # 202
    for _ in range(2):
        notify = json.loads(await app.event())["params"]
        await app.mi("ua_session_reply", {"key": call.key, "method": "NOTIFY", "code": 200, "reason": "OK"})
    assert notify["body"] == "SIP/2.0 486 Busy Here\r\n"
    await app.no_event()
    assert call.state is CallState.CONFIRMED
    listed = (await app.mi("ua_session_list", {"key": call.key}))["result"]
    assert (listed["last_method"], listed["cseq"]) == (4096, {"caller": 3, "callee": 2})


async def test_app_requests_are_recorded_and_answered_with_the_configured_code(osips: OpenSIPSDouble, app: App) -> None:
    call = await answered_call(osips, app)
    call.app_request_replies["INFO"] = (415, "Unsupported Media Type")
    params = {"key": call.key, "method": "INFO", "body": "hello", "content_type": "Content-Type: text/plain\r\n"}
    assert (await app.mi("ua_session_update", params))["result"] == "OK"
    rejected = json.loads(await app.event())["params"]
    assert (rejected["event_type"], rejected["status"]) == ("REJECTED", 415)
    request = await call.wait_app_request("INFO")
    assert (request.method, request.body, request.cseq) == ("INFO", "hello", 2)
    unknown = await app.mi("ua_session_update", {"key": "B2B.1.2.3.4", "method": "INFO"})
    assert unknown["error"] == {"code": 500, "message": "Failed to send sequential request"}


async def test_without_auto_ack_the_call_waits_for_the_callers_ack(osips: OpenSIPSDouble, app: App) -> None:
    await app.subscribe()
    call = await osips.invite(sdp_offer("127.0.0.1", 6000), auto_ack=False)
    await app.event()
    await app.mi("ua_session_reply", {"key": call.key, "method": "INVITE", "code": 200, "reason": "OK"})
    await app.no_event()
    assert call.state is CallState.ANSWERED
    assert (await app.mi("ua_session_list", {"key": call.key}))["result"]["state"] == 4
    await call.ack()
    assert json.loads(await app.event())["params"]["method"] == "ACK"
    assert (await app.mi("ua_session_list", {"key": call.key}))["result"]["state"] == 5
    assert not call.ended


async def test_waiting_on_a_call_the_app_ends_raises_call_gone(osips: OpenSIPSDouble, app: App) -> None:
    await app.subscribe()
    call = await osips.invite(sdp_offer("127.0.0.1", 6000))
    await app.event()
    waiting = asyncio.create_task(call.wait_final())
    await asyncio.sleep(0)
    await app.mi("ua_session_terminate", {"key": call.key})
    with pytest.raises(CallGone):
        await waiting
    with pytest.raises(DoubleUsageError):
        await call.bye()


async def test_ua_session_list_key_errors_follow_b2b_entities(app: App) -> None:
    assert (await app.mi("ua_session_list", {"key": "nonsense"}))["error"] == {
        "code": 400,
        "message": "Bad format for b2b key",
    }
    assert (await app.mi("ua_session_list", {"key": "B2B.1.2.3.4"}))["error"] == {
        "code": 404,
        "message": "Entity not found",
    }


# -- the edge's dialog ------------------------------------------------------------------------------------------


async def test_dialog_values_are_pushed_by_call_id_and_listed_like_capture_04c(osips: OpenSIPSDouble, app: App) -> None:
    call = await answered_call(osips, app)
    for name, value in (("ai_state", "greeting_played"), ("customer_id", "C-4711")):
        answer = await app.mi("dlg_push_var", {"dlg_val_name": name, "dlg_val_value": value, "DID": [call.call_id]})
        assert answer["result"] == "OK"
    listed = (await app.mi("dlg_list_ctx", {"callid": call.call_id}))["result"]["Dialog"]
    captured = next(r for q, r in mi_pairs("04c") if q.json["method"] == "dlg_list_ctx").json["result"]["Dialog"]
    assert list(listed) == list(captured)
    assert listed["context"] == captured["context"]  # [customer_id, ai_state, created_by]: newest first
    assert (listed["state"], listed["callid"], listed["CALLEES"][0]["callee_tag"]) == (4, call.call_id, call.key)
    assert osips.dialog_values(call.call_id) == {
        "customer_id": "C-4711",
        "ai_state": "greeting_played",
        "created_by": "opensips.cfg",
    }


async def test_dialog_values_replace_in_place_and_print_escaped(osips: OpenSIPSDouble, app: App) -> None:
    call = await answered_call(osips, app)
    for value in ("one", "two\r\nlines é"):
        await app.mi("dlg_push_var", {"dlg_val_name": "note", "dlg_val_value": value, "DID": [call.call_id]})
    listed = (await app.mi("dlg_list_ctx", {"callid": call.call_id}))["result"]["Dialog"]
    assert listed["context"]["values"][0] == {"note": "two\\r\\nlines \\xc3\\xa9"}
    assert osips.dialog_values(call.call_id)["note"] == "two\r\nlines é"
    await call.bye()
    gone = await app.mi("dlg_list_ctx", {"callid": call.call_id})
    assert gone["error"] == {"code": 404, "message": "No such dialog"}


async def test_dlg_end_dlg_ends_a_confirmed_call_like_a_bye(osips: OpenSIPSDouble, app: App) -> None:
    call = await answered_call(osips, app)
    listed = (await app.mi("dlg_list", {"callid": call.call_id}))["result"]["Dialog"]
    assert "context" not in listed
    assert (await app.mi("dlg_end_dlg", {"dialog_id": listed["ID"]}))["result"] == "OK"
    bye = json.loads(await app.event())["params"]
    assert (bye["event_type"], bye["method"]) == ("TERMINATED", "BYE")
    assert call.state is CallState.ENDED
    assert (await app.mi("dlg_list"))["result"] == {"Dialogs": []}
