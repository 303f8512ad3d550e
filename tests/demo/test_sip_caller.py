"""Tests of the demo's SIP caller against a scripted UAS that answers with OpenSIPS 3.5.9's own bytes.

The UAS is a bare UDP socket. It reads what the caller sent with plain string handling (never with the module's
`parse_sip`, so a parser bug cannot hide itself) and answers with messages taken from the SIPp captures, after
translating the SIPp run's identifiers (Call-ID, From-tag, addresses) into this run's. What the caller sends is
translated back the same way and compared byte for byte with what the SIPp caller sent in the same situation.
"""

# The helpers take a `timeout` because a test states how long it is willing to wait.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import pytest

from demo.sip_caller import (
    DIGEST_NOT_SUPPORTED,
    SipCall,
    SipCaller,
    SipCallFailed,
    SipError,
    parse_sip,
)
from tests.support.captures import CAPTURE_DIR

SHORT = 0.2  # how long "nothing else arrives" is watched for

# -- the SIPp logs ----------------------------------------------------------------------------------------------------

_LOG_ENTRY = re.compile(
    rb"^-{20,} [^\n]*\n(?:UDP message sent \((?P<sent>\d+) bytes\):|UDP message received \[(?P<received>\d+)\] bytes :)"
    rb"\n\n",
    re.MULTILINE,
)


@functools.cache
def sipp_log(name: str) -> tuple[bytes, ...]:
    """Every SIP message of one `*_sipp_messages.log`, exactly as it went over the wire."""
    [path] = CAPTURE_DIR.glob(f"{name}*_sipp_messages.log")
    data = path.read_bytes()
    entries = list(_LOG_ENTRY.finditer(data))
    messages = []
    for index, entry in enumerate(entries):
        end = entries[index + 1].start() if index + 1 < len(entries) else len(data)
        size = int(entry.group("sent") or entry.group("received"))
        chunk = data[entry.end() : end]
        assert len(chunk) == size + 1 and chunk.endswith(b"\n"), f"{path.name}: entry {index} is not {size} bytes"
        messages.append(chunk[:-1])
    return tuple(messages)


def pick(name: str, start: str, cseq_method: str | None = None, nth: int = 0) -> bytes:
    """The nth message of a log whose start line begins with `start` (and whose CSeq is for `cseq_method`)."""
    found = [
        message
        for message in sipp_log(name)
        if first_line(message).startswith(start) and cseq_method in (None, field(message, "CSeq").split()[1])
    ]
    return found[nth]


# -- reading messages without the module under test -------------------------------------------------------------------


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


def header_lines(data: bytes) -> list[tuple[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return [(name, value.strip()) for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])]


def header_names(data: bytes) -> list[str]:
    return [name for name, _ in header_lines(data)]


def fields(data: bytes, name: str) -> list[str]:
    return [value for header, value in header_lines(data) if header.lower() == name.lower()]


def field(data: bytes, name: str) -> str:
    [value] = fields(data, name)
    return value


def body(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def tag(value: str) -> str:
    match = re.search(r";tag=([^;>\s]+)", value.rsplit(">", 1)[-1])
    assert match is not None, value
    return match.group(1)


def branch(data: bytes) -> str:
    match = re.search(r";branch=([^;\s]+)", fields(data, "Via")[0])
    assert match is not None
    return match.group(1)


def sipp_layout(data: bytes) -> bytes:
    """SIPp pads Content-Length (`Content-Length:   210`); the value is what counts."""
    return re.sub(rb"Content-Length: +", b"Content-Length: ", data)


def swap(data: bytes, pairs: Mapping[str, str]) -> bytes:
    """Replace each key by its value in one pass (a port is only matched whole)."""
    pattern = "|".join(re.escape(old) + r"(?!\d)" for old in sorted(pairs, key=len, reverse=True))
    return re.sub(pattern, lambda match: pairs[match.group(0)], data.decode()).encode()


@dataclass
class Run:
    """The identifiers of a SIPp run and of ours, to turn captured messages into this call's and ours into SIPp's."""

    forward: dict[str, str]  # SIPp run -> this run
    backward: dict[str, str]

    @classmethod
    def of(cls, sipp_invite: bytes, our_invite: bytes, addresses: Mapping[str, str]) -> Run:
        ids = {
            field(sipp_invite, "Call-ID"): field(our_invite, "Call-ID"),
            tag(field(sipp_invite, "From")): tag(field(our_invite, "From")),
        }
        backward = {ours: sipp for sipp, ours in {**ids, **addresses}.items()}
        return cls({**ids, **addresses}, backward)

    def to_ours(self, captured: bytes) -> bytes:
        return swap(captured, self.forward)

    def to_sipp(self, ours: bytes, like: bytes) -> bytes:
        """Our message in the SIPp run's terms; our Via's `rport` (SIPp sends none) is dropped."""
        translated = ours.replace(branch(ours).encode(), branch(like).encode()).replace(b";rport", b"")
        return swap(translated, self.backward)


def answer(
    captured: bytes, request: bytes, run: Run, *, contact: str | None = None, record_route: str | None = None
) -> bytes:
    """A captured OpenSIPS response turned into the answer to our `request`.

    The Vias are our request's, with `rport` and `received` filled in as OpenSIPS does; the rest is the capture in
    this run's identifiers, the Contact optionally pointed at another socket, a Record-Route optionally added.
    """
    text = run.to_ours(captured)
    head, _, payload = text.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    out = [lines[0]]
    vias = [
        via.replace(";rport", ";received=127.0.0.1;rport=" + str(via_port(request))) for via in fields(request, "Via")
    ]
    for line in lines[1:]:
        name = line.split(":", 1)[0].lower()
        if name == "via":
            out += [f"Via: {via}" for via in vias]
            vias = []
        elif name == "contact" and contact is not None:
            out.append(f"Contact: <{contact}>")
        else:
            out.append(line)
        if name == "cseq" and record_route is not None:
            out.append(f"Record-Route: {record_route}")
    return "\r\n".join(out).encode() + b"\r\n\r\n" + payload


def trying(request: bytes) -> bytes:
    """A bare 100 Trying to `request`, its headers copied as RFC 3261 8.2.6.2 says."""
    copied = [
        f"{name}: {value}" for name, value in header_lines(request) if name in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    return "\r\n".join(["SIP/2.0 100 Trying", *copied, "Content-Length: 0", "", ""]).encode()


def via_port(request: bytes) -> int:
    match = re.search(r":(\d+);", fields(request, "Via")[0])
    assert match is not None
    return int(match.group(1))


# -- the scripted far end ---------------------------------------------------------------------------------------------


class Node(asyncio.DatagramProtocol):
    """A UDP socket on loopback playing an OpenSIPS node: it queues what arrives and sends what the test says."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(cls) -> Node:
        loop = asyncio.get_running_loop()
        transport, node = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        node.transport = transport
        return node

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, (addr[0], addr[1])))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def receive(self, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    async def request(self, method: str, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        data, source = await self.receive(timeout)
        assert first_line(data).startswith(f"{method} "), first_line(data)
        return data, source

    async def response(self, code: int, timeout: float = 2.0) -> bytes:
        data, _ = await self.receive(timeout)
        assert first_line(data).startswith(f"SIP/2.0 {code} "), first_line(data)
        return data

    async def nothing_more(self, seconds: float = SHORT) -> None:
        await asyncio.sleep(seconds)
        assert self.queue.empty(), [first_line(self.queue.get_nowait()[0]) for _ in range(self.queue.qsize())]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def uas() -> AsyncIterator[Node]:
    node = await Node.start()
    yield node
    node.close()


@pytest.fixture
async def b2b() -> AsyncIterator[Node]:
    """A second node: the B2B instance behind the proxy, reached through the 2xx's Contact."""
    node = await Node.start()
    yield node
    node.close()


@pytest.fixture
async def make_caller() -> AsyncIterator[Callable[..., Awaitable[SipCaller]]]:
    callers: list[SipCaller] = []

    async def make(t1: float = 0.5, t2: float = 4.0) -> SipCaller:
        caller = await SipCaller.start(t1=t1, t2=t2)
        callers.append(caller)
        return caller

    yield make
    for caller in callers:
        await caller.close()


@pytest.fixture
async def caller(make_caller: Callable[..., Awaitable[SipCaller]]) -> SipCaller:
    return await make_caller()


@dataclass
class Placed:
    call: SipCall
    invite: bytes
    source: tuple[str, int]
    run: Run


async def place(caller: SipCaller, uas: Node, capture: str, **more: str) -> Placed:
    """Place the call of a capture (same SDP, display name, Subject) and receive its INVITE at `uas`."""
    sipp_invite = pick(capture, "INVITE")
    sipp_port = re.search(r"127\.0\.0\.1:(\d+)", field(sipp_invite, "Contact"))
    assert sipp_port is not None
    call = await caller.invite(
        f"sip:{first_line(sipp_invite).split()[1].split(':')[1].split('@')[0]}@{uas.hostport}",
        body(sipp_invite).decode(),
        display_name="sipp caller",
        subject=field(sipp_invite, "Subject") if fields(sipp_invite, "Subject") else None,
    )
    invite, source = await uas.request("INVITE")
    addresses = {f"127.0.0.1:{sipp_port.group(1)}": f"127.0.0.1:{caller.address[1]}", "127.0.0.1:5060": uas.hostport}
    return Placed(call, invite, source, Run.of(sipp_invite, invite, {**addresses, **more}))


async def answered(caller: SipCaller, uas: Node, b2b: Node, capture: str) -> tuple[Placed, bytes]:
    """A capture's call answered by 100, 180 and a 200 whose Contact is `b2b`; returns it and our ACK."""
    placed = await place(caller, uas, capture)
    for code in ("100", "180"):
        uas.send(answer(pick(capture, f"SIP/2.0 {code}"), placed.invite, placed.run), placed.source)
    ok = answer(pick(capture, "SIP/2.0 200", "INVITE"), placed.invite, placed.run, contact=f"sip:{b2b.hostport}")
    uas.send(ok, placed.source)
    await placed.call.wait_answered(timeout=2)
    placed.run.backward[b2b.hostport] = "127.0.0.1:5060"
    ack, _ = await b2b.request("ACK")
    return placed, ack


# -- the captured call flows ------------------------------------------------------------------------------------------


async def test_capture_02_invite_is_laid_out_like_sipps_and_the_call_is_acked_at_the_contact_and_hung_up(
    caller: SipCaller, uas: Node, b2b: Node
) -> None:
    placed = await place(caller, uas, "02")
    sipp_invite = pick("02", "INVITE")
    assert placed.source == caller.address
    assert header_names(placed.invite) == header_names(sipp_invite)
    assert body(placed.invite) == body(sipp_invite)
    assert int(field(placed.invite, "Content-Length")) == len(body(placed.invite)) == 210
    assert placed.run.to_sipp(placed.invite, like=sipp_invite) == sipp_layout(sipp_invite)
    assert re.fullmatch(r"SIP/2\.0/UDP 127\.0\.0\.1:\d+;branch=z9hG4bK\w+;rport", field(placed.invite, "Via"))

    call, run = placed.call, placed.run
    uas.send(answer(pick("02", "SIP/2.0 100"), placed.invite, run), placed.source)
    uas.send(answer(pick("02", "SIP/2.0 180"), placed.invite, run), placed.source)
    ok = answer(pick("02", "SIP/2.0 200", "INVITE"), placed.invite, run, contact=f"sip:{b2b.hostport}")
    uas.send(ok, placed.source)
    final = await call.wait_answered(timeout=2)
    assert final.code == 200
    assert [response.code for response in call.provisional] == [100, 180]
    assert call.remote_tag == "B2B.486.263.1795290824.547376897"
    assert call.answer_sdp == body(ok).decode()

    ack, _ = await b2b.request("ACK")  # at the 200's Contact, not where the INVITE went
    run.backward[b2b.hostport] = "127.0.0.1:5060"
    assert first_line(ack) == f"ACK sip:{b2b.hostport} SIP/2.0"
    assert field(ack, "CSeq") == "1 ACK"
    assert tag(field(ack, "To")) == call.remote_tag
    assert branch(ack) != branch(placed.invite)
    assert run.to_sipp(ack, like=pick("02", "ACK")) == pick("02", "ACK")

    hangup = asyncio.create_task(call.bye(timeout=2))
    bye, source = await b2b.request("BYE")
    assert run.to_sipp(bye, like=pick("02", "BYE")) == pick("02", "BYE")
    b2b.send(answer(pick("02", "SIP/2.0 200", "BYE"), bye, run), source)
    response = await hangup
    assert (response.code, response.cseq) == (200, (2, "BYE"))
    assert (call.ended, call.ended_by) == (True, "local")
    await call.wait_ended(timeout=1)
    await uas.nothing_more()
    await b2b.nothing_more()


async def test_capture_03_bye_from_opensips_is_answered_with_its_headers_copied_and_its_retransmission_alike(
    caller: SipCaller, uas: Node, b2b: Node
) -> None:
    placed, _ = await answered(caller, uas, b2b, "03")
    call, run = placed.call, placed.run
    captured_bye = pick("03", "BYE")
    bye = run.to_ours(captured_bye)
    assert first_line(bye) == f"BYE {field(placed.invite, 'Contact')[1:-1]} SIP/2.0"  # our Contact is its target
    uas.send(bye, caller.address)

    ok = await uas.response(200)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert fields(ok, name) == fields(bye, name), name
    assert field(ok, "Contact") == field(placed.invite, "Contact")
    sipp_ok = pick("03", "SIP/2.0 200", "BYE")
    assert run.to_sipp(ok, like=sipp_ok) == sipp_layout(sipp_ok)
    await call.wait_ended(timeout=1)
    assert call.ended_by == "remote"

    uas.send(bye, caller.address)  # OpenSIPS did not get our 200 and retransmits
    assert await uas.response(200) == ok
    assert [request.method for request in call.received_requests] == ["BYE"]
    with pytest.raises(SipError, match="already ended"):
        await call.bye()


async def test_capture_08b_cancel_waits_for_a_provisional_and_the_487_is_acked_on_the_invite_branch(
    caller: SipCaller, uas: Node
) -> None:
    placed = await place(caller, uas, "08b")
    call, run = placed.call, placed.run
    cancelling = asyncio.create_task(call.cancel(timeout=2))
    await uas.nothing_more()  # RFC 3261 9.1: no CANCEL before a provisional response
    uas.send(answer(pick("08b", "SIP/2.0 100"), placed.invite, run), placed.source)

    cancel, source = await uas.request("CANCEL")
    assert branch(cancel) == branch(placed.invite)
    assert fields(cancel, "Via") == fields(placed.invite, "Via")
    assert run.to_sipp(cancel, like=pick("08b", "CANCEL")) == pick("08b", "CANCEL")
    uas.send(answer(pick("08b", "SIP/2.0 200 canceling"), cancel, run), source)
    response = await cancelling
    assert (response.code, response.reason, response.cseq) == (200, "canceling", (1, "CANCEL"))

    terminated = answer(pick("08b", "SIP/2.0 487"), placed.invite, run)
    uas.send(terminated, source)
    ack, _ = await uas.request("ACK")
    assert branch(ack) == branch(placed.invite)
    assert field(ack, "To") == field(terminated, "To")
    assert field(ack, "CSeq") == "1 ACK"
    assert run.to_sipp(ack, like=pick("08b", "ACK")) == pick("08b", "ACK")
    assert (await call.wait_final(timeout=1)).code == 487
    assert call.ended_by == "local"
    with pytest.raises(SipCallFailed) as failed:
        await call.wait_answered(timeout=1)
    assert failed.value.response.code == 487
    await uas.nothing_more()


async def test_capture_09_busy_is_acked_and_fails_the_call_and_a_retransmitted_486_is_acked_again(
    caller: SipCaller, uas: Node
) -> None:
    placed = await place(caller, uas, "09")
    uas.send(answer(pick("09", "SIP/2.0 100"), placed.invite, placed.run), placed.source)
    busy = answer(pick("09", "SIP/2.0 486"), placed.invite, placed.run)
    uas.send(busy, placed.source)
    ack, _ = await uas.request("ACK")
    assert placed.run.to_sipp(ack, like=pick("09", "ACK")) == pick("09", "ACK")
    with pytest.raises(SipCallFailed) as failed:
        await placed.call.wait_answered(timeout=1)
    assert (failed.value.response.code, failed.value.response.reason) == (486, "Busy Here")
    assert "486 Busy Here" in str(failed.value)
    assert placed.call.ended_by == "rejected"

    uas.send(busy, placed.source)
    again, _ = await uas.request("ACK")
    assert again == ack
    await uas.nothing_more()


async def test_capture_05_record_route_sends_ack_and_bye_through_the_proxy_and_a_reinvite_gets_our_sdp(
    make_caller: Callable[..., Awaitable[SipCaller]], uas: Node, b2b: Node
) -> None:
    caller = await make_caller(t1=0.1)  # so our 2xx to the re-INVITE is retransmitted soon
    name = "05_media_exchange_to_ai_caller"
    # The proxy that record-routed is the node the INVITE went to (OpenSIPS on 5060); the callee sits on 5070.
    placed = await place(
        caller, uas, name, **{"sip:127.0.0.1;lr": f"sip:{uas.hostport};lr", "127.0.0.1:5070": b2b.hostport}
    )
    call, run = placed.call, placed.run
    for code in ("100", "180"):
        uas.send(answer(pick(name, f"SIP/2.0 {code}"), placed.invite, run), placed.source)
    uas.send(answer(pick(name, "SIP/2.0 200", "INVITE"), placed.invite, run), placed.source)
    await call.wait_answered(timeout=1)
    ack, _ = await uas.request("ACK")
    assert first_line(ack) == f"ACK sip:bob@{b2b.hostport} SIP/2.0"
    assert field(ack, "Route").startswith(f"<sip:{uas.hostport};lr;")
    assert run.to_sipp(ack, like=pick(name, "ACK")) == pick(name, "ACK")

    reinvite = run.to_ours(pick(name, "INVITE sip:caller"))
    uas.send(reinvite, caller.address)
    ok = await uas.response(200)
    for header in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert fields(ok, header) == fields(reinvite, header), header
    sipp_ok = pick(name, "SIP/2.0 200", "INVITE", nth=1)  # SIPp's answer to the same re-INVITE
    assert header_names(ok) == header_names(sipp_ok)
    assert field(ok, "Content-Type") == "application/sdp"
    assert body(ok) == body(placed.invite)  # same session, same SDP version: nothing changed on our side
    assert await uas.response(200, timeout=0.5) == ok  # no ACK yet: the 2xx is retransmitted (13.3.1.4)
    uas.send(run.to_ours(pick(name, "ACK sip:caller")), caller.address)
    await uas.nothing_more(0.5)  # the next retransmission was due 0.2 s later
    assert [request.method for request in call.received_requests] == ["INVITE", "ACK"]

    hangup = asyncio.create_task(call.bye(timeout=2))
    bye, source = await uas.request("BYE")
    assert run.to_sipp(bye, like=pick(name, "BYE")) == pick(name, "BYE")
    uas.send(answer(pick(name, "SIP/2.0 200", "BYE"), bye, run), source)
    assert (await hangup).code == 200
    await b2b.nothing_more(0)


# -- routing and retransmission ---------------------------------------------------------------------------------------


async def test_record_route_becomes_a_reversed_route_set_and_requests_go_to_the_first_loose_route(
    caller: SipCaller, uas: Node, b2b: Node
) -> None:
    placed = await place(caller, uas, "02")
    edge = b2b  # the proxy closest to us, the last one to record-route
    record_route = f"<sip:10.0.0.1;lr>, <sip:{edge.hostport};lr>"
    contact = f"sip:ai-node@{uas.hostport}"
    ok = answer(
        pick("02", "SIP/2.0 200", "INVITE"), placed.invite, placed.run, contact=contact, record_route=record_route
    )
    uas.send(ok, placed.source)
    await placed.call.wait_answered(timeout=1)

    ack, _ = await edge.request("ACK")
    hangup = asyncio.create_task(placed.call.bye(timeout=2))
    bye, source = await edge.request("BYE")
    for request in (ack, bye):
        assert first_line(request).split()[1] == contact
        assert fields(request, "Route") == [f"<sip:{edge.hostport};lr>", "<sip:10.0.0.1;lr>"]
        assert header_names(request)[:2] == ["Route", "Route"]
    edge.send(answer(pick("02", "SIP/2.0 200", "BYE"), bye, placed.run), source)
    assert (await hangup).code == 200
    await uas.nothing_more()  # nothing went to the Contact directly


async def test_a_strict_router_gets_its_own_uri_as_request_uri_and_the_remote_target_as_last_route(
    caller: SipCaller, uas: Node, b2b: Node
) -> None:
    placed = await place(caller, uas, "02")
    router = b2b
    contact = f"sip:ai-node@{uas.hostport}"
    ok = answer(
        pick("02", "SIP/2.0 200", "INVITE"),
        placed.invite,
        placed.run,
        contact=contact,
        record_route=f"<sip:{router.hostport}>",
    )
    uas.send(ok, placed.source)
    ack, _ = await router.request("ACK")
    assert first_line(ack) == f"ACK sip:{router.hostport} SIP/2.0"  # RFC 3261 12.2.1.1, strict routing
    assert fields(ack, "Route") == [f"<{contact}>"]
    await uas.nothing_more()


async def test_a_200_arriving_after_our_cancel_is_acked_and_hung_up(caller: SipCaller, uas: Node, b2b: Node) -> None:
    placed = await place(caller, uas, "08b")
    uas.send(answer(pick("08b", "SIP/2.0 100"), placed.invite, placed.run), placed.source)
    cancelling = asyncio.create_task(placed.call.cancel(timeout=2))
    cancel, source = await uas.request("CANCEL")
    # The callee answered before it saw the CANCEL: the 200 to the INVITE crosses it, the CANCEL itself gets 200.
    ok = answer(pick("02", "SIP/2.0 200", "INVITE"), placed.invite, placed.run, contact=f"sip:{b2b.hostport}")
    uas.send(ok, source)
    uas.send(answer(pick("08b", "SIP/2.0 200 canceling"), cancel, placed.run), source)
    assert (await cancelling).code == 200
    await b2b.request("ACK")
    bye, source = await b2b.request("BYE")
    assert field(bye, "CSeq") == "2 BYE"
    b2b.send(answer(pick("02", "SIP/2.0 200", "BYE"), bye, placed.run), source)
    await placed.call.wait_ended(timeout=1)
    assert placed.call.ended_by == "local"


async def test_unanswered_invite_is_retransmitted_after_t1_with_the_same_branch(caller: SipCaller, uas: Node) -> None:
    placed = await place(caller, uas, "02")
    sent_at = time.monotonic()
    again, source = await uas.request("INVITE", timeout=1.5)
    assert 0.35 < time.monotonic() - sent_at < 0.9
    assert again == placed.invite
    uas.send(answer(pick("02", "SIP/2.0 200", "INVITE"), again, placed.run), source)
    assert (await placed.call.wait_answered(timeout=1)).code == 200
    await uas.request("ACK")


async def test_invite_retransmissions_double_stop_at_a_provisional_and_timer_b_ends_a_silent_call(
    make_caller: Callable[..., Awaitable[SipCaller]], uas: Node, b2b: Node
) -> None:
    caller = await make_caller(t1=0.02)
    placed = await place(caller, uas, "02")
    arrivals = [time.monotonic()]
    for _ in range(3):
        assert (await uas.request("INVITE"))[0] == placed.invite
        arrivals.append(time.monotonic())
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert gaps[2] > gaps[0] * 1.5  # 20, 40, 80 ms: doubling
    uas.send(answer(pick("02", "SIP/2.0 100"), placed.invite, placed.run), placed.source)
    await uas.nothing_more(0.4)  # 160 and 320 ms later it would have been sent twice more

    quick = await make_caller(t1=0.01)
    proceeding = await quick.invite(f"sip:ai@{b2b.hostport}", "v=0\r\n")
    invite, source = await b2b.request("INVITE")
    b2b.send(trying(invite), source)
    silent = await quick.invite(f"sip:ai@{uas.hostport}", "v=0\r\n")
    with pytest.raises(TimeoutError, match="Timer B"):
        await silent.wait_final(timeout=3)
    assert (silent.ended, silent.ended_by, silent.final) == (True, "timeout", None)
    assert not proceeding.ended  # Timer B stops at a provisional response; the proxy's Timer C takes over
    copies = [uas.queue.get_nowait()[0] for _ in range(uas.queue.qsize())]
    assert 5 <= len(copies) <= 7  # sent at 0, 10, 30, 70, 150, 310, 630 ms; Timer B fires at 640 ms
    assert len(set(copies)) == 1


async def test_unanswered_bye_is_retransmitted_until_a_final_response(caller: SipCaller, uas: Node, b2b: Node) -> None:
    placed, _ = await answered(caller, uas, b2b, "02")
    hangup = asyncio.create_task(placed.call.bye(timeout=3))
    bye, _ = await b2b.request("BYE")
    sent_at = time.monotonic()
    again, source = await b2b.request("BYE", timeout=1.5)
    assert 0.35 < time.monotonic() - sent_at < 0.9
    assert again == bye
    b2b.send(answer(pick("02", "SIP/2.0 200", "BYE"), again, placed.run), source)
    assert (await hangup).code == 200
    await b2b.nothing_more(0.1)


async def test_bye_without_any_response_times_out_by_timer_f_and_still_ends_the_call(
    make_caller: Callable[..., Awaitable[SipCaller]], uas: Node, b2b: Node
) -> None:
    caller = await make_caller(t1=0.01, t2=0.04)
    placed, _ = await answered(caller, uas, b2b, "02")
    with pytest.raises(TimeoutError, match="Timer F"):
        await placed.call.bye(timeout=2)
    assert placed.call.ended_by == "local"
    copies = [b2b.queue.get_nowait()[0] for _ in range(b2b.queue.qsize())]
    # Sent at 0, 10, 30, 70, then every 40 ms (T2) until Timer F at 640 ms: 18 copies.
    assert 12 <= len(copies) <= 19
    assert all(first_line(copy).startswith("BYE ") for copy in copies)


async def test_a_retransmitted_200_is_acked_again_with_the_same_ack(caller: SipCaller, uas: Node, b2b: Node) -> None:
    placed, ack = await answered(caller, uas, b2b, "02")
    ok = answer(pick("02", "SIP/2.0 200", "INVITE"), placed.invite, placed.run, contact=f"sip:{b2b.hostport}")
    uas.send(ok, placed.source)
    again, _ = await b2b.request("ACK")
    assert again == ack
    assert len(placed.call.provisional) == 2 and placed.call.final is not None


async def test_a_second_200_from_a_forked_leg_is_acked_and_hung_up_while_the_call_goes_on(
    caller: SipCaller, uas: Node, b2b: Node
) -> None:
    placed, _ = await answered(caller, uas, b2b, "02")
    forked = answer(pick("02", "SIP/2.0 200", "INVITE"), placed.invite, placed.run, contact=f"sip:{uas.hostport}")
    forked = forked.replace(b"tag=B2B.486.263.1795290824.547376897", b"tag=other-leg")
    uas.send(forked, placed.source)
    ack, _ = await uas.request("ACK")
    bye, source = await uas.request("BYE")
    assert tag(field(ack, "To")) == tag(field(bye, "To")) == "other-leg"
    assert field(bye, "CSeq") == "2 BYE"
    uas.send(answer(pick("02", "SIP/2.0 200", "BYE"), bye, placed.run), source)
    assert not placed.call.ended
    assert placed.call.remote_tag == "B2B.486.263.1795290824.547376897"


# -- requests from the far end ----------------------------------------------------------------------------------------


def request_to(
    caller: SipCaller, sender: Node, method: str, *, call_id: str, from_tag: str, to_tag: str | None, cseq: int
) -> bytes:
    """A request from `sender` to the caller, laid out like OpenSIPS's (no rport: the answer goes to sent-by)."""
    to = f"<sip:caller@127.0.0.1:{caller.address[1]}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:caller@127.0.0.1:{caller.address[1]} SIP/2.0",
        f"Via: SIP/2.0/UDP {sender.hostport};branch=z9hG4bK{method}{cseq}{call_id[:6]}",
        f"From: <sip:ai@127.0.0.1:5060>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


async def test_in_dialog_options_and_info_get_200_and_an_unknown_method_gets_501(
    caller: SipCaller, uas: Node, b2b: Node
) -> None:
    placed, _ = await answered(caller, uas, b2b, "02")
    call = placed.call
    assert call.remote_tag is not None
    for cseq, method in enumerate(("OPTIONS", "INFO", "FOO"), start=10):
        request = request_to(
            caller, uas, method, call_id=call.call_id, from_tag=call.remote_tag, to_tag=call.local_tag, cseq=cseq
        )
        uas.send(request, caller.address)
        response, _ = await uas.receive()
        expected = "SIP/2.0 501 Not Implemented" if method == "FOO" else "SIP/2.0 200 OK"
        assert first_line(response) == expected
        assert field(response, "CSeq") == f"{cseq} {method}"
    assert [request.method for request in call.received_requests] == ["OPTIONS", "INFO"]
    late = request_to(
        caller, uas, "INFO", call_id=call.call_id, from_tag=call.remote_tag, to_tag=call.local_tag, cseq=5
    )
    uas.send(late, caller.address)
    assert first_line((await uas.receive())[0]) == "SIP/2.0 500 Server Internal Error"  # CSeq went back: 12.2.2
    assert not call.ended


async def test_requests_outside_any_dialog_get_481_and_an_unknown_cancel_too(caller: SipCaller, uas: Node) -> None:
    bye = request_to(caller, uas, "BYE", call_id="nobody@10.0.0.9", from_tag="x", to_tag="y", cseq=2)
    uas.send(bye, caller.address)
    response, _ = await uas.receive()
    assert first_line(response) == "SIP/2.0 481 Call/Transaction Does Not Exist"
    assert [fields(response, name) for name in ("Via", "From", "To", "Call-ID", "CSeq")] == [
        fields(bye, name) for name in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    cancel = request_to(caller, uas, "CANCEL", call_id="nobody@10.0.0.9", from_tag="x", to_tag=None, cseq=1)
    uas.send(cancel, caller.address)
    response, _ = await uas.receive()
    assert first_line(response) == "SIP/2.0 481 Call/Transaction Does Not Exist"
    assert ";tag=" in field(response, "To")  # a UAS adds its tag to a response outside a dialog


async def test_responses_go_to_the_source_port_with_rport_and_to_sent_by_without_and_carry_received(
    caller: SipCaller, uas: Node, b2b: Node
) -> None:
    options = request_to(caller, uas, "OPTIONS", call_id="probe@10.0.0.9", from_tag="x", to_tag=None, cseq=1)
    behind_nat = options.replace(f"Via: SIP/2.0/UDP {uas.hostport}".encode(), b"Via: SIP/2.0/UDP 10.9.9.9:7;rport")
    uas.send(behind_nat, caller.address)
    response, _ = await uas.receive()  # came back to the source port, not to 10.9.9.9:7
    assert (
        field(response, "Via")
        == f"SIP/2.0/UDP 10.9.9.9:7;rport={uas.port};branch=z9hG4bKOPTIONS1probe@;received=127.0.0.1"
    )

    named = options.replace(
        f"Via: SIP/2.0/UDP {uas.hostport}".encode(), f"Via: SIP/2.0/UDP edge.invalid:{uas.port}".encode()
    )
    uas.send(named.replace(b"CSeq: 1", b"CSeq: 2").replace(b"OPTIONS1", b"OPTIONS2"), caller.address)
    response, _ = await uas.receive()  # to the sent-by port, at the source address (no DNS lookup of edge.invalid)
    assert (
        field(response, "Via") == f"SIP/2.0/UDP edge.invalid:{uas.port};branch=z9hG4bKOPTIONS2probe@;received=127.0.0.1"
    )

    # Without rport the answer goes to the sent-by port, even when the request left from another one.
    b2b.send(options.replace(b"CSeq: 1", b"CSeq: 3").replace(b"OPTIONS1", b"OPTIONS3"), caller.address)
    response, _ = await uas.receive()
    assert field(response, "CSeq") == "3 OPTIONS"
    await b2b.nothing_more(0.05)


async def test_garbage_is_dropped_and_the_next_message_is_still_handled(
    caller: SipCaller, uas: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="demo.sip_caller")
    options = request_to(caller, uas, "OPTIONS", call_id="probe@10.0.0.9", from_tag="x", to_tag=None, cseq=1)
    for junk in (b"\x00\xff\xfe junk", b"SIP/2.0 200 OK\r\n\r\n", options.replace(b"Content-Length: 0", b"l: 40")):
        uas.send(junk, caller.address)
    uas.send(b"\r\n\r\n", caller.address)  # a keep-alive, silently ignored
    uas.send(options, caller.address)
    response, _ = await uas.receive()
    assert first_line(response) == "SIP/2.0 200 OK"
    assert "INVITE" in field(response, "Allow")
    assert len([record for record in caplog.records if "dropped" in record.getMessage()]) == 3
    await uas.nothing_more(0.05)


async def test_401_fails_the_call_with_a_hint_instead_of_attempting_digest(caller: SipCaller, uas: Node) -> None:
    placed = await place(caller, uas, "09")
    challenge = answer(pick("09", "SIP/2.0 486"), placed.invite, placed.run).replace(
        b"486 Busy Here", b"401 Unauthorized"
    )
    uas.send(challenge, placed.source)
    await uas.request("ACK")
    with pytest.raises(SipCallFailed, match=re.escape(DIGEST_NOT_SUPPORTED)) as failed:
        await placed.call.wait_answered(timeout=1)
    assert failed.value.response.code == 401


async def test_misuse_is_refused_clearly(caller: SipCaller, uas: Node) -> None:
    with pytest.raises(ValueError, match="one line"):
        await caller.invite(f"sip:ai@{uas.hostport}", "v=0\r\n", extra_headers={"X-Bank": "a\r\nVia: x"})
    with pytest.raises(ValueError, match="set by the caller"):
        await caller.invite(f"sip:ai@{uas.hostport}", "v=0\r\n", extra_headers={"Call-ID": "mine"})
    placed = await place(caller, uas, "09")
    with pytest.raises(SipError, match="use cancel"):
        await placed.call.bye()
    uas.send(answer(pick("09", "SIP/2.0 486"), placed.invite, placed.run), placed.source)
    await placed.call.wait_final(timeout=1)
    with pytest.raises(SipError, match="486 Busy Here"):
        await placed.call.cancel()


async def test_extra_headers_follow_subject_before_the_body_headers(caller: SipCaller, uas: Node) -> None:
    await caller.invite(
        f"sip:ai@{uas.hostport}", "v=0\n", subject="hello", extra_headers={"X-Orig-Call-ID": "abc"}, display_name=None
    )
    invite, _ = await uas.request("INVITE")
    assert header_names(invite)[6:] == ["Max-Forwards", "Subject", "X-Orig-Call-ID", "Content-Type", "Content-Length"]
    assert field(invite, "From").startswith(f"<sip:caller@127.0.0.1:{caller.address[1]}>;tag=")
    assert body(invite) == b"v=0\r\n"  # SDP lines end in CRLF


# -- parsing ----------------------------------------------------------------------------------------------------------


def test_parse_sip_understands_compact_headers_and_comma_separated_lists() -> None:
    raw = (
        b"SIP/2.0 200 OK\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKtop;rport=5062, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.3:5080;branch=z9hG4bK3\r\n"
        b'f: "A, B" <sip:caller@127.0.0.1:5062>;tag=1\r\n'
        b"t: <sip:ai@127.0.0.1>;tag=2\r\n"
        b"i: abc@host\r\n"
        b"CSeq: 1 INVITE\r\n"
        b'Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr;x="a,b">\r\n'
        b"m: <sip:ai@127.0.0.1:5070>\r\n"
        b"k: timer\r\ns: hi\r\nc: application/sdp\r\n"
        b"l: 5\r\n\r\nv=0\r\nextra bytes past Content-Length"
    )
    message = parse_sip(raw)
    assert (message.code, message.reason, message.is_request) == (200, "OK", False)
    assert message.header("Via") == "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKtop;rport=5062"
    assert len(message.headers_all("v")) == 3
    assert message.header("From") == '"A, B" <sip:caller@127.0.0.1:5062>;tag=1'
    assert (message.header("call-id"), message.header("To"), message.header("Contact")) == (
        "abc@host",
        "<sip:ai@127.0.0.1>;tag=2",
        "<sip:ai@127.0.0.1:5070>",
    )
    assert message.headers_all("Record-Route") == ["<sip:10.0.0.1;lr>", '<sip:10.0.0.2;lr;x="a,b">']
    assert (message.header("Supported"), message.header("Subject"), message.header("Content-Type")) == (
        "timer",
        "hi",
        "application/sdp",
    )
    assert message.body == "v=0\r\n"
    assert message.headers[0] == (
        "v",
        "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKtop;rport=5062, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2",
    )
    assert message.raw == raw


def test_parse_sip_reads_every_captured_message() -> None:
    for name in ("02", "03", "05_media_exchange_to_ai_caller", "08b", "09"):
        for raw in sipp_log(name):
            message = parse_sip(raw)
            assert message.raw == raw
            assert message.body.encode() == body(raw)


_DIALOG_HEADERS = b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\n"


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\n" + _DIALOG_HEADERS + b"CSeq: 1 INVITE\r\nl: 10\r\n\r\nv=0\r\n", "truncated body"),
        (b"INVITE sip:a@b SIP/2.0\r\n" + _DIALOG_HEADERS + b"CSeq: 1 INVITE\r\nl: ten\r\n\r\n", "Content-Length"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n" + _DIALOG_HEADERS + b"CSeq: 1 INVITE\r\n\r\n", "CSeq method"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n" + _DIALOG_HEADERS + b"CSeq: one OPTIONS\r\n\r\n", "malformed CSeq"),
        (b"hello world", "no empty line"),
        (b"HELLO\r\n\r\n", "malformed request line"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "malformed status line"),
        (b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n", "no Via"),
        (b"SIP/2.0 200 OK\r\nVia SIP/2.0/UDP h\r\n\r\n", "malformed header line"),
        (b"SIP/2.0 200 OK\r\nVia: \xff\r\n\r\n", "not UTF-8"),
    ],
)
def test_parse_sip_rejects_malformed_messages_saying_why(raw: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_sip(raw)
