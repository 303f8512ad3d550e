"""RTP packets (RFC 3550): parsing, serialising, the per-stream sender and receive statistics.

Sequence numbers are 16-bit and timestamps 32-bit; both wrap, and a G.711 stream at 50 packets/s
wraps its sequence number every 22 minutes. Every comparison here therefore goes through
`seq_delta`/`ts_delta` (signed shortest distance modulo 2^16 / 2^32), never through `<` on raw values.

The per-packet paths (`RtpPacket.parse`, `RtpSender.packet`) use precompiled `struct.Struct`s and
create no objects beyond the packet itself: one process carries 150 calls, 15,000 packets/s, on one core.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER_SIZE = 12
SEQUENCE_MOD = 1 << 16
TIMESTAMP_MOD = 1 << 32
MAX_CSRC = 15
MAX_PAYLOAD_TYPE = 127

# RFC 3550 Appendix A.1: a forward jump below MAX_DROPOUT is a gap, one within MAX_MISORDER behind
# is a reordered or duplicate packet, anything else needs MIN_SEQUENTIAL packets in a row to be believed.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2

_SEQUENCE_MASK = SEQUENCE_MOD - 1
_TIMESTAMP_MASK = TIMESTAMP_MOD - 1
_HALF_SEQUENCE = SEQUENCE_MOD >> 1
_HALF_TIMESTAMP = TIMESTAMP_MOD >> 1

_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_EXTENSION_HEADER = struct.Struct("!HH")  # profile-defined value, length in 32-bit words
_CSRC_LISTS = tuple(struct.Struct(f"!{count}I") for count in range(MAX_CSRC + 1))

_VERSION_BITS = RTP_VERSION << 6
_PADDING_BIT = 0x20
_EXTENSION_BIT = 0x10
_CSRC_COUNT_MASK = 0x0F
_MARKER_BIT = 0x80
_PAYLOAD_TYPE_MASK = 0x7F


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet, or packet fields that cannot be encoded."""


def seq_delta(a: int, b: int) -> int:
    """`a - b` for 16-bit sequence numbers: positive when `a` is newer, in [-32768, 32767]."""
    return ((a - b + _HALF_SEQUENCE) & _SEQUENCE_MASK) - _HALF_SEQUENCE


def ts_delta(a: int, b: int) -> int:
    """`a - b` for 32-bit RTP timestamps: positive when `a` is later, in [-2^31, 2^31 - 1]."""
    return ((a - b + _HALF_TIMESTAMP) & _TIMESTAMP_MASK) - _HALF_TIMESTAMP


def _check_field(name: str, value: int, limit: int) -> None:
    if not 0 <= value < limit:
        raise RtpError(f"RTP {name} {value} out of range [0, {limit - 1}]")


@dataclass(slots=True, frozen=True)
class RtpExtension:
    """The RFC 3550 5.3.1 header extension: a 16-bit profile value and data in whole 32-bit words."""

    profile: int
    data: bytes


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. `padding` is the total number of padding octets, count octet included (0: none).

    Padding octets other than the count are not kept: `serialize` writes zeros, as RFC 3550 senders do,
    so a packet round-trips byte for byte whenever its padding was zero-filled.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Decode one datagram; raises `RtpError` naming the first thing wrong with it."""
        size = len(data)
        if size < HEADER_SIZE:
            raise RtpError(f"RTP packet truncated: {size} bytes, the fixed header needs {HEADER_SIZE}")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version} is not supported (expected {RTP_VERSION})")
        offset = HEADER_SIZE

        csrc: tuple[int, ...] = ()
        csrc_count = first & _CSRC_COUNT_MASK
        if csrc_count:
            end = offset + 4 * csrc_count
            if end > size:
                raise RtpError(f"RTP packet truncated: {csrc_count} CSRCs need {end} bytes, got {size}")
            csrc = _CSRC_LISTS[csrc_count].unpack_from(data, offset)
            offset = end

        extension = None
        if first & _EXTENSION_BIT:
            if offset + _EXTENSION_HEADER.size > size:
                raise RtpError(f"RTP packet truncated: header extension starts at byte {offset}, got {size}")
            profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            start = offset + _EXTENSION_HEADER.size
            end = start + 4 * words
            if end > size:
                raise RtpError(f"RTP header extension of {words} words runs past the end ({end} > {size} bytes)")
            extension = RtpExtension(profile, data[start:end])
            offset = end

        padding = 0
        end = size
        if first & _PADDING_BIT:
            padding = data[-1]
            if padding == 0:
                raise RtpError("RTP padding bit set but the pad count is 0 (it must count itself)")
            if padding > size - offset:
                raise RtpError(f"RTP pad count {padding} exceeds the {size - offset} bytes after the header")
            end = size - padding

        return cls(
            second & _PAYLOAD_TYPE_MASK,
            sequence,
            timestamp,
            ssrc,
            data[offset:end],
            bool(second & _MARKER_BIT),
            csrc,
            extension,
            padding,
        )

    def serialize(self) -> bytes:
        """Encode the packet; raises `RtpError` for a field that does not fit its wire format."""
        self._validate()
        first = _VERSION_BITS | len(self.csrc)
        if self.padding:
            first |= _PADDING_BIT
        if self.extension is not None:
            first |= _EXTENSION_BIT
        second = self.payload_type | (_MARKER_BIT if self.marker else 0)
        parts = [_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(_CSRC_LISTS[len(self.csrc)].pack(*self.csrc))
        if self.extension is not None:
            parts.append(_EXTENSION_HEADER.pack(self.extension.profile, len(self.extension.data) // 4))
            parts.append(self.extension.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)

    def _validate(self) -> None:
        _check_field("payload type", self.payload_type, MAX_PAYLOAD_TYPE + 1)
        _check_field("sequence number", self.sequence, SEQUENCE_MOD)
        _check_field("timestamp", self.timestamp, TIMESTAMP_MOD)
        _check_field("SSRC", self.ssrc, TIMESTAMP_MOD)
        _check_field("padding", self.padding, 256)
        if len(self.csrc) > MAX_CSRC:
            raise RtpError(f"RTP packet carries {len(self.csrc)} CSRCs, at most {MAX_CSRC} fit")
        for source in self.csrc:
            _check_field("CSRC", source, TIMESTAMP_MOD)
        if self.extension is not None:
            _check_field("extension profile", self.extension.profile, SEQUENCE_MOD)
            length = len(self.extension.data)
            if length % 4 or length // 4 >= SEQUENCE_MOD:
                raise RtpError(f"RTP header extension data must be whole 32-bit words (< 2^16 of them), got {length}")


class RtpSender:
    """Header state of one outbound stream: SSRC, next sequence number and next timestamp.

    Initial values are random when not given, as RFC 3550 5.1 asks, so that a known-plaintext attack
    on SRTP or a stream confused with a previous one is unlikely.
    """

    __slots__ = ("_sequence", "_ssrc", "_timestamp")

    def __init__(self, ssrc: int | None = None, sequence: int | None = None, timestamp: int | None = None) -> None:
        self._ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self._sequence = secrets.randbits(16) if sequence is None else sequence
        self._timestamp = secrets.randbits(32) if timestamp is None else timestamp
        _check_field("SSRC", self._ssrc, TIMESTAMP_MOD)
        _check_field("sequence number", self._sequence, SEQUENCE_MOD)
        _check_field("timestamp", self._timestamp, TIMESTAMP_MOD)

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    @property
    def timestamp(self) -> int:
        """The media timestamp the next `packet` will carry."""
        return self._timestamp

    def packet(self, payload: bytes, payload_type: int, samples: int, marker: bool = False) -> bytes:
        """A packet for `payload` at the current timestamp; then sequence += 1 and timestamp += `samples`."""
        if not 0 <= payload_type <= MAX_PAYLOAD_TYPE:
            raise RtpError(f"RTP payload type {payload_type} out of range [0, {MAX_PAYLOAD_TYPE}]")
        if samples < 0:
            raise RtpError(f"RTP timestamp cannot move back ({samples} samples)")
        header = _HEADER.pack(
            _VERSION_BITS,
            (payload_type | _MARKER_BIT) if marker else payload_type,
            self._sequence,
            self._timestamp,
            self._ssrc,
        )
        self._sequence = (self._sequence + 1) & _SEQUENCE_MASK
        self._timestamp = (self._timestamp + samples) & _TIMESTAMP_MASK
        return header + payload

    def event_packet(self, payload: bytes, payload_type: int, event_timestamp: int, marker: bool) -> bytes:
        """An RFC 4733 event packet: it takes the next sequence number but carries the event's start
        timestamp (every packet of one event repeats it) and leaves the media timestamp alone; the
        caller keeps that running with `advance` for the time the event covers."""
        if not 0 <= payload_type <= MAX_PAYLOAD_TYPE:
            raise RtpError(f"RTP payload type {payload_type} out of range [0, {MAX_PAYLOAD_TYPE}]")
        _check_field("event timestamp", event_timestamp, TIMESTAMP_MOD)
        header = _HEADER.pack(
            _VERSION_BITS,
            (payload_type | _MARKER_BIT) if marker else payload_type,
            self._sequence,
            event_timestamp,
            self._ssrc,
        )
        self._sequence = (self._sequence + 1) & _SEQUENCE_MASK
        return header + payload

    def advance(self, samples: int) -> None:
        """Move the media timestamp on without sending, e.g. over a period of no media."""
        if samples < 0:
            raise RtpError(f"RTP timestamp cannot move back ({samples} samples)")
        self._timestamp = (self._timestamp + samples) & _TIMESTAMP_MASK


class SequenceTracker:
    """Receive statistics of one source (one SSRC), after RFC 3550 Appendix A.1, A.3 and A.8.

    `update` is called for every packet of the source; it returns False for a packet the source is not
    yet trusted with (probation of a new source, or a single packet far from the expected sequence,
    which becomes the new sequence only if the next packet follows it). When such a jump is confirmed
    the source counts as restarted and `expected`, `received` and `lost` start again from zero, as in
    A.1. A new SSRC needs a new tracker.

    `lost` is `expected - received` (A.3), so duplicates can make it negative.

    Unlike the A.1 sample code, the probation check `seq == max_seq + 1` is done modulo 2^16: in C the
    `u_int16` operand is promoted to int, so a new source whose first packets straddle 65535 -> 0 never
    leaves probation there.
    """

    __slots__ = (
        "_bad_sequence",
        "_base_sequence",
        "_cycles",
        "_jitter",
        "_max_sequence",
        "_min_sequential",
        "_probation",
        "_received",
        "_started",
        "_transit",
    )

    def __init__(self, min_sequential: int = MIN_SEQUENTIAL) -> None:
        if min_sequential < 1:
            raise ValueError(f"min_sequential must be at least 1, got {min_sequential}")
        self._min_sequential = min_sequential
        self._started = False
        self._probation = min_sequential
        self._max_sequence = 0
        self._base_sequence = 0
        self._bad_sequence = SEQUENCE_MOD + 1  # matches no 16-bit sequence number
        self._cycles = 0  # wraps seen, times 2^16
        self._received = 0
        self._transit: int | None = None
        self._jitter = 0.0

    def update(self, sequence: int, timestamp: int, arrival: int) -> bool:
        """Account for one packet; `arrival` is its arrival time in timestamp units (any origin).

        Returns True when the packet is valid (counted in `received` and in the jitter estimate).
        """
        _check_field("sequence number", sequence, SEQUENCE_MOD)
        if not self._started:
            self._started = True
            self._restart(sequence)
            self._max_sequence = (sequence - 1) & _SEQUENCE_MASK
            self._probation = self._min_sequential

        if self._probation:
            if sequence == (self._max_sequence + 1) & _SEQUENCE_MASK:
                self._probation -= 1
                self._max_sequence = sequence
                if self._probation == 0:
                    self._restart(sequence)
                    return self._count(timestamp, arrival)
            else:
                self._probation = self._min_sequential - 1
                self._max_sequence = sequence
            return False

        udelta = (sequence - self._max_sequence) & _SEQUENCE_MASK
        if udelta < MAX_DROPOUT:
            if sequence < self._max_sequence:
                self._cycles += SEQUENCE_MOD
            self._max_sequence = sequence
        elif udelta <= SEQUENCE_MOD - MAX_MISORDER:
            if sequence != self._bad_sequence:
                self._bad_sequence = (sequence + 1) & _SEQUENCE_MASK
                return False
            # Two packets in a row after a big jump: the source restarted (e.g. its sender was replaced).
            self._restart(sequence)
        # else: a duplicate or a packet reordered within MAX_MISORDER; counted, max unchanged.
        return self._count(timestamp, arrival)

    def _restart(self, sequence: int) -> None:
        """A.1 `init_seq`; also forgets the last transit time, which a restarted clock makes meaningless."""
        self._base_sequence = sequence
        self._max_sequence = sequence
        self._bad_sequence = SEQUENCE_MOD + 1
        self._cycles = 0
        self._received = 0
        self._transit = None

    def _count(self, timestamp: int, arrival: int) -> bool:
        self._received += 1
        transit = (arrival - timestamp) & _TIMESTAMP_MASK
        if self._transit is not None:
            # A.8: J += (|D| - J) / 16, with D the change in transit time, taken modulo 2^32.
            difference = abs(ts_delta(transit, self._transit))
            self._jitter += (difference - self._jitter) / 16.0
        self._transit = transit
        return True

    @property
    def in_probation(self) -> bool:
        """True until the source has sent `min_sequential` packets in sequence."""
        return self._probation > 0

    @property
    def base_sequence(self) -> int:
        """The first valid sequence number of the source (since its last restart)."""
        return self._base_sequence

    @property
    def cycles(self) -> int:
        """How many times the sequence number wrapped 65535 -> 0."""
        return self._cycles >> 16

    @property
    def extended_highest(self) -> int:
        """The highest sequence number received, extended with the wrap count (RFC 3550 6.4.1)."""
        return self._cycles + self._max_sequence

    @property
    def expected(self) -> int:
        if self.in_probation:
            return 0
        return self.extended_highest - self._base_sequence + 1

    @property
    def received(self) -> int:
        return self._received

    @property
    def lost(self) -> int:
        """Cumulative packets lost: expected minus received (negative when duplicates outnumber losses)."""
        return self.expected - self._received

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in timestamp units (A.8); RTCP reports it truncated to an integer."""
        return self._jitter
