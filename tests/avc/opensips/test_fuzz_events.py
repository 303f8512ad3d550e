"""Property-based fuzzing of avc.opensips.events: hostile E_UA_SESSION datagrams.

Contract: any bytes either parse into a `UaSessionEvent` or raise `EventError` (never another exception), a
valid event round-trips its fields, and `EventListener.datagram_received` never raises whatever arrives.
Seeds are the real datagrams OpenSIPS 3.5.9 sent (tests/support/captures.py), mutated at the byte level and
at the JSON level. `AVC_FUZZ_EXAMPLES` (default 300) sets the examples per test; runs are derandomized. The
settings and the shared mutators live in tests/support/fuzz.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from avc.metrics import Metrics
from avc.opensips.events import (
    ENTITY_TYPES,
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    UA_SESSION_EVENT,
    EventError,
    EventListener,
    UaSessionEvent,
    parse_ua_session_event,
)
from tests.support.captures import event_datagrams
from tests.support.fuzz import FUZZ, byte_mutants, json_bytes, json_scalars, json_values, nasty_text

SEEDS = event_datagrams()
SEED_MESSAGES: list[dict[str, Any]] = [json.loads(seed) for seed in SEEDS]
PARAM_NAMES = ("key", "event_type", "entity_type", "status", "reason", "method", "body", "headers", "extra_params")
TOP_NAMES = ("jsonrpc", "method", "params", "id")
METRICS = Metrics()

# Texts that tend to break decoders (with the shared ones: "", NUL, a lone surrogate): the other surrogate half,
# astral and combining characters, bidi overrides, BOM, line separators and numeric-looking strings.
hostile_text = nasty_text(
    ["\r\n", "\udfff", "\U0001f4de", "e\u0301", "\u202e", "\ufeff", "\u2028", "0", "-1", "1e9"], max_size=40
)
scalars = json_scalars(hostile_text)
values = json_values(hostile_text)


@st.composite
def json_mutants(draw: st.DrawFn) -> bytes:
    """A captured event with its JSON fields deleted, retyped, replaced by huge or odd strings, or added."""
    message = json.loads(json.dumps(draw(st.sampled_from(SEED_MESSAGES))))
    params = message["params"]
    for _ in range(draw(st.integers(1, 4))):
        target, names = draw(st.sampled_from(((params, PARAM_NAMES), (message, TOP_NAMES))))
        if not isinstance(target, dict):
            continue
        name = draw(st.sampled_from(names) | hostile_text)
        operation = draw(st.sampled_from(("delete", "retype", "huge", "text")))
        if operation == "delete":
            target.pop(name, None)
        elif operation == "retype":
            target[name] = draw(values)
        elif operation == "huge":
            target[name] = draw(st.sampled_from(("x", "é", "\U0001f4de", "\\"))) * draw(st.integers(1000, 70_000))
        else:
            target[name] = draw(hostile_text)
        params = message.get("params")
    return json_bytes(message, ensure_ascii=draw(st.booleans()))


hostile_datagrams = (
    byte_mutants(SEEDS)
    | json_mutants()
    | st.binary(max_size=512)
    | st.text(max_size=256).map(str.encode)
    | values.map(json_bytes)
)


def parse_or_event_error(datagram: bytes) -> UaSessionEvent | None:
    try:
        parsed = parse_ua_session_event(datagram)
    except EventError as exc:
        event(f"refused: {type(exc).__name__}")
        return None
    event("parsed")
    return parsed


@FUZZ
@given(hostile_datagrams)
@example(b"[" * 100_000)  # nesting deeper than the JSON decoder's recursion limit
@example(b'{"jsonrpc":"2.0","method":"E_UA_SESSION","params":{"status":' + b"9" * 5000 + b"}}")  # int digit limit
@example(b'{"jsonrpc":"2.0","method":"E_UA_SESSION","params":NaN}')
@example(b"\xff\xfe{\x00}\x00")  # UTF-16 with a BOM, which json.loads(bytes) would accept
@example(b" " * (MAX_EVENT_BYTES + 1))
def test_any_datagram_parses_or_raises_event_error(datagram: bytes) -> None:
    event = parse_or_event_error(datagram)
    if event is not None:
        assert event.event_type in EVENT_TYPES
        assert event.entity_type in ENTITY_TYPES
        assert event.key
        assert event.status == 0 or 100 <= event.status <= 699
        assert all(isinstance(value, str) for value in (event.method, event.body, event.headers))


texts = st.text(max_size=200) | hostile_text


@st.composite
def valid_params(draw: st.DrawFn) -> dict[str, Any]:
    params: dict[str, Any] = {
        "key": draw(texts.filter(bool)),
        "event_type": draw(st.sampled_from(sorted(EVENT_TYPES))),
        "entity_type": draw(st.sampled_from(sorted(ENTITY_TYPES))),
        "status": draw(st.just(0) | st.integers(100, 699)),
        "reason": draw(st.none() | texts),
        "method": draw(texts),
        "body": draw(texts),
        "headers": draw(texts),
    }
    extra = draw(st.sampled_from(("absent", "null", "text", "object")))
    if extra == "null":
        params["extra_params"] = None
    elif extra == "text":
        params["extra_params"] = draw(texts)
    elif extra == "object":
        params["extra_params"] = draw(st.dictionaries(st.text(max_size=8), scalars.filter(_finite), max_size=3))
    return params


def _finite(value: object) -> bool:
    return not isinstance(value, float) or (value == value and abs(value) != float("inf"))


@FUZZ
@given(valid_params(), st.booleans(), st.booleans())
def test_valid_event_round_trips_its_fields(params: dict[str, Any], ascii_only: bool, status_as_text: bool) -> None:
    sent = dict(params, status=str(params["status"])) if status_as_text else params
    message = {"jsonrpc": "2.0", "method": UA_SESSION_EVENT, "params": sent}
    has_surrogate = any("\ud800" <= char <= "\udfff" for char in json.dumps(message, ensure_ascii=False))
    datagram = json.dumps(message, ensure_ascii=ascii_only or has_surrogate).encode("utf-8")

    event = parse_ua_session_event(datagram)

    assert (event.key, event.event_type, event.entity_type) == (
        params["key"],
        params["event_type"],
        params["entity_type"],
    )
    assert (event.status, event.reason, event.method) == (params["status"], params["reason"], params["method"])
    assert (event.body, event.headers) == (params["body"], params["headers"])
    extra = params.get("extra_params")
    if isinstance(extra, dict):
        assert event.extra_params is not None
        assert json.loads(event.extra_params) == extra
    else:
        assert event.extra_params == extra


@FUZZ
@given(
    hostile_datagrams | st.sampled_from(SEEDS),
    st.sampled_from(["127.0.0.1", "10.0.0.9", "::ffff:127.0.0.1", "::1", "fe80::1%eth0", "", "x" * 300])
    | st.integers()
    | hostile_text,
    st.integers(-1, 70_000),
    st.sampled_from([None, "127.0.0.1", "::1"]),
    st.booleans(),
)
def test_listener_never_raises_and_counts_every_datagram(
    datagram: bytes, sender: object, port: int, allowed_host: str | None, handler_fails: bool
) -> None:
    handled: list[UaSessionEvent] = []

    def on_event(event: UaSessionEvent) -> None:
        handled.append(event)
        if handler_fails:
            raise RuntimeError("handler bug")

    listener = EventListener(on_event, allowed_host=allowed_host, metrics=METRICS)
    listener.datagram_received(datagram, (sender, port))

    assert listener.received + listener.malformed + listener.rejected_source == 1
    assert listener.received == len(handled)
    assert listener.handler_errors == (len(handled) if handler_fails else 0)
    if listener.received:
        assert handled == [parse_ua_session_event(datagram)]
