"""E_UA_SESSION events from OpenSIPS: parsing the datagrams and listening for them.

OpenSIPS's event_datagram module sends each E_UA_SESSION event to the subscribed socket as one UDP datagram
holding a JSON-RPC 2.0 notification (no `id`):

    {"jsonrpc":"2.0","method":"E_UA_SESSION","params":{"key":..., "event_type":"NEW", "entity_type":"UAS",
     "status":0, "reason":null, "method":"INVITE", "body":"v=0...", "headers":"Via: ...\\r\\n..."}}

All params are always present when the session was created with flags `hb` (body and headers). There is no
Call-ID/From/To field: read them from `headers` with `avc.opensips.sip.SipHeaders`. A datagram that does not have
exactly this shape is rejected with `EventError`; the listener logs and counts it and carries on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, cast

from avc.metrics import Metrics

log = logging.getLogger(__name__)

UA_SESSION_EVENT = "E_UA_SESSION"
EVENT_TYPES = frozenset({"NEW", "EARLY", "ANSWERED", "REJECTED", "UPDATED", "TERMINATED"})
ENTITY_TYPES = frozenset({"UAS", "UAC"})
# A real event (INVITE headers + SDP) is under 1 KiB; a 64 KiB cap still fits any UDP datagram OpenSIPS can send.
MAX_EVENT_BYTES = 64 * 1024
# How much of a rejected datagram goes to the log: enough to recognise it, not enough to leak a whole SIP body.
LOGGED_BYTES = 200
RECEIVE_BUFFER_BYTES = 8 * 1024 * 1024  # ~7,000 queued events of the captures' size


class EventError(ValueError):
    """An event datagram that is not a valid E_UA_SESSION notification."""


class UnknownEventType(EventError):
    """A well-formed E_UA_SESSION whose event_type this connector does not know (a newer OpenSIPS?)."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown E_UA_SESSION event_type {event_type!r}; expected one of {sorted(EVENT_TYPES)}")
        self.event_type = event_type


@dataclass(frozen=True, slots=True)
class UaSessionEvent:
    """One E_UA_SESSION notification.

    `status` is the SIP reply code (0 for requests) and `reason` the reply's reason phrase (None for
    requests). `method` is the SIP method of the request, or of the request a reply answers.
    """

    key: str
    event_type: str
    entity_type: str
    status: int
    reason: str | None
    method: str
    body: str
    headers: str
    extra_params: str | None = None


def parse_ua_session_event(datagram: bytes) -> UaSessionEvent:
    """Validate one event datagram and return its event; raise `EventError` saying what is wrong."""
    if len(datagram) > MAX_EVENT_BYTES:
        raise EventError(f"event datagram is {len(datagram)} bytes, over the {MAX_EVENT_BYTES} byte limit")
    try:
        text = datagram.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(f"event datagram is not valid UTF-8: {exc}") from None
    try:
        message = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # deeply nested arrays exhaust the decoder's recursion
        raise EventError(f"event datagram is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise EventError(f"event datagram is a JSON {type(message).__name__}, not an object")
    if message.get("jsonrpc") != "2.0":
        raise EventError(f"event has jsonrpc={message.get('jsonrpc')!r}, expected '2.0'")
    if "id" in message:
        raise EventError("event has an id: a JSON-RPC request, not a notification")
    if message.get("method") != UA_SESSION_EVENT:
        raise EventError(f"notification method is {message.get('method')!r}, expected {UA_SESSION_EVENT!r}")
    params = message.get("params")
    if not isinstance(params, dict):
        raise EventError(f"params is {type(params).__name__}, expected an object")

    event_type = _string(params, "event_type")
    if event_type not in EVENT_TYPES:
        raise UnknownEventType(event_type)
    entity_type = _string(params, "entity_type")
    if entity_type not in ENTITY_TYPES:
        raise EventError(f"entity_type is {entity_type!r}, expected one of {sorted(ENTITY_TYPES)}")
    key = _string(params, "key")
    if not key:
        raise EventError("key is empty")
    return UaSessionEvent(
        key=key,
        event_type=event_type,
        entity_type=entity_type,
        status=_status(params),
        reason=_optional_string(params, "reason"),
        method=_string(params, "method"),
        body=_string(params, "body"),
        headers=_string(params, "headers"),
        extra_params=_extra_params(params),
    )


def _reject_constant(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not valid JSON")


def _present(params: Mapping[str, Any], name: str) -> Any:
    if name not in params:
        raise EventError(f"param {name!r} is missing")
    return params[name]


def _string(params: Mapping[str, Any], name: str) -> str:
    value = _present(params, name)
    if not isinstance(value, str):
        raise EventError(f"param {name!r} is {type(value).__name__}, expected a string")
    return value


def _optional_string(params: Mapping[str, Any], name: str) -> str | None:
    value = _present(params, name)
    if value is not None and not isinstance(value, str):
        raise EventError(f"param {name!r} is {type(value).__name__}, expected a string or null")
    return value


def _status(params: Mapping[str, Any]) -> int:
    value = _present(params, "status")
    # event_datagram sends status as a JSON number; a decimal string is accepted in case a transport stringifies it.
    if isinstance(value, str) and value.isascii() and value.isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(f"param 'status' is {value!r}, expected an integer SIP status (0 for requests)")
    if value != 0 and not 100 <= value <= 699:
        raise EventError(f"param 'status' is {value}, expected 0 or a SIP status 100-699")
    return value


def _extra_params(params: Mapping[str, Any]) -> str | None:
    value = params.get("extra_params")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        # Keep the field a string whatever shape a future OpenSIPS gives it; the consumer parses it.
        return json.dumps(value, separators=(",", ":"))
    raise EventError(f"param 'extra_params' is {type(value).__name__}, expected a string")


class EventListener(asyncio.DatagramProtocol):
    """Receives E_UA_SESSION datagrams on a UDP socket and hands each parsed event to `on_event`.

    `on_event` runs synchronously on the event loop and must not block. Nothing a sender can put in a
    datagram makes the listener raise: malformed datagrams, datagrams from a host other than
    `allowed_host`, and exceptions from `on_event` are logged and counted.
    """

    def __init__(
        self,
        on_event: Callable[[UaSessionEvent], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_host: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._on_event = on_event
        self._host = host
        self._port = port
        self._allowed = _parse_allowed_host(allowed_host)
        self._metrics = metrics
        self.receive_buffer = 0
        self._transport: asyncio.DatagramTransport | None = None
        self.received = 0
        self.malformed = 0
        self.rejected_source = 0
        self.handler_errors = 0

    async def start(self) -> None:
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, self._port))
            self.receive_buffer = _grow_receive_buffer(sock, RECEIVE_BUFFER_BYTES)
        except OSError:
            sock.close()
            raise
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        if self._transport is None:
            raise RuntimeError("EventListener is not started")
        sockname = self._transport.get_extra_info("sockname")
        return str(sockname[0]), int(sockname[1])

    @property
    def socket_uri(self) -> str:
        """The socket as `event_subscribe` takes it and `subscribers_list` prints it, e.g. `udp:127.0.0.1:9999`."""
        host, port = self.address
        return f"udp:[{host}]:{port}" if ":" in host else f"udp:{host}:{port}"

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_datagram_endpoint always hands a datagram transport, though on 3.11 its class does not
        # inherit asyncio.DatagramTransport, so an isinstance check would fail.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if exc is not None:
            log.error("E_UA_SESSION listener socket lost: %s", exc)

    def error_received(self, exc: Exception) -> None:
        # A listener only receives; an ICMP error here is noise from a past send by someone else on this port.
        log.warning("E_UA_SESSION listener socket error: %s", exc)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._allowed is not None and not _same_host(addr[0], self._allowed):
            self.rejected_source += 1
            log.warning(
                "dropped an event datagram from %s:%s, only %s may send events", addr[0], addr[1], self._allowed
            )
            return
        try:
            event = parse_ua_session_event(data)
        except EventError as exc:
            self.malformed += 1
            if self._metrics is not None:
                self._metrics.events_malformed.inc()
            log.warning(
                "ignored an event datagram from %s:%s: %s; first bytes: %r", addr[0], addr[1], exc, data[:LOGGED_BYTES]
            )
            return
        self.received += 1
        if self._metrics is not None:
            self._metrics.events.labels(event_type=event.event_type).inc()
        try:
            self._on_event(event)
        except Exception:
            self.handler_errors += 1
            log.exception("event handler failed on %s %s for session %s", event.event_type, event.method, event.key)


def _grow_receive_buffer(sock: socket.socket, size: int) -> int:
    """OpenSIPS raises events in bursts (a busy hour's BYEs, a restart): a default-sized socket buffer overflows
    and the kernel silently drops events. SO_RCVBUFFORCE passes rmem_max when we may; otherwise take what we get."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < size:
        log.warning("event socket receive buffer is %d bytes (asked %d): raise net.core.rmem_max", granted, size)
    return granted


def _parse_allowed_host(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if host is None:
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"allowed_host must be an IP address (OpenSIPS's), not {host!r}") from None


def _same_host(sender: object, allowed: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        address = ipaddress.ip_address(str(sender).partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address == allowed
