"""DTMF digits as RTP telephone-events (RFC 4733) and in SIP INFO bodies.

A caller's key press reaches the connector either in the media stream, as RTP packets of the
`telephone-event` payload type that the SDP negotiated (the real OpenSIPS captures offer
`a=fmtp:101 0-16`: the sixteen digits and flash), or as a SIP INFO request whose body is
`application/dtmf-relay` or `application/dtmf`. Both become a `DtmfEvent`.

Digits are often PINs and card verification codes: `DtmfEvent` leaves the digit out of its repr, and
no message in this module repeats a digit or a body, so an event or an exception can be logged safely.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from avc.media.audio_format import LINE_RATE

__all__ = [
    "DIGITS",
    "DtmfError",
    "DtmfEvent",
    "Rfc4733Receiver",
    "Rfc4733Sender",
    "decode_event_payload",
    "digit_for_event",
    "dtmf_relay_body",
    "encode_event_payload",
    "event_for_digit",
    "parse_dtmf_info",
    "parse_dtmf_relay",
]

DIGITS = "0123456789*#ABCD"
"""The DTMF digits in RFC 4733 event-code order: the code of a digit is its index."""
SOURCES = ("rfc4733", "sip-info")

MIN_DURATION_MS = 40
"""Shortest digit we send: ITU-T Q.24 receivers must accept 40 ms tones."""
MAX_VOLUME = 63
"""The volume field is the power level in -dBm0, 0..63."""
MAX_DURATION = 0xFFFF
"""Largest duration field, in timestamp units (8.19 s at 8 kHz)."""
END_PACKETS = 3
"""RFC 4733 §2.5.1.4: the final packet of an event is sent three times."""
EVENT_TIMEOUT_MS = 500
"""`expire()` closes an open event this long after the time its last packet reported (ten of the
50 ms update intervals RFC 4733 suggests): its end packets were lost."""
MAX_INFO_BODY = 1024
"""Longest SIP INFO DTMF body parsed; a real one is under 40 bytes."""
MAX_INFO_DURATION_MS = 60_000

# Timestamps of recently ended events; their remaining end packets are repeats to ignore.
_REMEMBERED_ENDS = 8
_TIMESTAMP_MASK = 0xFFFFFFFF
_PAYLOAD = struct.Struct("!BBH")
_END_BIT = 0x80
_VOLUME_MASK = 0x3F


class DtmfError(ValueError):
    """A telephone-event payload or SIP INFO body that is not a valid DTMF digit."""


@dataclass(frozen=True)
class DtmfEvent:
    """One key press. `duration_ms` is 0 when the sender did not state one (SIP INFO)."""

    digit: str = field(repr=False)  # kept out of logs: digits are often PINs
    duration_ms: int
    source: str

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in DIGITS:
            raise ValueError("DtmfEvent digit must be one of " + DIGITS)
        if self.duration_ms < 0:
            raise ValueError(f"DtmfEvent duration must not be negative, got {self.duration_ms}")
        if self.source not in SOURCES:
            raise ValueError(f"DtmfEvent source must be one of {SOURCES}, got {self.source!r}")


def event_for_digit(digit: str) -> int:
    """The RFC 4733 event code of a digit; ValueError if it is not one of `DIGITS`."""
    if len(digit) != 1 or digit not in DIGITS:
        raise ValueError("not a DTMF digit; expected one of " + DIGITS)
    return DIGITS.index(digit)


def digit_for_event(event: int) -> str | None:
    """The digit of an RFC 4733 event code; None for other events (16 is flash)."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


def decode_event_payload(payload: bytes) -> tuple[int, bool, int, int]:
    """(event, end, volume, duration) of a telephone-event payload (RFC 4733 §2.3).

    Bytes after the first four are ignored (padding). DtmfError if there are fewer than four.
    """
    if len(payload) < _PAYLOAD.size:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes; it needs {_PAYLOAD.size}")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return event, bool(flags & _END_BIT), flags & _VOLUME_MASK, duration


def encode_event_payload(event: int, end: bool, volume: int, duration: int) -> bytes:
    """The four payload bytes of one telephone-event packet; the reserved bit is zero."""
    if not 0 <= event <= 0xFF:
        raise ValueError(f"event code must be 0..255, got {event}")
    if not 0 <= volume <= MAX_VOLUME:
        raise ValueError(f"volume must be 0..{MAX_VOLUME} (-dBm0), got {volume}")
    if not 0 <= duration <= MAX_DURATION:
        raise ValueError(f"duration must be 0..{MAX_DURATION} timestamp units, got {duration}")
    return _PAYLOAD.pack(event, (_END_BIT if end else 0) | volume, duration)


@dataclass
class _OpenEvent:
    """The event being received: identified by the RTP timestamp of its (current segment's) start."""

    timestamp: int
    event: int
    duration: int
    earlier_segments: int = 0  # duration of the segments before this one (events over 8 s)
    ended: bool = False


class Rfc4733Receiver:
    """Turns a stream of telephone-event packets into one `DtmfEvent` per key press.

    An event is identified by its RTP timestamp (the key-down time), and reported exactly once: on
    its first packet with the E bit; the usual repeats of the end packet are ignored. Event codes
    outside the sixteen digits (flash is 16) are ignored.

    Lost end packets: when a packet with a new timestamp arrives while an event is still open, the
    open event is over, and `feed()` reports it with the last duration heard. If that new packet is
    itself an end packet, its own report waits for its next repeat (or `expire()`), as `feed()`
    reports at most one event per packet. `expire()` reports an open event whose packets stopped.

    Memory is bounded: one open event and the timestamps of the last few ended ones.
    """

    def __init__(self, clock_rate: int = LINE_RATE) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.clock_rate = clock_rate
        self._open: _OpenEvent | None = None
        self._ended: deque[int] = deque(maxlen=_REMEMBERED_ENDS)

    def feed(self, timestamp: int, payload: bytes, marker: bool) -> DtmfEvent | None:
        """Take one telephone-event packet; returns a digit when one is complete.

        DtmfError (a ValueError) if the payload is shorter than four bytes.
        """
        event, end, _volume, duration = decode_event_payload(payload)
        timestamp &= _TIMESTAMP_MASK
        if timestamp in self._ended:
            if not marker:
                return None  # a repeated end packet, or a late update, of a digit already reported
            # A start packet on a timestamp already used: the sender reused it for a new key press.
            self._ended.remove(timestamp)
        current = self._open
        displaced: DtmfEvent | None = None
        if current is not None and timestamp != current.timestamp:
            if self._continues(current, timestamp, event, marker):
                self._ended.append(current.timestamp)
                current.earlier_segments += current.duration
                current.timestamp, current.duration = timestamp, 0
            else:
                displaced = self._close(current)
                current = None
        if digit_for_event(event) is None:
            return displaced
        if current is None:
            current = self._open = _OpenEvent(timestamp, event, duration)
        else:
            # Updates may arrive reordered: the duration only grows.
            current.duration = max(current.duration, duration)
        if end:
            current.ended = True
        if current.ended and displaced is None:
            return self._close(current)
        return displaced

    def expire(self, now_timestamp: int) -> DtmfEvent | None:
        """Report the open event if no packet extended it for `EVENT_TIMEOUT_MS` before `now_timestamp`.

        `now_timestamp` is on the same RTP clock, e.g. the timestamp of the latest audio packet.
        """
        current = self._open
        if current is None:
            return None
        last_heard = current.timestamp + current.duration
        elapsed = (now_timestamp - last_heard) & _TIMESTAMP_MASK
        if elapsed >= 1 << 31:
            return None  # `now` is before the last update (the difference is negative)
        if elapsed * 1000 < EVENT_TIMEOUT_MS * self.clock_rate:
            return None
        return self._close(current)

    def _continues(self, current: _OpenEvent, timestamp: int, event: int, marker: bool) -> bool:
        # RFC 4733 §2.5.1.3: an event longer than the duration field can hold goes on in a new
        # segment whose timestamp is the old one plus the old duration, without the marker bit.
        return (
            not marker
            and not current.ended
            and event == current.event
            and timestamp == (current.timestamp + current.duration) & _TIMESTAMP_MASK
        )

    def _close(self, current: _OpenEvent) -> DtmfEvent:
        self._open = None
        self._ended.append(current.timestamp)
        samples = current.earlier_segments + current.duration
        # Only digit events are ever opened, so the code indexes DIGITS.
        return DtmfEvent(DIGITS[current.event], samples * 1000 // self.clock_rate, "rfc4733")


class Rfc4733Sender:
    """Plans the telephone-event packets of one digit, one packet per `ptime_ms` (RFC 4733 §2.5.1).

    The RTP layer sends the plan one packet per tick, all with the event's start timestamp.
    """

    def __init__(self, clock_rate: int = LINE_RATE, ptime_ms: int = 20) -> None:
        if clock_rate <= 0 or ptime_ms <= 0:
            raise ValueError(f"clock rate and ptime must be positive, got {clock_rate} Hz, {ptime_ms} ms")
        self.clock_rate = clock_rate
        self.ptime_ms = ptime_ms

    def packets(self, digit: str, duration_ms: int = 100, volume: int = 10) -> list[tuple[bytes, bool]]:
        """(payload, marker) per packet: the first has the marker, the duration field grows by one
        ptime per packet up to the total, which the last three packets (E bit set) repeat."""
        event = event_for_digit(digit)
        if duration_ms < MIN_DURATION_MS:
            raise ValueError(f"DTMF duration must be at least {MIN_DURATION_MS} ms, got {duration_ms}")
        total = duration_ms * self.clock_rate // 1000
        if total > MAX_DURATION:
            limit_ms = MAX_DURATION * 1000 // self.clock_rate
            raise ValueError(f"DTMF duration must be at most {limit_ms} ms at {self.clock_rate} Hz, got {duration_ms}")
        step = self.ptime_ms * self.clock_rate // 1000
        payloads = [encode_event_payload(event, False, volume, elapsed) for elapsed in range(step, total, step)]
        payloads += [encode_event_payload(event, True, volume, total)] * END_PACKETS
        return [(payload, index == 0) for index, payload in enumerate(payloads)]


def _digit_from_signal(value: str) -> str:
    """A dtmf-relay Signal value: the digit itself, or its event code (10 is *, 11 is #)."""
    text = value.strip().upper()
    if len(text) == 1 and text in DIGITS:
        return text
    if text.isascii() and text.isdigit() and int(text) < len(DIGITS):
        return DIGITS[int(text)]
    raise DtmfError("Signal is not a DTMF digit")


def parse_dtmf_relay(body: str) -> DtmfEvent:
    """Parse an `application/dtmf-relay` body ("Signal=5\\r\\nDuration=160\\r\\n").

    Tolerates LF line ends, spaces around names and values, any case, and unknown lines. Duration
    is in milliseconds; an event without one has duration 0. DtmfError without a valid Signal.
    """
    if len(body) > MAX_INFO_BODY:
        raise DtmfError(f"dtmf-relay body of {len(body)} characters; the limit is {MAX_INFO_BODY}")
    fields: dict[str, str] = {}
    for line in body.splitlines():
        name, sep, value = line.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("signal", "duration"):
            continue
        if name in fields:
            raise DtmfError(f"dtmf-relay body has more than one {name.capitalize()} line")
        fields[name] = value
    if "signal" not in fields:
        raise DtmfError("dtmf-relay body has no Signal line")
    digit = _digit_from_signal(fields["signal"])
    duration_ms = 0
    if "duration" in fields:
        text = fields["duration"].strip()
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_INFO_DURATION_MS:
            raise DtmfError(f"dtmf-relay Duration must be 0..{MAX_INFO_DURATION_MS} milliseconds")
        duration_ms = int(text)
    return DtmfEvent(digit, duration_ms, "sip-info")


def parse_dtmf_info(content_type: str, body: str) -> DtmfEvent:
    """Parse the body of a SIP INFO carrying DTMF: `application/dtmf-relay` or `application/dtmf`.

    DtmfError for any other Content-Type or an invalid body.
    """
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "application/dtmf-relay":
        return parse_dtmf_relay(body)
    if media_type == "application/dtmf":
        if len(body) > MAX_INFO_BODY:
            raise DtmfError(f"application/dtmf body of {len(body)} characters; the limit is {MAX_INFO_BODY}")
        return DtmfEvent(_digit_from_signal(body), 0, "sip-info")
    raise DtmfError(f"SIP INFO Content-Type {media_type[:64]!r} does not carry DTMF")


def dtmf_relay_body(digit: str, duration_ms: int) -> str:
    """The `application/dtmf-relay` body that sends `digit` in a SIP INFO."""
    event_for_digit(digit)
    if not 0 < duration_ms <= MAX_INFO_DURATION_MS:
        raise ValueError(f"DTMF duration must be 1..{MAX_INFO_DURATION_MS} ms, got {duration_ms}")
    return f"Signal={digit}\r\nDuration={duration_ms}\r\n"
