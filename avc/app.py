"""The seam between a call and what talks on it (engine chain, echo or tone diagnostics).

A call gives its application a `CallControl`: the media (16 kHz PCM frames and DTMF in through the
application's `on_audio`/`on_dtmf`; `play`/`flush`/`send_dtmf` out) and the call-level actions (hang up,
transfer, mirror a value into the edge dialog). The application never sees SIP, SDP or MI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from avc.media.audio_format import ENGINE_RATE
from avc.media.dtmf import DtmfEvent
from avc.opensips.sip import CallFacts


@dataclass(frozen=True)
class TransferResult:
    ok: bool
    status: int | None  # the SIP status the transfer target reached (NOTIFY sipfrag), if any
    detail: str


class Media(Protocol):
    def play(self, pcm: np.ndarray, rate: int = ENGINE_RATE, *, pad: bool = True) -> int: ...

    def flush(self) -> int: ...

    @property
    def pending_frames(self) -> int: ...

    @property
    def frames_played(self) -> int: ...

    @property
    def frames_queued(self) -> int: ...

    @property
    def speaking(self) -> bool: ...

    @property
    def last_audio_sent(self) -> float: ...

    def when_sent(self, index: int) -> asyncio.Future[float]: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None: ...


class CallControl(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def facts(self) -> CallFacts: ...

    @property
    def media(self) -> Media: ...

    async def hangup(self, reason: str = "app_hangup") -> None: ...

    async def transfer(self, target: str | None = None, context: Mapping[str, str] | None = None) -> TransferResult: ...

    def mirror(self, name: str, value: str) -> None: ...


class CallApp(Protocol):
    def on_audio(self, pcm: np.ndarray) -> None:
        """20 ms of 16 kHz int16 PCM; called on the media tick, so it must return at once."""

    def on_dtmf(self, event: DtmfEvent) -> None: ...

    async def run(self) -> None:
        """Runs for the life of the call; cancelled when the call ends."""

    def snapshot(self) -> Mapping[str, object]:
        """What operations see of the conversation in `avc calls` (intent, auth level, last latency); no PII."""


AppFactory = Callable[[CallControl], CallApp]
