"""Tests for avc.media.rtp: RFC 3550 parsing and serialising, the sender, wrap-safe arithmetic, receive statistics.

Expected packets are built here byte by byte from the RFC 3550 5.1 layout, never with the serializer
under test. Payload types come from the SDP the real OpenSIPS 3.5.9 capture carried.
"""

from __future__ import annotations

import json
import re

import pytest

from avc.media.rtp import (
    MAX_MISORDER,
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpSender,
    SequenceTracker,
    seq_delta,
    ts_delta,
)
from tests.support.captures import event_datagrams

CAPTURE = "02_call1_caller_hangs_up.txt"
FRAME = 160  # 20 ms of G.711 at 8 kHz


def _offered_payload_types() -> dict[str, int]:
    """`encoding name -> payload type` from the caller's SDP in the capture's NEW event."""
    new_event = json.loads(event_datagrams(CAPTURE)[0])
    sdp = new_event["params"]["body"]
    return {name: int(pt) for pt, name in re.findall(r"a=rtpmap:(\d+) ([\w-]+)/8000", sdp)}


OFFERED = _offered_payload_types()
PCMU = OFFERED["PCMU"]
TELEPHONE_EVENT = OFFERED["telephone-event"]


def rtp_bytes(
    *,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    csrc: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: bytes = b"",
) -> bytes:
    """An RTP packet laid out by hand: V=2|P|X|CC, M|PT, then big-endian fields (RFC 3550 5.1, 5.3.1)."""
    first = 0b1000_0000 | len(csrc)
    if padding:
        first |= 0b0010_0000
    if extension is not None:
        first |= 0b0001_0000
    out = bytearray([first, (0x80 if marker else 0) | payload_type])
    out += sequence.to_bytes(2, "big") + timestamp.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
    for source in csrc:
        out += source.to_bytes(4, "big")
    if extension is not None:
        profile, data = extension
        out += profile.to_bytes(2, "big") + (len(data) // 4).to_bytes(2, "big") + data
    return bytes(out + payload + padding)


PCMU_SILENCE = b"\xff" * FRAME


# -- the offered payload types (sanity of the fixture this file relies on) ---------------------------


def test_capture_offers_pcmu_and_telephone_event_payload_types() -> None:
    assert (PCMU, TELEPHONE_EVENT) == (0, 101)


# -- parsing -------------------------------------------------------------------------------------------


def test_parse_reads_every_fixed_header_field_of_a_pcmu_packet() -> None:
    data = rtp_bytes(
        payload_type=PCMU, sequence=0x1234, timestamp=0xDEADBEEF, ssrc=0x0BADCAFE, payload=PCMU_SILENCE, marker=True
    )

    packet = RtpPacket.parse(data)

    assert packet == RtpPacket(PCMU, 0x1234, 0xDEADBEEF, 0x0BADCAFE, PCMU_SILENCE, marker=True)


def test_parse_reads_the_csrc_list() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"\x7f" * 4, csrc=(0x11111111, 7))

    packet = RtpPacket.parse(data)

    assert packet.csrc == (0x11111111, 7)
    assert packet.payload == b"\x7f" * 4


def test_parse_reads_the_header_extension_and_skips_it_for_the_payload() -> None:
    data = rtp_bytes(
        payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"abcd", extension=(0xBEDE, b"\x10\xaa\x00\x00")
    )

    packet = RtpPacket.parse(data)

    assert packet.extension == RtpExtension(0xBEDE, b"\x10\xaa\x00\x00")
    assert packet.payload == b"abcd"


def test_parse_accepts_an_empty_header_extension() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"x", extension=(0x1000, b""))

    assert RtpPacket.parse(data).extension == RtpExtension(0x1000, b"")


def test_parse_strips_padding_using_the_count_in_the_last_byte() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"voice", padding=b"\x00\x00\x00\x04")

    packet = RtpPacket.parse(data)

    assert packet.payload == b"voice"
    assert packet.padding == 4


def test_parse_accepts_padding_that_fills_the_whole_body() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"", padding=b"\x00\x02")

    packet = RtpPacket.parse(data)

    assert packet.payload == b""
    assert packet.padding == 2


def test_packet_with_csrc_extension_padding_and_marker_round_trips_byte_for_byte() -> None:
    data = rtp_bytes(
        payload_type=TELEPHONE_EVENT,
        sequence=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xFFFFFFFF,
        payload=bytes([5, 0x8A, 0x03, 0x20]),  # RFC 4733: digit 5, end bit, volume 10, duration 800
        marker=True,
        csrc=(1, 2, 3),
        extension=(0xBEDE, b"\x22\x01\x02\x03\x10\xff\x00\x00"),
        padding=b"\x00\x00\x03",
    )

    packet = RtpPacket.parse(data)

    assert packet.payload_type == TELEPHONE_EVENT
    assert packet.marker is True
    assert packet.csrc == (1, 2, 3)
    assert packet.extension == RtpExtension(0xBEDE, b"\x22\x01\x02\x03\x10\xff\x00\x00")
    assert packet.padding == 3
    assert packet.payload == bytes([5, 0x8A, 0x03, 0x20])
    assert packet.serialize() == data


def test_serialize_writes_zero_padding_octets_even_if_the_received_ones_were_not() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"ab", padding=b"\xee\xee\x03")

    assert RtpPacket.parse(data).serialize() == data[:-3] + b"\x00\x00\x03"


def test_serialize_matches_the_rfc_layout() -> None:
    packet = RtpPacket(PCMU, 40000, 123456789, 0x01020304, PCMU_SILENCE, marker=False, csrc=(9,))

    assert packet.serialize() == rtp_bytes(
        payload_type=PCMU, sequence=40000, timestamp=123456789, ssrc=0x01020304, payload=PCMU_SILENCE, csrc=(9,)
    )


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(12))
def test_parse_rejects_a_datagram_shorter_than_the_fixed_header(size: int) -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"")[:size]

    with pytest.raises(RtpError, match="truncated"):
        RtpPacket.parse(data)


@pytest.mark.parametrize("version", [0, 1, 3])
def test_parse_rejects_a_version_other_than_2(version: int) -> None:
    data = bytearray(rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=PCMU_SILENCE))
    data[0] = (data[0] & 0x3F) | (version << 6)

    with pytest.raises(RtpError, match=f"version {version}"):
        RtpPacket.parse(bytes(data))


def test_parse_rejects_a_csrc_list_that_runs_past_the_end() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"", csrc=(1, 2))[:-1]

    with pytest.raises(RtpError, match="2 CSRCs"):
        RtpPacket.parse(data)


def test_parse_rejects_an_extension_bit_without_room_for_the_extension_header() -> None:
    data = bytearray(rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"\x00\x00"))
    data[0] |= 0x10

    with pytest.raises(RtpError, match="header extension starts"):
        RtpPacket.parse(bytes(data))


def test_parse_rejects_an_extension_length_past_the_end() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"", extension=(0xBEDE, b"\x00" * 8))

    with pytest.raises(RtpError, match="runs past the end"):
        RtpPacket.parse(data[:-1])


def test_parse_rejects_a_pad_count_larger_than_the_body() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"ab", padding=b"\x09")

    with pytest.raises(RtpError, match="pad count 9 exceeds"):
        RtpPacket.parse(data)


def test_parse_rejects_a_pad_count_reaching_into_the_csrc_list() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"", csrc=(1,), padding=b"\x05")

    with pytest.raises(RtpError, match="pad count 5 exceeds"):
        RtpPacket.parse(data)


def test_parse_rejects_a_padding_bit_with_a_zero_count() -> None:
    data = rtp_bytes(payload_type=PCMU, sequence=1, timestamp=2, ssrc=3, payload=b"ab", padding=b"\x00")

    with pytest.raises(RtpError, match="pad count is 0"):
        RtpPacket.parse(data)


def test_parse_rejects_opensips_event_datagrams_that_stray_onto_the_rtp_port() -> None:
    datagrams = event_datagrams()
    assert datagrams

    for datagram in datagrams:  # JSON text: '{' is 0x7b, version bits 01
        with pytest.raises(RtpError, match="version 1"):
            RtpPacket.parse(datagram)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(128, 1, 2, 3, b""), "payload type 128"),
        (RtpPacket(0, 65536, 2, 3, b""), "sequence number 65536"),
        (RtpPacket(0, 1, 1 << 32, 3, b""), "timestamp"),
        (RtpPacket(0, 1, 2, -1, b""), "SSRC -1"),
        (RtpPacket(0, 1, 2, 3, b"", csrc=tuple(range(16))), "16 CSRCs"),
        (RtpPacket(0, 1, 2, 3, b"", extension=RtpExtension(1, b"abc")), "whole 32-bit words"),
        (RtpPacket(0, 1, 2, 3, b"", padding=256), "padding 256"),
    ],
)
def test_serialize_rejects_fields_that_do_not_fit_the_wire_format(packet: RtpPacket, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        packet.serialize()


# -- wrap-safe arithmetic ----------------------------------------------------------------------------------


def test_seq_delta_is_the_signed_shortest_distance_across_the_wrap() -> None:
    assert seq_delta(5, 3) == 2
    assert seq_delta(3, 5) == -2
    assert seq_delta(0, 65535) == 1
    assert seq_delta(65535, 0) == -1
    assert seq_delta(2, 65530) == 8
    assert seq_delta(32767, 0) == 32767
    assert seq_delta(32768, 0) == -32768


def test_ts_delta_is_the_signed_shortest_distance_across_the_wrap() -> None:
    assert ts_delta(FRAME, 0) == FRAME
    assert ts_delta(60, (1 << 32) - 100) == FRAME
    assert ts_delta((1 << 32) - 100, 60) == -FRAME
    assert ts_delta((1 << 31) - 1, 0) == (1 << 31) - 1


# -- the sender ---------------------------------------------------------------------------------------------


def test_sender_packet_is_a_12_byte_header_followed_by_the_payload() -> None:
    sender = RtpSender(ssrc=0x11223344, sequence=1000, timestamp=8000)

    data = sender.packet(PCMU_SILENCE, PCMU, FRAME, marker=True)

    assert data == rtp_bytes(
        payload_type=PCMU, sequence=1000, timestamp=8000, ssrc=0x11223344, payload=PCMU_SILENCE, marker=True
    )
    assert (sender.sequence, sender.timestamp) == (1001, 8000 + FRAME)


def test_sender_wraps_sequence_and_timestamp() -> None:
    sender = RtpSender(ssrc=1, sequence=65534, timestamp=(1 << 32) - 2 * FRAME + 40)

    packets = [RtpPacket.parse(sender.packet(PCMU_SILENCE, PCMU, FRAME)) for _ in range(4)]

    assert [p.sequence for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [(1 << 32) - 280, (1 << 32) - 120, 40, 200]
    assert all(p.marker is False for p in packets)


def test_sender_keeps_sending_past_22_minutes_of_20ms_packets() -> None:
    sender = RtpSender(ssrc=1, sequence=0, timestamp=0)
    one_wrap = 1 << 16  # 65536 packets of 20 ms = 21 min 50 s

    for _ in range(one_wrap + 1):
        data = sender.packet(b"", PCMU, FRAME)

    last = RtpPacket.parse(data)
    assert last.sequence == 0
    assert last.timestamp == (one_wrap * FRAME) % (1 << 32)


def test_event_packet_carries_the_event_start_timestamp_and_takes_the_next_sequence_number() -> None:
    sender = RtpSender(ssrc=7, sequence=65535, timestamp=4000)
    event_start = sender.timestamp

    first = RtpPacket.parse(sender.event_packet(b"\x01\x0a\x00\xa0", TELEPHONE_EVENT, event_start, marker=True))
    sender.advance(FRAME)
    second = RtpPacket.parse(sender.event_packet(b"\x01\x0a\x01\x40", TELEPHONE_EVENT, event_start, marker=False))
    sender.advance(FRAME)
    audio = RtpPacket.parse(sender.packet(PCMU_SILENCE, PCMU, FRAME))

    assert [(p.sequence, p.timestamp, p.marker) for p in (first, second)] == [(65535, 4000, True), (0, 4000, False)]
    assert first.payload_type == TELEPHONE_EVENT
    assert (audio.sequence, audio.timestamp) == (1, 4000 + 2 * FRAME)


def test_advance_moves_the_timestamp_across_the_wrap_without_using_a_sequence_number() -> None:
    sender = RtpSender(ssrc=1, sequence=10, timestamp=(1 << 32) - FRAME)

    sender.advance(3 * FRAME)

    assert (sender.sequence, sender.timestamp) == (10, 2 * FRAME)


def test_sender_picks_random_initial_values_within_range() -> None:
    senders = [RtpSender() for _ in range(8)]

    assert len({s.ssrc for s in senders}) > 1
    assert len({(s.sequence, s.timestamp) for s in senders}) > 1
    assert all(0 <= s.sequence < 1 << 16 and 0 <= s.timestamp < 1 << 32 and 0 <= s.ssrc < 1 << 32 for s in senders)


def test_sender_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(RtpError, match="sequence number 65536"):
        RtpSender(sequence=65536)
    sender = RtpSender()
    with pytest.raises(RtpError, match="payload type 128"):
        sender.packet(b"", 128, FRAME)
    with pytest.raises(RtpError, match="move back"):
        sender.packet(b"", PCMU, -1)
    with pytest.raises(RtpError, match="event timestamp"):
        sender.event_packet(b"", TELEPHONE_EVENT, 1 << 32, marker=True)
    with pytest.raises(RtpError, match="move back"):
        sender.advance(-FRAME)


def test_sender_state_is_untouched_by_a_rejected_packet() -> None:
    sender = RtpSender(ssrc=1, sequence=5, timestamp=50)

    with pytest.raises(RtpError):
        sender.packet(b"", 200, FRAME)

    assert (sender.sequence, sender.timestamp) == (5, 50)


# -- receive statistics (RFC 3550 A.1, A.8) ---------------------------------------------------------------------


def feed(tracker: SequenceTracker, sequences: list[int], start_timestamp: int = 0) -> list[bool]:
    """Packets sent every 20 ms and arriving with constant delay: arrival == timestamp + 1000."""
    results = []
    for sequence in sequences:
        timestamp = (start_timestamp + sequence * FRAME) % (1 << 32)
        results.append(tracker.update(sequence, timestamp, timestamp + 1000))
    return results


def test_new_source_is_on_probation_until_two_packets_arrive_in_sequence() -> None:
    tracker = SequenceTracker()

    assert feed(tracker, [100]) == [False]
    assert tracker.in_probation
    assert (tracker.expected, tracker.received, tracker.lost) == (0, 0, 0)
    assert feed(tracker, [101, 102]) == [True, True]
    assert not tracker.in_probation
    assert tracker.base_sequence == 101
    assert (tracker.expected, tracker.received, tracker.lost) == (2, 2, 0)


def test_probation_restarts_when_the_second_packet_is_not_the_successor() -> None:
    tracker = SequenceTracker()

    assert feed(tracker, [100, 500, 501]) == [False, False, True]
    assert tracker.base_sequence == 501


def test_probation_completes_across_the_sequence_wrap() -> None:
    tracker = SequenceTracker()

    assert feed(tracker, [65535, 0]) == [False, True]
    assert tracker.base_sequence == 0


def test_min_sequential_of_one_trusts_the_first_packet() -> None:
    tracker = SequenceTracker(min_sequential=1)

    assert feed(tracker, [9]) == [True]
    assert (tracker.expected, tracker.received) == (1, 1)


def test_extended_highest_sequence_counts_cycles_across_the_wrap() -> None:
    tracker = SequenceTracker()
    sequences = [(65530 + i) % 65536 for i in range(20)]

    assert feed(tracker, sequences)[1:] == [True] * 19
    assert tracker.cycles == 1
    assert tracker.extended_highest == 65536 + 13
    assert (tracker.expected, tracker.received, tracker.lost) == (19, 19, 0)


def test_lost_counts_the_gaps() -> None:
    tracker = SequenceTracker()

    feed(tracker, [10, 11, 12, 15, 16, 20])

    assert (tracker.expected, tracker.received, tracker.lost) == (10, 5, 5)


def test_a_packet_reordered_across_the_wrap_does_not_add_a_cycle() -> None:
    tracker = SequenceTracker()

    assert feed(tracker, [65533, 65534, 0, 1, 65535, 2]) == [False, True, True, True, True, True]
    assert tracker.cycles == 1
    assert tracker.extended_highest == 65536 + 2
    assert (tracker.expected, tracker.received, tracker.lost) == (5, 5, 0)


def test_duplicates_are_received_but_not_expected_so_lost_can_go_negative() -> None:
    tracker = SequenceTracker()

    feed(tracker, [1, 2, 3, 3])

    assert (tracker.expected, tracker.received, tracker.lost) == (2, 3, -1)


def test_a_single_far_jump_is_ignored_and_a_confirmed_one_restarts_the_source() -> None:
    tracker = SequenceTracker()
    feed(tracker, [1, 2, 3, 4])

    assert feed(tracker, [40000]) == [False]
    assert feed(tracker, [5]) == [True]
    assert (tracker.expected, tracker.received) == (4, 4)
    assert feed(tracker, [50000, 50001, 50002]) == [False, True, True]
    assert tracker.base_sequence == 50001
    assert (tracker.expected, tracker.received, tracker.lost) == (2, 2, 0)


def test_a_packet_max_misorder_behind_is_treated_as_a_jump() -> None:
    tracker = SequenceTracker()
    feed(tracker, list(range(1000, 1200)))

    assert feed(tracker, [1199 - MAX_MISORDER + 1]) == [True]  # reordered: still counted
    assert feed(tracker, [1199 - MAX_MISORDER]) == [False]


def test_jitter_is_zero_for_a_constant_network_delay_even_across_the_timestamp_wrap() -> None:
    tracker = SequenceTracker()

    feed(tracker, list(range(100)), start_timestamp=(1 << 32) - 50 * FRAME)

    assert tracker.jitter == 0.0


def test_jitter_follows_rfc_3550_a8() -> None:
    tracker = SequenceTracker(min_sequential=1)

    tracker.update(0, 0, 1000)
    tracker.update(1, FRAME, 1000 + FRAME + 160)  # 20 ms later in media time, 20 ms late on the wire
    tracker.update(2, 2 * FRAME, 1000 + 2 * FRAME)  # back on time

    # J1 = 0 + (160 - 0) / 16 = 10; J2 = 10 + (160 - 10) / 16 = 19.375
    assert tracker.jitter == pytest.approx(19.375)


def test_jitter_is_unaffected_when_the_timestamp_wraps_but_the_arrival_clock_does_not() -> None:
    tracker = SequenceTracker(min_sequential=1)
    near_wrap = (1 << 32) - FRAME

    tracker.update(0, near_wrap, near_wrap + 8)
    tracker.update(1, 0, near_wrap + FRAME + 8)  # timestamp wrapped to 0, the arrival clock did not

    assert tracker.jitter == 0.0


def test_tracker_rejects_a_sequence_number_out_of_range() -> None:
    with pytest.raises(RtpError, match="sequence number 70000"):
        SequenceTracker().update(70000, 0, 0)


def test_tracker_rejects_min_sequential_below_one() -> None:
    with pytest.raises(ValueError, match="min_sequential"):
        SequenceTracker(min_sequential=0)
