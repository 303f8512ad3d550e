"""Diagnostic call modes that need no models: `echo` and `tone`.

Operators keep using them after the engine chain exists: `echo` proves the whole media path (the caller
hears themself after a fixed delay: one-way audio, codec and jitter problems are obvious); `tone` sends
a steady 1004 Hz test tone (the telco standard test frequency) and reports what level arrives.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Mapping
from contextlib import suppress

import numpy as np

from avc.app import CallControl
from avc.media.audio_format import ENGINE_RATE
from avc.media.dtmf import DtmfEvent
from avc.media.tone import ToneGenerator

log = logging.getLogger(__name__)

TEST_TONE_HZ = 1004.0
FRAME_16K = 320


class EchoApp:
    """Plays the caller's audio back `delay_ms` later; DTMF digits are echoed as RFC 4733 events."""

    def __init__(self, call: CallControl, delay_ms: int = 200) -> None:
        self._call = call
        self._delay_frames = max(0, delay_ms // 20)
        self._line: deque[np.ndarray] = deque()
        self.digits: list[str] = []

    def on_audio(self, pcm: np.ndarray) -> None:
        self._line.append(pcm)
        if len(self._line) > self._delay_frames:
            self._call.media.play(self._line.popleft())

    def on_dtmf(self, event: DtmfEvent) -> None:
        self.digits.append(event.digit)
        log.info("DTMF digit received (%s); echoing it back", event.source)
        # Without telephone-event in the offer there is nothing to echo the digit with.
        with suppress(ValueError):
            self._call.media.send_dtmf(event.digit)

    async def run(self) -> None:
        await asyncio.Event().wait()

    def snapshot(self) -> Mapping[str, object]:
        return {"mode": "echo"}


class ToneApp:
    """Sends a continuous test tone and logs the level received from the caller every 5 s."""

    def __init__(self, call: CallControl, frequency: float = TEST_TONE_HZ, amplitude: float = 0.25) -> None:
        self._call = call
        self._tone = ToneGenerator([frequency], ENGINE_RATE, amplitude)
        self._energy = 0.0
        self._frames = 0
        self.digits: list[str] = []

    def on_audio(self, pcm: np.ndarray) -> None:
        samples = pcm.astype(np.float32)
        self._energy += float(np.dot(samples, samples)) / max(1, samples.size)
        self._frames += 1
        media = self._call.media
        if media.pending_frames < 3:
            media.play(self._tone.next(FRAME_16K * 5))

    def on_dtmf(self, event: DtmfEvent) -> None:
        self.digits.append(event.digit)
        log.info("DTMF digit received (%s)", event.source)

    @property
    def received_dbfs(self) -> float:
        if not self._frames or self._energy == 0.0:
            return -math.inf
        return 10 * math.log10(self._energy / self._frames / 32768.0**2)

    def snapshot(self) -> Mapping[str, object]:
        return {"mode": "tone", "received_dbfs": round(self.received_dbfs, 1)}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(5)
            log.info("tone mode: caller audio at %.1f dBFS over the last 5 s", self.received_dbfs)
            self._energy, self._frames = 0.0, 0
