"""Tests of the test caller's RTP peer: G.711 helpers, packet format, pacing, DTMF, and many peers on one ticker."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Sequence

import numpy as np
import pytest

from demo.rtp_peer import (
    FRAME_SAMPLES,
    Impairment,
    RtpPacket,
    RtpPeer,
    RtpPeerGroup,
    _ImpairedLine,
    build_rtp,
    linear_to_ulaw,
    parse_dtmf,
    parse_rtp,
    sine_payloads,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_linear,
)


def test_ulaw_reference_points_match_g711() -> None:
    assert [linear_to_ulaw(s) for s in (0, 32767, -32768, -1, 100)] == [0xFF, 0x80, 0x00, 0x7E, 0xF2]
    assert [ulaw_to_linear(c) for c in (0xFF, 0x7F, 0x80, 0x00)] == [0, 0, 32124, -32124]


def test_vectorised_ulaw_equals_the_reference_for_every_sample() -> None:
    samples = list(range(-32768, 32768))
    assert ulaw_encode(samples) == bytes(linear_to_ulaw(s) for s in samples)
    assert ulaw_decode(bytes(range(256))).tolist() == [ulaw_to_linear(c) for c in range(256)]


def test_ulaw_round_trip_error_stays_below_one_quantisation_step() -> None:
    samples = np.arange(-32124, 32125)  # beyond +-32124 mu-law clips
    codes = np.frombuffer(ulaw_encode(samples), dtype=np.uint8).astype(np.int64)
    decoded = ulaw_decode(ulaw_encode(samples)).astype(np.int64)
    step = 8 << ((~codes >> 4) & 7)  # the step doubles with each of the 8 segments
    assert np.all(np.abs(decoded - samples) < step)


def test_sine_payloads_are_consecutive_frames_of_one_continuous_tone() -> None:
    source = sine_payloads(1000, amplitude=8000)
    frames = [source(n) for n in range(3)]
    assert all(len(frame) == FRAME_SAMPLES for frame in frames)
    signal = ulaw_decode(b"".join(frames)).astype(np.float64)
    t = np.arange(3 * FRAME_SAMPLES) / 8000
    reference = 8000 * np.sin(2 * np.pi * 1000 * t)
    assert np.max(np.abs(signal - reference)) < 300  # continuous across frame borders, within mu-law error
    assert source(7) == source(7)  # a frame depends on its index only
    uncached = sine_payloads(1000.5)  # a tone whose frames never repeat is computed frame by frame
    assert ulaw_decode(uncached(50)).tolist() != ulaw_decode(uncached(0)).tolist()
    t = np.arange(50 * FRAME_SAMPLES, 51 * FRAME_SAMPLES) / 8000
    assert np.max(np.abs(ulaw_decode(uncached(50)) - 8000 * np.sin(2 * np.pi * 1000.5 * t))) < 300


def test_parse_rtp_reads_csrcs_extensions_and_padding_and_rejects_garbage() -> None:
    plain = build_rtp(8, 65535, 2**32 - 1, 0xDEADBEEF, b"abc", marker=True)
    assert parse_rtp(plain) == (8, 65535, 2**32 - 1, 0xDEADBEEF, True, b"abc")
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 0, 1, 2, 3)  # padding, extension, one CSRC
    packet = header + b"CSRC" + struct.pack("!HH", 0xBEDE, 1) + b"EXT!" + b"payload" + b"\x00\x00\x03"
    assert parse_rtp(packet) == (0, 1, 2, 3, False, b"payload")
    for garbage in (b"", b"\x80\x00", b"\x40" + bytes(11), packet[:-3] + b"\x00\x00\xff", header[:12] + b"\x00"):
        with pytest.raises(ValueError):
            parse_rtp(garbage)


async def test_two_peers_exchange_paced_audio_over_loopback() -> None:
    group = RtpPeerGroup()
    caller, callee = await group.create_peer(seed=1), await group.create_peer(seed=2)
    try:
        caller.set_remote(*callee.address)
        callee.set_remote(*caller.address)
        tone = sine_payloads(440)
        caller.start_sending(tone)
        callee.start_sending(sine_payloads(1000), payload_type=8)
        to_callee = (await callee.wait_received(8))[:8]
        to_caller = (await caller.wait_received(8))[:8]
    finally:
        await group.close()
    assert {p.source for p in to_callee} == {caller.address}
    assert [p.marker for p in to_callee] == [True] + [False] * 7
    assert {(p.payload_type, p.ssrc) for p in to_callee} == {(0, caller.ssrc)}
    assert [p.sequence for p in to_callee] == [(caller.initial_sequence + n) & 0xFFFF for n in range(8)]
    first = to_callee[0].timestamp
    for packet in to_callee:
        # Timestamps advance 160 per 20 ms slot (more if the loop skipped ticks); the payload is that slot's frame.
        slot, remainder = divmod((packet.timestamp - first) & 0xFFFFFFFF, 160)
        assert remainder == 0
        assert packet.payload == tone(slot)
    assert {(p.payload_type, p.ssrc) for p in to_caller} == {(8, callee.ssrc)}
    arrivals = [p.arrival for p in to_callee]
    assert arrivals == sorted(arrivals)
    assert arrivals[-1] - arrivals[0] >= 0.1  # paced at 20 ms, not sent in a burst


async def test_dtmf_follows_rfc_4733_and_shares_the_audio_sequence() -> None:
    group = RtpPeerGroup()
    caller, callee = await group.create_peer(), await group.create_peer()
    try:
        caller.set_remote(*callee.address)
        caller.start_sending(sine_payloads(440))
        await callee.wait_received(2)
        await caller.send_dtmf("5", duration_ms=100)
        received = await callee.wait_received(len(callee.received) + 2)  # audio resumes after the event
    finally:
        await group.close()
    events = [(n, p) for n, p in enumerate(received) if p.payload_type == 101]
    assert len(events) == 7  # 4 updates + the final packet sent 3 times (100 ms of 20 ms packets)
    dtmf = [parse_dtmf(p.payload) for _, p in events]
    assert [d.duration for d in dtmf] == [160, 320, 480, 640, 800, 800, 800]
    assert [d.end for d in dtmf] == [False] * 4 + [True] * 3
    assert {(d.digit, d.volume) for d in dtmf} == {("5", 10)}
    assert [p.marker for _, p in events] == [True] + [False] * 6
    assert len({p.timestamp for _, p in events}) == 1
    sequences = [p.sequence for p in received]
    assert sequences == [(sequences[0] + n) & 0xFFFF for n in range(len(received))]
    first, last = events[0][0], events[-1][0]
    assert received[first - 1].payload_type == 0 and received[last + 1].payload_type == 0
    assert received[last + 1].timestamp > events[0][1].timestamp


async def test_dtmf_without_audio_is_paced_on_its_own() -> None:
    caller = await RtpPeer.create()
    callee = await RtpPeer.create()
    try:
        caller.set_remote(*callee.address)
        await caller.send_dtmf("#", duration_ms=40)
        received = await callee.wait_received(4)
    finally:
        caller.close()
        callee.close()
    assert [(parse_dtmf(p.payload).digit, parse_dtmf(p.payload).end) for p in received] == [
        ("#", False),
        ("#", True),
        ("#", True),
        ("#", True),
    ]
    assert caller.group.active_peers == 0  # nothing left to send: the ticker stopped


async def test_raw_bytes_go_out_as_given_and_non_rtp_is_recorded_apart() -> None:
    caller, callee = await RtpPeer.create(), await RtpPeer.create()
    try:
        caller.set_remote(*callee.address)
        caller.send_raw(b"\x00junk")
        caller.send_raw(build_rtp(0, 1, 2, 3, b"ok"))
        await callee.wait_received(1)
    finally:
        caller.close()
        callee.close()
    assert [(source, data) for _, source, data in callee.invalid] == [(caller.address, b"\x00junk")]
    assert [p.payload for p in callee.received] == [b"ok"]


async def test_a_payload_source_returning_none_stops_the_stream() -> None:
    caller, callee = await RtpPeer.create(), await RtpPeer.create()
    try:
        caller.set_remote(*callee.address)
        caller.start_sending(lambda n: b"\xff" * 160 if n < 3 else None)
        await callee.wait_received(3)
        await asyncio.sleep(0.1)
    finally:
        caller.close()
        callee.close()
    assert len(callee.received) == 3
    assert not caller.sending


async def test_one_ticker_paces_200_peers_together() -> None:
    group = RtpPeerGroup()
    sink = await group.create_peer(keep_payload=False)
    peers = [await group.create_peer() for _ in range(200)]
    try:
        for peer in peers:
            peer.set_remote(*sink.address)
            peer.start_sending(sine_payloads(300))
        await sink.wait_received(200 * 5, timeout=10)
        for peer in peers:
            peer.stop_sending()
        ticks = group.ticks
        await asyncio.sleep(0.05)
    finally:
        await group.close()
    sent = {peer.sent_packets for peer in peers}
    # Every tick serves every peer: all peers sent the same number of packets, one per tick.
    assert sent == {ticks}
    assert group.active_peers == 0
    assert len({p.ssrc for p in sink.received}) == 200


# -- the impaired line ------------------------------------------------------------------------------------------------


def reception(packets: Sequence[RtpPacket], first_sequence: int) -> tuple[set[int], int, int]:
    """(packet indexes received, duplicates, reordered) as a receiver sees them: a packet is reordered when a later
    one of the stream arrived before it; repeats of a packet already received are duplicates, not reorders."""
    seen: set[int] = set()
    duplicates = reordered = 0
    highest = -1
    for packet in packets:
        index = (packet.sequence - first_sequence) & 0xFFFF
        if index in seen:
            duplicates += 1
            continue
        seen.add(index)
        reordered += index < highest
        highest = max(highest, index)
    return seen, duplicates, reordered


def test_impairment_rejects_nonsense() -> None:
    for bad in ({"loss": -0.1}, {"reorder": 1.5}, {"duplicate": 2.0}, {"jitter_ms": -1.0}):
        with pytest.raises(ValueError):
            Impairment(**bad)  # type: ignore[arg-type]


async def test_the_impairment_model_is_seeded_and_follows_its_probabilities() -> None:
    spec = Impairment(loss=0.05, reorder=0.02, duplicate=0.02, seed=11)

    def run(impairment: Impairment) -> tuple[list[bytes], _ImpairedLine]:
        out: list[bytes] = []
        line = _ImpairedLine(impairment, out.append, lambda: 0.06)
        for n in range(20_000):  # no jitter: everything goes out at once but a held packet, until its successor
            line.offer(n & 0xFFFF, n.to_bytes(4, "big"))
        return out, line

    first, line = run(spec)
    held_at_end = line._held is not None
    line.close()
    assert run(spec)[0] == first  # same seed, same line
    assert run(Impairment(loss=0.05, reorder=0.02, duplicate=0.02, seed=12))[0] != first
    stats = line.stats
    assert stats.offered == 20_000 and stats.datagrams == len(first)
    assert abs(stats.dropped / 20_000 - 0.05) < 0.006  # about 4 sigma of a binomial over 20,000 draws
    survivors = 20_000 - stats.dropped
    assert abs(stats.duplicated / survivors - 0.02) < 0.004
    assert abs(stats.swapped / survivors - 0.02) < 0.004
    indexes = [int.from_bytes(p, "big") for p in first]
    assert len(set(indexes)) == survivors - held_at_end
    assert len(indexes) - len(set(indexes)) == stats.duplicated
    # Each swap is one step back in the emitted order, between the two packets it swapped, and nothing else is.
    backs = [a - b for a, b in itertools.pairwise(indexes) if b < a]
    assert len(backs) == stats.swapped - held_at_end
    assert max(backs) < 5  # a held packet overtaken by its next survivor: the next packet, or one after a loss


async def test_an_unimpaired_peer_sends_exactly_what_it_sent_before() -> None:
    group = RtpPeerGroup()
    # Same seed: same SSRC, first sequence and timestamp. One peer never impaired, one impaired then restored, one
    # with an impairment that does nothing: all three streams arrive identical, in order, none missing.
    senders = [await group.create_peer(seed=5) for _ in range(3)]
    sinks = [await group.create_peer() for _ in range(3)]
    try:
        senders[1].impair(Impairment(loss=0.5, jitter_ms=40, seed=1))
        senders[1].impair(None)
        senders[2].impair(Impairment())
        tone = sine_payloads(440)
        for sender, sink in zip(senders, sinks, strict=True):
            sender.set_remote(*sink.address)
            sender.start_sending(lambda n: tone(n) if n < 30 else None)
        for sink in sinks:
            await sink.wait_received(30)
        await asyncio.sleep(0.05)
    finally:
        await group.close()
    streams = [
        [(p.payload_type, p.sequence, p.timestamp, p.ssrc, p.marker, p.payload) for p in s.received] for s in sinks
    ]
    assert len(streams[0]) == 30 and streams[1] == streams[0] and streams[2] == streams[0]
    assert senders[1].impairment_stats is None
    stats = senders[2].impairment_stats
    assert stats is not None and (stats.offered, stats.dropped, stats.datagrams) == (30, 0, 30)


async def test_loss_swaps_and_duplicates_arrive_as_the_model_made_them() -> None:
    group = RtpPeerGroup(tick_ms=5)  # 5 ms packets: 600 of them in 3 s
    caller, callee = await group.create_peer(seed=3), await group.create_peer(keep_payload=False)
    caller.impair(Impairment(loss=0.1, reorder=0.05, duplicate=0.05, seed=21))
    stats = caller.impairment_stats
    assert stats is not None
    total = 600
    try:
        caller.set_remote(*callee.address)
        built = itertools.count()  # packets, not slots: a loaded loop skips slots
        caller.start_sending(lambda n: b"\xff" * 40 if next(built) < total else None, ptime_ms=5)
        async with asyncio.timeout(15):
            while caller.sending or len(callee.received) < stats.datagrams:  # noqa: ASYNC110 - polling a recording
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.15)  # a swap still held at the end goes out on its own
    finally:
        await group.close()
    assert stats.offered == total
    seen, duplicates, reordered = reception(callee.received, caller.initial_sequence)
    # Loopback loses nothing: what was received is exactly what the model let through ...
    assert len(seen) == total - stats.dropped and duplicates == stats.duplicated
    # ... every swap shows as one packet overtaken (one left held past its deadline by a stalled loop goes out on
    # its own, in order) ...
    assert stats.swapped - 2 <= reordered <= stats.swapped
    # ... and the counts follow the probabilities (about 4 sigma of a binomial over 600 packets).
    assert abs((total - len(seen)) / total - 0.1) < 0.05
    assert abs(duplicates / len(seen) - 0.05) < 0.04
    assert abs(stats.swapped / len(seen) - 0.05) < 0.04


async def test_jitter_delays_each_packet_and_reorders_the_stream() -> None:
    group = RtpPeerGroup()
    caller, callee = await group.create_peer(seed=4), await group.create_peer()
    caller.impair(Impairment(jitter_ms=60, seed=8))
    total = 100  # 2 s of 20 ms packets
    try:
        caller.set_remote(*callee.address)
        loop = asyncio.get_running_loop()
        sent_at: list[float] = []

        def source(n: int) -> bytes | None:
            sent_at.append(loop.time())
            return b"\xff" * 160 if len(sent_at) <= total else None

        caller.start_sending(source)
        await callee.wait_received(total, timeout=10)
        await asyncio.sleep(0.1)
    finally:
        await group.close()
    stats = caller.impairment_stats
    assert stats is not None and stats.datagrams == total == len(callee.received)
    seen, duplicates, reordered = reception(callee.received, caller.initial_sequence)
    assert len(seen) == total and duplicates == 0
    # The order the model scheduled (due times) is the order of arrival, up to the loop's timer slack.
    due = {(seq - caller.initial_sequence) & 0xFFFF: at for seq, at in stats.schedule}
    planned = sorted(due, key=due.__getitem__)
    _, _, predicted = reception(
        [RtpPacket(0.0, ("", 0), 0, (caller.initial_sequence + n) & 0xFFFF, 0, 0, False, b"") for n in planned],
        caller.initial_sequence,
    )
    assert predicted >= 10  # 60 ms of jitter on 20 ms packets reorders a good share of them
    assert abs(reordered - predicted) <= max(4, predicted // 4)
    lateness = [p.arrival - due[(p.sequence - caller.initial_sequence) & 0xFFFF] for p in callee.received]
    assert min(lateness) > -0.002 and sorted(lateness)[len(lateness) // 2] < 0.02
    delays = [at - sent_at[n] for n, at in due.items()]
    # Spread over the jitter's 0..60 ms; the due time is read from the clock a few microseconds after the source ran.
    assert 0 <= min(delays) < 0.01 and 0.05 < max(delays) <= 0.061
