"""Wire helpers every part of the double shares: the server's name, its addresses, JSON as cJSON prints it,
SIP URIs, the SIPp caller's conventions and the UDP socket protocol.

Nothing here knows about sessions, MI commands or dialogs; the modules that do import from here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

SERVER = "OpenSIPS (3.5.9 (x86_64/linux))"
B2B_CONTACT = "sip:127.0.0.1:5060"
SIP_SOCKET = "udp:127.0.0.1:5060"
# tm's retransmission timers (RFC 3261 17.1.1.1 defaults): the first interval, and the cap on a doubling one.
T1 = 0.5
T2 = 4.0


def compact_json(document: object) -> bytes:
    # cJSON's unformatted output: no spaces, UTF-8 as is, the same escapes as Python for control characters.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def sip_hostport(uri: str) -> str:
    """`sip:user@host:port;params` -> `host:port` (default port 5060)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    hostport = rest.split("@", 1)[-1].split(";", 1)[0]
    return hostport if ":" in hostport else f"{hostport}:5060"


def name_addr(value: str) -> tuple[str | None, str]:
    """`"Name" <sip:uri>;tag=x` -> ("Name", "sip:uri"); a bare URI has no display name."""
    if "<" in value:
        name, _, rest = value.partition("<")
        display = name.strip().strip('"') or None
        return display, rest.split(">", 1)[0]
    return None, value.split(";", 1)[0].strip()


def uri_address(uri: str) -> tuple[str, int]:
    host, _, port = sip_hostport(uri).rpartition(":")
    return host, int(port) if port.isdigit() else 5060


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def sip_user(uri: str) -> str:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0] if "@" in rest else ""


def sipp_call(call_id: str, number: int, pid: int) -> tuple[int, int]:
    """(call number, pid) for Via branches: SIPp's Call-IDs read `<number>-<pid>@<ip>` and its branches follow."""
    head = call_id.split("@", 1)[0]
    number_text, _, pid_text = head.partition("-")
    if number_text.isdigit() and pid_text.isdigit():
        return int(number_text), int(pid_text)
    return number, pid


def caller_contact(from_uri: str) -> str:
    """The Contact a SIPp caller puts in its requests: its user at the address it sends from."""
    user = sip_user(from_uri)
    hostport = sip_hostport(from_uri)
    return f"sip:{user}@{hostport}" if user else f"sip:{hostport}"


class Datagrams(asyncio.DatagramProtocol):
    """One of the double's UDP sockets (SIP, MI): every datagram to one callback."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None], name: str) -> None:
        self._on_datagram = on_datagram
        self._name = name

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s socket: %s", self._name, exc)


# What b2b_entities' ua_build_hdrs left in its buffer in captures 15 and 16: the text of an earlier Content-Type line,
# then binary. Modelled as that text, then NUL bytes.
_STALE_BUFFER = "Content-Type: application/sdp\r\n"


def garbled_headers(extra_headers: str) -> str:
    """What 3.5.9 sends for `extra_headers` given without a body: as many bytes of uninitialised memory, with no
    line end of their own, so they run into the next header (capture 16: `Content-Type: apContact: ...`).

    OpenSIPS 3.5.9 reserves room for the headers but copies them only when a body is given (captures 15-17).
    """
    size = len(extra_headers.encode())
    return (_STALE_BUFFER + "\x00" * size)[:size]


def app_lumps(body: str | None, content_type: str | None, extra_headers: str | None) -> str:
    """The app's headers where b2b_entities puts them, just before Contact: with a body, its Content-Type line
    (`content_type` is the whole line, as MI takes it; application/sdp when not given), then `extra_headers`
    verbatim (captures 16, 17)."""
    lumps = ""
    if body is not None:
        lumps += content_type or "Content-Type: application/sdp\r\n"
    return lumps + (extra_headers or "")
