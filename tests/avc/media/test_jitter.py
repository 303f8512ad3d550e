"""Tests for avc.media.jitter: reordering, duplicates, lateness, loss versus underrun, wraps, resync and prefetch.

Time is the caller's 20 ms tick, i.e. one `get()`; nothing here depends on a real clock.
"""

from __future__ import annotations

import pytest

from avc.media.jitter import JitterBuffer, PutResult
from avc.media.rtp import MAX_MISORDER, RtpPacket, RtpSender

FRAME = 160  # samples per 20 ms G.711 frame


def frame(sequence: int) -> bytes:
    """A recognisable 160-byte payload for one sequence number."""
    return sequence.to_bytes(2, "big") * (FRAME // 2)


def put(buffer: JitterBuffer, sequence: int, base_timestamp: int = 0) -> PutResult:
    """A packet of a continuous stream: its timestamp follows its sequence number."""
    return buffer.put(sequence, (base_timestamp + sequence * FRAME) % (1 << 32), frame(sequence))


def drain(buffer: JitterBuffer, ticks: int) -> list[int | None]:
    """What `ticks` pulls return, as sequence numbers (None where a frame is missing or not due)."""
    out: list[int | None] = []
    for _ in range(ticks):
        payload = buffer.get()
        out.append(None if payload is None else int.from_bytes(payload[:2], "big"))
    return out


def counters(buffer: JitterBuffer) -> dict[str, int]:
    return {
        "duplicates": buffer.duplicates,
        "late": buffer.late,
        "lost": buffer.lost,
        "reordered": buffer.reordered,
        "underruns": buffer.underruns,
        "resyncs": buffer.resyncs,
    }


NO_EVENTS = {"duplicates": 0, "late": 0, "lost": 0, "reordered": 0, "underruns": 0, "resyncs": 0}


# -- prefetch ------------------------------------------------------------------------------------------


def test_empty_buffer_returns_none_and_counts_nothing() -> None:
    buffer = JitterBuffer()

    assert drain(buffer, 5) == [None] * 5
    assert counters(buffer) == NO_EVENTS


def test_playout_waits_until_prefetch_frames_are_buffered() -> None:
    buffer = JitterBuffer(prefetch=3)
    put(buffer, 10)
    put(buffer, 11)

    assert drain(buffer, 1) == [None]
    assert not buffer.playing
    put(buffer, 12)
    assert drain(buffer, 3) == [10, 11, 12]
    assert counters(buffer) == NO_EVENTS


def test_a_lone_frame_plays_after_waiting_prefetch_ticks() -> None:
    buffer = JitterBuffer(prefetch=3)
    put(buffer, 10)

    assert drain(buffer, 4) == [None, None, 10, None]
    assert buffer.lost == 0


def test_prefetch_zero_plays_the_first_frame_at_once() -> None:
    buffer = JitterBuffer(prefetch=0)
    put(buffer, 10)

    assert drain(buffer, 1) == [10]


# -- order, duplicates, lateness -------------------------------------------------------------------------


def test_in_order_stream_plays_every_frame_with_the_prefetch_delay() -> None:
    buffer = JitterBuffer(prefetch=2)
    played: list[int | None] = []

    for sequence in range(100, 150):  # one packet arrives per tick
        assert put(buffer, sequence) is PutResult.ACCEPTED
        played += drain(buffer, 1)

    assert played == [None, *range(100, 149)]
    assert buffer.buffered == 1
    assert counters(buffer) == NO_EVENTS


def test_reordered_packets_within_capacity_play_in_sequence_order() -> None:
    buffer = JitterBuffer(prefetch=2)
    for sequence in [10, 11, 14, 12, 13, 15]:
        assert put(buffer, sequence) is PutResult.ACCEPTED

    assert drain(buffer, 6) == [10, 11, 12, 13, 14, 15]
    assert buffer.reordered == 2
    assert buffer.lost == 0


def test_a_packet_older_than_the_first_one_still_plays_if_playout_has_not_begun() -> None:
    buffer = JitterBuffer(prefetch=2)

    assert put(buffer, 11) is PutResult.ACCEPTED
    assert put(buffer, 10) is PutResult.ACCEPTED

    assert drain(buffer, 2) == [10, 11]
    assert buffer.reordered == 1
    assert buffer.late == 0


def test_a_duplicate_of_a_buffered_frame_is_dropped_and_counted() -> None:
    buffer = JitterBuffer()
    put(buffer, 10)
    put(buffer, 11)

    assert put(buffer, 11) is PutResult.DUPLICATE
    assert drain(buffer, 3) == [10, 11, None]
    assert buffer.duplicates == 1


def test_a_duplicate_of_a_frame_already_played_is_a_duplicate_not_late() -> None:
    buffer = JitterBuffer()
    put(buffer, 10)
    put(buffer, 11)
    assert drain(buffer, 2) == [10, 11]

    assert put(buffer, 10) is PutResult.DUPLICATE
    assert (buffer.duplicates, buffer.late) == (1, 0)


def test_a_frame_arriving_after_its_turn_is_late_and_dropped() -> None:
    buffer = JitterBuffer(prefetch=2)
    put(buffer, 10)
    put(buffer, 12)
    assert drain(buffer, 2) == [10, None]

    assert put(buffer, 11) is PutResult.LATE
    assert drain(buffer, 2) == [12, None]
    assert (buffer.late, buffer.lost) == (1, 1)


# -- loss versus underrun ----------------------------------------------------------------------------------


def test_a_missing_frame_is_lost_once_a_later_frame_is_buffered() -> None:
    buffer = JitterBuffer(prefetch=2)
    for sequence in [1, 2, 4, 7]:
        put(buffer, sequence)

    assert drain(buffer, 7) == [1, 2, None, 4, None, None, 7]
    assert buffer.lost == 3


def test_a_frame_delayed_past_an_underrun_still_plays_and_nothing_counts_as_lost() -> None:
    buffer = JitterBuffer(prefetch=2)
    put(buffer, 1)
    put(buffer, 2)
    assert drain(buffer, 4) == [1, 2, None, None]  # frame 3 is late on the wire
    assert buffer.underruns == 1

    assert put(buffer, 3) is PutResult.ACCEPTED
    put(buffer, 4)
    assert drain(buffer, 2) == [3, 4]
    assert buffer.lost == 0


def test_a_stall_that_ends_with_a_later_frame_counts_the_gap_as_lost() -> None:
    buffer = JitterBuffer(prefetch=2)
    put(buffer, 1)
    put(buffer, 2)
    assert drain(buffer, 3) == [1, 2, None]

    put(buffer, 4)  # 3 never comes; the stream's clock did not jump, so 3 was due
    assert drain(buffer, 2) == [None, 4]
    assert (buffer.lost, buffer.underruns) == (1, 1)


def test_dtx_silence_is_not_loss_and_the_next_talkspurt_prefetches_again() -> None:
    buffer = JitterBuffer(prefetch=2)
    for sequence in (1, 2, 3):
        put(buffer, sequence)
    assert drain(buffer, 3) == [1, 2, 3]

    assert drain(buffer, 50) == [None] * 50  # one second of DTX: the sender sends nothing

    # RTP sequence numbers count packets, not time: the next talkspurt starts at 4, its clock 1 s on.
    silence = 50 * FRAME
    assert buffer.put(4, 4 * FRAME + silence, frame(4)) is PutResult.ACCEPTED
    assert drain(buffer, 1) == [None]  # prefetching a fresh cushion
    buffer.put(5, 5 * FRAME + silence, frame(5))
    assert drain(buffer, 2) == [4, 5]
    assert buffer.lost == 0
    assert buffer.underruns == 1


def test_a_new_talkspurt_skips_the_lost_tail_of_the_previous_one() -> None:
    buffer = JitterBuffer(prefetch=2)
    for sequence in (1, 2):
        put(buffer, sequence)
    assert drain(buffer, 10) == [1, 2, *[None] * 8]

    # 3 and 4 (the end of the talkspurt) were lost; then silence; the timestamp says 2 s went by.
    silence = 100 * FRAME
    buffer.put(5, 5 * FRAME + silence, frame(5))
    buffer.put(6, 6 * FRAME + silence, frame(6))

    assert drain(buffer, 2) == [5, 6]
    assert buffer.lost == 0


def test_a_talkspurt_whose_first_packet_is_overtaken_still_starts_with_it() -> None:
    buffer = JitterBuffer(prefetch=2)
    put(buffer, 1)
    put(buffer, 2)
    assert drain(buffer, 4) == [1, 2, None, None]

    # The next talkspurt is 4, 5, 6 (3, the end of the last one, was lost), 2 s later; 5 overtakes 4.
    silence = 100 * FRAME
    buffer.put(5, 5 * FRAME + silence, frame(5))
    assert buffer.put(4, 4 * FRAME + silence, frame(4)) is PutResult.ACCEPTED
    buffer.put(6, 6 * FRAME + silence, frame(6))

    assert put(buffer, 2) is PutResult.DUPLICATE  # what was played stays played
    assert drain(buffer, 3) == [4, 5, 6]
    assert (buffer.lost, buffer.reordered) == (0, 1)


def test_an_empty_payload_is_a_frame_not_a_loss() -> None:
    buffer = JitterBuffer(prefetch=0)
    buffer.put(1, 0, b"")

    assert buffer.get() == b""
    assert buffer.lost == 0


# -- wraps ---------------------------------------------------------------------------------------------------


def test_sequence_wrap_is_transparent() -> None:
    buffer = JitterBuffer(prefetch=2)
    sequences = [65533, 65534, 65535, 0, 1, 2]

    for sequence in sequences:
        assert put(buffer, sequence) is PutResult.ACCEPTED

    assert drain(buffer, 6) == sequences
    assert counters(buffer) == NO_EVENTS


def test_reordering_across_the_sequence_wrap_is_repaired() -> None:
    buffer = JitterBuffer(prefetch=2)
    for sequence in [65534, 0, 65535, 2, 1]:
        assert put(buffer, sequence) is PutResult.ACCEPTED

    assert drain(buffer, 5) == [65534, 65535, 0, 1, 2]
    assert buffer.reordered == 2


def test_a_late_packet_is_recognised_across_the_sequence_wrap() -> None:
    buffer = JitterBuffer(prefetch=2)
    put(buffer, 65534)
    put(buffer, 0)
    assert drain(buffer, 3) == [65534, None, 0]

    assert put(buffer, 65535) is PutResult.LATE


def test_capacity_that_does_not_divide_65536_survives_the_wrap() -> None:
    buffer = JitterBuffer(capacity=10, prefetch=9)
    sequences = [(65530 + i) % 65536 for i in range(10)]

    for sequence in sequences:
        assert put(buffer, sequence) is PutResult.ACCEPTED

    assert drain(buffer, 10) == sequences


def test_timestamp_wrap_is_not_mistaken_for_a_new_talkspurt() -> None:
    buffer = JitterBuffer(prefetch=2)
    base = (1 << 32) - 3 * FRAME  # timestamps wrap between sequence 2 and 3
    put(buffer, 1, base)
    put(buffer, 2, base)
    assert drain(buffer, 3) == [1, 2, None]

    put(buffer, 4, base)  # 3 lost at the tail of an underrun, clock continuous across the wrap
    put(buffer, 5, base)
    assert drain(buffer, 3) == [None, 4, 5]
    assert buffer.lost == 1


def test_a_stream_from_the_sender_plays_through_a_full_sequence_wrap() -> None:
    sender = RtpSender(ssrc=1, sequence=65000, timestamp=(1 << 32) - 1000 * FRAME)
    buffer = JitterBuffer(prefetch=2)
    played = 0

    for _ in range(1200):
        packet = RtpPacket.parse(sender.packet(b"\xff" * FRAME, 0, FRAME))
        buffer.put(packet.sequence, packet.timestamp, packet.payload)
        played += buffer.get() is not None

    assert played == 1199
    assert counters(buffer) == NO_EVENTS


# -- resync ---------------------------------------------------------------------------------------------------


def test_a_jump_beyond_capacity_resynchronises_instead_of_losing_frames() -> None:
    buffer = JitterBuffer(capacity=16, prefetch=2)
    put(buffer, 100)
    put(buffer, 101)
    assert drain(buffer, 1) == [100]

    assert put(buffer, 5000) is PutResult.RESYNCED
    put(buffer, 5001)
    assert drain(buffer, 3) == [5000, 5001, None]
    assert buffer.resyncs == 1
    assert buffer.lost == 0


def test_a_sender_restarting_at_a_lower_sequence_number_resynchronises() -> None:
    buffer = JitterBuffer(prefetch=2)
    for sequence in range(1000, 1010):
        put(buffer, sequence)
    drain(buffer, 10)

    restart = 1009 - MAX_MISORDER - 1
    assert put(buffer, restart) is PutResult.RESYNCED
    put(buffer, restart + 1)
    assert drain(buffer, 2) == [restart, restart + 1]
    assert (buffer.resyncs, buffer.late) == (1, 0)


def test_a_gap_within_capacity_is_loss_not_a_resync() -> None:
    buffer = JitterBuffer(capacity=16, prefetch=2)
    put(buffer, 0)
    put(buffer, 15)

    assert drain(buffer, 16) == [0, *[None] * 14, 15]
    assert (buffer.lost, buffer.resyncs) == (14, 0)


def test_a_buffer_that_fills_up_resynchronises_rather_than_holding_stale_audio() -> None:
    buffer = JitterBuffer(capacity=4, prefetch=2)
    for sequence in range(4):
        assert put(buffer, sequence) is PutResult.ACCEPTED

    assert put(buffer, 4) is PutResult.RESYNCED
    assert buffer.buffered == 1
    put(buffer, 5)
    assert drain(buffer, 2) == [4, 5]


# -- configuration and bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "prefetch", "frame_samples", "message"),
    [
        (0, 0, FRAME, "capacity 0"),
        (40000, 2, FRAME, "capacity 40000"),
        (16, 17, FRAME, "prefetch 17"),
        (16, -1, FRAME, "prefetch -1"),
        (16, 2, 0, "frame_samples"),
    ],
)
def test_constructor_rejects_unusable_settings(capacity: int, prefetch: int, frame_samples: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JitterBuffer(capacity, prefetch, frame_samples)


def test_put_rejects_out_of_range_sequence_and_timestamp_without_changing_state() -> None:
    buffer = JitterBuffer()

    with pytest.raises(ValueError, match="sequence number 65536"):
        buffer.put(65536, 0, b"x")
    with pytest.raises(ValueError, match="timestamp"):
        buffer.put(1, 1 << 32, b"x")
    assert buffer.buffered == 0
