"""The event interface with event_datagram: who subscribed to which event, and the sockets events leave from.

Events go only to subscribed, unexpired sockets, from a small pool of source ports like the real server's worker
processes. A subscriber off loopback is accepted like on the real server but never sent anything.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

UA_SESSION_EVENT = "E_UA_SESSION"
DEFAULT_EXPIRE = 3600
_LOOPBACK_NAMES = frozenset({"localhost"})

# `events_list` of capture 01: the events a 3.5.9 with the project's modules publishes, in id order.
PUBLISHED_EVENTS = (
    "E_CORE_SR_STATUS_CHANGED",
    "E_CORE_THRESHOLD",
    "E_CORE_SHM_THRESHOLD",
    "E_CORE_PKG_THRESHOLD",
    "E_CORE_PROC_AUTO_SCALE",
    "E_CORE_TCP_DISCONNECT",
    "E_DLG_STATE_CHANGED",
    UA_SESSION_EVENT,
    "E_CORE_LOG",
)


@dataclass(slots=True)
class Subscriber:
    """An event_datagram subscription: `socket` as given to `event_subscribe`."""

    socket: str
    expire: int
    subscribed_at: float
    target: tuple[str, int] | str | None  # (host, port) for udp, a path for unix; None when not on loopback


def parse_event_socket(spec: str) -> tuple[str, int] | str | None:
    """`udp:HOST:PORT` or `unix:PATH` as event_datagram takes them; raises ValueError when malformed.

    Returns the delivery target, or None for a well-formed address that is not on loopback: the double accepts
    such a subscription like the real server but never sends traffic off the machine.
    """
    proto, _, rest = spec.partition(":")
    if proto == "unix" and rest:
        return rest
    if proto != "udp":
        raise ValueError(f"no event transport for {spec!r}")
    host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad udp socket {spec!r}")
    if host in _LOOPBACK_NAMES:
        return ("127.0.0.1", int(port_text))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: OpenSIPS would resolve it; the double refuses to send anywhere unknown
    return (str(address), int(port_text)) if address.is_loopback else None


class EventInterface:
    """The subscriptions (`event_subscribe`, `subscribers_list`) and the delivery of event datagrams."""

    def __init__(self, host: str, rng: random.Random, clock: Callable[[], float], senders: int) -> None:
        self._host = host
        self._rng = rng
        self._clock = clock
        self._sender_count = senders
        self._subscribers: dict[str, list[Subscriber]] = {}
        self.waiters: list[asyncio.Future[str]] = []  # wait_subscribed: for the next E_UA_SESSION subscriber
        self._sockets: list[socket.socket] = []
        self._unix_sender: socket.socket | None = None

    def open(self) -> None:
        for _ in range(self._sender_count):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.setblocking(False)
            sender.bind((self._host, 0))
            self._sockets.append(sender)

    def close(self) -> None:
        for sender in self._sockets:
            sender.close()
        self._sockets.clear()
        if self._unix_sender is not None:
            self._unix_sender.close()
            self._unix_sender = None
        for waiter in self.waiters:
            waiter.cancel()

    def forget(self) -> None:
        """A restart: every subscription is gone."""
        self._subscribers.clear()

    def subscribe(self, event: str, spec: str, expire: int, target: tuple[str, int] | str | None) -> None:
        """`event_subscribe` once its parameters are read: subscribe, renew, or (expire 0) unsubscribe."""
        subscribers = self._subscribers.setdefault(event, [])
        existing = next((s for s in subscribers if s.socket == spec), None)
        if expire == 0:
            # An expire of 0 ends the subscription at once: the unsubscribe of the event interface.
            if existing is not None:
                subscribers.remove(existing)
            return
        if existing is not None:
            existing.expire = expire
            existing.subscribed_at = self._clock()
        else:
            if target is None:
                log.warning("subscriber %s is not on loopback: the double will not send it events", spec)
            subscribers.insert(0, Subscriber(spec, expire, self._clock(), target))
        if event == UA_SESSION_EVENT:
            for waiter in self.waiters:
                if not waiter.done():
                    waiter.set_result(spec)

    def live(self, event: str) -> list[Subscriber]:
        now = self._clock()
        subscribers = self._subscribers.get(event, [])
        subscribers[:] = [s for s in subscribers if now - s.subscribed_at < s.expire]
        return list(subscribers)

    def item(self, index: int, subscriber: Subscriber | None = None) -> dict[str, Any]:
        """One event as `subscribers_list` prints it, with its live subscribers (or just `subscriber`)."""
        name = PUBLISHED_EVENTS[index]
        live = self.live(name)
        if subscriber is None and not live:
            return {}  # evi_print_event adds nothing for an event nobody listens to

        def printed(s: Subscriber) -> dict[str, Any]:
            ttl = max(0, s.expire - int(self._clock() - s.subscribed_at))
            return {"socket": s.socket, "expire": s.expire, "ttl": ttl}

        item: dict[str, Any] = {"name": name, "id": index}
        if subscriber is not None:
            item["Subscriber"] = printed(subscriber)
        else:
            item["Subscribers"] = [printed(s) for s in live]
        return item

    def send(self, datagram: bytes) -> int:
        """Send bytes as an E_UA_SESSION datagram to every live subscriber; returns how many it went to."""
        sent = 0
        for subscriber in self.live(UA_SESSION_EVENT):
            target = subscriber.target
            try:
                if isinstance(target, tuple):
                    self._rng.choice(self._sockets).sendto(datagram, target)
                elif isinstance(target, str):
                    if self._unix_sender is None:
                        self._unix_sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                        self._unix_sender.setblocking(False)
                    self._unix_sender.sendto(datagram, target)
                else:
                    continue  # not on loopback: never sent anywhere
            except OSError as exc:
                # event_datagram logs and drops; so does the double (a full buffer, a closed unix socket...).
                log.warning("event to %s dropped: %s", subscriber.socket, exc)
                continue
            sent += 1
        return sent
