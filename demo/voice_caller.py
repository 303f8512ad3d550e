"""A caller that speaks: Piper-synthesised words over real RTP, and the bot's audio recorded and transcribed.

Used by the chain's tests, the end-to-end banking call and the latency benchmark. The words are synthesised with
our Piper engine and resampled with our resampler (stimulus, not the thing measured); what comes back is judged on
the caller's side from the RTP packets as received.
"""

from __future__ import annotations

import asyncio
import re
from typing import Protocol

import numpy as np

from avc.media.g711 import ulaw_decode, ulaw_encode
from avc.media.resample import Resampler
from demo.opensips_double import OpenSIPSDouble, sdp_offer
from demo.rtp_peer import RtpPacket, RtpPeer, RtpPeerGroup
from demo.sip_caller import SipCaller
from engines.registry import Engines

SILENCE = b"\xff" * 160
LOUD_RMS = 300.0


async def say(engines: Engines, text: str) -> list[bytes]:
    """`text` as 20 ms mu-law frames in Piper's voice."""
    resampler = Resampler(engines.tts.sample_rate, 8000)
    pcm = np.concatenate([resampler.process(c) async for c in engines.tts.stream(text)])
    pcm = np.concatenate((pcm, np.zeros(-pcm.size % 160, dtype=np.int16)))
    return [ulaw_encode(pcm[i : i + 160]) for i in range(0, pcm.size, 160)]


async def transcribe(engines: Engines, frames: list[bytes]) -> str:
    stream = engines.asr.new_stream()
    stream.feed(Resampler(8000, 16000).process(ulaw_decode(b"".join(frames))))
    return (await stream.finalize()).text


def loud(payload: bytes) -> bool:
    return float(np.sqrt(np.mean(ulaw_decode(payload).astype(np.float64) ** 2))) > LOUD_RMS


class Leg(Protocol):
    """The signalling side of the caller: a call scripted in the double, or a SIP call on the wire."""

    @property
    def call_id(self) -> str: ...

    async def wait_ended(self, timeout: float = 5.0) -> None: ...  # noqa: ASYNC109 - mirrors both legs' API


class VoiceCaller:
    """The test caller's mouth and ears on one RTP peer: a script of frames, silence in between."""

    def __init__(self, peer: RtpPeer, call: Leg) -> None:
        self.peer = peer
        self.call = call
        self.queue: list[tuple[bytes, bool]] = []
        self.speech_started: float | None = None
        self.speech_ended: float | None = None
        self.first_loud_sent: float | None = None  # send times of the words' first and last loud frames
        self.last_loud_sent: float | None = None
        peer.start_sending(self._next)

    @classmethod
    async def dial(
        cls, osips: OpenSIPSDouble, group: RtpPeerGroup, extra_headers: dict[str, str] | None = None
    ) -> VoiceCaller:
        peer = await group.create_peer()
        call = await osips.invite(sdp_offer("127.0.0.1", peer.port), extra_headers=extra_headers)
        reply = await call.wait_final(5.0)
        match = re.search(r"^m=audio (\d+) ", reply.body or "", re.MULTILINE)
        if reply.code != 200 or match is None:
            raise AssertionError(f"call not answered: {reply}")
        peer.set_remote("127.0.0.1", int(match.group(1)))
        return cls(peer, call)

    @classmethod
    async def dial_sip(
        cls,
        sip: SipCaller,
        target: str,
        group: RtpPeerGroup,
        extra_headers: dict[str, str] | None = None,
        timeout_s: float = 15.0,
    ) -> VoiceCaller:
        """Place the call over SIP (the double's SIP socket, or a real OpenSIPS edge) and answer its media."""
        host = sip.address[0]
        peer = await group.create_peer(host)
        call = await sip.invite(target, sdp_offer(host, peer.port), extra_headers=extra_headers)
        answer = await call.wait_answered(timeout_s)
        port = re.search(r"^m=audio (\d+) ", answer.body, re.MULTILINE)
        address = re.search(r"^c=IN IP4 (\S+)", answer.body, re.MULTILINE)
        if port is None or address is None:
            raise AssertionError(f"no audio in the answer: {answer.body!r}")
        peer.set_remote(address.group(1), int(port.group(1)))
        return cls(peer, call)

    def _next(self, _n: int) -> bytes:
        if self.queue:
            frame, is_loud = self.queue.pop(0)
            now = asyncio.get_running_loop().time()
            if is_loud:
                self.first_loud_sent = self.first_loud_sent or now
                self.last_loud_sent = now
            if not self.queue:
                self.speech_ended = now
            return frame
        return SILENCE

    def speak(self, frames: list[bytes]) -> float:
        """Queue words; returns when (loop time) they will have been sent completely."""
        now = asyncio.get_running_loop().time()
        self.speech_started = now
        self.speech_ended = self.first_loud_sent = self.last_loud_sent = None
        self.queue.extend((frame, loud(frame)) for frame in frames)
        return now + len(frames) * 0.02

    def bot_frames(self, since: float = 0.0) -> list[RtpPacket]:
        return [p for p in self.peer.received if p.payload_type == 0 and p.arrival >= since]

    def first_loud_after(self, since: float) -> float | None:
        return next((p.arrival for p in self.bot_frames(since) if loud(p.payload)), None)

    async def wait_loud(self, since: float = 0.0, timeout_s: float = 10.0) -> float:
        async with asyncio.timeout(timeout_s):
            while (at := self.first_loud_after(since)) is None:  # noqa: ASYNC110 - polling a recording
                await asyncio.sleep(0.02)
        return at

    async def wait_quiet(self, since: float = 0.0, quiet_s: float = 0.6, timeout_s: float = 15.0) -> None:
        """Until the bot has said something after `since` and then been silent for `quiet_s`."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while True:
                talked = [p for p in self.bot_frames(since) if loud(p.payload)]
                if talked and loop.time() - talked[-1].arrival > quiet_s:
                    return
                await asyncio.sleep(0.05)
