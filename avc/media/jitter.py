"""A jitter buffer for 20 ms G.711 frames that the media clock pulls from once per 20 ms tick.

Frames are held in a fixed ring indexed by their distance from the playout point (the sequence number
of the next frame to play), so `put` and `get` are O(1) and a sequence number wrap (65535 -> 0) is
invisible: positions are always computed with `seq_delta`, never from raw sequence numbers.

Playout starts once `prefetch` frames are buffered (or the first one has waited `prefetch` ticks), and
starts again the same way after every underrun. That is the adaptation: a stream that underruns gets
its cushion back, and a new talkspurt after silence starts with a fresh, short one.

A packet too far from the playout point to belong to the same run (a full ring or more ahead, or more
than MAX_MISORDER behind) resynchronises: the buffer is flushed and playout restarts from that packet,
instead of playing out a long run of losses. A ring that fills up does the same, which bounds the
added latency at `capacity` frames.

Loss versus underrun, the distinction the `lost` counter rests on:
- A missing frame with a LATER frame already buffered is lost: the sender has moved past it, so it
  is due now. `get` returns None for it (the caller conceals it) and counts it in `lost`.
- A missing frame with NOTHING later buffered is an underrun: either the sender is silent (DTX, a
  hold, a dead caller) or the network is stalling, and we cannot tell which yet. `get` returns None
  but counts no loss and keeps the playout point, so a merely delayed frame still plays when it
  comes, and a real gap is counted once a later frame proves it. RTP sequence numbers do not advance
  during DTX, so silence alone never shows up as loss.
"""

from __future__ import annotations

import enum

from avc.media.audio_format import FRAME_SAMPLES
from avc.media.rtp import MAX_MISORDER, SEQUENCE_MOD, TIMESTAMP_MOD, seq_delta, ts_delta


class PutResult(enum.Enum):
    """What `JitterBuffer.put` did with a frame."""

    ACCEPTED = "accepted"  # stored for playout
    DUPLICATE = "duplicate"  # this sequence number is buffered or was played already; dropped
    LATE = "late"  # behind the playout point (its turn has passed); dropped
    RESYNCED = "resynced"  # too far from the playout point to be the same run: buffer flushed, playout restarts here


class JitterBuffer:
    """Reorders, de-duplicates and paces one stream's frames; see the module docstring for the rules.

    Counters (plain ints, cumulative for the life of the buffer):
    `duplicates`, `late`, `reordered` (accepted although a later frame came first), `lost` (None
    returned for a missing frame after playout started), `underruns` (playout ran dry and prefetches
    again; no loss counted) and `resyncs` (a sequence jump restarted playout).
    """

    __slots__ = (
        "_capacity",
        "_count",
        "_floor",
        "_frame_samples",
        "_head",
        "_highest",
        "_highest_timestamp",
        "_next",
        "_payloads",
        "_playing",
        "_prefetch",
        "_sequences",
        "_synchronised",
        "_waited",
        "duplicates",
        "late",
        "lost",
        "reordered",
        "resyncs",
        "underruns",
    )

    def __init__(self, capacity: int = 16, prefetch: int = 2, frame_samples: int = FRAME_SAMPLES) -> None:
        # The ring plus the late window must stay well inside half the sequence space, or "ahead" and
        # "behind" become ambiguous.
        if not 1 <= capacity < SEQUENCE_MOD // 2 - MAX_MISORDER:
            raise ValueError(f"jitter buffer capacity {capacity} out of range [1, {SEQUENCE_MOD // 2 - MAX_MISORDER})")
        if not 0 <= prefetch <= capacity:
            raise ValueError(f"jitter buffer prefetch {prefetch} out of range [0, capacity={capacity}]")
        if frame_samples < 1:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self._capacity = capacity
        self._prefetch = prefetch
        self._frame_samples = frame_samples
        self._payloads: list[bytes | None] = [None] * capacity
        # The sequence number each slot last held; kept after playout so a replayed packet is told apart
        # (DUPLICATE) from one whose turn passed without it (LATE). -1 matches nothing.
        self._sequences: list[int] = [-1] * capacity
        self._synchronised = False  # False until the first frame names the playout point
        self._head = 0  # ring slot of the playout point
        self._next = 0  # sequence number of the playout point
        self._floor: int | None = None  # playout point after the last frame delivered; None: none delivered
        self._highest = 0
        self._highest_timestamp = 0
        self._count = 0  # frames held
        self._playing = False
        self._waited = 0  # ticks spent prefetching with a frame held
        self.duplicates = 0
        self.late = 0
        self.lost = 0
        self.reordered = 0
        self.underruns = 0
        self.resyncs = 0

    @property
    def buffered(self) -> int:
        """Frames held now."""
        return self._count

    @property
    def playing(self) -> bool:
        """False while prefetching (at the start and after an underrun)."""
        return self._playing

    def put(self, sequence: int, timestamp: int, payload: bytes) -> PutResult:
        """Offer one received frame. An empty `payload` is a valid frame (e.g. a DTMF event's slot)."""
        if not 0 <= sequence < SEQUENCE_MOD:
            raise ValueError(f"RTP sequence number {sequence} out of range")
        if not 0 <= timestamp < TIMESTAMP_MOD:
            raise ValueError(f"RTP timestamp {timestamp} out of range")
        if not self._synchronised:
            self._synchronise(sequence, timestamp)
            self._store(self._head, sequence, timestamp, payload)
            return PutResult.ACCEPTED
        offset = seq_delta(sequence, self._next)
        if offset < 0:
            return self._put_behind(offset, sequence, timestamp, payload)
        if offset >= self._capacity:
            return self._resync(sequence, timestamp, payload)
        if self._count == 0 and self._starts_talkspurt(sequence, timestamp):
            # Nothing buffered and the sender's clock ran on past its packets: it was silent. Any
            # sequence gap is the lost tail of the last talkspurt; playing it out now would only delay
            # this one, so playout moves straight here and prefetches a fresh cushion.
            self._head = (self._head + offset) % self._capacity
            self._next = sequence
            self._playing = False
            self._waited = 0
            offset = 0
        slot = (self._head + offset) % self._capacity
        if self._payloads[slot] is not None:
            self.duplicates += 1
            return PutResult.DUPLICATE
        self._store(slot, sequence, timestamp, payload)
        return PutResult.ACCEPTED

    def get(self) -> bytes | None:
        """The next frame in sequence order, or None: a missing frame to conceal, or nothing due yet."""
        if not self._playing:
            if self._count == 0:
                return None
            self._waited += 1
            depth = seq_delta(self._highest, self._next) + 1
            if depth < self._prefetch and self._waited < self._prefetch:
                return None
            self._playing = True
        head = self._head
        payload = self._payloads[head]
        if payload is not None:
            self._payloads[head] = None
            self._count -= 1
            self._advance()
            return payload
        if self._count == 0:
            # Underrun: nothing later is buffered, so nothing is known to be due (module docstring).
            self._playing = False
            self._waited = 0
            self.underruns += 1
            return None
        self.lost += 1
        self._sequences[head] = -1
        self._advance()
        return None

    def _put_behind(self, offset: int, sequence: int, timestamp: int, payload: bytes) -> PutResult:
        if offset < -MAX_MISORDER:
            # Too old to be a late packet of this run: the sender restarted its sequence.
            return self._resync(sequence, timestamp, payload)
        slot = (self._head + offset) % self._capacity
        if offset >= -self._capacity and self._sequences[slot] == sequence:
            self.duplicates += 1
            return PutResult.DUPLICATE
        fits = seq_delta(self._highest, sequence) < self._capacity
        if fits and (self._floor is None or seq_delta(sequence, self._floor) >= 0):
            # No frame at or after this one has been played (playout has not begun, or the playout
            # point skipped ahead into a new talkspurt): move the playout point back to keep it.
            self._head = slot
            self._next = sequence
            self._store(slot, sequence, timestamp, payload)
            return PutResult.ACCEPTED
        self.late += 1
        return PutResult.LATE

    def _starts_talkspurt(self, sequence: int, timestamp: int) -> bool:
        sent_samples = seq_delta(sequence, self._highest) * self._frame_samples
        return ts_delta(timestamp, self._highest_timestamp) > sent_samples

    def _store(self, slot: int, sequence: int, timestamp: int, payload: bytes) -> None:
        self._payloads[slot] = payload
        self._sequences[slot] = sequence
        self._count += 1
        ahead = seq_delta(sequence, self._highest)
        if ahead > 0:
            self._highest = sequence
            self._highest_timestamp = timestamp
        elif ahead < 0:
            self.reordered += 1

    def _advance(self) -> None:
        self._head = (self._head + 1) % self._capacity
        self._next = (self._next + 1) & (SEQUENCE_MOD - 1)
        self._floor = self._next

    def _resync(self, sequence: int, timestamp: int, payload: bytes) -> PutResult:
        self.resyncs += 1
        self._payloads[:] = [None] * self._capacity
        self._sequences[:] = [-1] * self._capacity
        self._count = 0
        self._synchronise(sequence, timestamp)
        self._store(self._head, sequence, timestamp, payload)
        return PutResult.RESYNCED

    def _synchronise(self, sequence: int, timestamp: int) -> None:
        self._synchronised = True
        self._head = 0
        self._next = sequence
        self._floor = None
        self._highest = sequence
        self._highest_timestamp = timestamp
        self._playing = False
        self._waited = 0
