"""Reader for the real OpenSIPS 3.5.9 wire captures in `tests/fixtures/opensips-3.5.9/`.

A capture file is a run of blocks, each opened by a line `===== [time] TITLE =====` and holding the exact
bytes that went over the wire, followed by one `\\n` the recorder added as a separator (and, in a few
blocks, the recorder's own `## ...` notes, which are dropped). This module hands
those bytes back untouched so that tests feed the connector exactly what OpenSIPS sent, never a
re-serialisation. HTTP blocks hold the whole HTTP message (CRLF line ends, as on the wire).

Two views of the same parse:
- `load_capture(name)` -> `Block`s of the wire traffic only (events and MI requests/responses, with the JSON
  already decoded), plus `events(name)`, `event_params(name)`, `mi_pairs(name)` and `mi_requests(name)`; `name`
  may be a file name, its stem, or a unique prefix such as `"02"` or `"08b"`.
- `load_blocks`, `event_datagrams`, `mi_exchanges`: every block of a file, including the psql and
  opensips-cli transcripts, and raw request/response pairs.

Captures 14-17 were sniffed off the wire instead: their blocks read `===== [time] UDP 127.0.0.1:5060 (edge SIP) ->
127.0.0.1:5070 (ai-node SIP), 694 bytes =====` and hold one UDP payload (SIP, MI or an event). `udp_blocks(name)`
reads them as `UdpBlock`s. The text files are UTF-8: a payload that was not (the garbled messages of captures 15
and 16) shows U+FFFD for its bad bytes, so only its structure, not its bytes, can be compared; `UdpBlock.exact`
says whether the text holds the payload byte for byte (its length then matches the declared size).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

CAPTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "opensips-3.5.9"

_BLOCK_HEADER = re.compile(rb"^===== (?:\[(?P<time>[^\]]*)\] )?(?P<title>.*?) =====\n", re.MULTILINE)
_DECLARED_SIZE = re.compile(r"\((\d+) bytes")
_NOTE_START = b"\n## "
_UDP_TITLE = re.compile(
    r"^UDP (?P<source>\S+) \((?P<source_label>[^)]*)\) -> (?P<destination>\S+) \((?P<destination_label>[^)]*)\), "
    r"(?P<size>\d+) bytes$"
)
_REPLACEMENT = "\ufffd".encode()

Transport = Literal["datagram", "http"]


@dataclass(frozen=True, slots=True)
class CaptureBlock:
    """One block of a capture file: its title line and the raw bytes below it."""

    file: str
    time: str
    title: str
    payload: bytes

    @property
    def is_event(self) -> bool:
        return "E_UA_SESSION event datagram" in self.title

    @property
    def mi_transport(self) -> Transport | None:
        if self.title.startswith("MI over mi_datagram"):
            return "datagram"
        if self.title.startswith("MI over mi_http"):
            return "http"
        return None

    @property
    def is_request(self) -> bool:
        return self.mi_transport is not None and " REQUEST" in self.title

    @property
    def is_response(self) -> bool:
        return self.mi_transport is not None and " RESPONSE" in self.title


@dataclass(frozen=True, slots=True)
class MIExchange:
    """An MI request and the response OpenSIPS gave to it, both as raw wire bytes."""

    file: str
    transport: Transport
    request: bytes
    response: bytes

    @property
    def request_json(self) -> bytes:
        """The JSON-RPC request: the datagram itself, or the HTTP body."""
        return self.request if self.transport == "datagram" else http_body(self.request)

    @property
    def response_json(self) -> bytes:
        """The JSON-RPC response: the datagram itself, or the HTTP body."""
        return self.response if self.transport == "datagram" else http_body(self.response)


def capture_files() -> list[Path]:
    """Every `NN_name.txt` capture, in name order."""
    return sorted(CAPTURE_DIR.glob("[0-9][0-9]*.txt"))


@cache
def load_blocks(name: str) -> tuple[CaptureBlock, ...]:
    """Split one capture file (by file name, e.g. `02_call1_caller_hangs_up.txt`) into its blocks."""
    data = (CAPTURE_DIR / name).read_bytes()
    headers = list(_BLOCK_HEADER.finditer(data))
    blocks: list[CaptureBlock] = []
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(data)
        raw = data[header.end() : end]
        # The recorder sometimes appends its own notes as `## ...` lines after the wire bytes (JSON and HTTP
        # never contain a bare LF followed by `## `), and ends every block with one newline of its own.
        raw = raw.split(_NOTE_START, 1)[0]
        payload = raw[:-1] if raw.endswith(b"\n") else raw
        title = header.group("title").decode("ascii")
        time = (header.group("time") or b"").decode("ascii")
        block = CaptureBlock(file=name, time=time, title=title, payload=payload)
        declared = _DECLARED_SIZE.search(title)
        if declared is not None and int(declared.group(1)) != len(payload):
            raise ValueError(f"{name}: block {title!r} holds {len(payload)} bytes, header says {declared.group(1)}")
        blocks.append(block)
    return tuple(blocks)


def event_datagrams(name: str | None = None) -> list[bytes]:
    """Raw E_UA_SESSION datagrams of one capture file, or of all of them when `name` is None."""
    names = [name] if name is not None else [path.name for path in capture_files()]
    return [block.payload for n in names for block in load_blocks(n) if block.is_event]


def mi_exchanges(name: str | None = None) -> list[MIExchange]:
    """MI request/response pairs of one capture file, or of all of them when `name` is None.

    The recorder writes a request and its response together, so each REQUEST pairs with the next
    RESPONSE of the same transport; events may sit between them.
    """
    names = [name] if name is not None else [path.name for path in capture_files()]
    exchanges: list[MIExchange] = []
    for n in names:
        pending: dict[Transport, CaptureBlock] = {}
        for block in load_blocks(n):
            transport = block.mi_transport
            if transport is None:
                continue
            if block.is_request:
                pending[transport] = block
            elif block.is_response and transport in pending:
                request = pending.pop(transport)
                exchanges.append(MIExchange(n, transport, request.payload, block.payload))
    return exchanges


def split_http(message: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Split a raw HTTP message into (start line, headers with lower-case names, body)."""
    head, separator, body = message.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("not an HTTP message: no blank line after the headers")
    start, *lines = head.split(b"\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        field, _, value = line.decode("latin-1").partition(":")
        headers[field.strip().lower()] = value.strip()
    return start, headers, body


def http_body(message: bytes) -> bytes:
    """The body of a raw HTTP message, checked against its Content-Length."""
    _, headers, body = split_http(message)
    length = int(headers["content-length"])
    if length != len(body):
        raise ValueError(f"HTTP body is {len(body)} bytes, Content-Length says {length}")
    return body


BlockKind = Literal["event", "mi_datagram_request", "mi_datagram_response", "mi_http_request", "mi_http_response"]


@dataclass(frozen=True, slots=True)
class Block:
    """One piece of wire traffic in a capture.

    `raw` is exactly what went over the wire: the datagram, or the whole HTTP message for `mi_http_*` blocks.
    `json` is the decoded JSON-RPC document (of the HTTP body for HTTP blocks); `http_headers` maps lower-case
    header names to values for HTTP blocks and is None otherwise.
    """

    kind: BlockKind
    time: str
    raw: bytes
    json: dict[str, Any]
    http_headers: dict[str, str] | None

    @property
    def body(self) -> bytes:
        """The JSON-RPC bytes: the datagram itself, or the HTTP body."""
        return self.raw if self.http_headers is None else http_body(self.raw)


def capture_name(name: str) -> str:
    """The capture file meant by `name`: a file name, its stem, or a prefix matching exactly one file."""
    names = [path.name for path in capture_files()]
    for candidate in (name, f"{name}.txt"):
        if candidate in names:
            return candidate
    matching = [n for n in names if n.startswith(name)]
    if len(matching) != 1:
        raise KeyError(f"{name!r} names {len(matching)} captures: {matching}")
    return matching[0]


def _wire_block(block: CaptureBlock) -> Block | None:
    if block.is_event:
        kind: BlockKind = "event"
    elif block.mi_transport is not None and (block.is_request or block.is_response):
        side = "request" if block.is_request else "response"
        kind = "mi_datagram_request" if block.mi_transport == "datagram" else "mi_http_request"
        if side == "response":
            kind = "mi_datagram_response" if block.mi_transport == "datagram" else "mi_http_response"
    else:
        return None  # psql output, opensips-cli transcripts, notes about a request that got no answer
    headers = split_http(block.payload)[1] if block.mi_transport == "http" else None
    body = http_body(block.payload) if headers is not None else block.payload
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"{block.file}: block {block.title!r} is not a JSON object")
    return Block(kind=kind, time=block.time, raw=block.payload, json=document, http_headers=headers)


def load_capture(name: str) -> list[Block]:
    """The wire traffic of one capture in file order (see the module docstring for `name`)."""
    wire = (_wire_block(block) for block in load_blocks(capture_name(name)))
    return [block for block in wire if block is not None]


def events(name: str) -> list[Block]:
    """The E_UA_SESSION event datagrams of one capture, in order."""
    return [block for block in load_capture(name) if block.kind == "event"]


def event_params(name: str, event_type: str | None = None) -> list[dict[str, Any]]:
    """The decoded `params` of one capture's E_UA_SESSION events, in order; only `event_type`'s when given."""
    params: list[dict[str, Any]] = [block.json["params"] for block in events(name)]
    return [p for p in params if event_type is None or p["event_type"] == event_type]


def mi_requests(name: str, method: str | None = None) -> list[dict[str, Any]]:
    """The decoded JSON-RPC requests of one capture's MI traffic, in order; only `method`'s when given."""
    requests = [block.json for block in load_capture(name) if block.kind.endswith("_request")]
    return [r for r in requests if method is None or r.get("method") == method]


def mi_pairs(name: str) -> list[tuple[Block, Block]]:
    """(request, response) MI blocks of one capture: each request pairs with the next response on its transport."""
    pairs: list[tuple[Block, Block]] = []
    pending: dict[str, Block] = {}
    for block in load_capture(name):
        if block.kind == "event":
            continue
        transport, _, side = block.kind.rpartition("_")
        if side == "request":
            pending[transport] = block
        elif transport in pending:
            pairs.append((pending.pop(transport), block))
    return pairs


@dataclass(frozen=True, slots=True)
class SippMessage:
    """One SIP message from a `*_sipp_messages.log`: what the SIPp side sent or received, bytes as on the wire."""

    direction: Literal["sent", "received"]
    time: str
    raw: bytes

    @property
    def body(self) -> bytes:
        """The message body: what follows the blank line after the headers (empty when there is none)."""
        return self.raw.partition(b"\r\n\r\n")[2]


_SIPP_HEADER = re.compile(
    rb"^-{10,} (?P<time>\S+ \S+)\n(?:UDP message (?P<dir>sent) \((?P<n1>\d+) bytes\):"
    rb"|UDP message (?P<dir2>received) \[(?P<n2>\d+)\] bytes :)\n\n",
    re.MULTILINE,
)


@cache
def sipp_messages(name: str) -> tuple[SippMessage, ...]:
    """The SIP messages of one SIPp log (`02`, `03`, `08b`... picks the caller's log of that capture)."""
    names = sorted(p.name for p in CAPTURE_DIR.glob("*_sipp_messages.log"))
    matching = [n for n in names if n.startswith(name) and "bob" not in n] if name not in names else [name]
    if len(matching) != 1:
        raise KeyError(f"{name!r} names {len(matching)} SIPp logs: {matching}")
    data = (CAPTURE_DIR / matching[0]).read_bytes()
    messages: list[SippMessage] = []
    for header in _SIPP_HEADER.finditer(data):
        size = int(header.group("n1") or header.group("n2"))
        raw = data[header.end() : header.end() + size]
        if len(raw) != size:
            raise ValueError(f"{matching[0]}: message at {header.group('time')!r} is cut short")
        direction: Literal["sent", "received"] = "sent" if header.group("dir") else "received"
        messages.append(SippMessage(direction, header.group("time").decode(), raw))
    return tuple(messages)


@dataclass(frozen=True, slots=True)
class UdpBlock:
    """One UDP payload of a sniffed capture (14-17): who sent it to whom, and its bytes as the text file holds them.

    `source_label`/`destination_label` are the recorder's names for the two ends (`edge SIP`, `ai-node SIP`,
    `ai-node mi_datagram`, `avc E_UA_SESSION sink`, or a bare port). `size` is the payload's length on the wire;
    `payload` is exact only when `exact` (no byte of it was replaced by U+FFFD in the text file).
    """

    time: str
    source: str
    source_label: str
    destination: str
    destination_label: str
    size: int
    payload: bytes

    @property
    def exact(self) -> bool:
        return _REPLACEMENT not in self.payload and len(self.payload) == self.size

    @property
    def source_port(self) -> int:
        return int(self.source.rpartition(":")[2])

    @property
    def destination_port(self) -> int:
        return int(self.destination.rpartition(":")[2])


@cache
def udp_blocks(name: str) -> tuple[UdpBlock, ...]:
    """The UDP payloads of one sniffed capture (14-17; `name` as for `load_capture`), in file order.

    Blocks of another format are skipped. A payload the text holds exactly must have its declared size.
    """
    file = capture_name(name)
    blocks: list[UdpBlock] = []
    for block in load_blocks(file):
        title = _UDP_TITLE.match(block.title)
        if title is None:
            continue
        udp = UdpBlock(
            time=block.time,
            source=title.group("source"),
            source_label=title.group("source_label"),
            destination=title.group("destination"),
            destination_label=title.group("destination_label"),
            size=int(title.group("size")),
            payload=block.payload,
        )
        if _REPLACEMENT not in udp.payload and len(udp.payload) != udp.size:
            raise ValueError(f"{file}: block {block.title!r} holds {len(udp.payload)} bytes, header says {udp.size}")
        blocks.append(udp)
    return tuple(blocks)


def udp_payloads(name: str, source_label: str, destination_label: str, starts: bytes = b"") -> list[UdpBlock]:
    """The UDP blocks of one sniffed capture sent from `source_label` to `destination_label` (the recorder's names,
    e.g. `"edge SIP"`, `"ai-node SIP"`), in order; only those whose payload starts with `starts` when given."""
    return [
        block
        for block in udp_blocks(name)
        if block.source_label == source_label
        and block.destination_label == destination_label
        and block.payload.startswith(starts)
    ]
