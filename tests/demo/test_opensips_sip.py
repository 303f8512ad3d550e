"""Tests of the double's SIP socket against the SIPp logs of the real 3.5.9 captures.

The caller is a bare UDP socket that sends the SIPp caller's own bytes; the app is the bare-socket `App` of the
double's tests. What the double answers on the wire, and what it raises as events, is compared with what the real
server did, byte for byte once the two ports are mapped (the captures ran on 5060/5061, the test on ephemeral
ports) and, where OpenSIPS picks them at random, branches and tm's To-tags are masked.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from demo.opensips_double import CallState, OpenSIPSDouble, sdp_offer
from tests.demo.test_opensips_double import App, _Queue, double_and_app, replay
from tests.support.captures import Block, events, mi_pairs, sipp_messages

SHORT = 0.2
_BRANCH = re.compile(rb"branch=z9hG4bK[0-9a-f]+\.[0-9a-f]+\.0")


@dataclass
class Wire:
    """The caller's socket, and the mapping of the capture's addresses onto this test's ports."""

    osips: OpenSIPSDouble
    app: App
    transport: asyncio.DatagramTransport
    inbox: _Queue
    port: int

    def mapped(self, raw: bytes) -> bytes:
        sip = self.osips.sip.address[1]
        return raw.replace(b"127.0.0.1:5061", b"127.0.0.1:%d" % self.port).replace(
            b"127.0.0.1:5060", b"127.0.0.1:%d" % sip
        )

    def send(self, raw: bytes) -> None:
        self.transport.sendto(self.mapped(raw), self.osips.sip.address)

    async def receive(self, wait: float = 1.0) -> bytes:
        data, _ = await asyncio.wait_for(self.inbox.queue.get(), wait)
        return data

    async def nothing(self) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.inbox.queue.get(), SHORT)

    async def event(self) -> bytes:
        return await self.app.event()

    def mapped_event(self, raw: bytes) -> bytes:
        return self.mapped(raw)

    async def invite_like(self, name: str, key: str) -> tuple[list[bytes], list[bytes], list[Block]]:
        """Capture `name`'s INVITE, given the B2B key its server chose: the 100 and the NEW event are the capture's."""
        sent, received, captured = caller_sent(name), caller_received(name), events(name)
        self.osips.wire_keys.append(key)
        self.send(sent[0])  # INVITE + SDP
        assert await self.receive() == self.mapped(received[0])  # 100 Giving it a try
        assert await self.event() == self.mapped_event(captured[0].raw)  # NEW with the wire's headers, Max-Forwards 69
        return sent, received, captured


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    async with double_and_app(seed=3) as (osips, app):
        await osips.listen_sip()
        await app.subscribe()
        loop = asyncio.get_running_loop()
        inbox = _Queue()
        transport, _ = await loop.create_datagram_endpoint(lambda: inbox, local_addr=("127.0.0.1", 0))
        try:
            yield Wire(osips, app, transport, inbox, transport.get_extra_info("sockname")[1])
        finally:
            transport.close()


def caller_sent(name: str) -> list[bytes]:
    return [m.raw for m in sipp_messages(name) if m.direction == "sent"]


def caller_received(name: str) -> list[bytes]:
    return [m.raw for m in sipp_messages(name) if m.direction == "received"]


async def answer_like_the_capture(wire: Wire, name: str) -> None:
    """The app's 180 and 200 replayed from the capture's MI; the caller gets the captured replies."""
    received = caller_received(name)
    for request, response in mi_pairs(name)[2:4]:
        assert await replay(wire.app, request) == response.body
    assert await wire.receive() == wire.mapped(received[1])  # 180 Ringing, the session key as To-tag
    assert await wire.receive() == wire.mapped(received[2])  # 200 OK + the app's SDP


async def test_a_sip_caller_hangs_up_exactly_like_capture_02(wire: Wire) -> None:
    sent, received, captured = await wire.invite_like("02", "B2B.486.263.1795290824.547376897")
    await answer_like_the_capture(wire, "02")
    wire.send(sent[1])  # ACK
    assert await wire.event() == wire.mapped_event(captured[1].raw)
    call = wire.osips.calls[0]
    assert call.state is CallState.CONFIRMED
    wire.send(sent[2])  # BYE
    assert await wire.receive() == wire.mapped(received[3])
    assert await wire.event() == wire.mapped_event(captured[2].raw)
    assert call.ended and wire.osips.sessions == []
    wire.send(sent[2])  # a retransmitted BYE gets the same 200 and raises nothing
    assert await wire.receive() == wire.mapped(received[3])
    await wire.app.no_event()


async def test_the_apps_terminate_sends_the_bye_of_capture_03(wire: Wire) -> None:
    sent, received, captured = await wire.invite_like("03", "B2B.302.5.1795290837.994057802")
    pairs = mi_pairs("03")
    for request, response in pairs[2:4]:
        assert await replay(wire.app, request) == response.body
    assert await wire.receive() == wire.mapped(received[1])
    assert await wire.receive() == wire.mapped(received[2])
    wire.send(sent[1])  # ACK
    assert await wire.event() == wire.mapped_event(captured[1].raw)
    for request, response in pairs[4:6]:  # ua_session_list (the caller's contact at this test's port), terminate
        assert await replay(wire.app, request) == wire.mapped(response.body)
    bye = await wire.receive()
    assert _BRANCH.sub(b"branch=*", bye) == _BRANCH.sub(b"branch=*", wire.mapped(received[3]))
    branch = _BRANCH.search(bye)
    assert branch is not None
    wire.send(_BRANCH.sub(branch.group(0), sent[2]))  # the caller's 200 OK for that BYE
    await wire.app.no_event()  # OpenSIPS raises nothing for the app's own hang-up
    await wire.nothing()  # answered: the BYE is not sent again


async def test_cancel_gets_200_canceling_and_the_apps_487_like_capture_08b(wire: Wire) -> None:
    sent, received, captured = await wire.invite_like("08b", "B2B.393.100.1795290849.802003343")
    wire.send(sent[1])  # CANCEL
    canceling = await wire.receive()
    tm_tag = re.compile(rb";tag=[0-9a-f]+-[0-9a-f]{32}")
    assert tm_tag.sub(b";tag=*", canceling) == tm_tag.sub(b";tag=*", wire.mapped(received[1]))
    assert await wire.event() == wire.mapped_event(captured[1].raw)
    request, response = mi_pairs("08b")[2]  # the app's 487
    assert await replay(wire.app, request) == response.body
    assert await wire.receive() == wire.mapped(received[2])
    wire.send(sent[2])  # the caller's ACK of the 487, hop by hop
    assert await wire.event() == wire.mapped_event(captured[2].raw)
    await wire.nothing()  # ACKed: the 487 is not sent again


async def test_a_rejected_call_gets_the_486_of_capture_09(wire: Wire) -> None:
    sent, received, captured = await wire.invite_like("09", "B2B.115.312.1795290877.1907211151")
    request, response = mi_pairs("09")[2]
    assert await replay(wire.app, request) == response.body
    assert await wire.receive() == wire.mapped(received[1])
    wire.send(sent[1])
    assert await wire.event() == wire.mapped_event(captured[1].raw)
    assert wire.osips.calls[0].state is CallState.REJECTED


# -- beyond the captures: RFC 3261 and RFC 3581 behaviour ---------------------------------------------------------


async def test_a_retransmitted_invite_gets_the_last_answer_and_raises_no_second_new(wire: Wire) -> None:
    invite = caller_sent("02")[0]
    wire.send(invite)
    trying = await wire.receive()
    await wire.event()
    wire.send(invite)
    assert await wire.receive() == trying
    await wire.app.no_event()
    assert len(wire.osips.calls) == 1


async def test_the_2xx_goes_again_until_the_ack_arrives(wire: Wire) -> None:
    sent = caller_sent("02")
    wire.send(sent[0])
    await wire.receive()
    key = json.loads(await wire.event())["params"]["key"]
    answer = await wire.app.mi(
        "ua_session_reply",
        {"key": key, "method": "INVITE", "code": 200, "reason": "OK", "body": sdp_offer("127.0.0.1", 40000)},
    )
    assert answer["result"] == "OK"
    first = await wire.receive()
    assert await wire.receive(wait=1.0) == first  # T1 later, the same 200 again
    ack = re.sub(rb";tag=B2B[^\r]*", b";tag=" + key.encode(), sent[1])
    wire.send(ack)
    assert json.loads(await wire.event())["params"]["method"] == "ACK"
    await asyncio.sleep(1.1)  # past the next retransmission time
    while not wire.inbox.queue.empty():  # at most one copy was already in flight when the ACK arrived
        assert wire.inbox.queue.get_nowait()[0] == first
    await wire.nothing()


async def test_requests_for_unknown_calls_get_481_and_garbage_is_dropped(wire: Wire) -> None:
    wire.transport.sendto(b"\x00\x01 not sip at all\r\n\r\n", wire.osips.sip.address)
    wire.transport.sendto(b"INVITE sip:ai@127.0.0.1 SIP/2.0\r\nVia: x\r\n\r\n", wire.osips.sip.address)
    wire.send(caller_sent("02")[2])  # a BYE for a Call-ID the node never saw
    reply = await wire.receive()
    assert reply.startswith(b"SIP/2.0 481 Call/Transaction Does Not Exist\r\n")
    assert len(wire.osips.sip.dropped) == 2
    wire.send(caller_sent("02")[0])  # still serving
    assert (await wire.receive()).startswith(b"SIP/2.0 100 Giving it a try")


async def test_an_invite_without_an_offer_is_refused_with_488(wire: Wire) -> None:
    invite = caller_sent("02")[0]
    head = invite.split(b"\r\n\r\n", 1)[0]
    head = re.sub(rb"Content-Length: +\d+", b"Content-Length: 0", head).replace(
        b"Content-Type: application/sdp\r\n", b""
    )
    wire.send(head + b"\r\n\r\n")
    assert (await wire.receive()).startswith(b"SIP/2.0 488 Not Acceptable Here\r\n")
    await wire.app.no_event()


async def test_a_bare_rport_is_filled_with_the_source_port(wire: Wire) -> None:
    invite = caller_sent("02")[0].replace(b"branch=z9hG4bK-5251-1-0", b"branch=z9hG4bK-5251-1-0;rport")
    wire.send(invite)
    trying = await wire.receive()
    assert f";rport={wire.port}\r\n".encode() in trying.split(b"\r\n\r\n")[0] + b"\r\n"


async def test_in_dialog_requests_cross_the_wire_both_ways(wire: Wire) -> None:
    sent = caller_sent("02")
    wire.send(sent[0])
    await wire.receive()
    key = json.loads(await wire.event())["params"]["key"]
    await wire.app.mi("ua_session_reply", {"key": key, "method": "INVITE", "code": 200, "reason": "OK", "body": "x"})
    await wire.receive()
    wire.send(re.sub(rb";tag=B2B[^\r]*", b";tag=" + key.encode(), sent[1]))
    await wire.event()

    # The caller's INFO: UPDATED(INFO) with its headers; the app's reply goes back on the wire.
    info = (
        f"INFO sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-info-1\r\n"
        f'From: "sipp caller" <sip:caller@127.0.0.1:5061>;tag=5251SIPpTag001\r\nTo: <sip:ai@127.0.0.1:5060>;tag={key}'
        "\r\nCall-ID: 1-5251@127.0.0.1\r\nCSeq: 2 INFO\r\nContent-Type: application/dtmf-relay\r\n"
        "Content-Length: 24\r\n\r\nSignal=5\r\nDuration=160\r\n"
    ).encode()
    wire.send(info)
    event = json.loads(await wire.event())["params"]
    assert (event["event_type"], event["method"], event["body"]) == ("UPDATED", "INFO", "Signal=5\r\nDuration=160\r\n")
    await wire.app.mi("ua_session_reply", {"key": key, "method": "INFO", "code": 200, "reason": "OK"})
    reply = await wire.receive()
    assert reply.startswith(b"SIP/2.0 200 OK\r\n") and b"CSeq: 2 INFO\r\n" in reply

    # The app's OPTIONS: a request on the wire; the caller's answer comes back as ANSWERED with its headers.
    await wire.app.mi("ua_session_update", {"key": key, "method": "OPTIONS"})
    request = await wire.receive()
    assert request.startswith(b"OPTIONS sip:caller@127.0.0.1:%d SIP/2.0\r\n" % wire.port)
    head = dict(line.split(": ", 1) for line in request.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:])
    answer = (
        f"SIP/2.0 200 OK\r\nVia: {head['Via']}\r\nFrom: {head['From']}\r\nTo: {head['To']}\r\n"
        f"Call-ID: {head['Call-ID']}\r\nCSeq: {head['CSeq']}\r\nContent-Length: 0\r\n\r\n"
    )
    wire.transport.sendto(answer.encode(), wire.osips.sip.address)
    event = json.loads(await wire.event())["params"]
    assert (event["event_type"], event["method"], event["status"]) == ("ANSWERED", "OPTIONS", 200)
    assert f"CSeq: {head['CSeq']}\r\n" in event["headers"]
