"""Tests of avc.opensips.events: parsing the real E_UA_SESSION datagrams OpenSIPS 3.5.9 sent, and the UDP listener."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from avc.metrics import Metrics
from avc.opensips.events import (
    MAX_EVENT_BYTES,
    EventError,
    EventListener,
    UaSessionEvent,
    UnknownEventType,
    parse_ua_session_event,
)
from avc.opensips.sip import SipHeaders
from tests.support.captures import event_datagrams, load_blocks

ALL_EVENTS = event_datagrams()
PARAM_NAMES = ("key", "event_type", "entity_type", "status", "reason", "method", "body", "headers")


def first_event(capture: str, event_type: str) -> bytes:
    return next(d for d in event_datagrams(capture) if json.loads(d)["params"]["event_type"] == event_type)


NEW_INVITE = first_event("02_call1_caller_hangs_up.txt", "NEW")


def mutated(datagram: bytes, change: Any) -> bytes:
    """A real datagram with its decoded message changed by `change(message)`."""
    message = json.loads(datagram)
    change(message)
    return json.dumps(message, separators=(",", ":")).encode()


# --- parsing ------------------------------------------------------------------------------------------


def test_captures_hold_events_of_every_kind_seen_on_the_wire() -> None:
    types = {json.loads(d)["params"]["event_type"] for d in ALL_EVENTS}
    assert len(ALL_EVENTS) == 25
    assert types == {"NEW", "EARLY", "ANSWERED", "UPDATED", "TERMINATED"}


@pytest.mark.parametrize("datagram", ALL_EVENTS, ids=lambda d: json.loads(d)["params"]["event_type"])
def test_every_captured_event_parses_to_its_params(datagram: bytes) -> None:
    params = json.loads(datagram)["params"]
    event = parse_ua_session_event(datagram)
    assert {name: getattr(event, name) for name in PARAM_NAMES} == {name: params[name] for name in PARAM_NAMES}
    assert event.extra_params is None


def test_inbound_invite_event_carries_the_offer_and_the_headers() -> None:
    event = parse_ua_session_event(NEW_INVITE)
    assert event == UaSessionEvent(
        key="B2B.486.263.1795290824.547376897",
        event_type="NEW",
        entity_type="UAS",
        status=0,
        reason=None,
        method="INVITE",
        body=event.body,
        headers=event.headers,
    )
    assert event.body.startswith("v=0\r\n") and "m=audio 6000 RTP/AVP 0 101\r\n" in event.body
    assert SipHeaders.parse(event.headers).get("Call-ID") == "1-5251@127.0.0.1"


def test_outbound_call_events_carry_the_reply_status_and_reason() -> None:
    early = parse_ua_session_event(first_event("13_outbound_ua_session_client_start.txt", "EARLY"))
    answered = parse_ua_session_event(first_event("13_outbound_ua_session_client_start.txt", "ANSWERED"))
    assert (early.entity_type, early.status, early.reason, early.method) == ("UAC", 180, "Ringing", "INVITE")
    assert (answered.status, answered.reason) == (200, "OK")
    assert answered.body.startswith("v=0\r\n")


def test_caller_cancel_is_a_terminated_event_for_cancel() -> None:
    event = parse_ua_session_event(first_event("08b_call3_caller_cancels_app_sends_487.txt", "TERMINATED"))
    assert (event.event_type, event.method, event.status, event.body) == ("TERMINATED", "CANCEL", 0, "")


def test_event_datagrams_are_exactly_the_captured_sizes() -> None:
    # The capture reader checks every payload against the "(N bytes, raw)" of its block header.
    (block,) = [b for b in load_blocks("02_call1_caller_hangs_up.txt") if b.is_event and "(803 bytes" in b.title]
    assert len(block.payload) == 803 and block.payload == NEW_INVITE


def test_status_sent_as_a_decimal_string_is_read_as_an_int() -> None:
    datagram = mutated(NEW_INVITE, lambda m: m["params"].update(status="180"))
    assert parse_ua_session_event(datagram).status == 180


def test_extra_params_are_kept_as_a_string() -> None:
    as_text = mutated(NEW_INVITE, lambda m: m["params"].update(extra_params="a=1"))
    as_object = mutated(NEW_INVITE, lambda m: m["params"].update(extra_params={"a": 1}))
    assert parse_ua_session_event(as_text).extra_params == "a=1"
    assert parse_ua_session_event(as_object).extra_params == '{"a":1}'


@pytest.mark.parametrize("name", PARAM_NAMES)
def test_each_missing_param_is_named_in_the_error(name: str) -> None:
    datagram = mutated(NEW_INVITE, lambda m: m["params"].pop(name))
    with pytest.raises(EventError, match=f"param '{name}' is missing"):
        parse_ua_session_event(datagram)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m: m["params"].update(status="abc"), "'status' is 'abc'"),
        (lambda m: m["params"].update(status=True), "'status' is True"),
        (lambda m: m["params"].update(status=42), "expected 0 or a SIP status"),
        (lambda m: m["params"].update(key=5), "'key' is int"),
        (lambda m: m["params"].update(key=""), "key is empty"),
        (lambda m: m["params"].update(reason=200), "'reason' is int"),
        (lambda m: m["params"].update(body=None), "'body' is NoneType"),
        (lambda m: m["params"].update(entity_type="B2B"), "entity_type is 'B2B'"),
        (lambda m: m["params"].update(extra_params=7), "'extra_params' is int"),
        (lambda m: m.update(method="E_DLG_STATE_CHANGED"), "method is 'E_DLG_STATE_CHANGED'"),
        (lambda m: m.update(jsonrpc="1.0"), "jsonrpc='1.0'"),
        (lambda m: m.update(id=1), "not a notification"),
        (lambda m: m.update(params=["positional"]), "params is list"),
        (lambda m: m.pop("params"), "params is NoneType"),
    ],
    ids=[
        "status-text",
        "status-bool",
        "status-range",
        "key-type",
        "key-empty",
        "reason-type",
        "body-null",
        "entity-type",
        "extra-params-type",
        "other-event",
        "jsonrpc-version",
        "has-id",
        "params-array",
        "no-params",
    ],
)
def test_wrong_shapes_are_rejected_with_the_reason(change: Any, reason: str) -> None:
    with pytest.raises(EventError, match=reason.replace("(", r"\(")):
        parse_ua_session_event(mutated(NEW_INVITE, change))


def test_unknown_event_type_names_the_type() -> None:
    datagram = mutated(NEW_INVITE, lambda m: m["params"].update(event_type="TRANSFERRED"))
    with pytest.raises(UnknownEventType, match="'TRANSFERRED'") as raised:
        parse_ua_session_event(datagram)
    assert raised.value.event_type == "TRANSFERRED"


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (NEW_INVITE[:-2], "not JSON"),
        (b"", "not JSON"),
        (b'["E_UA_SESSION"]', "JSON list, not an object"),
        (NEW_INVITE.replace(b'"status":0', b'"status":NaN'), "NaN is not valid JSON"),
        (NEW_INVITE.replace(b"v=0", b"v=\xff"), "not valid UTF-8"),
        (mutated(NEW_INVITE, lambda m: m["params"].update(body="x" * MAX_EVENT_BYTES)), "over the 65536 byte limit"),
    ],
    ids=["truncated", "empty", "array", "nan", "not-utf8", "oversize"],
)
def test_malformed_datagrams_raise_event_error(datagram: bytes, reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        parse_ua_session_event(datagram)


# --- listener -----------------------------------------------------------------------------------------


class Received:
    """An on_event callback that queues what it is given."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[UaSessionEvent] = asyncio.Queue()

    def __call__(self, event: UaSessionEvent) -> None:
        self.queue.put_nowait(event)

    async def next(self) -> UaSessionEvent:
        async with asyncio.timeout(1.0):
            return await self.queue.get()


@pytest.fixture
async def sender() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


async def test_listener_binds_loopback_and_gives_the_socket_to_subscribe() -> None:
    listener = EventListener(Received())
    await listener.start()
    try:
        host, port = listener.address
        assert host == "127.0.0.1" and port > 0
        assert listener.socket_uri == f"udp:127.0.0.1:{port}"
    finally:
        listener.close()


async def test_listener_delivers_every_captured_event_in_order(sender: socket.socket) -> None:
    metrics = Metrics()
    received = Received()
    listener = EventListener(received, metrics=metrics)
    await listener.start()
    try:
        for datagram in ALL_EVENTS:
            sender.sendto(datagram, listener.address)
        events = [await received.next() for _ in ALL_EVENTS]
    finally:
        listener.close()
    assert [e.key for e in events] == [json.loads(d)["params"]["key"] for d in ALL_EVENTS]
    assert listener.received == len(ALL_EVENTS)
    new_count = sum(e.event_type == "NEW" for e in events)
    assert metrics.registry.get_sample_value("avc_events_total", {"event_type": "NEW"}) == new_count


async def test_listener_survives_garbage_and_keeps_delivering(
    sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    received = Received()
    listener = EventListener(received, metrics=metrics)
    await listener.start()
    garbage = [b"\xff\xfe not json", b"{}", NEW_INVITE.replace(b'"NEW"', b'"SOMETHING_NEW"'), b"x" * 60_000]
    try:
        with caplog.at_level(logging.WARNING, logger="avc.opensips.events"):
            for datagram in [*garbage, NEW_INVITE]:
                sender.sendto(datagram, listener.address)
            event = await received.next()
    finally:
        listener.close()
    assert event.key == "B2B.486.263.1795290824.547376897"
    assert (listener.malformed, listener.received) == (len(garbage), 1)
    assert metrics.registry.get_sample_value("avc_events_malformed_total") == len(garbage)
    assert repr(b"\xff\xfe not json") in caplog.text
    assert "unknown E_UA_SESSION event_type 'SOMETHING_NEW'" in caplog.text
    # Only the first 200 bytes of a datagram reach the log.
    assert repr(b"x" * 200) in caplog.text and repr(b"x" * 201) not in caplog.text


async def test_listener_keeps_delivering_after_the_handler_raises(
    sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    received = Received()

    def fails_first(event: UaSessionEvent) -> None:
        if listener.handler_errors == 0 and received.queue.empty() and event.event_type == "NEW":
            raise RuntimeError("handler bug")
        received(event)

    listener = EventListener(fails_first)
    await listener.start()
    updated = first_event("02_call1_caller_hangs_up.txt", "UPDATED")
    try:
        with caplog.at_level(logging.ERROR, logger="avc.opensips.events"):
            sender.sendto(NEW_INVITE, listener.address)
            sender.sendto(updated, listener.address)
            event = await received.next()
    finally:
        listener.close()
    assert event.event_type == "UPDATED"
    assert listener.handler_errors == 1
    assert "event handler failed on NEW INVITE" in caplog.text


async def test_listener_drops_datagrams_from_other_hosts(sender: socket.socket) -> None:
    received = Received()
    listener = EventListener(received, allowed_host="127.0.0.2")
    await listener.start()
    opensips = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    opensips.bind(("127.0.0.2", 0))
    try:
        sender.sendto(NEW_INVITE, listener.address)  # from 127.0.0.1: not OpenSIPS
        opensips.sendto(first_event("02_call1_caller_hangs_up.txt", "UPDATED"), listener.address)
        event = await received.next()
    finally:
        opensips.close()
        listener.close()
    assert event.event_type == "UPDATED"
    assert (listener.rejected_source, listener.received) == (1, 1)
    assert received.queue.empty()


def test_allowed_host_must_be_an_ip_address() -> None:
    with pytest.raises(ValueError, match="allowed_host must be an IP address"):
        EventListener(Received(), allowed_host="opensips.example")


def test_address_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = EventListener(Received()).address


def test_deeply_nested_json_is_an_event_error_not_a_recursion_crash() -> None:
    with pytest.raises(EventError):
        parse_ua_session_event(b"[" * 60_000)


async def test_a_burst_of_events_larger_than_a_default_socket_buffer_is_not_dropped(sender: socket.socket) -> None:
    # OpenSIPS raises events in bursts (hundreds of BYEs at the end of a busy minute); with the kernel's default
    # 208 KiB buffer about 170 of these datagrams fit before the rest are silently dropped.
    received = Received()
    listener = EventListener(received)
    await listener.start()
    burst = [d for d in ALL_EVENTS] * 40
    try:
        for datagram in burst:
            sender.sendto(datagram, listener.address)
        async with asyncio.timeout(5):
            for _ in burst:
                await received.next()
    finally:
        listener.close()
    assert listener.received == len(burst) == 1000
    assert listener.receive_buffer >= 2 * 1024 * 1024
