"""The soak benchmark's own arithmetic: the RSS slope, the wrap call's seed, gap counting (no connector needed)."""

from __future__ import annotations

from collections import Counter

import pytest

from demo.rtp_peer import RtpPeerGroup, sine_payloads, ulaw_encode
from tests.bench.bench_soak import (
    WRAP_LEAD_PACKETS,
    phase1_ending,
    rss_slope_mb_per_100,
    seed_for_sequence,
    sequence_gaps,
    tone_frames,
)


def test_slope_is_in_mb_per_100_calls() -> None:
    samples = [(100 + 25 * i, 70.0 + 0.1 * i) for i in range(10)]  # 0.1 MB per 25 calls
    assert rss_slope_mb_per_100([samples]) == pytest.approx(0.4)


def test_a_level_shift_between_phases_is_not_a_slope() -> None:
    flat_idle = [(100, 70.0), (200, 70.0), (300, 70.0)]
    flat_loaded = [(325, 74.0), (400, 74.0), (500, 74.0)]  # 20 live calls at every phase-2 sample
    assert rss_slope_mb_per_100([flat_idle, flat_loaded]) == pytest.approx(0.0, abs=1e-9)


def test_no_slope_without_two_samples_in_a_phase() -> None:
    assert rss_slope_mb_per_100([[(100, 70.0)], []]) is None
    assert rss_slope_mb_per_100([[(100, 70.0)], [(200, 71.0), (300, 72.0)]]) == pytest.approx(1.0)


async def test_the_wrap_seed_gives_a_peer_just_before_the_wrap() -> None:
    low, high = 65536 - WRAP_LEAD_PACKETS - 5, 65536 - WRAP_LEAD_PACKETS
    group = RtpPeerGroup()
    peer = await group.create_peer(seed=seed_for_sequence(low, high))
    try:
        assert low <= peer.initial_sequence <= high
    finally:
        await group.close()


def test_gaps_are_counted_across_the_wrap() -> None:
    assert sequence_gaps([65534, 65535, 0, 1, 2]) == 0
    assert sequence_gaps([65534, 0, 1]) == 1
    assert sequence_gaps([1, 0, 65535]) == 0  # reordered


def test_tone_frames_tell_tone_from_silence() -> None:
    tone = sine_payloads(1000)
    assert tone_frames([tone(0), tone(1), ulaw_encode([0] * 160), b""]) == 2


def test_phase_one_uses_every_ending() -> None:
    endings = Counter(phase1_ending(i) for i in range(500))
    assert endings == {"bye": 405, "cancel": 50, "reject": 25, "rtp_timeout": 20}
