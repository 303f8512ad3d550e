"""The connector end to end: OpenSIPS protocol double (events + MI as in the 3.5.9 captures), real RTP on loopback.

The caller's media side is `demo/rtp_peer.py`, which shares no code with `avc`, so a bug in our RTP or
G.711 code cannot hide behind itself.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from avc.connector import Connector
from avc.media.rtp import RtpSender
from avc.opensips.mi import OpenSIPSMI, mi_client_from_url
from demo.opensips_double import CallState, DoubleCall, OpenSIPSDouble, Reply, ScriptRefused, sdp_offer
from demo.rtp_peer import RtpPeer, RtpPeerGroup, build_rtp, parse_dtmf, sine_payloads, ulaw_decode
from tests.support.chain_node import settings_behind

NodeFactory = Callable[..., Awaitable[Connector]]


@pytest.fixture
async def osips() -> AsyncIterator[OpenSIPSDouble]:
    async with OpenSIPSDouble() as double:
        yield double


@pytest.fixture
async def peers() -> AsyncIterator[RtpPeerGroup]:
    group = RtpPeerGroup()
    yield group
    await group.close()


@pytest.fixture
async def node(osips: OpenSIPSDouble) -> AsyncIterator[NodeFactory]:
    started: list[Connector] = []

    async def make(connector_kwargs: dict[str, Any] | None = None, **overrides: Any) -> Connector:
        values: dict[str, Any] = {"subscription_check_interval": 0.2, "echo_delay_ms": 100, "rtp_timeout": 10.0}
        values.update(overrides)
        connector = Connector(settings_behind(osips, **values), **(connector_kwargs or {}))
        await connector.start()
        started.append(connector)
        await osips.wait_subscribed(3.0)
        return connector

    yield make
    for connector in started:
        await connector.stop()


def answer_media(body: str | None) -> tuple[str, int]:
    assert body, "the 200 OK carries no SDP"
    addr = re.search(r"^c=IN IP4 (\S+)", body, re.MULTILINE)
    port = re.search(r"^m=audio (\d+) ", body, re.MULTILINE)
    assert addr and port, body
    return addr.group(1), int(port.group(1))


async def place_call(osips: OpenSIPSDouble, peer: RtpPeer, **offer: Any) -> tuple[DoubleCall, Reply]:
    call = await osips.invite(sdp_offer("127.0.0.1", peer.port, **offer))
    reply = await call.wait_final(3.0)
    assert reply.code == 200, reply
    peer.set_remote(*answer_media(reply.body))
    return call, reply


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def dominant_frequency(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate)[int(np.argmax(spectrum))])


def audio_packets(peer: RtpPeer, payload_type: int = 0) -> list[Any]:
    return [p for p in peer.received if p.payload_type == payload_type]


def assert_all_released(connector: Connector) -> None:
    assert connector.calls == {}
    assert connector.ports.free == connector.ports.size
    assert len(connector.clock) == 0
    leftovers = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("call ", "app "))]
    assert leftovers == []


# -- answering and media ---------------------------------------------------------------------------------------------


async def test_echo_call_returns_the_callers_tone_with_exact_pacing_across_a_sequence_wrap(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    # Start just below both wraps: 16-bit sequence and 32-bit timestamp must roll over mid-call.
    def sender() -> RtpSender:
        return RtpSender(sequence=65_520, timestamp=2**32 - 160 * 10)

    connector = await node({"rtp_sender_factory": sender})
    peer = await peers.create_peer()
    _, reply = await place_call(osips, peer)
    assert "a=rtpmap:0 PCMU/8000" in (reply.body or "")
    assert "a=rtpmap:101 telephone-event/8000" in (reply.body or "")
    peer.start_sending(sine_payloads(1000, amplitude=8000))
    await asyncio.sleep(1.2)

    packets = audio_packets(peer)
    assert len(packets) >= 45
    assert {p.ssrc for p in packets} == {packets[0].ssrc}
    assert {(b.sequence - a.sequence) % 65536 for a, b in itertools.pairwise(packets)} == {1}
    assert {(b.timestamp - a.timestamp) % 2**32 for a, b in itertools.pairwise(packets)} == {160}
    assert any(p.sequence < 100 for p in packets) and any(p.sequence > 65_000 for p in packets)
    intervals = np.diff([p.arrival for p in packets]) * 1000
    assert 19.0 <= float(np.median(intervals)) <= 21.0
    assert float(intervals.min()) > 5.0, "packets were sent in a burst"
    # The last 400 ms are the caller's tone, 100 ms later.
    echoed = ulaw_decode(b"".join(p.payload for p in packets[-20:]))
    assert abs(dominant_frequency(echoed) - 1000) < 25
    assert float(np.sqrt(np.mean(echoed.astype(np.float64) ** 2))) > 3000
    assert connector.calls


async def test_pcma_only_offer_is_answered_with_pcma(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    await node()
    peer = await peers.create_peer()
    _, reply = await place_call(osips, peer, codecs=("PCMA",), dtmf_pt=None)
    assert re.search(r"^m=audio \d+ RTP/AVP 8\r$", reply.body or "", re.MULTILINE)
    await wait_for(lambda: len(audio_packets(peer, 8)) >= 5)


async def test_rfc4733_digits_reach_the_call_and_are_echoed_as_events(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    peer = await peers.create_peer()
    await place_call(osips, peer)
    peer.start_sending(sine_payloads(440))
    for digit in "19#":
        await peer.send_dtmf(digit, duration_ms=100)
        await asyncio.sleep(0.1)
    await wait_for(lambda: _echoed_digits(peer) == "19#")
    assert connector.metrics.render().count(b"avc_rtp_packets_malformed_total 0.0") == 1


async def test_a_key_press_whose_packets_the_network_duplicates_is_one_digit(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    # Found by fuzzing: the start packet delivered again after the end would read as a second press of the key.
    await node()
    peer = await peers.create_peer()
    await place_call(osips, peer)
    ssrc, ts = 0x1234ABCD, 8000
    start = build_rtp(101, 10, ts, ssrc, bytes([5, 10, 0, 160]), marker=True)
    end = build_rtp(101, 11, ts, ssrc, bytes([5, 0x80 | 10, 1, 64]))
    for packet in (start, end, start, end, end, end):
        peer.send_raw(packet)
        await asyncio.sleep(0.02)
    await wait_for(lambda: _echoed_digits(peer) == "5")
    await asyncio.sleep(0.5)  # the echo of a phantom second press would be out by now
    assert _echoed_digits(peer) == "5"


def _echoed_digits(peer: RtpPeer) -> str:
    seen: dict[int, str] = {}
    for packet in peer.received:
        if packet.payload_type == 101:
            event = parse_dtmf(packet.payload)
            if event.end:
                seen.setdefault(packet.timestamp, event.digit)
    return "".join(seen[ts] for ts in sorted(seen))


async def test_sip_info_dtmf_is_answered_200_and_delivered(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    await node()
    peer = await peers.create_peer()
    call, _ = await place_call(osips, peer)
    reply = await call.info("Signal=5\r\nDuration=160\r\n")
    assert reply.code == 200
    await wait_for(lambda: _echoed_digits(peer) == "5")
    assert (await call.info("hello", content_type="text/plain")).code == 415


async def test_reinvite_to_hold_stops_our_audio_and_resume_restarts_it(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    await node()
    peer = await peers.create_peer()
    call, first = await place_call(osips, peer)
    await wait_for(lambda: len(audio_packets(peer)) >= 5)

    hold = await call.reinvite(sdp_offer("127.0.0.1", peer.port, direction="sendonly"))
    assert hold.code == 200 and "a=recvonly" in (hold.body or "")
    assert _origin_version(hold.body) > _origin_version(first.body)
    await asyncio.sleep(0.1)
    held = len(audio_packets(peer))
    await asyncio.sleep(0.3)
    assert len(audio_packets(peer)) == held

    resume = await call.reinvite(sdp_offer("127.0.0.1", peer.port, direction="sendrecv"))
    assert resume.code == 200 and "a=sendrecv" in (resume.body or "")
    await wait_for(lambda: len(audio_packets(peer)) >= held + 5)

    refused = await call.reinvite(sdp_offer("127.0.0.1", peer.port, codecs=("G729",)))
    assert refused.code == 488
    await wait_for(lambda: len(audio_packets(peer)) >= held + 15)  # the old media goes on


def _origin_version(body: str | None) -> int:
    match = re.search(r"^o=\S+ \d+ (\d+) ", body or "", re.MULTILINE)
    assert match
    return int(match.group(1))


async def test_in_dialog_options_are_answered(osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup) -> None:
    await node()
    call, _ = await place_call(osips, await peers.create_peer())
    assert (await call.options()).code == 200


# -- refusing calls --------------------------------------------------------------------------------------------------


async def test_offer_without_g711_is_refused_with_488(osips: OpenSIPSDouble, node: NodeFactory) -> None:
    connector = await node()
    call = await osips.invite(sdp_offer("127.0.0.1", 6000, codecs=("G729", "GSM")))
    assert (await call.wait_final(3.0)).code == 488
    await wait_for(lambda: not connector.calls)
    assert_all_released(connector)


async def test_garbage_sdp_is_refused_with_400_and_the_next_call_works(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    call = await osips.invite("this is not SDP\r\n")
    assert (await call.wait_final(3.0)).code == 400
    await place_call(osips, await peers.create_peer())
    assert len(connector.calls) == 1


async def test_exhausted_port_pool_answers_503(osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup) -> None:
    base = random.randrange(20000, 60000, 200)
    connector = await node(rtp_port_min=base, rtp_port_max=base + 1)
    await place_call(osips, await peers.create_peer())
    second = await osips.invite(sdp_offer("127.0.0.1", 6002))
    assert (await second.wait_final(3.0)).code == 503
    await wait_for(lambda: len(connector.calls) == 1)
    assert b'avc_call_rejects_total{code="503"} 1.0' in connector.metrics.render()


async def test_draining_node_answers_new_calls_503(osips: OpenSIPSDouble, node: NodeFactory) -> None:
    connector = await node()
    connector.draining = True
    call = await osips.invite(sdp_offer("127.0.0.1", 6000))
    reply = await call.wait_final(3.0)
    # Intact only because it travels with a body: 3.5.9 garbles headers sent without one (capture 16).
    assert reply.code == 503 and reply.extra_headers == "Retry-After: 5\r\n"
    assert not connector.ready


async def test_a_flood_of_new_calls_past_the_limit_is_answered_503_and_nothing_is_left_behind(
    osips: OpenSIPSDouble, node: NodeFactory
) -> None:
    connector = await node(max_calls=5)
    calls = await asyncio.gather(*(osips.invite(sdp_offer("127.0.0.1", 6000 + 2 * n)) for n in range(60)))
    finals = await asyncio.gather(*(call.wait_final(5.0) for call in calls))
    codes = sorted(reply.code for reply in finals)
    assert codes == [200] * 5 + [503] * 55
    assert all(r.extra_headers == "Retry-After: 5\r\n" for r in finals if r.code == 503)
    assert len(connector.calls) == 5
    await wait_for(lambda: len(osips.sessions) == 5)  # every refused session deleted on the node
    for call in calls:
        if call.key in osips.sessions:
            await call.bye()
    await wait_for(lambda: not connector.calls and osips.sessions == [])


async def test_rejected_sessions_are_deleted_on_the_node_once_the_caller_acks(
    osips: OpenSIPSDouble, node: NodeFactory
) -> None:
    # 3.5.9 keeps a rejected UA session listed until its one-hour timeout (capture 14) unless the app ends it.
    connector = await node()
    refused = await osips.invite(sdp_offer("127.0.0.1", 6000, codecs=("G729",)))
    assert (await refused.wait_final(3.0)).code == 488
    connector.draining = True
    drained = await osips.invite(sdp_offer("127.0.0.1", 6002))
    assert (await drained.wait_final(3.0)).code == 503
    await wait_for(lambda: osips.sessions == [])
    assert refused.terminated_by_app and drained.terminated_by_app
    assert connector._rejected == {}


# -- ending calls ----------------------------------------------------------------------------------------------------


async def test_caller_bye_releases_everything(osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup) -> None:
    connector = await node()
    call, _ = await place_call(osips, await peers.create_peer())
    await asyncio.sleep(0.1)
    await call.bye()
    await wait_for(lambda: not connector.calls)
    assert_all_released(connector)
    assert b'avc_calls_total{outcome="caller_hangup"} 1.0' in connector.metrics.render()


async def test_app_hangup_terminates_the_session_and_no_event_follows(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    call, _ = await place_call(osips, await peers.create_peer())
    await connector.calls[next(iter(connector.calls))].hangup()
    await call.wait_ended(3.0)
    assert call.terminated_by_app
    await wait_for(lambda: not connector.calls)
    assert_all_released(connector)


async def test_cancel_while_ringing_is_answered_487_then_terminated(osips: OpenSIPSDouble, node: NodeFactory) -> None:
    connector = await node(answer_delay_ms=2000)
    call = await osips.invite(sdp_offer("127.0.0.1", 6000))
    await wait_for(lambda: call.state is CallState.EARLY)
    await call.cancel()
    await wait_for(lambda: not connector.calls)
    assert [r.code for r in call.replies] == [180, 487]
    methods = [r.method for r in osips.requests if r.params and r.params.get("key") == call.key]
    assert methods[-1] == "ua_session_terminate"
    assert call.key not in osips.sessions
    assert_all_released(connector)


async def test_rtp_timeout_hangs_up(osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup) -> None:
    connector = await node(rtp_timeout=0.4)
    call, _ = await place_call(osips, await peers.create_peer())  # the caller never sends RTP
    await call.wait_ended(3.0)
    assert call.terminated_by_app
    await wait_for(lambda: not connector.calls)
    assert b'avc_calls_total{outcome="rtp_timeout"} 1.0' in connector.metrics.render()


async def test_connector_stop_hangs_up_active_calls(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    calls = [(await place_call(osips, await peers.create_peer()))[0] for _ in range(3)]
    await connector.stop()
    for call in calls:
        assert call.terminated_by_app
    assert_all_released(connector)


# -- transfer and dialog mirror --------------------------------------------------------------------------------------


async def test_successful_transfer_sends_refer_with_context_and_ends_the_ai_leg(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node(transfer_uri="sip:agents@127.0.0.1:5070")
    call, _ = await place_call(osips, await peers.create_peer())
    ours = next(iter(connector.calls.values()))
    result = await ours.transfer(context={"X-AI-Intent": "card_delivery", "X-AI-Auth-Level": "1"})
    assert result.ok and result.status == 200
    refer = await call.wait_app_request("REFER")
    assert "Refer-To: <sip:agents@127.0.0.1:5070>" in (refer.extra_headers or "")
    assert "X-AI-Intent: card_delivery" in (refer.extra_headers or "")
    await call.wait_ended(7.0)
    await wait_for(lambda: not connector.calls)
    assert [r.code for r in call.notify_replies] == [200, 200]


async def test_failed_transfer_resumes_the_conversation(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    peer = await peers.create_peer()
    call, _ = await place_call(osips, peer)
    call.refer_outcome = 486
    ours = next(iter(connector.calls.values()))
    result = await ours.transfer()
    assert not result.ok and result.status == 486
    assert ours.state == "active"
    before = len(audio_packets(peer))
    await wait_for(lambda: len(audio_packets(peer)) > before + 5)
    header_injection = await ours.transfer(context={"X-Evil": "a\r\nBYE sip:x"})
    assert not header_injection.ok


async def test_call_state_is_mirrored_into_the_edge_dialog_by_call_id(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node(node_id="ai-7")
    call, _ = await place_call(osips, await peers.create_peer())
    await wait_for(lambda: osips.dialog_values(call.call_id).get("ai_state") == "active")
    assert osips.dialog_values(call.call_id)["ai_session"] == f"ai-7/{call.key}"
    await call.bye()
    # The edge's dialog ends with the BYE, so the final value is pushed but may land on a closed dialog.
    await wait_for(lambda: any(r.params.get("dlg_val_value") == "ended" for r in _pushes(osips)))
    assert all(r.params["DID"] == [call.call_id] for r in _pushes(osips))
    assert b'avc_dialog_var_pushes_total{result="ok"}' in connector.metrics.render()


def _pushes(osips: OpenSIPSDouble) -> list[Any]:
    return [r for r in osips.requests if r.method == "dlg_push_var"]


# -- hostile input and OpenSIPS trouble ------------------------------------------------------------------------------


async def test_hostile_event_datagrams_are_counted_and_calls_go_on(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    osips.send_raw_event(b"{not json")
    osips.send_raw_event(b"\xff\xfe" * 100)
    osips.send_raw_event(b'{"jsonrpc":"2.0","method":"E_UA_SESSION","params":{"key":"x","event_type":"EXPLODED"}}')
    osips.send_raw_event(b"[" * 60_000)
    await place_call(osips, await peers.create_peer())
    await wait_for(lambda: b"avc_events_malformed_total 4.0" in connector.metrics.render())
    assert len(connector.calls) == 1


async def test_rtp_from_a_foreign_address_and_truncated_packets_are_rejected(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    peer = await peers.create_peer()
    intruder = await peers.create_peer()
    await place_call(osips, peer)
    peer.start_sending(sine_payloads(600, amplitude=8000))
    intruder.set_remote(*peer.received[0].source if peer.received else ("127.0.0.1", 1))
    await wait_for(lambda: len(audio_packets(peer)) > 0)
    intruder.set_remote(*audio_packets(peer)[0].source)
    intruder.start_sending(sine_payloads(2000, amplitude=16000))
    peer.send_raw(b"\x80\x00\x01")
    await asyncio.sleep(0.8)
    stats = next(iter(connector.calls.values())).snapshot()["rtp"]
    assert stats["rejected_source"] >= 20
    assert stats["malformed"] == 1
    echoed = ulaw_decode(b"".join(p.payload for p in audio_packets(peer)[-20:]))
    assert abs(dominant_frequency(echoed) - 600) < 25, "the intruder's audio reached the call"


async def test_opensips_restart_is_detected_and_the_subscription_renewed(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    osips.restart()
    await osips.wait_subscribed(5.0)
    await place_call(osips, await peers.create_peer())
    assert b"avc_opensips_restarts_detected_total 1.0" in connector.metrics.render()


@pytest.mark.slow
async def test_a_call_whose_session_the_restarted_node_lost_ends_when_its_rtp_stops(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node(rtp_timeout=30.0)
    peer = await peers.create_peer()
    call, _ = await place_call(osips, peer)
    peer.start_sending(sine_payloads(440.0))
    osips.restart()  # the session is gone with the node; the caller hangs up, but their BYE reaches nobody
    await osips.wait_subscribed(5.0)
    await wait_for(lambda: connector.subscription is not None and connector.subscription.last_error is None)
    await asyncio.sleep(0.5)
    assert len(connector.calls) == 1  # RTP still flows: the caller is still there
    peer.stop_sending()
    stopped = asyncio.get_running_loop().time()
    await wait_for(lambda: not connector.calls, timeout=5.0)
    assert asyncio.get_running_loop().time() - stopped < 3.5  # not the 30 s RTP timeout
    assert b'avc_calls_total{outcome="session_lost"} 1.0' in connector.metrics.render()
    assert b'avc_stranded_sessions_total{action="session_lost"} 1.0' in connector.metrics.render()
    assert call.ended


async def test_a_new_raised_while_no_connector_listened_is_refused_and_deleted(
    osips: OpenSIPSDouble, node: NodeFactory
) -> None:
    orphan = await osips.invite(sdp_offer("127.0.0.1", 6000))  # nobody subscribed: its NEW event went nowhere
    assert osips.sessions == [orphan.key]
    connector = await node()
    reply = await orphan.wait_final(6.0)
    assert reply.code == 503 and reply.extra_headers == "Retry-After: 5\r\n"
    await wait_for(lambda: osips.sessions == [])
    assert b'avc_stranded_sessions_total{action="refused"} 1.0' in connector.metrics.render()


@pytest.mark.slow
async def test_the_node_is_in_rotation_only_while_its_connector_can_take_calls() -> None:
    async with OpenSIPSDouble(liveness_gate=True) as gated:
        assert gated.options_probe() == 503  # no connector yet
        with pytest.raises(ScriptRefused):
            await gated.invite(sdp_offer("127.0.0.1", 6000))
        connector = Connector(settings_behind(gated, subscription_check_interval=0.2))
        await connector.start()
        try:
            await wait_for(lambda: gated.options_probe() == 200)
            call = await gated.invite(sdp_offer("127.0.0.1", 6000))
            assert (await call.wait_final(3.0)).code == 200
            connector.draining = True  # SIGTERM: out of rotation at once, not when the key expires
            await wait_for(lambda: gated.options_probe() == 503)
            connector.draining = False
            await wait_for(lambda: gated.options_probe() == 200)
        finally:
            await connector.stop()
        assert gated.options_probe() == 503


async def test_many_calls_end_in_every_way_and_nothing_leaks(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    calls = [(await place_call(osips, await peers.create_peer()))[0] for _ in range(6)]
    ours = list(connector.calls.values())
    await calls[0].bye()
    await calls[1].bye()
    await ours[2].hangup()
    await ours[3].hangup()
    await ours[4].hangup("max_duration")
    await calls[5].bye()
    await wait_for(lambda: not connector.calls)
    assert_all_released(connector)


# -- modes and options -----------------------------------------------------------------------------------------------


async def test_tone_mode_sends_the_1004_hz_test_tone(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    await node(mode="tone")
    peer = await peers.create_peer()
    await place_call(osips, peer)
    await wait_for(lambda: len(audio_packets(peer)) >= 30)
    heard = ulaw_decode(b"".join(p.payload for p in audio_packets(peer)[-25:]))
    assert abs(dominant_frequency(heard) - 1004) < 20


async def test_nat_latching_adopts_the_first_source_only_when_enabled(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    await node(nat_latching=True)
    behind_nat = await peers.create_peer()
    # The SDP names a port nobody sends from, as a caller behind NAT would.
    call = await osips.invite(sdp_offer("127.0.0.1", 9))
    reply = await call.wait_final(3.0)
    behind_nat.set_remote(*answer_media(reply.body))
    behind_nat.start_sending(sine_payloads(700, amplitude=8000))
    await wait_for(lambda: len(audio_packets(behind_nat)) >= 20)
    heard = ulaw_decode(b"".join(p.payload for p in audio_packets(behind_nat)[-10:]))
    assert abs(dominant_frequency(heard) - 700) < 25


async def test_without_nat_latching_a_caller_behind_nat_is_not_heard(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    connector = await node()
    behind_nat = await peers.create_peer()
    call = await osips.invite(sdp_offer("127.0.0.1", 9))
    reply = await call.wait_final(3.0)
    behind_nat.set_remote(*answer_media(reply.body))
    behind_nat.start_sending(sine_payloads(700))
    await asyncio.sleep(0.5)
    assert audio_packets(behind_nat) == []
    assert next(iter(connector.calls.values())).snapshot()["rtp"]["rejected_source"] >= 15


async def test_max_duration_hangs_up(osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup) -> None:
    connector = await node(max_duration=0.3)
    call, _ = await place_call(osips, await peers.create_peer())
    await call.wait_ended(3.0)
    assert call.terminated_by_app
    await wait_for(lambda: b'avc_calls_total{outcome="max_duration"} 1.0' in connector.metrics.render())


async def answered_by_a_lost_connector(osips: OpenSIPSDouble, peer: RtpPeer) -> DoubleCall:
    """A call some earlier connector answered over MI and then lost (as if killed): nobody owns it now."""
    orphan = await osips.invite(sdp_offer("127.0.0.1", peer.port))
    lost = OpenSIPSMI(mi_client_from_url(osips.mi_datagram_uri))
    try:
        await lost.ua_session_reply(orphan.key, "INVITE", 200, "OK", body=sdp_offer("127.0.0.1", 7990))
    finally:
        await lost.close()
    assert (await orphan.wait_final(3.0)).code == 200
    return orphan


async def test_a_stranded_call_is_taken_back_by_re_invite_and_its_caller_heard_again(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    peer = await peers.create_peer()
    orphan = await answered_by_a_lost_connector(osips, peer)
    connector = await node()  # echo mode
    reinvite = await orphan.wait_app_request("INVITE", 5.0)
    await wait_for(lambda: orphan.key in connector.calls and connector.calls[orphan.key].recovered)
    peer.set_remote(*answer_media(reinvite.body or ""))  # the offer names the new connector's port
    peer.start_sending(sine_payloads(440.0))
    await peer.wait_received(10, timeout=3.0)  # echoed back: the caller is heard and hears again
    assert osips.sessions == [orphan.key] and not orphan.ended
    assert b'avc_stranded_sessions_total{action="recovered"} 1.0' in connector.metrics.render()


async def test_a_stranded_call_whose_re_invite_is_refused_is_ended_with_a_bye(
    osips: OpenSIPSDouble, node: NodeFactory, peers: RtpPeerGroup
) -> None:
    orphan = await answered_by_a_lost_connector(osips, await peers.create_peer())
    orphan.app_request_replies["INVITE"] = (488, "Not Acceptable Here")
    connector = await node()
    await orphan.wait_ended(5.0)
    assert orphan.terminated_by_app  # a BYE, not silence
    await wait_for(lambda: not connector.calls)
    assert b'avc_calls_total{outcome="recovery_failed"} 1.0' in connector.metrics.render()
