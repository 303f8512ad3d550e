"""Load benchmark: scripted bank calls ramped through the OpenSIPS double up to the knee, and past the call limit.

`make bench-load` (or `python -m tests.bench.bench_load --help`). The connector runs as its own process (`avc serve`,
chain mode: the banking responder on a throwaway seeded PostgreSQL database, whisper-tiny.en, qwen2.5-0.5b, Piper)
with `AVC_MAX_CALLS=--max-calls`; this process plays OpenSIPS (the protocol double) and the callers (real RTP on
loopback), whose words are synthesised with Piper before any call starts. Step n offers n scripted conversations
(greeting, one or two questions, goodbye; the bot hangs up), new calls arriving `--cps` a second, for n = 1 ..
max_calls + `--over`. Per step: calls attempted, answered (200), refused (503, and whether Retry-After came with it),
failed (any other answer, no answer, dead air, a call the bot did not end, RTP that does not parse), voice-to-voice
p50/p95 of the answered calls, the peak of simultaneous answered calls, packets lost, the connector's CPU (/proc),
and the bot-audio gap: within each bot turn (its first to its last loud frame, frames less than 1 s apart in one
turn) the interval between consecutive bot packets minus 20 ms, from KERNEL receive times at the caller (SO_TIMESTAMP
read with SIOCGSTAMP after each datagram), so this busy process's own scheduling does not count against the
connector; max and p99 in ms, and the bot turn (0: the greeting) where the largest fell. `--warmup-calls` single
calls run first and are reported apart: a node's first call pays for first inferences and allocations.
The knee is the last step n <= max_calls such that every step up to it has zero failed calls, no gap over 60 ms and
v2v p95 <= 1.5 s (each call answered). Above max_calls every extra call must get 503 with Retry-After while the
active ones keep the same quality. The last line printed is one JSON object; `pass` needs knee == max_calls and that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import json
import os
import random
import re
import secrets
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from banking.migrate import migrate
from demo.opensips_double import OpenSIPSDouble, ScriptRefused, sdp_offer
from demo.rtp_peer import RtpPeer, RtpPeerGroup
from demo.voice_caller import VoiceCaller, loud
from engines.base import Tts
from engines.manifest import Manifest
from engines.registry import load_engine
from tests.bench.bench_latency import (
    ADMIN_DSN,
    ALICE,
    SCRIPT,
    V2V_LIMIT_S,
    Results,
    admin,
    free_port,
    start_connector,
    synthesize,
    voice_turn,
)
from tests.bench.bench_media import gaps, proc_cpu_seconds, scrape

GAP_LIMIT_MS = 60.0
PACKET_S = 0.020
TURN_PAUSE_S = 1.0  # loud bot frames closer than this belong to one turn (sentence pauses included)
SIOCGSTAMP = 0x8906  # the kernel receive time of the last datagram read from the socket (struct timeval)
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)
QUESTIONS = ("ask", "dob")  # "Where is my card?", then the date of birth the bot asks for


class StampedPeer(RtpPeer):
    """An RTP peer that also keeps the kernel's receive time of every packet it records (`stamps[i]`)."""

    def __init__(self, group: RtpPeerGroup) -> None:
        rng = random.Random()
        super().__init__(group, rng=rng, ssrc=rng.getrandbits(32), keep_payload=True)
        self.stamps: list[float] = []
        self._fd = -1

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)  # stamp every datagram from the first one on
        self._fd = sock.fileno()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        kept = len(self.received)
        super().datagram_received(data, addr)
        if len(self.received) > kept:
            # asyncio reads one datagram per readiness and hands it over at once: the stamp is this packet's.
            try:
                sec, usec = struct.unpack("ll", fcntl.ioctl(self._fd, SIOCGSTAMP, b"\0" * 16))
                self.stamps.append(sec + usec / 1e6)
            except OSError:
                self.stamps.append(time.time())


async def stamped_peer(group: RtpPeerGroup) -> StampedPeer:
    peer = StampedPeer(group)
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    return peer


def bot_audio_gaps(peer: StampedPeer) -> tuple[list[float], int | None, int, int]:
    """(gaps in ms within the bot's turns, the turn with the largest (0: the greeting), packets lost, received)."""
    packets = [(stamp, p) for stamp, p in zip(peer.stamps, peer.received, strict=True) if p.payload_type == 0]
    lost, checked = gaps([p.sequence for _, p in packets])
    stamps = np.array([stamp for stamp, _ in packets])
    loud_at = [i for i, (_, p) in enumerate(packets) if loud(p.payload)]
    result: list[float] = []
    worst: tuple[float, int] | None = None
    turn = -1
    start = prev = None
    for i in [*loud_at, None]:
        if i is not None and prev is not None and stamps[i] - stamps[prev] < TURN_PAUSE_S:
            prev = i
            continue
        if start is not None and prev is not None:
            turn += 1
            if prev > start:
                found = ((np.diff(stamps[start : prev + 1]) - PACKET_S) * 1000).clip(min=0).tolist()
                result.extend(found)
                if worst is None or max(found) > worst[0]:
                    worst = (max(found), turn)
        start = prev = i
    return result, None if worst is None else worst[1], lost, checked


@dataclass
class CallRecord:
    index: int
    outcome: str = "failed"  # answered | refused | failed
    code: int | None = None
    retry_after: bool = False
    refused_by: str | None = None
    reason: str | None = None
    v2v: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    worst_gap_turn: int | None = None
    lost: int = 0
    received: int = 0
    answered_at: float | None = None
    ended_at: float | None = None


class LoadBench:
    def __init__(self, args: argparse.Namespace, words: dict[str, list[bytes]]) -> None:
        self.args = args
        self.words = words
        self.osips: OpenSIPSDouble | None = None
        self.group = RtpPeerGroup()
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""

    async def start(self, dsn: str) -> None:
        self.osips = OpenSIPSDouble(liveness_gate=self.args.liveness_gate)
        await self.osips.start()
        http_port = free_port(socket.SOCK_STREAM)
        self.metrics_url = f"http://127.0.0.1:{http_port}/metrics"
        base = random.randrange(20000, 60000, 200)
        env = dict(os.environ)
        env.update(
            AVC_MI_URL=self.osips.mi_datagram_uri,
            AVC_EVENT_PORT=str(free_port()),
            AVC_HTTP_PORT=str(http_port),
            AVC_MODE="chain",
            AVC_RESPONDER="banking",
            AVC_BANKING_LLM="true",
            AVC_LLM_MODEL=self.args.llm,
            AVC_ASR_MODEL=self.args.asr,
            AVC_PG_DSN=dsn,
            AVC_MODELS_DIR=self.args.models,
            AVC_MAX_CALLS=str(self.args.max_calls),
            AVC_RTP_PORT_MIN=str(base),
            AVC_RTP_PORT_MAX=str(base + 99),
            AVC_LOG_LEVEL="INFO",
        )
        self.proc = start_connector(env, Path(self.args.log))
        await self.osips.wait_subscribed(180.0)

    async def close(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        await self.group.close()
        if self.osips is not None:
            await self.osips.close()

    async def idle(self) -> None:
        """Until the connector holds no call (and, behind the liveness gate, the node takes calls again)."""
        assert self.osips is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if scrape(self.metrics_url).get("avc_calls_active", 0) == 0 and self.osips.takes_calls:
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)

    async def conversation(self, index: int) -> CallRecord:
        assert self.osips is not None
        rec = CallRecord(index)
        loop = asyncio.get_running_loop()
        peer = await stamped_peer(self.group)
        call = None
        try:
            try:
                call = await self.osips.invite(sdp_offer("127.0.0.1", peer.port), extra_headers=ALICE)
            except ScriptRefused as exc:  # the node's script, behind the liveness gate: 503 + Retry-After
                rec.code, rec.refused_by, rec.retry_after = exc.code, "node_script", exc.code == 503
                rec.outcome = "refused" if exc.code == 503 else "failed"
                rec.reason = None if exc.code == 503 else f"node script answered {exc.code}"
                return rec
            try:
                reply = await call.wait_final(10.0)
            except TimeoutError:
                rec.reason = "no final answer within 10 s"
                return rec
            rec.code = reply.code
            if reply.code == 503:
                rec.outcome, rec.refused_by = "refused", "connector"
                rec.retry_after = "retry-after:" in (reply.extra_headers or "").lower()
                return rec
            match = re.search(r"^m=audio (\d+) ", reply.body or "", re.MULTILINE)
            if reply.code != 200 or match is None:
                rec.reason = f"answered {reply.code} {reply.reason}"
                return rec
            rec.answered_at = loop.time()
            peer.set_remote("127.0.0.1", int(match.group(1)))
            caller = VoiceCaller(peer, call)
            results = Results()
            try:
                await caller.wait_quiet(quiet_s=1.2, timeout_s=20.0)  # the greeting
                for key in QUESTIONS[: self.args.turns]:
                    await voice_turn(caller, self.words[key], results)
                await voice_turn(caller, self.words["bye"], results)
                await call.wait_ended(15.0)  # the bot says goodbye and hangs up
            except TimeoutError:
                rec.reason = "dead air or a call the bot did not end (timeout)"
            except Exception as exc:  # any other error is this call's failure, not the run's
                rec.reason = f"{type(exc).__name__}: {exc}"
            finally:
                peer.stop_sending()
            rec.ended_at = loop.time()
            rec.v2v = results.v2v
            rec.gaps_ms, rec.worst_gap_turn, rec.lost, rec.received = bot_audio_gaps(peer)
            if peer.invalid:
                rec.reason = rec.reason or f"{len(peer.invalid)} datagrams that are not RTP"
            rec.outcome = "failed" if rec.reason else "answered"
            return rec
        except Exception as exc:
            rec.outcome, rec.reason = "failed", f"{type(exc).__name__}: {exc}"
            return rec
        finally:
            if call is not None and not call.ended and rec.outcome != "refused":
                with contextlib.suppress(Exception):
                    await call.bye()
            peer.close()

    async def step(self, offered: int) -> dict[str, Any]:
        assert self.proc is not None
        await self.idle()
        before = scrape(self.metrics_url)
        cpu0, t0 = proc_cpu_seconds(self.proc.pid), time.monotonic()
        loop = asyncio.get_running_loop()
        # The callers keep every packet they receive: a full collection over them would stall this process.
        gc.collect()
        gc.disable()
        try:
            start = loop.time()
            tasks = []
            for i in range(offered):
                await asyncio.sleep(max(0.0, start + i / self.args.cps - loop.time()))
                tasks.append(asyncio.create_task(self.conversation(i)))
            records: list[CallRecord] = await asyncio.gather(*tasks)
        finally:
            gc.enable()
        cpu1, t1 = proc_cpu_seconds(self.proc.pid), time.monotonic()
        after = scrape(self.metrics_url)
        return summarize_step(offered, records, self.args.max_calls, before, after, (cpu1 - cpu0) / (t1 - t0))


def pct(values: list[float], q: float, scale: float = 1.0) -> float | None:
    return round(float(np.percentile(np.array(values) * scale, q)), 1) if values else None


def peak_concurrency(records: list[CallRecord]) -> int:
    edges: list[tuple[float, int]] = []
    for r in records:
        if r.answered_at is not None and r.ended_at is not None:
            edges += [(r.answered_at, 1), (r.ended_at, -1)]
    peak = level = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        level += delta
        peak = max(peak, level)
    return peak


def worst_turn(records: list[CallRecord]) -> int | None:
    """The bot turn (0: the greeting) in which the step's largest gap fell."""
    scored = [(max(r.gaps_ms), r.worst_gap_turn) for r in records if r.gaps_ms]
    return max(scored, key=lambda s: s[0])[1] if scored else None


def summarize_step(
    offered: int,
    records: list[CallRecord],
    max_calls: int,
    before: dict[str, float],
    after: dict[str, float],
    cpu: float,
) -> dict[str, Any]:
    answered = [r for r in records if r.outcome == "answered"]
    refused = [r for r in records if r.outcome == "refused"]
    failed = [r for r in records if r.outcome == "failed"]
    carried = [r for r in records if r.answered_at is not None]  # answered calls, failed ones included
    v2v = [v for r in carried for v in r.v2v]
    gap = [g for r in carried for g in r.gaps_ms]
    rejects = sum(v for k, v in after.items() if k.startswith("avc_call_rejects_total")) - sum(
        v for k, v in before.items() if k.startswith("avc_call_rejects_total")
    )
    result: dict[str, Any] = {
        "offered": offered,
        "attempted": len(records),
        "answered": len(answered),
        "refused_503": sum(1 for r in refused if r.code == 503),
        "refused_503_with_retry_after": sum(1 for r in refused if r.code == 503 and r.retry_after),
        "refused_by": sorted({r.refused_by for r in refused if r.refused_by}),
        "failed": len(failed),
        "failures": [f"call {r.index}: {r.reason}" for r in failed][:5],
        "peak_concurrent_answered": peak_concurrency(records),
        "v2v_p50_ms": pct(v2v, 50, 1000),
        "v2v_p95_ms": pct(v2v, 95, 1000),
        "v2v_turns": len(v2v),
        "gap_max_ms": round(max(gap), 1) if gap else None,
        "gap_p99_ms": pct(gap, 99),
        "gap_max_in_bot_turn": worst_turn(carried),
        "gap_intervals": len(gap),
        "bot_packets_received": sum(r.received for r in carried),
        "bot_packets_lost": sum(r.lost for r in carried),
        "connector_rejects_counted": int(rejects),
        "connector_cpu_cores": round(cpu, 2),
        "loadavg_1m": loadavg()[0],
    }
    quality = (
        not failed
        and (result["gap_max_ms"] or 0.0) <= GAP_LIMIT_MS
        and result["v2v_p95_ms"] is not None
        and result["v2v_p95_ms"] <= V2V_LIMIT_S * 1000
    )
    result["quality_ok"] = bool(quality)
    refused_right = result["refused_503_with_retry_after"] == max(0, offered - max_calls)
    result["admission_ok"] = len(answered) == min(offered, max_calls) and refused_right
    return result


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = loadavg()
    manifest = Manifest.load(Path(args.models))
    tts = load_engine("tts", {"provider": "piper"}, manifest)
    assert isinstance(tts, Tts)
    words = {key: await synthesize(tts, SCRIPT[key]) for key in (*QUESTIONS, "bye")}
    tts.close()

    database = f"avc_bench_{secrets.token_hex(4)}"
    await admin(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    await migrate(dsn)
    bench = LoadBench(args, words)
    steps: list[dict[str, Any]] = []
    warmup: list[dict[str, Any]] = []
    try:
        await bench.start(dsn)
        for _ in range(args.warmup_calls):  # first inferences, allocations, caches: not what a loaded node sees
            warmup.append(await bench.step(1))
            print(json.dumps({"warmup": 1, **warmup[-1]}), flush=True)
        for offered in range(1, args.max_calls + args.over + 1):
            steps.append(await bench.step(offered))
            print(json.dumps({"step": offered, **steps[-1]}), flush=True)
    finally:
        await bench.close()
        await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    knee = 0
    for s in steps[: args.max_calls]:
        if not (s["quality_ok"] and s["admission_ok"]):
            break
        knee = s["offered"]
    over = steps[args.max_calls :]
    over_gaps = [s["gap_max_ms"] for s in over if s["gap_max_ms"] is not None]
    over_v2v = [s["v2v_p95_ms"] for s in over if s["v2v_p95_ms"] is not None]
    extra = sum(s["offered"] - args.max_calls for s in over)
    refused = sum(s["refused_503"] for s in over)
    with_retry = sum(s["refused_503_with_retry_after"] for s in over)
    over_ok = all(s["quality_ok"] and s["admission_ok"] for s in over)
    return {
        "benchmark": "load",
        "machine": f"{os.cpu_count()} CPUs, no GPU",
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "asr": args.asr,
        "llm": args.llm,
        "tts": "piper",
        "responder": "banking",
        "max_calls": args.max_calls,
        "cps": args.cps,
        "questions_per_call": args.turns,
        "liveness_gate": args.liveness_gate,
        "criteria": {"failed": 0, "gap_max_ms": GAP_LIMIT_MS, "v2v_p95_ms": V2V_LIMIT_S * 1000},
        "warmup_calls": [
            {k: w[k] for k in ("failed", "v2v_p95_ms", "gap_max_ms", "gap_max_in_bot_turn")} for w in warmup
        ],
        "knee": knee,
        "knee_capped_by_max_calls": knee == args.max_calls,
        "steps": [
            {
                k: s[k]
                for k in (
                    "offered",
                    "answered",
                    "refused_503",
                    "failed",
                    "peak_concurrent_answered",
                    "v2v_p50_ms",
                    "v2v_p95_ms",
                    "gap_max_ms",
                    "gap_p99_ms",
                    "gap_max_in_bot_turn",
                    "bot_packets_lost",
                    "connector_cpu_cores",
                    "loadavg_1m",
                    "quality_ok",
                    "admission_ok",
                )
            }
            for s in steps
        ],
        "over_limit_extra_calls": extra,
        "over_limit_refused_503": refused,
        "over_limit_refused_503_with_retry_after": with_retry,
        "over_limit_active_failed": sum(s["failed"] for s in over),
        "over_limit_active_max_gap_ms": max(over_gaps) if over_gaps else None,
        "over_limit_active_v2v_p95_ms": max(over_v2v) if over_v2v else None,
        "pass": bool(knee == args.max_calls and over and over_ok and with_retry == extra),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-calls", type=int, default=3, help="AVC_MAX_CALLS: the admission limit under test")
    parser.add_argument("--over", type=int, default=2, help="steps past the limit (each one more call offered)")
    parser.add_argument("--cps", type=float, default=1.0, help="new calls per second within a step")
    parser.add_argument("--turns", type=int, choices=(1, 2), default=2, help="questions per call before goodbye")
    parser.add_argument("--warmup-calls", type=int, default=1, help="single calls before the ramp, not counted")
    parser.add_argument("--liveness-gate", action="store_true", help="the node's script refuses while avc is full")
    parser.add_argument("--asr", default="whisper-tiny.en")
    parser.add_argument("--llm", default="qwen2.5-0.5b")
    parser.add_argument("--models", default=".models")
    parser.add_argument("--log", default="/tmp/avc-bench-load.log", help="the connector's log")
    args = parser.parse_args()
    if args.max_calls < 1 or args.over < 1 or args.cps <= 0:
        parser.error("--max-calls and --over must be >= 1, --cps > 0")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
