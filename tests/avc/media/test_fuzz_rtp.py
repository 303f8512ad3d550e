"""Property-based fuzzing of the media decoders: RTP packets (avc.media.rtp) and RFC 4733 / SIP INFO DTMF
(avc.media.dtmf).

Contract: any datagram either parses into an `RtpPacket` or raises `RtpError`, and a parsed packet serialises
and parses back to itself; any telephone-event payload or packet sequence gives digits, nothing, or `DtmfError`
(never another exception), and a sender's own packets, however duplicated, come back as exactly its digit; any
SIP INFO body gives a digit or `DtmfError`. The connector neither sends nor reads RTCP (avc.media.stream drops
payload types 72-76 multiplexed on the RTP port), so RTCP datagrams are fuzzed as RTP input only.
Seeds are packets of RtpSender/Rfc4733Sender, mutated. `AVC_FUZZ_EXAMPLES` (default 300) sets the examples per
test; runs are derandomized. The settings and the shared mutators live in tests/support/fuzz.py.
"""

from __future__ import annotations

from hypothesis import event, example, given
from hypothesis import strategies as st

from avc.media.dtmf import (
    DIGITS,
    MAX_INFO_BODY,
    DtmfError,
    DtmfEvent,
    Rfc4733Receiver,
    Rfc4733Sender,
    decode_event_payload,
    parse_dtmf_info,
    parse_dtmf_relay,
)
from avc.media.rtp import HEADER_SIZE, RtpError, RtpExtension, RtpPacket, RtpSender, SequenceTracker
from tests.support.fuzz import FUZZ, byte_mutants, nasty_text


def _seed_packets() -> list[bytes]:
    sender = RtpSender(ssrc=0x1234ABCD, sequence=65534, timestamp=2**32 - 160)
    packets = [sender.packet(bytes(range(160)), 0, 160, marker=True), sender.packet(b"\xd5" * 160, 8, 160)]
    for payload, marker in Rfc4733Sender().packets("5", 120):
        packets.append(sender.event_packet(payload, 101, 4000, marker))
    full = RtpPacket(
        96, 7, 8, 9, b"payload", True, (1, 2, 3), RtpExtension(0xBEDE, b"\x10\x20\x30\x40" * 2), padding=4
    ).serialize()
    # An RTCP sender report and receiver report, as a peer multiplexing RTCP on the RTP port sends them.
    rtcp = [bytes.fromhex("80c8000600000001") + bytes(20), bytes.fromhex("81c90007deadbeef") + bytes(24)]
    return [*packets, full, *rtcp]


SEEDS = _seed_packets()


@st.composite
def packet_mutants(draw: st.DrawFn) -> bytes:
    """A seed packet with byte-level mutations (`byte_mutants`), and often a new first or last octet."""
    data = bytearray(draw(byte_mutants(SEEDS)))
    # The first octet (version, padding, extension, CSRC count) and the last (pad count) steer the parser.
    if data and draw(st.booleans()):
        data[0] = draw(st.integers(0, 255))
    if data and draw(st.booleans()):
        data[-1] = draw(st.integers(0, 255))
    return bytes(data)


hostile_datagrams = (
    packet_mutants()
    | st.binary(max_size=80)
    | st.builds(lambda first, rest: bytes([first]) + rest, st.integers(0x80, 0xBF), st.binary(max_size=80))
)


@FUZZ
@given(hostile_datagrams)
@example(b"\x8f" + bytes(11))  # 15 CSRCs announced, none present
@example(b"\x90" + bytes(11) + b"\x00\x00\xff\xff")  # extension of 65535 words
@example(b"\xa0" + bytes(11))  # padding bit with the pad count 0
@example(b"\xa0" + bytes(10) + b"\xff")  # pad count beyond the packet
@example(b"\xb0" + bytes(11) + b"\x00\x00\x00\x00\x01")  # extension then padding of exactly the pad octet
def test_any_datagram_parses_or_raises_rtp_error(datagram: bytes) -> None:
    try:
        packet = RtpPacket.parse(datagram)
    except RtpError:
        event("refused: RtpError")
        return
    event("parsed")
    assert len(datagram) >= HEADER_SIZE
    assert 0 <= packet.payload_type <= 127
    again = RtpPacket.parse(packet.serialize())
    assert again == packet


@FUZZ
@given(
    st.integers(0, 127),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=200),
    st.booleans(),
    st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    st.none()
    | st.builds(RtpExtension, st.integers(0, 2**16 - 1), st.binary(max_size=32).map(lambda b: b[: len(b) // 4 * 4])),
    st.integers(0, 255),
)
def test_valid_packets_round_trip(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrc: tuple[int, ...],
    extension: RtpExtension | None,
    padding: int,
) -> None:
    packet = RtpPacket(payload_type, sequence, timestamp, ssrc, payload, marker, csrc, extension, padding)
    assert RtpPacket.parse(packet.serialize()) == packet


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(-(2**33), 2**33), st.integers(-(2**33), 2**33))))
def test_sequence_tracker_accepts_any_in_range_sequence(updates: list[tuple[int, int, int]]) -> None:
    tracker = SequenceTracker()
    for sequence, timestamp, arrival in updates:
        tracker.update(sequence, timestamp, arrival)
    assert tracker.lost == tracker.expected - tracker.received
    assert tracker.jitter >= 0


# --- RFC 4733 telephone-events -------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=12))
def test_any_event_payload_decodes_or_raises_dtmf_error(payload: bytes) -> None:
    try:
        code, _end, volume, duration = decode_event_payload(payload)
    except DtmfError:
        assert len(payload) < 4
        return
    assert 0 <= code <= 255 and 0 <= volume <= 63 and 0 <= duration <= 0xFFFF


event_payloads = st.binary(max_size=8) | st.builds(
    lambda code, flags, duration: bytes([code, flags]) + duration.to_bytes(2, "big"),
    st.integers(0, 20) | st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
)
timestamps = st.integers(0, 8) | st.integers(0, 2**32 - 1) | st.integers(-(2**40), 2**40)


@FUZZ
@given(st.lists(st.tuples(timestamps, event_payloads, st.booleans()), max_size=40), timestamps)
@example([(0, b"\x05\x80\x00\x00", True), (0, b"\x05\x80\x00\x00", True)], 0)
@example([(2**32 - 1, b"\x05\x00\xff\xff", True), (0xFFFE, b"\x05\x00\x00\x10", False)], 2**32 - 1)
def test_any_event_packets_give_digits_nothing_or_dtmf_error(packets: list[tuple[int, bytes, bool]], now: int) -> None:
    receiver = Rfc4733Receiver()
    reported: list[DtmfEvent] = []
    for timestamp, payload, marker in packets:
        try:
            digit = receiver.feed(timestamp, payload, marker)
        except DtmfError:
            assert len(payload) < 4
            continue
        if digit is not None:
            reported.append(digit)
    last = receiver.expire(now)
    if last is not None:
        reported.append(last)
    event(f"{min(len(reported), 3)} digit(s) reported")
    assert all(d.digit in DIGITS and d.duration_ms >= 0 and d.source == "rfc4733" for d in reported)


@FUZZ
@given(
    st.sampled_from(DIGITS),
    st.integers(40, 8000),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 40), max_size=6),
)
def test_a_senders_digit_comes_back_once_even_with_repeats(
    digit: str, duration_ms: int, start: int, repeats: list[int]
) -> None:
    fed = Rfc4733Sender().packets(digit, duration_ms)
    for index in repeats:
        # A network duplicate arrives next to its original (reordering is the xfail case below).
        position = min(index, len(fed) - 1)
        fed.insert(position, fed[position])
    receiver = Rfc4733Receiver()
    reported = [d for payload, marker in fed if (d := receiver.feed(start, payload, marker)) is not None]
    assert [d.digit for d in reported] == [digit]
    assert reported[0].duration_ms == duration_ms


def test_a_start_packet_on_an_ended_timestamp_is_a_new_press_for_the_receiver() -> None:
    # By design (a sender may reuse a timestamp for the next press); what the network duplicates is dropped before
    # the receiver by its RTP sequence number (RtpStream, tests/avc/test_connector.py).
    (start_packet, end_packet, *_) = Rfc4733Sender().packets("0", 40)  # one 20 ms update, then the end x3
    receiver = Rfc4733Receiver()
    fed = [start_packet, end_packet, start_packet, end_packet, end_packet, end_packet]
    reported = [d for payload, marker in fed if (d := receiver.feed(0, payload, marker)) is not None]
    assert [d.digit for d in reported] == ["0", "0"]


# --- SIP INFO DTMF bodies -------------------------------------------------------------------------------------

hostile_text = nasty_text(["5", "#", "*", "10", "16", "0" * 4000, "\u0665", "\uff15", " 1 ", "a"], max_size=20)
relay_names = st.sampled_from(["Signal", "signal", "Duration", " DURATION ", "Other", ""])
relay_values = st.sampled_from(["5", "#", "d", "11", "160", "0", "60000", "60001", "-1", "1e3", "99999999999999999999"])
relay_lines = st.builds(
    "{}{}{}".format,
    st.one_of(relay_names, relay_names, relay_names, hostile_text),
    st.sampled_from(["=", "=", " = ", ":", ""]),
    st.one_of(relay_values, relay_values, relay_values, hostile_text),
)
relay_bodies = st.builds(
    lambda lines, separator: separator.join(lines),
    st.lists(relay_lines, max_size=5),
    st.sampled_from(["\r\n", "\n", "\r", "\u2028", "\x85"]),
)


@FUZZ
@given(
    st.sampled_from(["application/dtmf-relay", "APPLICATION/DTMF-RELAY; x=y", "application/dtmf", "text/plain", ""])
    | hostile_text,
    relay_bodies | hostile_text | st.text(max_size=MAX_INFO_BODY + 10),
)
@example("application/dtmf-relay", "Signal=" + "0" * 5000)
@example("application/dtmf-relay", "Signal=5\r\nDuration=" + "9" * 5000)
@example("application/dtmf", "\u0665")
def test_any_info_body_gives_a_digit_or_dtmf_error(content_type: str, body: str) -> None:
    try:
        parsed = parse_dtmf_info(content_type, body)
    except DtmfError:
        event("refused: DtmfError")
        return
    event("digit")
    assert parsed.digit in DIGITS and parsed.source == "sip-info"


@FUZZ
@given(st.sampled_from(DIGITS), st.integers(0, 60_000), st.sampled_from(["\r\n", "\n"]))
def test_relay_bodies_round_trip(digit: str, duration_ms: int, separator: str) -> None:
    parsed = parse_dtmf_relay(f"Signal={digit}{separator}Duration={duration_ms}{separator}")
    assert (parsed.digit, parsed.duration_ms) == (digit, duration_ms)
