"""One call's RTP media: a UDP socket, the inbound path to 16 kHz PCM and the paced outbound path.

The socket is polled by the media clock, not watched by the event loop: each 20 ms tick first sends
one packet for every stream of the process, then drains every stream's socket. Sends are therefore
never queued behind a burst of receive callbacks, and their spacing is the clock's own (see clock.py).
A packet waits at most one tick in the kernel, which costs nothing: the jitter buffer plays it out on
a tick anyway.

Inbound: datagram -> source and SSRC check -> RTP parse -> DTMF events out at once, audio into the
jitter buffer; then one frame is pulled, G.711-decoded, concealed if lost, upsampled to 16 kHz and
handed to the call's audio sink (the engine chain, echo or tone mode).

Outbound: `play()` resamples and G.711-encodes at write time, so a tick only pops a ready payload and
sends it; an empty queue sends encoded silence (the far end keeps its jitter buffer and NAT bindings
alive, and our timestamps never jump). `flush()` empties the queue: barge-in silences the bot on the
next packet.

Packets are accepted only from the address and port the SDP named: learning the peer from the first
packet that arrives (the "RTP bleed" attack surface) happens only when NAT latching is switched on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from avc.media.audio_format import ENGINE_RATE, FRAME_SAMPLES, LINE_RATE
from avc.media.clock import MediaClock
from avc.media.dtmf import DIGITS, DtmfEvent, Rfc4733Receiver, Rfc4733Sender
from avc.media.g711 import G711Codec
from avc.media.jitter import JitterBuffer, PutResult
from avc.media.resample import Resampler
from avc.media.rtp import RtpError, RtpPacket, RtpSender
from avc.metrics import RtpCounters

log = logging.getLogger(__name__)

# A stream that changes SSRC mid-call is accepted only after the old one went quiet this long;
# otherwise two senders (e.g. a bleed attack) could take turns on the call.
SSRC_SWITCH_AFTER = 0.5
# Concealment repeats the last good frame, fading, for this many frames; then silence.
CONCEAL_FRAMES = 3
TIMEOUT_CHECK_TICKS = 25
MAX_DATAGRAMS_PER_TICK = 64
RECV_SIZE = 2048  # G.711 at 20 ms is 172 bytes; anything near this size is not our RTP


class AudioSink(Protocol):
    """What a call's media delivers: 20 ms of 16 kHz int16 PCM per tick, and DTMF digits."""

    def on_audio(self, pcm: np.ndarray) -> None: ...

    def on_dtmf(self, event: DtmfEvent) -> None: ...


@dataclass(frozen=True)
class MediaParams:
    """The negotiated media of one call, as the SDP offer/answer left it."""

    remote_addr: str
    remote_port: int
    codec: G711Codec
    dtmf_payload_type: int | None
    direction: str  # our side: sendrecv, sendonly, recvonly or inactive

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and self.remote_port != 0 and self.remote_addr != "0.0.0.0"

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


class RtpStream:
    """One call's RTP media: owns its UDP socket, jitter buffer, codec and resamplers, DTMF and the outbound queue.
    The process's `MediaClock` drives it every 20 ms (send, then receive); its `Call` opens and closes it, and the
    call's application plays into it and receives the caller's audio as 16 kHz PCM through its sink."""

    def __init__(
        self,
        *,
        local_ip: str,
        port: int,
        params: MediaParams,
        clock: MediaClock,
        rtp_timeout: float,
        on_timeout: Callable[[], None],
        on_failure: Callable[[Exception], None],
        nat_latching: bool = False,
        jitter_prefetch: int = 2,
        sender: RtpSender | None = None,
    ) -> None:
        self.local_ip = local_ip
        self.port = port
        self.params = params
        self.counters = RtpCounters()
        self._clock = clock
        self._rtp_timeout = rtp_timeout
        self._on_timeout = on_timeout
        self._on_failure = on_failure
        self._nat_latching = nat_latching
        self._latched = not nat_latching
        self._remote = (params.remote_addr, params.remote_port)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: AudioSink | None = None
        self._jitter_prefetch = jitter_prefetch
        self._jitter = JitterBuffer(prefetch=jitter_prefetch)
        self._jitter_base = RtpCounters()
        self._dtmf_in = Rfc4733Receiver()
        self._dtmf_out = Rfc4733Sender()
        self._sender = sender or RtpSender()
        self._ssrc: int | None = None
        self._last_rx = 0.0
        self._timed_out = False
        self._ticks = 0
        self._upsampler = Resampler(LINE_RATE, ENGINE_RATE)
        self._out_resamplers: dict[int, Resampler] = {}
        self._out: deque[bytes] = deque()
        self._out_tail = np.zeros(0, dtype=np.int16)
        self._dtmf_plan: deque[tuple[bytes, bool]] = deque()
        self._dtmf_ts = 0
        self._last_pcm: np.ndarray | None = None
        self._concealed_run = 0
        self._silence_pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._silence_payload = bytes([params.codec.silence_byte]) * FRAME_SAMPLES
        self._first_packet = True
        self.frames_played = 0  # audio frames (not silence) actually sent
        self.last_audio_sent = 0.0  # loop time of the last audio frame sent (barge-in stop latency)
        self.frames_queued = 0  # audio frames ever queued; a frame's index is its place in this count
        self.paused = False
        self._marks: deque[tuple[int, asyncio.Future[float]]] = deque()
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Bind the socket (raises OSError when the port is taken) and join the media clock."""
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.local_ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.local_ip, self.port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._last_rx = self._loop.time()
        self._clock.add(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._sync_jitter_counters()
        self._clock.discard(self)
        self._out.clear()
        while self._marks:
            self._marks.popleft()[1].cancel()
        if self._sock is not None:
            self._sock.close()

    def set_sink(self, sink: AudioSink | None) -> None:
        self._sink = sink

    def update(self, params: MediaParams) -> None:
        """Apply a re-INVITE: new address, codec or direction; a new sender may bring a new SSRC."""
        if (params.remote_addr, params.remote_port) != self._remote or params.codec != self.params.codec:
            self._ssrc = None
            self._reset_receive()
        if params.codec != self.params.codec:
            self._silence_payload = bytes([params.codec.silence_byte]) * FRAME_SAMPLES
            self._reencode_queue(self.params.codec, params.codec)
        self.params = params
        self._remote = (params.remote_addr, params.remote_port)
        self._latched = not self._nat_latching
        if self._loop is not None:
            self._last_rx = self._loop.time()
        self._timed_out = False

    # -- outbound API for the call's application ----------------------------------------------------

    def play(self, pcm: np.ndarray, rate: int = ENGINE_RATE, *, pad: bool = True) -> int:
        """Queue audio; returns the number of 20 ms frames queued. `pad=False` keeps a partial frame
        back until more audio arrives (streamed TTS chunks)."""
        if rate == LINE_RATE:
            pcm8 = pcm.astype(np.int16, copy=False)
        else:
            resampler = self._out_resamplers.get(rate)
            if resampler is None:
                resampler = self._out_resamplers[rate] = Resampler(rate, LINE_RATE)
            pcm8 = resampler.process(pcm)
        if self._out_tail.size:
            pcm8 = np.concatenate((self._out_tail, pcm8))
        whole = (pcm8.size // FRAME_SAMPLES) * FRAME_SAMPLES
        if pad and whole < pcm8.size:
            pcm8 = np.concatenate((pcm8, np.zeros(FRAME_SAMPLES - (pcm8.size - whole), dtype=np.int16)))
            whole = pcm8.size
        self._out_tail = pcm8[whole:].copy()
        if whole == 0:
            return 0
        encoded = self.params.codec.encode(pcm8[:whole])
        frames = whole // FRAME_SAMPLES
        self._out.extend(encoded[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(frames))
        self.frames_queued += frames
        return frames

    def when_sent(self, index: int) -> asyncio.Future[float]:
        """A future set to the loop time at which audio frame `index` goes out (cancelled if it is flushed)."""
        assert self._loop is not None
        future: asyncio.Future[float] = self._loop.create_future()
        if index < self.frames_played:
            future.set_result(self._loop.time())
        else:
            self._marks.append((index, future))
        return future

    def pause(self) -> None:
        """Hold the queued audio and send silence (a possible barge-in: stop now, decide later)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def flush(self) -> int:
        """Drop everything not yet sent (barge-in); returns the number of frames dropped."""
        dropped = len(self._out)
        self._out.clear()
        self.paused = False
        self.frames_queued = self.frames_played
        while self._marks:
            self._marks.popleft()[1].cancel()
        self._out_tail = np.zeros(0, dtype=np.int16)
        for resampler in self._out_resamplers.values():
            resampler.reset()
        return dropped

    @property
    def pending_frames(self) -> int:
        return len(self._out)

    @property
    def speaking(self) -> bool:
        """Audio is queued or held: the far end hears (or is about to hear) the bot."""
        return bool(self._out) or bool(self._out_tail.size)

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        if self.params.dtmf_payload_type is None:
            raise ValueError("the caller did not offer telephone-event; RFC 4733 DTMF cannot be sent")
        if digit not in DIGITS:
            raise ValueError(f"{digit!r} is not a DTMF digit")
        self._dtmf_plan.extend(self._dtmf_out.packets(digit, duration_ms))

    # -- inbound ------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (addr[0], addr[1])
        if source != self._remote and self._latched:
            # Cheapest path first: packets from elsewhere are dropped before any parsing.
            self.counters.rejected_source += 1
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.counters.malformed += 1
            return
        if source != self._remote:
            # NAT latching (explicit option): adopt the first source that sends valid RTP.
            log.info("RTP latched to %s:%s (SDP said %s:%s)", source[0], source[1], *self._remote)
            self._remote = (str(source[0]), int(source[1]))
            self._latched = True
        pt = packet.payload_type
        if 72 <= pt <= 76:
            return  # RTCP multiplexed on the RTP port (RFC 5761); we send no RTCP and read none
        assert self._loop is not None
        now = self._loop.time()
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None and now - self._last_rx < SSRC_SWITCH_AFTER:
                self.counters.rejected_source += 1
                return
            if self._ssrc is not None:
                log.info("RTP SSRC changed from %08x to %08x", self._ssrc, packet.ssrc)
                self._reset_receive()
            self._ssrc = packet.ssrc
        self._last_rx = now
        self.counters.received += 1
        if pt == self.params.dtmf_payload_type:
            # Events share the audio sequence space: an empty frame keeps the jitter buffer from
            # counting the digit's packets as lost audio.
            if self._jitter.put(packet.sequence, packet.timestamp, b"") is PutResult.DUPLICATE:
                # The network delivered this packet twice: a repeated start packet after the end would read as a
                # second press of the key on a reused timestamp (a phantom PIN digit).
                return
            try:
                event = self._dtmf_in.feed(packet.timestamp, packet.payload, packet.marker)
            except ValueError:
                self.counters.malformed += 1
                return
            if event is not None and self._sink is not None:
                self._sink.on_dtmf(event)
            return
        if pt != self.params.codec.payload_type:
            # Comfort noise or a codec we did not negotiate: play silence in its place.
            self._jitter.put(packet.sequence, packet.timestamp, b"")
            return
        self._jitter.put(packet.sequence, packet.timestamp, packet.payload)

    # -- the 20 ms tick: the clock calls send() on every stream, then receive() on every stream ---------

    def send(self, periods: int) -> None:
        if self._sock is not None and self.params.sends:
            self._send_frame(periods)
        else:
            self._sender.advance(FRAME_SAMPLES * periods)

    def receive(self, periods: int) -> None:
        self._drain_socket()
        if self.params.receives:
            for _ in range(periods):
                self._deliver_frame()
        self._ticks += 1
        if self._ticks % TIMEOUT_CHECK_TICKS == 0:
            self._sync_jitter_counters()
            self._check_timeout()

    def _drain_socket(self) -> None:
        sock = self._sock
        if sock is None:
            return
        # Bounded: a flood on one port must not starve the other calls' ticks; the kernel drops the excess.
        for _ in range(MAX_DATAGRAMS_PER_TICK):
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP port unreachable from the caller's side is common while a call is torn down.
                log.debug("RTP socket error: %s", exc)
                continue
            self._on_datagram(data, addr)

    def tick_failed(self, exc: Exception) -> None:
        self._on_failure(exc)

    def _deliver_frame(self) -> None:
        payload = self._jitter.get()
        if payload is None:
            pcm = self._conceal()
        elif not payload:
            pcm = self._silence_pcm
            self._concealed_run = 0
        else:
            pcm = self.params.codec.decode(payload)
            self._last_pcm = pcm
            self._concealed_run = 0
        if self._sink is not None:
            self._sink.on_audio(self._upsampler.process(pcm))

    def _conceal(self) -> np.ndarray:
        # A missing frame after a good one is most likely loss inside speech: repeating it with a
        # fade sounds far less broken to ASR and humans than a hole of silence.
        if self._last_pcm is None or self._concealed_run >= CONCEAL_FRAMES:
            return self._silence_pcm
        self._concealed_run += 1
        self.counters.concealed += 1
        fade = 1.0 - self._concealed_run / (CONCEAL_FRAMES + 1)
        return (self._last_pcm * fade).astype(np.int16)

    def _send_frame(self, periods: int) -> None:
        assert self._sock is not None
        sender = self._sender
        if self._dtmf_plan:
            payload, marker = self._dtmf_plan.popleft()
            if marker:
                self._dtmf_ts = sender.timestamp
            dtmf_pt = self.params.dtmf_payload_type
            assert dtmf_pt is not None
            data = sender.event_packet(payload, dtmf_pt, self._dtmf_ts, marker)
            sender.advance(FRAME_SAMPLES * periods)
        else:
            if self._out and not self.paused:
                payload = self._out.popleft()
                self.frames_played += 1
                assert self._loop is not None
                self.last_audio_sent = self._loop.time()
                if self._marks and self._marks[0][0] < self.frames_played:
                    self._resolve_marks()
            else:
                payload = self._silence_payload
            if periods > 1:
                sender.advance(FRAME_SAMPLES * (periods - 1))
            data = sender.packet(payload, self.params.codec.payload_type, FRAME_SAMPLES, self._first_packet)
            self._first_packet = False
        try:
            self._sock.sendto(data, self._remote)
        except (BlockingIOError, InterruptedError):
            self.counters.send_dropped += 1  # the kernel's send buffer is full: drop, never block the tick
            return
        except OSError as exc:
            log.debug("RTP send failed: %s", exc)
            self.counters.send_dropped += 1
            return
        self.counters.sent += 1

    def _resolve_marks(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        while self._marks and self._marks[0][0] < self.frames_played:
            future = self._marks.popleft()[1]
            if not future.done():
                future.set_result(now)

    def shorten_timeout(self, seconds: float) -> None:
        """End the stream after `seconds` without RTP instead of the configured timeout (never longer)."""
        self._rtp_timeout = min(self._rtp_timeout, seconds)

    def _check_timeout(self) -> None:
        if self._timed_out or not self.params.receives or self._loop is None:
            return
        if self._loop.time() - self._last_rx > self._rtp_timeout:
            self._timed_out = True
            self._on_timeout()

    # -- housekeeping ---------------------------------------------------------------------------------

    def _reset_receive(self) -> None:
        self._sync_jitter_counters()
        self._jitter_base.late += self._jitter.late
        self._jitter_base.lost += self._jitter.lost
        self._jitter_base.duplicate += self._jitter.duplicates
        self._jitter = JitterBuffer(prefetch=self._jitter_prefetch)
        self._dtmf_in = Rfc4733Receiver()
        self._upsampler.reset()
        self._last_pcm = None

    def _sync_jitter_counters(self) -> None:
        c, base, jb = self.counters, self._jitter_base, self._jitter
        c.late = base.late + jb.late
        c.lost = base.lost + jb.lost
        c.duplicate = base.duplicate + jb.duplicates

    def _reencode_queue(self, old: G711Codec, new: G711Codec) -> None:
        if self._out:
            pcm = old.decode(b"".join(self._out))
            encoded = new.encode(pcm)
            self._out = deque(encoded[i : i + FRAME_SAMPLES] for i in range(0, len(encoded), FRAME_SAMPLES))
