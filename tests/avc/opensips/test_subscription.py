"""Tests of avc.opensips.subscription against a fake OpenSIPS mi_datagram that can go down, come back and restart.

Intervals are shortened (checks every 20 ms, backoff 10-50 ms, MI timeout 200 ms) so that every scenario
completes well under two seconds; deadlines are generous so that a loaded machine does not fail them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from avc.metrics import Metrics
from avc.opensips.mi import DatagramMI, OpenSIPSMI
from avc.opensips.subscription import EventSubscription
from tests.support.captures import mi_exchanges

SOCKET_URI = "udp:127.0.0.1:9999"
CAPTURED = {
    json.loads(e.request_json)["method"]: e
    for e in mi_exchanges("02_call1_caller_hangs_up.txt")
    if json.loads(e.request_json)["method"] in ("event_subscribe", "subscribers_list")
}


def compact(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


class FakeOpenSIPS(asyncio.DatagramProtocol):
    """The event-interface part of OpenSIPS's MI over mi_datagram, answering in OpenSIPS's reply format.

    `stop()` closes its socket (clients then get ICMP port unreachable), `start()` reopens it on the same
    port, `restart()` forgets every subscriber as a real restart does. Unlike the real server, an
    `expire` of 0 removes the subscriber at once instead of at the next raised event.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.subscribers: dict[str, int] = {}
        self.ttl_override: int | None = None
        self.subscribe_calls: list[int] = []
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", self.port))
        assert self._transport is not None
        self.port = int(self._transport.get_extra_info("sockname")[1])

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def restart(self) -> None:
        self.subscribers.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(self.answer(data), addr)

    def answer(self, data: bytes) -> bytes:
        request = json.loads(data)
        params = request["params"]
        reply: dict[str, Any] = {"jsonrpc": "2.0"}
        if request["method"] == "event_subscribe":
            self.subscribe_calls.append(params["expire"])
            if params["expire"] == 0:
                self.subscribers.pop(params["socket"], None)
            else:
                self.subscribers[params["socket"]] = params["expire"]
            reply["result"] = "OK"
        elif request["method"] == "subscribers_list":
            entries = [
                {"socket": s, "expire": e, "ttl": e if self.ttl_override is None else self.ttl_override}
                for s, e in self.subscribers.items()
            ]
            # Like OpenSIPS: the event is printed only when it has subscribers.
            reply["result"] = {"Event": {"name": params["event"], "id": 7, "Subscribers": entries} if entries else {}}
        else:
            reply["error"] = {"code": -32601, "message": "Method not found"}
        reply["id"] = request["id"]
        return compact(reply)


async def eventually(condition: Callable[[], bool], within: float = 1.5) -> None:
    """Wait until `condition()` holds, polling (the fake has no hook to signal it); fail after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.005)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def attempts(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("avc_event_subscription_attempts_total", {"result": result}) or 0.0


class Running:
    """An EventSubscription with its run() task, against an MI client on `port`."""

    def __init__(self, port: int, metrics: Metrics, expire: int = 600) -> None:
        self.client = DatagramMI("127.0.0.1", port, timeout=0.2)
        self.subscription = EventSubscription(
            OpenSIPSMI(self.client),
            SOCKET_URI,
            expire=expire,
            check_interval=0.02,
            backoff_initial=0.01,
            backoff_max=0.05,
            metrics=metrics,
        )
        self.task = asyncio.create_task(self.subscription.run())

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.client.close()


@pytest.fixture
async def opensips() -> AsyncIterator[FakeOpenSIPS]:
    server = FakeOpenSIPS()
    await server.start()
    yield server
    server.stop()


def test_fake_answers_byte_for_byte_like_the_capture() -> None:
    fake = FakeOpenSIPS()
    assert fake.answer(CAPTURED["event_subscribe"].request_json) == CAPTURED["event_subscribe"].response_json
    # The capture's subscribers_list has id 2 and lists the subscription made with id 1.
    assert fake.answer(CAPTURED["subscribers_list"].request_json) == CAPTURED["subscribers_list"].response_json


async def test_subscribes_and_reports_it(opensips: FakeOpenSIPS) -> None:
    metrics = Metrics()
    running = Running(opensips.port, metrics)
    try:
        assert await running.subscription.wait_subscribed(1.5)
        assert running.subscription.subscribed
        assert opensips.subscribers == {SOCKET_URI: 600}
        assert metrics.registry.get_sample_value("avc_event_subscription_up") == 1
        assert attempts(metrics, "ok") == 1
    finally:
        await running.stop()


async def test_retries_with_backoff_while_opensips_is_down_then_subscribes(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    port = free_udp_port()
    with caplog.at_level(logging.WARNING, logger="avc.opensips.subscription"):
        running = Running(port, metrics)
        try:
            await eventually(lambda: attempts(metrics, "error") >= 3)
            assert not running.subscription.subscribed
            assert not await running.subscription.wait_subscribed(0.01)
            assert running.subscription.last_error is not None
            assert "event_subscribe attempt" in running.subscription.last_error
            assert "unreachable" in running.subscription.last_error

            opensips = FakeOpenSIPS(port)
            await opensips.start()
            try:
                assert await running.subscription.wait_subscribed(1.5)
                assert opensips.subscribers == {SOCKET_URI: 600}
            finally:
                opensips.stop()
        finally:
            await running.stop()
    failures = [r for r in caplog.records if "event_subscribe attempt" in r.getMessage()]
    assert len(failures) >= 3 and all(r.levelno == logging.WARNING for r in failures)


async def test_resubscribes_quickly_after_an_opensips_restart(
    opensips: FakeOpenSIPS, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    running = Running(opensips.port, metrics)
    try:
        assert await running.subscription.wait_subscribed(1.5)
        opensips.restart()
        loop = asyncio.get_running_loop()
        restarted_at = loop.time()
        await eventually(lambda: SOCKET_URI in opensips.subscribers)
        assert loop.time() - restarted_at < 1.5
        await eventually(lambda: running.subscription.subscribed)
        assert metrics.registry.get_sample_value("avc_opensips_restarts_detected_total") == 1
        # The loss is in the log; the state shown to operations (/readyz) is the current one, not a past error.
        assert any("no longer subscribed" in r.getMessage() for r in caplog.records)
        assert running.subscription.last_error is None
    finally:
        await running.stop()


async def test_resubscribes_when_opensips_comes_back_after_going_down(opensips: FakeOpenSIPS) -> None:
    metrics = Metrics()
    running = Running(opensips.port, metrics)
    try:
        assert await running.subscription.wait_subscribed(1.5)
        opensips.stop()
        opensips.restart()
        await eventually(lambda: not running.subscription.subscribed)
        assert metrics.registry.get_sample_value("avc_event_subscription_up") == 0
        await opensips.start()
        assert await running.subscription.wait_subscribed(1.5)
        assert opensips.subscribers == {SOCKET_URI: 600}
    finally:
        await running.stop()


async def test_renews_before_the_subscription_expires(opensips: FakeOpenSIPS) -> None:
    metrics = Metrics()
    running = Running(opensips.port, metrics, expire=1)
    try:
        assert await running.subscription.wait_subscribed(1.5)
        # Renewal is due at half the 1 s lifetime.
        await eventually(lambda: len(opensips.subscribe_calls) >= 2)
        assert opensips.subscribe_calls[:2] == [1, 1]
        assert running.subscription.subscribed
    finally:
        await running.stop()


async def test_renews_at_once_when_opensips_says_the_subscription_is_about_to_expire(
    opensips: FakeOpenSIPS,
) -> None:
    running = Running(opensips.port, Metrics())
    try:
        assert await running.subscription.wait_subscribed(1.5)
        opensips.ttl_override = 0
        await eventually(lambda: len(opensips.subscribe_calls) >= 2)
        assert opensips.subscribe_calls[:2] == [600, 600]
    finally:
        await running.stop()


async def test_stopping_unsubscribes(opensips: FakeOpenSIPS) -> None:
    metrics = Metrics()
    running = Running(opensips.port, metrics)
    assert await running.subscription.wait_subscribed(1.5)
    await running.stop()
    assert opensips.subscribe_calls == [600, 0]
    assert opensips.subscribers == {}
    assert not running.subscription.subscribed
    assert metrics.registry.get_sample_value("avc_event_subscription_up") == 0


def test_bad_settings_are_rejected() -> None:
    mi = OpenSIPSMI(DatagramMI("127.0.0.1", 9))
    with pytest.raises(ValueError, match="expire"):
        EventSubscription(mi, SOCKET_URI, expire=0)
    with pytest.raises(ValueError, match="backoff_max"):
        EventSubscription(mi, SOCKET_URI, backoff_initial=1.0, backoff_max=0.5)
