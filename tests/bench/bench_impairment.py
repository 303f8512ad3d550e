"""Impairment benchmark: Whisper's WER on real recordings spoken over RTP through the connector, clean and impaired.

`python -m tests.bench.bench_impairment --help`. Each recording of Debian's pocketsphinx-testdata is resampled to
8 kHz, G.711 mu-law encoded and sent by a caller over real RTP on loopback to a connector in this process, behind the
OpenSIPS protocol double (INVITE, 200 with the SDP answer, BYE). The connector's application records the 16 kHz
audio its media path delivers (source check, RTP parse, jitter buffer, G.711 decode, concealment, resampling), and
Whisper transcribes that. Every recording goes over a clean line and over `--seeds` impaired lines (by default the
reliability target: 5 % loss, 60 ms jitter, 2 % reordering, 2 % duplicates on the caller's RTP), all of its calls at
once so they share the machine's load. The turn-taking (VAD endpointing) is left out: this measures what the line
does to the words, not where turns end.

Reported: WER clean, impaired (mean over seeds, and each seed), the change in percentage points, the same WER
without RTP at all (G.711 round trip only, as `bench_latency`), the connector's receive counters (lost, late,
duplicate, concealed) and the load average. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avc.app import CallApp, CallControl
from avc.connector import Connector
from avc.media.dtmf import DtmfEvent
from avc.media.g711 import ulaw_encode
from avc.media.resample import Resampler
from avc.metrics import Metrics, RtpCounters
from demo.opensips_double import OpenSIPSDouble
from demo.rtp_peer import Impairment, RtpPeerGroup
from demo.voice_caller import VoiceCaller
from engines.base import StreamingAsr
from engines.manifest import Manifest
from engines.registry import load_engine
from tests.bench.bench_latency import normalise, recordings, wer_of
from tests.engines.speech import read_wav, word_error_rate
from tests.support.chain_node import settings_behind

LEAD_S = 0.3  # caller silence before the words (the connector's jitter buffer settles)
TAIL_S = 0.4  # after the last packet is due: jitter, the jitter buffer's prefetch, the resampler's delay


class Recorder:
    """A call application that only keeps the 16 kHz audio the connector delivers."""

    def __init__(self, control: CallControl) -> None:
        self.stream = control.media  # the call's RtpStream: its counters outlive the call
        self.chunks: list[np.ndarray] = []

    def on_audio(self, pcm: np.ndarray) -> None:
        self.chunks.append(pcm.copy())

    def on_dtmf(self, event: DtmfEvent) -> None:
        return None

    async def run(self) -> None:
        await asyncio.Event().wait()  # until the call ends

    def snapshot(self) -> Mapping[str, object]:
        return {}

    @property
    def pcm(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)


@dataclass
class Condition:
    """One line condition over all recordings: words-weighted WER and what happened to the packets."""

    words: int = 0
    errors: float = 0.0
    rtp: dict[str, int] = field(default_factory=dict)
    line: dict[str, int] = field(default_factory=dict)
    hypotheses: list[str] = field(default_factory=list)

    @property
    def wer(self) -> float:
        return self.errors / max(1, self.words)

    def add(self, reference: str, hypothesis: str, counters: RtpCounters, line: Mapping[str, int]) -> None:
        n = len(normalise(reference).split())
        self.words += n
        self.errors += word_error_rate(normalise(reference), normalise(hypothesis)) * n
        self.hypotheses.append(hypothesis)
        for name in ("received", "lost", "late", "duplicate", "concealed"):
            self.rtp[name] = self.rtp.get(name, 0) + getattr(counters, name)
        for name, value in line.items():
            self.line[name] = self.line.get(name, 0) + value


def line_frames(path: Path) -> list[bytes]:
    """A recording as the caller's phone sends it: 8 kHz mu-law, 20 ms frames."""
    pcm, rate = read_wav(path)
    line = Resampler(rate, 8000).process(pcm)
    line = np.concatenate((line, np.zeros(-line.size % 160, dtype=np.int16)))
    return [ulaw_encode(line[i : i + 160]) for i in range(0, line.size, 160)]


async def one_call(
    osips: OpenSIPSDouble,
    group: RtpPeerGroup,
    apps: dict[str, Recorder],
    frames: list[bytes],
    impairment: Impairment | None,
) -> tuple[np.ndarray, RtpCounters, dict[str, int]]:
    caller = await VoiceCaller.dial(osips, group)
    if impairment is not None:
        caller.peer.impair(impairment)
    await asyncio.sleep(LEAD_S)
    done = caller.speak(frames)
    await asyncio.sleep(done - asyncio.get_running_loop().time() + TAIL_S)
    app = apps.pop(caller.call.call_id)
    pcm = app.pcm
    call = caller.call
    assert hasattr(call, "bye")
    await call.bye()
    await caller.call.wait_ended(5.0)
    caller.peer.close()
    stats = caller.peer.impairment_stats
    line = {} if stats is None else {k: v for k, v in asdict(stats).items() if k != "schedule"}
    counters: RtpCounters = app.stream.counters  # type: ignore[attr-defined]
    return pcm, counters, line


async def transcribe(asr: StreamingAsr, pcm: np.ndarray) -> str:
    stream = asr.new_stream()
    stream.feed(pcm)
    return (await stream.finalize()).text


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    started = time.monotonic()
    manifest = Manifest.load(Path(args.models))
    asr = load_engine("asr", {"provider": "whisper", "model": args.asr}, manifest)
    assert isinstance(asr, StreamingAsr)
    pairs = recordings(manifest.path("pocketsphinx-testdata"))
    if args.limit:
        pairs = pairs[: args.limit]
    no_rtp = await wer_of(asr, pairs)

    impairments = [
        Impairment(args.loss, args.jitter_ms, args.reorder, args.duplicate, seed=args.seed + n)
        for n in range(args.seeds)
    ]
    clean = Condition()
    impaired = [Condition() for _ in impairments]
    apps: dict[str, Recorder] = {}

    def factory(control: CallControl) -> CallApp:
        app = Recorder(control)
        apps[control.facts.call_id] = app
        return app

    async with OpenSIPSDouble() as osips:
        settings = settings_behind(osips, rtp_ports=4 * (1 + args.seeds), mode="chain")
        connector = Connector(settings, app_factory=factory, metrics=Metrics())
        await connector.start()
        group = RtpPeerGroup()
        try:
            await osips.wait_subscribed(5.0)
            for path, reference in pairs:
                frames = line_frames(path)
                calls = await asyncio.gather(
                    *(one_call(osips, group, apps, frames, imp) for imp in [None, *impairments])
                )
                texts = [await transcribe(asr, pcm) for pcm, _, _ in calls]
                for condition, text, (_, counters, line) in zip([clean, *impaired], texts, calls, strict=True):
                    condition.add(reference, text, counters, line)
                print(
                    json.dumps(
                        {
                            "recording": path.name,
                            "seconds": round(len(frames) * 0.02, 2),
                            "clean": round(word_error_rate(normalise(reference), normalise(texts[0])), 3),
                            "impaired": [
                                round(word_error_rate(normalise(reference), normalise(t)), 3) for t in texts[1:]
                            ],
                        }
                    ),
                    flush=True,
                )
        finally:
            await connector.stop()
            await group.close()
    asr.close()

    impaired_wer = float(np.mean([c.wer for c in impaired]))
    return {
        "benchmark": "impairment",
        "asr": args.asr,
        "recordings": len(pairs),
        "words": clean.words,
        "path": "caller RTP on loopback -> connector (OpenSIPS double) -> jitter buffer, G.711, 16 kHz -> Whisper",
        "impairment": {
            "loss": args.loss,
            "jitter_ms": args.jitter_ms,
            "reorder": args.reorder,
            "duplicate": args.duplicate,
            "seeds": [imp.seed for imp in impairments],
        },
        "wer_no_rtp": no_rtp["wer"],
        "wer_clean": round(clean.wer, 4),
        "wer_impaired": round(impaired_wer, 4),
        "wer_impaired_per_seed": [round(c.wer, 4) for c in impaired],
        "wer_change_points": round((impaired_wer - clean.wer) * 100, 2),
        "rtp_clean": clean.rtp,
        "rtp_impaired": _summed([c.rtp for c in impaired]),
        "line_impaired": _summed([c.line for c in impaired]),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{os.cpu_count()} CPUs, no GPU",
        "seconds": round(time.monotonic() - started, 1),
    }


def _summed(rows: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in rows:
        for name, value in row.items():
            total[name] = total.get(name, 0) + value
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asr", default="whisper-tiny.en")
    parser.add_argument("--loss", type=float, default=0.05, help="packet loss probability")
    parser.add_argument("--jitter-ms", type=float, default=60.0, help="each packet delayed by a uniform 0..J ms")
    parser.add_argument("--reorder", type=float, default=0.02, help="adjacent swap probability")
    parser.add_argument("--duplicate", type=float, default=0.02, help="duplicate probability")
    parser.add_argument("--seeds", type=int, default=3, help="impaired runs per recording, one seed each")
    parser.add_argument("--seed", type=int, default=1, help="the first seed")
    parser.add_argument("--limit", type=int, default=0, help="only the first N recordings (0: all)")
    parser.add_argument("--models", default=".models")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
