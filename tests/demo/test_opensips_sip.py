"""Tests of the double's SIP socket against the SIPp logs of the real 3.5.9 captures.

The caller is a bare UDP socket that sends the SIPp caller's own bytes; the app is the bare-socket `App` of the
double's tests. What the double answers on the wire, and what it raises as events, is compared with what the real
server did, byte for byte once the two ports are mapped (the captures ran on 5060/5061, the test on ephemeral
ports) and, where OpenSIPS picks them at random, branches and tm's To-tags are masked.

Captures 15-17 were sniffed between the project's edge (5060) and AI node (5070): there the test's socket plays the
edge, sending the edge's own bytes (a record-routed INVITE), and the double plays the AI node.
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
from tests.support.captures import Block, UdpBlock, events, mi_pairs, sipp_messages, udp_blocks, udp_payloads

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


# -- captures 15-17: the double behind the project's edge ---------------------------------------------------------

_NODE, _EDGE = "ai-node SIP", "edge SIP"


def _port(address: int) -> re.Pattern[bytes]:
    return re.compile(rb"127\.0\.0\.1:%d(?!\d)" % address)


@dataclass
class Edge:
    """The test's socket as the project's edge (capture port 5060) in front of the double as the AI node (5070)."""

    wire: Wire
    name: str

    def mapped(self, raw: bytes) -> bytes:
        raw = _port(5060).sub(b"127.0.0.1:%d" % self.wire.port, raw)
        return _port(5070).sub(b"127.0.0.1:%d" % self.wire.osips.sip.address[1], raw)

    def unmapped(self, raw: bytes) -> bytes:
        raw = _port(self.wire.osips.sip.address[1]).sub(b"127.0.0.1:5070", raw)
        return _port(self.wire.port).sub(b"127.0.0.1:5060", raw)

    def sip(self, source: str, starts: bytes, index: int = 0) -> UdpBlock:
        """The capture's `index`th SIP payload from `source` to the other node that starts with `starts`."""
        return udp_payloads(self.name, source, _NODE if source == _EDGE else _EDGE, starts)[index]

    def send(self, raw: bytes) -> None:
        self.wire.transport.sendto(self.mapped(raw), self.wire.osips.sip.address)

    async def receive_like(self, block: UdpBlock) -> bytes:
        """The next datagram from the double, checked against an exact capture block once the ports are mapped."""
        got = await self.wire.receive()
        assert block.exact and got == self.mapped(block.payload)
        return got

    async def mi(self, request: bytes) -> None:
        """Replay the capture's MI request; the answer must be the one the capture got."""
        blocks = udp_blocks(self.name)
        index = next(i for i, b in enumerate(blocks) if b.payload == request)
        answer = next(b for b in blocks[index:] if b.source_label == "ai-node mi_datagram")
        assert await self.wire.app.datagram(request) == answer.payload

    def mi_request(self, method: str, index: int = 0) -> bytes:
        requests = [
            b.payload
            for b in udp_blocks(self.name)
            if b.destination_label == "ai-node mi_datagram" and json.loads(b.payload)["method"] == method
        ]
        return requests[index]

    async def answered(self, invite: UdpBlock, key: str, reply: bytes) -> None:
        """The edge's INVITE in, the 100, the NEW event, the app's captured reply and the node's captured answer."""
        self.wire.osips.wire_keys.append(key)
        self.send(invite.payload)
        await self.receive_like(self.sip(_NODE, b"SIP/2.0 100 ", self._answer_index(invite, b"SIP/2.0 100 ")))
        new = json.loads(await self.wire.event())["params"]
        assert (new["event_type"], new["key"]) == ("NEW", key)
        await self.mi(reply)

    def _answer_index(self, invite: UdpBlock, starts: bytes) -> int:
        call_id = re.search(rb"\r\nCall-ID: ([^\r]+)\r\n", invite.payload)
        assert call_id is not None
        answers = udp_payloads(self.name, _NODE, _EDGE, starts)
        return next(i for i, b in enumerate(answers) if b"\r\nCall-ID: " + call_id.group(1) + b"\r\n" in b.payload)


def _masked(raw: bytes) -> bytes:
    return _BRANCH.sub(b"branch=*", raw)


async def _confirmed_like_capture_17(wire: Wire) -> Edge:
    edge = Edge(wire, "17")
    invite = edge.sip(_EDGE, b"INVITE ")
    assert invite.payload.startswith(b"INVITE ") and b"\r\nRecord-Route: <sip:127.0.0.1;lr;" in invite.payload
    await edge.answered(invite, "B2B.361.475.1796170905.1102559844", edge.mi_request("ua_session_reply"))
    ok = await edge.receive_like(edge.sip(_NODE, b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK49"))
    assert b"\r\nRecord-Route: <sip:127.0.0.1;lr;ftag=1288SIPpTag001;did=d54.ea553852>\r\n" in ok
    edge.send(edge.sip(_EDGE, b"ACK ").payload)
    assert json.loads(await wire.event())["params"]["method"] == "ACK"
    return edge


async def test_the_refer_with_an_empty_body_is_capture_17s_byte_for_byte(wire: Wire) -> None:
    edge = await _confirmed_like_capture_17(wire)
    listed = (await wire.app.mi("ua_session_list", {"key": "B2B.361.475.1796170905.1102559844"}))["result"]
    listing = next(b for b in udp_blocks("17") if b.source_label == "ai-node mi_datagram" and b"to_tag" in b.payload)
    item = next(i for i in json.loads(edge.mapped(listing.payload))["result"] if i["to_tag"] == listed["to_tag"])
    assert list(listed) == list(item) and {**listed, "dlg": item["dlg"]} == item  # route_set from the Record-Route
    for index in range(2):  # body "" alone, then with content_type: the headers intact after that Content-Type
        await edge.mi(edge.mi_request("ua_session_update", index))
        cseq = b"\r\nCSeq: %d REFER\r\n" % (index + 2)
        refer = await wire.receive()
        while cseq not in refer:  # the first REFER, unanswered, may be sent again meanwhile
            refer = await wire.receive()
        captured = next(b for b in udp_payloads("17", _NODE, _EDGE, b"REFER ") if cseq in b.payload)
        assert captured.exact and _masked(refer) == _masked(edge.mapped(captured.payload))
        assert refer.count(b"\r\nRoute: ") == 1  # sent to the edge, which put the Record-Route there


async def test_a_refer_without_a_body_is_garbled_like_capture_15(wire: Wire) -> None:
    edge = Edge(wire, "15")
    invite = edge.sip(_EDGE, b"INVITE ")
    await edge.answered(invite, "B2B.45.408.1796170798.97755761", edge.mi_request("ua_session_reply"))
    await edge.receive_like(edge.sip(_NODE, b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKe169"))
    edge.send(edge.sip(_EDGE, b"ACK ").payload)
    assert json.loads(await wire.event())["params"]["method"] == "ACK"

    update = edge.mi_request("ua_session_update")
    extra_headers = json.loads(update)["params"]["extra_headers"].encode()
    assert b"Refer-To: " in extra_headers and b'"body"' not in update
    await edge.mi(update)
    got = edge.unmapped(await wire.receive())
    captured = edge.sip(_NODE, b"REFER ")
    assert not captured.exact  # the text shows the garbage's bad bytes as U+FFFD: only its structure is compared
    assert len(got) == captured.size  # the headers' room is kept, filled with something else
    head = captured.payload[: captured.payload.index(b"\r\nUser-Agent: ")]
    head += b"\r\nUser-Agent: OpenSIPS (3.5.9 (x86_64/linux))\r\n"
    assert _masked(got).startswith(_masked(head))  # Route, Max-Forwards, Content-Length 0, User-Agent as captured
    contact = b"Contact: <sip:127.0.0.1:5070>\r\n\r\n"
    for message in (got, captured.payload):
        assert message.endswith(contact)
        garbage = message[len(head) : -len(contact)]
        assert garbage.startswith(b"Content-Type: application/sdp\r\n")  # stale text, then binary
        assert b"Refer-To" not in message and b"X-AI-" not in message
        assert not garbage.endswith(b"\r\n")  # no line end: the garbage runs into Contact
    assert len(got) - len(head) - len(contact) == len(extra_headers)

    # The caller's side answers 501; it reaches the app as capture 15's REJECTED event.
    branch = _BRANCH.search(got)
    assert branch is not None
    answer = edge.sip(_EDGE, b"SIP/2.0 501 ")
    edge.send(_BRANCH.sub(branch.group(0), answer.payload))
    rejected = next(b for b in udp_blocks("15") if b.destination_label.endswith("sink") and b"REJECTED" in b.payload)
    assert await wire.event() == _BRANCH.sub(branch.group(0), edge.mapped(rejected.payload))
    await wire.nothing()  # answered: the REFER is not sent again


async def test_a_503_without_a_body_is_garbled_exactly_like_capture_16(wire: Wire) -> None:
    edge = Edge(wire, "16")
    invite = edge.sip(_EDGE, b"INVITE ", 1)  # the second call, which the app refuses
    reply = edge.mi_request("ua_session_reply", 1)
    assert json.loads(reply)["params"]["extra_headers"] == "Retry-After: 5\r\n"
    await edge.answered(invite, "B2B.245.190.1796170874.366206825", reply)
    refused = await edge.receive_like(edge.sip(_NODE, b"SIP/2.0 503 "))
    assert b"\r\nContent-Type: apContact: <sip:127.0.0.1:" in refused and b"Retry-After" not in refused
    edge.send(edge.sip(_EDGE, b"ACK ", 1).payload)  # the edge's hop-by-hop ACK of the 503
    assert json.loads(await wire.event())["params"]["method"] == "ACK"
    await wire.nothing()  # ACKed: the 503 is not sent again


async def test_a_503_with_an_empty_body_keeps_its_retry_after(wire: Wire) -> None:
    edge = Edge(wire, "16")
    reply = json.loads(edge.mi_request("ua_session_reply", 1))
    reply["params"]["body"] = ""
    wire.osips.wire_keys.append(reply["params"]["key"])
    edge.send(edge.sip(_EDGE, b"INVITE ", 1).payload)
    await wire.receive()  # 100
    await wire.event()
    assert (await wire.app.datagram(json.dumps(reply).encode()))[:24] == b'{"jsonrpc":"2.0","result'
    refused = edge.unmapped(await wire.receive())
    garbled = edge.sip(_NODE, b"SIP/2.0 503 ").payload
    # As capture 17 shows for requests: the body's Content-Type line, then the headers intact, before Contact.
    intact = b"Content-Type: application/sdp\r\nRetry-After: 5\r\nContact: "
    assert refused == garbled.replace(b"Content-Type: apContact: ", intact)


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
