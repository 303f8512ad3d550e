"""The test caller's media side: RTP peers on loopback, written independently of `avc/rtp.py`.

A test (or the media benchmark) plays the caller's phone with these: it sends G.711 audio and RFC 4733 DTMF to the
connector and records every packet that comes back. Headers are packed and parsed here with `struct`, and G.711
mu-law uses the classic reference algorithm, so a bug in the connector's RTP or codec code cannot hide behind
shared code.

Pacing. Peers send from a shared ticker (`RtpPeerGroup`) rather than one task per peer: a benchmark with 250 calls
then costs 50 loop wake-ups a second instead of 12,500. Tick n is scheduled at `origin + n * period` on the loop's
clock (`time.monotonic()`), never at `now + period`, so scheduling delays do not accumulate into drift. When the
loop falls more than a whole period behind, the missed ticks are skipped rather than replayed in a burst, as a
real phone whose sound card stalled would do, and counted. RTP timestamps follow the tick index, so they stay
locked to real time across skips and silences.

Impairment (optional, off by default). `peer.impair(Impairment(loss=..., jitter_ms=..., reorder=..., duplicate=...,
seed=...))` puts what the peer sends through a seeded bad line: packets dropped, delayed by a random jitter (which
reorders them), swapped with their successor and duplicated, as a lossy network would. A peer never impaired sends
exactly as before.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

RTP_VERSION = 2
RTP_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
DTMF_PAYLOAD = struct.Struct("!BBH")  # event, E/R/volume, duration (RFC 4733 section 2.3)
DTMF_EVENTS = {digit: code for code, digit in enumerate("0123456789*#ABCD")}
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
ULAW_SILENCE_FRAME = b"\xff" * FRAME_SAMPLES

PayloadSource = Callable[[int], bytes | None]
"""Payload of the n-th packet since `start_sending` (n counts packet slots, skipped ones included); None stops."""


# -- G.711 mu-law ---------------------------------------------------------------------------------------------------

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # of the 14-bit magnitude


def linear_to_ulaw(sample: int) -> int:
    """One 16-bit linear sample to its mu-law byte: Sun's reference g711.c, the encoder CPython's audioop used."""
    sample = max(-32768, min(32767, sample)) >> 2  # 14 bits, rounding towards minus infinity
    mask = 0x7F if sample < 0 else 0xFF
    magnitude = min(abs(sample), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = max(0, magnitude.bit_length() - 6)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask


def ulaw_to_linear(code: int) -> int:
    """One mu-law byte back to a 16-bit linear sample."""
    code = ~code & 0xFF
    segment = (code >> 4) & 0x07
    magnitude = ((((code & 0x0F) << 3) + _ULAW_BIAS) << segment) - _ULAW_BIAS
    return -magnitude if code & 0x80 else magnitude


def _encode_table() -> npt.NDArray[np.uint8]:
    """`linear_to_ulaw` for every int16 value, vectorised (checked against the scalar one in the tests)."""
    samples = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.maximum(0, np.floor(np.log2(magnitude)).astype(np.int32) - 5)
    mantissa = (magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F
    codes = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa) ^ mask
    table: npt.NDArray[np.uint8] = codes.astype(np.uint8)
    return table


_ULAW_ENCODE = _encode_table()
_ULAW_DECODE = np.array([ulaw_to_linear(code) for code in range(256)], dtype=np.int16)


def ulaw_encode(samples: Sequence[int] | npt.NDArray[np.integer]) -> bytes:
    """16-bit linear samples (clipped to int16) to mu-law bytes."""
    linear = np.clip(np.asarray(samples, dtype=np.int64), -32768, 32767)
    return bytes(_ULAW_ENCODE[linear + 32768])


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """Mu-law bytes to 16-bit linear samples."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def sine_payloads(
    freq: float, amplitude: int = 8000, *, sample_rate: int = 8000, frame_samples: int = FRAME_SAMPLES
) -> Callable[[int], bytes]:
    """A payload source of consecutive mu-law frames of one continuous sine (frame n starts at sample n * 160).

    For a whole-Hertz tone the frames repeat (1 kHz: every frame; 440 Hz: every 5), so they are computed once:
    hundreds of peers can share one source without spending the loop's time on trigonometry.
    """

    def compute(index: int) -> bytes:
        start = index * frame_samples
        t = np.arange(start, start + frame_samples, dtype=np.float64) / sample_rate
        return ulaw_encode(np.round(amplitude * np.sin(2 * math.pi * freq * t)).astype(np.int64))

    if float(freq).is_integer():
        cycle = sample_rate // math.gcd(frame_samples * int(freq), sample_rate)
        frames = [compute(index) for index in range(cycle)]
        return lambda index: frames[index % cycle]
    return compute


def silence_payloads(frame_samples: int = FRAME_SAMPLES) -> Callable[[int], bytes]:
    """A payload source of mu-law digital silence."""
    silence = b"\xff" * frame_samples
    return lambda index: silence


# -- RTP packets -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One received RTP packet; `arrival` is `time.monotonic()` when the peer read it."""

    arrival: float
    source: tuple[str, int]
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class DtmfPayload:
    """An RFC 4733 telephone-event payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str:
        return "0123456789*#ABCD"[self.event] if self.event < 16 else f"event {self.event}"


def build_rtp(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    """An RTP packet without CSRCs, extension or padding."""
    second = (0x80 if marker else 0) | (payload_type & 0x7F)
    return RTP_HEADER.pack(RTP_VERSION << 6, second, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


def parse_rtp(data: bytes) -> tuple[int, int, int, int, bool, bytes]:
    """(payload type, sequence, timestamp, SSRC, marker, payload); ValueError when `data` is no valid RTP."""
    if len(data) < RTP_HEADER.size:
        raise ValueError(f"{len(data)} bytes: shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise ValueError(f"RTP version {first >> 6}")
    offset = RTP_HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(data) < offset + 4:
            raise ValueError("truncated header extension")
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20:
        if end == 0 or data[-1] == 0 or data[-1] > end - offset:
            raise ValueError("bad padding length")
        end -= data[-1]
    if offset > end:
        raise ValueError("header longer than the packet")
    return second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80), data[offset:end]


def parse_dtmf(payload: bytes) -> DtmfPayload:
    """An RFC 4733 payload; ValueError when it is not 4 bytes."""
    if len(payload) != DTMF_PAYLOAD.size:
        raise ValueError(f"telephone-event payload of {len(payload)} bytes")
    event, flags, duration = DTMF_PAYLOAD.unpack(payload)
    return DtmfPayload(event, bool(flags & 0x80), flags & 0x3F, duration)


# -- an impaired line (optional) -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Impairment:
    """A bad network between this peer and its remote, applied to what the peer sends; seeded, so a run repeats.

    Each packet the peer builds goes through, in this order:
    - loss: dropped with probability `loss`;
    - reordering: with probability `reorder` held back and sent right after the next surviving packet (an adjacent
      swap; the packet that releases a held one is never held itself, and a held packet with no successor within
      three packet times, at least 100 ms, goes out on its own);
    - duplication: with probability `duplicate` sent twice;
    - jitter: every datagram (a copy included) leaves after its own uniform random delay of 0..`jitter_ms`, so
      packets overtake each other whenever the jitter exceeds the packet time.
    RTP sequence numbers and timestamps are those of the unimpaired stream: the receiver sees exactly what a real
    network does to a stream.
    """

    loss: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.jitter_ms <= 10_000:
            raise ValueError(f"jitter_ms must be in [0, 10000], got {self.jitter_ms}")


@dataclass(slots=True)
class ImpairmentStats:
    """What the impairment did, counted at the sender; `schedule` is one (sequence, due time) per datagram handed
    to the delay line, `due` on the loop's clock (`time.monotonic()`, as `RtpPacket.arrival`)."""

    offered: int = 0  # packets the peer built
    dropped: int = 0
    swapped: int = 0  # packets held back behind their successor
    duplicated: int = 0  # extra copies
    datagrams: int = 0  # handed to the socket: offered - dropped + duplicated, once all are out
    schedule: list[tuple[int, float]] = field(default_factory=list)


class _ImpairedLine:
    """The delay line behind one peer's `_send`; see `Impairment`."""

    def __init__(self, impairment: Impairment, emit: Callable[[bytes], None], hold_s: Callable[[], float]) -> None:
        self.impairment = impairment
        self.stats = ImpairmentStats()
        self._rng = random.Random(impairment.seed)
        self._emit = emit
        self._hold_s = hold_s
        self._held: tuple[int, bytes] | None = None
        self._held_timer: asyncio.TimerHandle | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._timer_ids = 0

    def offer(self, sequence: int, packet: bytes) -> None:
        spec, stats = self.impairment, self.stats
        stats.offered += 1
        if spec.loss and self._rng.random() < spec.loss:
            stats.dropped += 1
            return
        if self._held is None and spec.reorder and self._rng.random() < spec.reorder:
            stats.swapped += 1
            self._held = (sequence, packet)
            self._held_timer = asyncio.get_running_loop().call_later(self._hold_s(), self._release_held)
            return
        self._transmit(sequence, packet)
        self._release_held()

    def _release_held(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        if self._held is not None:
            sequence, packet = self._held
            self._held = None
            self._transmit(sequence, packet)

    def _transmit(self, sequence: int, packet: bytes) -> None:
        copies = 2 if self.impairment.duplicate and self._rng.random() < self.impairment.duplicate else 1
        self.stats.duplicated += copies - 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            delay = self._rng.uniform(0.0, self.impairment.jitter_ms) / 1000 if self.impairment.jitter_ms else 0.0
            self.stats.schedule.append((sequence, loop.time() + delay))
            if delay <= 0.0:
                self._out(packet)
                continue
            self._timer_ids += 1
            key = self._timer_ids
            self._timers[key] = loop.call_later(delay, self._delayed, key, packet)

    def _delayed(self, key: int, packet: bytes) -> None:
        self._timers.pop(key, None)
        self._out(packet)

    def _out(self, packet: bytes) -> None:
        self.stats.datagrams += 1
        self._emit(packet)

    def close(self) -> None:
        """Forget what is still on the line (held or delayed): the peer is going away."""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self._held = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


# -- the shared ticker -------------------------------------------------------------------------------------------


class RtpPeerGroup:
    """Peers that send on one shared ticker; create them with `await group.create_peer()`."""

    def __init__(self, tick_ms: int = 20) -> None:
        if tick_ms <= 0:
            raise ValueError("tick_ms must be positive")
        self.tick_ms = tick_ms
        self.period = tick_ms / 1000
        self.ticks = 0  # ticks run
        self.skipped_ticks = 0  # ticks given up because the loop was more than a period late
        self.max_lateness = 0.0  # worst delay of a tick behind its schedule, seconds
        self._peers: list[RtpPeer] = []
        self._active: dict[int, RtpPeer] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origin = 0.0
        self._next = 0
        self._handle: asyncio.TimerHandle | None = None

    async def create_peer(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssrc: int | None = None,
        seed: int | None = None,
        keep_payload: bool = True,
    ) -> RtpPeer:
        """A peer bound to (host, port) (an ephemeral port on loopback by default)."""
        loop = self._ensure_loop()
        rng = random.Random(seed)
        peer = RtpPeer(self, rng=rng, ssrc=ssrc if ssrc is not None else rng.getrandbits(32), keep_payload=keep_payload)
        await loop.create_datagram_endpoint(lambda: peer, local_addr=(host, port))
        self._peers.append(peer)
        return peer

    @property
    def active_peers(self) -> int:
        return len(self._active)

    def next_tick(self) -> int:
        """The tick a peer that starts now first sends on: the ticker's next one, so started peers stay in step."""
        return self._next if self._handle is not None else self.current_tick() + 1

    def current_tick(self) -> int:
        """The index of the tick whose time has come last (ticks count periods since the group's first use)."""
        loop = self._ensure_loop()
        return math.floor((loop.time() - self._origin) / self.period)

    async def close(self) -> None:
        for peer in list(self._peers):
            peer.close()
        self._peers.clear()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._origin = self._loop.time()
        return self._loop

    def _activate(self, peer: RtpPeer, first_tick: int | None = None) -> None:
        self._active[id(peer)] = peer
        if self._handle is None:
            loop = self._ensure_loop()
            self._next = first_tick if first_tick is not None else self.current_tick() + 1
            self._handle = loop.call_at(self._origin + self._next * self.period, self._tick)

    def _deactivate(self, peer: RtpPeer) -> None:
        self._active.pop(id(peer), None)
        if not self._active and self._handle is not None:
            self._handle.cancel()  # nothing to send: stop waking up
            self._handle = None

    def _tick(self) -> None:
        loop = self._ensure_loop()
        lateness = loop.time() - (self._origin + self._next * self.period)
        self.max_lateness = max(self.max_lateness, lateness)
        if lateness >= self.period:
            missed = int(lateness // self.period)
            self._next += missed
            self.skipped_ticks += missed
        tick = self._next
        for peer in list(self._active.values()):
            try:
                peer._on_tick(tick)
            except Exception:  # one broken payload source must not silence the other peers
                log.exception("RTP peer on port %s failed; it stops sending", peer.port)
                peer._halt()
        self.ticks += 1
        self._next += 1
        self._handle = loop.call_at(self._origin + self._next * self.period, self._tick) if self._active else None


@dataclass(slots=True)
class _AudioStream:
    source: PayloadSource
    payload_type: int
    first_tick: int
    marker: bool = True


@dataclass(slots=True)
class _DtmfJob:
    event: int
    duration: int  # timestamp units
    payload_type: int
    volume: int
    done: asyncio.Future[None]
    timestamp: int | None = None  # the event's RTP timestamp, fixed by its first packet
    sent: int = 0


class RtpPeer(asyncio.DatagramProtocol):
    """One RTP endpoint on its own UDP socket: sends paced audio and DTMF, records what it receives."""

    def __init__(self, group: RtpPeerGroup, *, rng: random.Random, ssrc: int, keep_payload: bool) -> None:
        self.group = group
        self.ssrc = ssrc
        self.keep_payload = keep_payload
        self.clock_rate = 8000
        self.remote: tuple[str, int] | None = None
        self.received: list[RtpPacket] = []
        self.invalid: list[tuple[float, tuple[str, int], bytes]] = []  # (arrival, source, bytes) of non-RTP
        self.sent_packets = 0
        self.send_errors = 0  # ICMP port unreachable and friends, reported by the kernel
        self.initial_sequence = rng.getrandbits(16)
        self.initial_timestamp = rng.getrandbits(32)
        self._sequence = self.initial_sequence
        self._origin_tick = group.current_tick()
        self._transport: asyncio.DatagramTransport | None = None
        self._address = ("", 0)
        self._audio: _AudioStream | None = None
        self._dtmf: collections.deque[_DtmfJob] = collections.deque()
        self._slot_origin = 0
        self._ticks_per_packet = max(1, 20 // group.tick_ms)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._line: _ImpairedLine | None = None

    @classmethod
    async def create(
        cls, host: str = "127.0.0.1", port: int = 0, *, ssrc: int | None = None, seed: int | None = None
    ) -> RtpPeer:
        """A peer with a ticker of its own; for many peers share one `RtpPeerGroup`."""
        return await RtpPeerGroup().create_peer(host, port, ssrc=ssrc, seed=seed)

    # -- addresses and lifecycle ----------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where the peer is bound (still known after `close`)."""
        return self._address

    @property
    def port(self) -> int:
        return self.address[1]

    def set_remote(self, host: str, port: int) -> None:
        self.remote = (host, port)

    def close(self) -> None:
        self._halt()
        if self._line is not None:
            self._line.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for _, waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()

    # -- sending --------------------------------------------------------------------------------------------------

    def start_sending(self, payload_source: PayloadSource, payload_type: int = 0, ptime_ms: int = 20) -> None:
        """Send `payload_source(n)` every `ptime_ms` from the next tick on, marker bit on the first packet."""
        self._require_remote()
        self._require_open()
        if ptime_ms <= 0 or ptime_ms % self.group.tick_ms:
            raise ValueError(f"ptime {ptime_ms} ms is not a multiple of the group's {self.group.tick_ms} ms tick")
        first = self.group.next_tick()
        self._audio = _AudioStream(payload_source, payload_type, first)
        self._slot_origin = first
        self._ticks_per_packet = ptime_ms // self.group.tick_ms
        self.group._activate(self, first)

    def _halt(self) -> None:
        """Stop audio and drop queued DTMF (their `send_dtmf` calls are cancelled)."""
        self._audio = None
        for job in self._dtmf:
            job.done.cancel()
        self._dtmf.clear()
        self.group._deactivate(self)

    def stop_sending(self) -> None:
        """Stop the audio; queued DTMF still goes out."""
        self._audio = None
        if not self._dtmf:
            self.group._deactivate(self)

    @property
    def sending(self) -> bool:
        return self._audio is not None

    async def send_dtmf(self, digit: str, duration_ms: int = 100, payload_type: int = 101, volume: int = 10) -> None:
        """Send one RFC 4733 event; returns once its last (third) end packet is out.

        The event takes the audio's packet slots (audio pauses meanwhile), shares its sequence numbers, keeps one
        timestamp for all its packets, sets the marker on the first and the E bit on the three final ones.
        """
        event = DTMF_EVENTS.get(digit.upper())
        if event is None:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        if not 0 <= volume <= 63 or duration_ms <= 0:
            raise ValueError("volume must be 0-63 and the duration positive")
        self._require_remote()
        self._require_open()
        loop = asyncio.get_running_loop()
        job = _DtmfJob(event, duration_ms * self.clock_rate // 1000, payload_type, volume, loop.create_future())
        if self._audio is None and not self._dtmf:
            self._slot_origin = self.group.next_tick()
        self._dtmf.append(job)
        self.group._activate(self, self._slot_origin)
        await job.done

    def impair(self, impairment: Impairment | None) -> None:
        """Put what this peer sends from now on through a bad line (see `Impairment`); None restores a clean one.

        Off by default, and a peer never impaired sends exactly as before. `send_raw` is never impaired.
        """
        if self._line is not None:
            self._line.close()
        self._line = None if impairment is None else _ImpairedLine(impairment, self._emit, self._hold_s)

    @property
    def impairment_stats(self) -> ImpairmentStats | None:
        """What the current impairment did so far; None on a clean line."""
        return None if self._line is None else self._line.stats

    def _hold_s(self) -> float:
        return max(0.1, 3 * self._ticks_per_packet * self.group.period)  # three packet times, at least 100 ms

    def _emit(self, packet: bytes) -> None:
        if self._transport is not None and self.remote is not None:
            self._transport.sendto(packet, self.remote)

    def send_raw(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        """Send any bytes now, to `addr` or the remote (hostile-input tests)."""
        target = addr or self._require_remote()
        self._require_open().sendto(data, target)

    def _require_remote(self) -> tuple[str, int]:
        if self.remote is None:
            raise RuntimeError("set_remote() first")
        return self.remote

    def _require_open(self) -> asyncio.DatagramTransport:
        if self._transport is None:
            raise RuntimeError("the peer is closed")
        return self._transport

    def _on_tick(self, tick: int) -> None:
        if self._transport is None or self.remote is None:
            return
        if tick < self._slot_origin or (tick - self._slot_origin) % self._ticks_per_packet:
            return
        samples_per_tick = self.clock_rate * self.group.tick_ms // 1000
        timestamp = self.initial_timestamp + (tick - self._origin_tick) * samples_per_tick
        if self._dtmf:
            self._send_dtmf_packet(timestamp, samples_per_tick * self._ticks_per_packet)
            return
        audio = self._audio
        if audio is None:
            return
        payload = audio.source((tick - audio.first_tick) // self._ticks_per_packet)
        if payload is None:
            self.stop_sending()
            return
        self._send(audio.payload_type, timestamp, payload, audio.marker)
        audio.marker = False

    def _send_dtmf_packet(self, timestamp: int, samples_per_packet: int) -> None:
        job = self._dtmf[0]
        if job.timestamp is None:
            job.timestamp = timestamp
        updates = max(1, math.ceil(job.duration / samples_per_packet))
        final = job.sent >= updates - 1  # the last update and its two retransmissions carry the E bit
        duration = job.duration if final else (job.sent + 1) * samples_per_packet
        flags = (0x80 if final else 0) | job.volume
        payload = DTMF_PAYLOAD.pack(job.event, flags, min(duration, 0xFFFF))
        self._send(job.payload_type, job.timestamp, payload, marker=job.sent == 0)
        job.sent += 1
        if job.sent == updates + 2:
            self._dtmf.popleft()
            if not job.done.done():
                job.done.set_result(None)
            if not self._dtmf and self._audio is None:
                self.group._deactivate(self)

    def _send(self, payload_type: int, timestamp: int, payload: bytes, marker: bool) -> None:
        assert self._transport is not None and self.remote is not None
        packet = build_rtp(payload_type, self._sequence, timestamp, self.ssrc, payload, marker)
        if self._line is None:
            self._transport.sendto(packet, self.remote)
        else:
            self._line.offer(self._sequence, packet)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self.sent_packets += 1

    # -- receiving ------------------------------------------------------------------------------------------------

    async def wait_received(self, count: int, timeout: float = 2.0) -> list[RtpPacket]:  # noqa: ASYNC109
        """Until `count` RTP packets have arrived in all; returns them all."""
        if len(self.received) < count:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((count, future))
            await asyncio.wait_for(future, timeout)
        return list(self.received)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass asyncio.DatagramTransport, but is one.
        self._transport = cast(asyncio.DatagramTransport, transport)
        host, port = self._transport.get_extra_info("sockname")[:2]
        self._address = (host, port)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        arrival = time.monotonic()
        try:
            payload_type, sequence, timestamp, ssrc, marker, payload = parse_rtp(data)
        except ValueError:
            self.invalid.append((arrival, addr, data))
            return
        kept = payload if self.keep_payload else b""
        self.received.append(RtpPacket(arrival, addr, payload_type, sequence, timestamp, ssrc, marker, kept))
        if self._waiters:
            for waiter in [w for w in self._waiters if w[0] <= len(self.received)]:
                self._waiters.remove(waiter)
                if not waiter[1].done():
                    waiter[1].set_result(None)

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1
        log.debug("RTP peer %s: %s", self.remote, exc)
