"""Soak benchmark: does the connector give back everything it takes, over thousands of calls?

`make bench-soak` (or `python -m tests.bench.bench_soak --help`). The connector runs as its own process (`avc serve`,
echo mode); this process plays OpenSIPS (the protocol double) and every caller (`demo.rtp_peer` over real RTP on
loopback, a 1 kHz tone). Two phases:

1. `--sequential` calls one after the other. Each rings (AVC_ANSWER_DELAY_MS), is answered, carries 0.3-0.5 s of
   RTP both ways (the echo must come back without sequence gaps), and ends one of four ways in turn: the caller's
   BYE; a CANCEL while it rings (487); the connector's own RTP timeout after the caller falls silent (a short
   AVC_RTP_TIMEOUT); a rejected offer (G.729 only: 488, the session deleted after the ACK). The connector's RSS
   (/proc/<pid>/status VmRSS), open fds (/proc/<pid>/fd) and /calls are sampled every `--sample-every` calls.
2. `--minutes` of continuous concurrent calls: `--concurrent` callers, each placing call after call of random
   duration (mostly ended by BYE, now and then by the other three ways). One call's RTP starts 3 s before the
   16-bit sequence wrap and crosses it: the connector must lose, drop as late or duplicate none of its packets.

RSS slope: least squares over the samples after the first `--warmup` calls of each phase (phase 2 warms up what
many live calls need at once), one common slope with an intercept per phase (phase 2 carries
`--concurrent` live calls at every sample, phase 1 none), in MB per 100 calls. At the end, once every call ended and
`--settle` seconds passed: /calls empty, fds back to the baseline taken after warm-up (tolerance `--fd-tolerance`),
RTP ports free == pool size, the double's `sessions == []`, and no Redis context key of these calls. The connector
exposes no asyncio task count (/metrics has none), so tasks are reported as n/a; its thread count is reported.
The last line printed is one JSON object; `pass` needs slope < 1 MB/100 calls, nothing leaked, no failed call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from demo.opensips_double import CallGone, CallState, DoubleCall, DoubleUsageError, OpenSIPSDouble, sdp_offer
from demo.rtp_peer import RtpPeer, RtpPeerGroup, sine_payloads, ulaw_decode
from tests.bench.bench_media import free_port, scrape

REDIS_PREFIX = "avc:ctx:"  # banking.context.DEFAULT_PREFIX: echo mode writes none, the count must not grow
TONE_RMS = 1000.0  # the 1 kHz tone is sent at amplitude 8000 (RMS ~5700); comfort silence is ~0
WRAP_LEAD_PACKETS = 150  # the wrap call's first sequence number is this far before 65536: it wraps after 3 s
WRAP_CALL_SECONDS = 8.0
REJECT_DELETE_WAIT = 40.0  # avc.connector.REJECTED_ACK_WAIT (32 s) and a margin
ENDINGS = ("bye", "cancel", "rtp_timeout", "reject")


# -- pure helpers (tested in test_bench_soak.py) -------------------------------------------------------------------


def rss_slope_mb_per_100(phases: list[list[tuple[int, float]]]) -> float | None:
    """Least-squares slope of RSS (MB) against calls completed, one intercept per phase, in MB per 100 calls.

    Each phase is a list of (calls completed, RSS MB) samples; phases with a single sample add only an intercept.
    None when no phase has two samples at different call counts.
    """
    rows: list[list[float]] = []
    ys: list[float] = []
    usable = [p for p in phases if len({c for c, _ in p}) >= 2]
    for index, phase in enumerate(usable):
        for calls, rss in phase:
            rows.append([float(calls)] + [1.0 if j == index else 0.0 for j in range(len(usable))])
            ys.append(rss)
    if not rows:
        return None
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    return round(float(coef[0]) * 100, 4)


def seed_for_sequence(low: int, high: int) -> int:
    """A seed for `RtpPeerGroup.create_peer(seed=...)` whose initial RTP sequence number lies in [low, high].

    `create_peer` draws the SSRC (32 bits) and then the initial sequence (16 bits) from `random.Random(seed)`; the
    caller checks `peer.initial_sequence` afterwards, so a change of that order fails loudly instead of silently.
    """
    for seed in range(1_000_000):
        rng = random.Random(seed)
        rng.getrandbits(32)
        if low <= rng.getrandbits(16) <= high:
            return seed
    raise RuntimeError(f"no seed gives an initial sequence in [{low}, {high}]")


def sequence_gaps(sequences: list[int]) -> int:
    """Packets missing from a run of 16-bit sequence numbers (received in any order, wrapping allowed)."""
    if len(sequences) < 2:
        return 0
    extended = np.unwrap(np.array(sequences, dtype=np.float64), period=65536).astype(np.int64)
    expected = int(extended.max() - extended.min()) + 1
    return max(0, expected - len(set(extended.tolist())))


def tone_frames(payloads: list[bytes]) -> int:
    """How many mu-law frames carry the tone (RMS above `TONE_RMS`)."""
    count = 0
    for payload in payloads:
        if payload:
            pcm = ulaw_decode(payload).astype(np.float64)
            if math.sqrt(float(np.mean(pcm * pcm))) > TONE_RMS:
                count += 1
    return count


# -- the connector's process ---------------------------------------------------------------------------------------


def proc_status(pid: int, name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else -1


def proc_rss_mb(pid: int) -> float:
    return proc_status(pid, "VmRSS") / 1024


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_connector(env: dict[str, str], log_path: str) -> subprocess.Popen[bytes]:
    """`avc serve` with its log in `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "avc.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def redis_keys(url: str, pattern: str) -> int | None:
    """Keys matching `pattern` in the connector's Redis, or None when Redis cannot be reached."""
    try:
        import redis
    except ImportError:
        return None
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return sum(1 for _ in client.scan_iter(match=pattern, count=1000))
        finally:
            client.close()
    except redis.RedisError:
        return None


def log_errors(path: str) -> int:
    """ERROR/CRITICAL lines in the connector's JSON log (plain lines with a traceback count too)."""
    count = 0
    with open(path, errors="replace") as log:
        for line in log:
            try:
                level = json.loads(line).get("level")
            except (ValueError, AttributeError):
                level = "ERROR" if "Traceback" in line else None
            count += level in ("ERROR", "CRITICAL")
    return count


# -- one call ------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    ending: str
    ok: bool = True
    why: str = ""
    sent: int = 0
    echoed_tone: int = 0
    echo_gaps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, why: str) -> Outcome:
        self.ok, self.why = False, why
        return self


def answer_port(body: str | None) -> int:
    match = re.search(r"^m=audio (\d+) ", body or "", re.MULTILINE)
    if match is None:
        raise RuntimeError(f"200 OK without an audio port: {body!r}")
    return int(match.group(1))


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.osips = OpenSIPSDouble(seed=args.seed)
        self.group = RtpPeerGroup()
        self.tone = sine_payloads(1000)
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.redis_url = os.environ.get("AVC_REDIS_URL", "redis://127.0.0.1:6379/0")
        self.completed = 0
        self.failed = 0
        self.failures: Counter[str] = Counter()
        self.failure_examples: list[str] = []
        self.endings: Counter[str] = Counter()
        self.cancel_missed = 0
        self.reject_watchers: set[asyncio.Task[None]] = set()
        self.reject_linger: list[float] = []  # seconds from a 488 to the session's deletion on the node
        self.reject_not_deleted = 0
        self.echo_surplus: list[int] = []  # per answered call: tone frames echoed back minus tone frames sent
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        await self.osips.start()
        http_port = free_port(socket.SOCK_STREAM)
        self.base_url = f"http://127.0.0.1:{http_port}"
        low, high = self.args.rtp_ports
        env = dict(os.environ)
        env.update(
            AVC_MI_URL=self.osips.mi_datagram_uri,
            AVC_EVENT_PORT=str(free_port()),
            AVC_HTTP_PORT=str(http_port),
            AVC_MODE="echo",
            AVC_ECHO_DELAY_MS=str(self.args.echo_delay_ms),
            AVC_ANSWER_DELAY_MS=str(self.args.answer_delay_ms),
            AVC_RTP_TIMEOUT=str(self.args.rtp_timeout),
            AVC_MAX_CALLS="1000",
            AVC_RTP_PORT_MIN=str(low),
            AVC_RTP_PORT_MAX=str(high),
            AVC_LOG_LEVEL="WARNING",
        )
        self.proc = start_connector(env, self.args.log)
        await self.osips.wait_subscribed(20.0)

    async def close(self) -> int | None:
        code = None
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            # Waited for off the loop: the connector's shutdown still talks MI to the double in this process.
            try:
                code = await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = await asyncio.to_thread(self.proc.wait)
        await self.group.close()
        await self.osips.close()
        return code

    def metrics(self) -> dict[str, float]:
        return scrape(self.base_url + "/metrics")

    def live_calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = http_json(self.base_url + "/calls")["calls"]
        return calls

    async def wait_idle(self, limit: float = 10.0) -> int:
        """Until the connector holds no call (or `limit` seconds); returns how many it still holds."""
        deadline = time.monotonic() + limit
        while True:
            left = len(await asyncio.to_thread(self.live_calls))
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.1)

    # -- one call --------------------------------------------------------------------------------------------------

    async def call(self, ending: str, seconds: float, *, wrap: bool = False) -> Outcome:
        """Place one call and end it the way `ending` says; never raises for the connector's misbehaviour."""
        out = Outcome(ending)
        peer: RtpPeer | None = None
        call: DoubleCall | None = None
        try:
            if wrap:
                seed = seed_for_sequence(65536 - WRAP_LEAD_PACKETS - 5, 65536 - WRAP_LEAD_PACKETS)
                peer = await self.group.create_peer(seed=seed)
                if not 65536 - 200 <= peer.initial_sequence <= 65535:
                    raise RuntimeError(f"the wrap call starts at sequence {peer.initial_sequence}: rtp_peer changed")
                out.extra["initial_sequence"] = peer.initial_sequence
            else:
                peer = await self.group.create_peer()
            codecs = ("G729",) if ending == "reject" else ("PCMU",)
            call = await self.osips.invite(sdp_offer("127.0.0.1", peer.port, codecs=codecs))
            if ending == "reject":
                reply = await call.wait_final(10.0)
                if reply.code != 488:
                    return out.fail(f"reject: answered {reply.code}")
                # The connector deletes the session once the hop-by-hop ACK is reported, or after REJECTED_ACK_WAIT
                # when it missed the ACK: watched apart, so a late deletion does not hold up this caller.
                task = asyncio.create_task(self._watch_reject(call, time.monotonic()))
                self.reject_watchers.add(task)
                task.add_done_callback(self.reject_watchers.discard)
                return out
            if ending == "cancel":
                if self.args.answer_delay_ms <= 0:
                    ending = "bye"  # the connector answers at once: there is no ringing to CANCEL
                elif not await self._wait_ringing(call):
                    return out.fail(f"cancel: no 180 Ringing (state {call.state})")
            if ending == "cancel":
                if call.state is CallState.EARLY:
                    await call.cancel()
                    reply = await call.wait_final(10.0)
                    if reply.code != 487:
                        return out.fail(f"cancel: final {reply.code}, not 487")
                    await call.wait_ended(10.0)  # the connector's ua_session_terminate
                    return out
                self.cancel_missed += 1  # answered before the CANCEL went out: end it as an ordinary call
                ending = "bye"
            reply = await call.wait_final(10.0)
            if reply.code != 200:
                return out.fail(f"answered {reply.code}")
            peer.set_remote("127.0.0.1", answer_port(reply.body))
            peer.start_sending(self.tone)
            await asyncio.sleep(seconds)
            peer.stop_sending()
            out.sent = peer.sent_packets
            # The echo of the last packets comes back after the echo delay and the jitter buffer's prefetch.
            await asyncio.sleep(self.args.echo_delay_ms / 1000 + 0.2)
            if wrap:
                await self._check_wrap(out, call, peer)
            if ending == "rtp_timeout":
                await call.wait_ended(self.args.rtp_timeout + 5.0)
                if not call.terminated_by_app:
                    return out.fail("rtp_timeout: the call did not end by the connector's terminate")
            else:
                if call.ended:
                    return out.fail(f"{ending}: the connector ended the call before the caller hung up")
                await call.bye()
            self._check_echo(out, peer)
            return out
        except (TimeoutError, CallGone, DoubleUsageError, RuntimeError, OSError) as exc:
            return out.fail(f"{ending}: {type(exc).__name__}: {exc}")
        finally:
            if peer is not None:
                peer.close()
                peer.received.clear()  # the group keeps its peers: drop what they hold
            if call is not None and not call.ended and call.state is not CallState.REJECTED:
                try:
                    if call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                        await call.bye()
                except DoubleUsageError:
                    pass

    async def _watch_reject(self, call: DoubleCall, since: float) -> None:
        try:
            await call.wait_ended(REJECT_DELETE_WAIT)
        except TimeoutError:
            self.reject_not_deleted += 1
            return
        self.reject_linger.append(time.monotonic() - since)

    async def _wait_ringing(self, call: DoubleCall) -> bool:
        for _ in range(1000):  # 5 s; DoubleCall offers no wait for a provisional reply
            if call.state is not CallState.OFFERED:
                break
            await asyncio.sleep(0.005)
        return call.state is CallState.EARLY

    def _check_echo(self, out: Outcome, peer: RtpPeer) -> None:
        audio = [p for p in peer.received if p.payload_type == 0]
        out.echo_gaps = sequence_gaps([p.sequence for p in audio])
        out.echoed_tone = tone_frames([p.payload for p in audio])
        # Every tone frame sent comes back once; a few frames at either edge may be lost to the resamplers' ramps.
        if out.echo_gaps:
            out.fail(f"{out.ending}: {out.echo_gaps} packets missing from the echo stream")
        elif out.echoed_tone < out.sent - self.args.echo_slack:
            out.fail(f"{out.ending}: {out.echoed_tone} tone frames echoed of {out.sent} sent")

    async def _check_wrap(self, out: Outcome, call: DoubleCall, peer: RtpPeer) -> None:
        """The connector's own counters for the wrap call, read while it is still up."""
        mine = [c for c in await asyncio.to_thread(self.live_calls) if c["key"] == call.key]
        if not mine or not mine[0].get("rtp"):
            out.fail("wrap: the call is not in /calls")
            out.extra["wrap_lost"] = -1
            return
        rtp = mine[0]["rtp"]
        missing = max(0, peer.sent_packets - rtp["received"])
        lost = missing + rtp["lost"] + rtp["late"] + rtp["duplicate"]
        out.extra.update(
            wrap_lost=lost,
            wrap_connector=rtp,
            wrap_sent=peer.sent_packets,
            wrap_last_sequence=(peer.initial_sequence + peer.sent_packets - 1) & 0xFFFF,
        )
        if lost:
            out.fail(f"wrap: {lost} packets lost across the sequence wrap ({rtp})")

    def record(self, out: Outcome) -> None:
        self.completed += 1
        self.endings[out.ending] += 1
        if out.sent:
            self.echo_surplus.append(out.echoed_tone - out.sent)
        if not out.ok:
            self.failed += 1
            self.failures[out.why.split(":")[0]] += 1
            if len(self.failure_examples) < 10:
                self.failure_examples.append(out.why)
            print(f"call {self.completed} FAILED: {out.why}", flush=True)

    def sample(self) -> dict[str, Any]:
        return {
            "calls": self.completed,
            "rss_mb": round(proc_rss_mb(self.pid), 2),
            "fds": proc_fds(self.pid),
            "threads": proc_status(self.pid, "Threads"),
            "t": round(time.monotonic() - self.started, 1),
        }

    def prune(self) -> None:
        """Keep this process's own bookkeeping bounded over a long run (the double keeps every call otherwise)."""
        self.osips.calls[:] = [c for c in self.osips.calls if not c.ended]
        self.osips.requests.clear()
        self.osips.events_sent.clear()


def phase1_ending(index: int) -> str:
    """The sequential phase's endings in turn: one CANCEL, RTP timeout or rejected offer among every few BYEs."""
    if index % 10 == 3:
        return "cancel"
    if index % 20 == 11:
        return "reject"
    if index % 25 == 7:
        return "rtp_timeout"
    return "bye"


async def phase1(soak: Soak, samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    args = soak.args
    baseline: dict[str, Any] | None = None
    for index in range(args.sequential):
        ending = phase1_ending(index)
        seconds = soak.rng.uniform(0.3, 0.5)
        soak.record(await soak.call(ending, seconds))
        done = index + 1
        if done % args.sample_every == 0 or done == args.sequential:
            left = await soak.wait_idle(5.0)
            sample = {**soak.sample(), "phase": 1, "calls_live": left}
            samples.append(sample)
            print(json.dumps({"progress": "sequential", **sample, "failed": soak.failed}), flush=True)
            if baseline is None and done >= min(args.warmup, args.sequential):
                baseline = sample
    return baseline


async def phase2(soak: Soak, samples: list[dict[str, Any]]) -> dict[str, Any]:
    args = soak.args
    loop = asyncio.get_running_loop()
    end = loop.time() + args.minutes * 60
    first = soak.completed
    wrap_result: dict[str, Any] = {}
    next_sample = [first + args.sample_every]

    def pick_ending() -> str:
        draw = soak.rng.random()
        if draw < 0.04:
            return "cancel"
        if draw < 0.08:
            return "reject"
        if draw < 0.10:
            return "rtp_timeout"
        return "bye"

    async def worker(number: int) -> None:
        await asyncio.sleep(number * 2.0 / max(1, args.concurrent))  # a ramp, not a burst of INVITEs
        wrap = number == 0
        while loop.time() < end or wrap:
            if wrap:
                out = await soak.call("bye", WRAP_CALL_SECONDS, wrap=True)
                wrap_result.update(out.extra, ok=out.ok, why=out.why)
                wrap = False
            else:
                seconds = soak.rng.uniform(args.min_duration, args.max_duration)
                seconds = max(0.3, min(seconds, end - loop.time()))
                out = await soak.call(pick_ending(), seconds)
            soak.record(out)
            if soak.completed >= next_sample[0] and loop.time() < end:  # not while the callers wind down
                next_sample[0] += args.sample_every
                # Sampled under load: the other workers' calls are live, about `--concurrent` of them.
                live = len(await asyncio.to_thread(soak.live_calls))
                sample = {**soak.sample(), "phase": 2, "calls_live": live}
                samples.append(sample)
                soak.prune()
                print(json.dumps({"progress": "concurrent", **sample, "failed": soak.failed}), flush=True)

    await asyncio.gather(*(worker(n) for n in range(args.concurrent)))
    return wrap_result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    soak = Soak(args)
    redis_pattern_all = REDIS_PREFIX + "*"
    redis_before = redis_keys(soak.redis_url, redis_pattern_all)
    await soak.start()
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    exit_code: int | None = None
    try:
        scrape0 = soak.metrics()
        initial = soak.sample()
        print(json.dumps({"progress": "started", **initial, "pool": scrape0.get("avc_rtp_port_pool_size")}), flush=True)
        baseline = await phase1(soak, samples)
        phase2_first = soak.completed
        wrap = await phase2(soak, samples) if args.minutes > 0 else {}
        left_at_end = await soak.wait_idle(15.0)
        if soak.reject_watchers:
            await asyncio.gather(*soak.reject_watchers)
        await asyncio.sleep(args.settle)
        final = soak.sample()
        after = soak.metrics()
        calls_left = len(soak.live_calls())
        base = baseline or initial
        pool = int(after.get("avc_rtp_port_pool_size", -1))
        ports_free = int(after.get("avc_rtp_port_pool_free", -1))
        ours = f"{REDIS_PREFIX}*-{soak.osips.caller_pid}@127.0.0.1"
        redis_ours = redis_keys(soak.redis_url, ours)
        p1 = [(s["calls"], s["rss_mb"]) for s in samples if s["phase"] == 1 and s["calls"] >= args.warmup]
        # Phase 2 warms up too (its first minute grows what 20 live calls need at once): its first `--warmup` calls
        # do not count either.
        p2 = [
            (s["calls"], s["rss_mb"]) for s in samples if s["phase"] == 2 and s["calls"] >= phase2_first + args.warmup
        ]
        slope = rss_slope_mb_per_100([p1, p2])
        wrap_lost = wrap.get("wrap_lost") if wrap else None
        result = {
            "benchmark": "soak",
            "calls_total": soak.completed,
            "calls_failed": soak.failed,
            "rss_start_mb": base["rss_mb"],
            "rss_end_mb": final["rss_mb"],
            "rss_slope_mb_per_100_calls": slope,
            "rss_slope_phase1": rss_slope_mb_per_100([p1]),
            "rss_slope_phase2": rss_slope_mb_per_100([p2]),
            "rss_samples_used": len(p1) + len(p2),
            "fds_start": base["fds"],
            "fds_end": final["fds"],
            "fd_tolerance": args.fd_tolerance,
            "threads_start": base["threads"],
            "threads_end": final["threads"],
            "tasks": "n/a (the connector exposes no asyncio task count)",
            "calls_left": calls_left,
            "calls_left_before_settle": left_at_end,
            "ports_pool": pool,
            "ports_free": ports_free,
            "ports_leaked": pool - ports_free,
            "sessions_left_on_node": len(soak.osips.sessions),
            "redis_ctx_keys_before": redis_before,
            "redis_ctx_keys_after": redis_keys(soak.redis_url, redis_pattern_all),
            "redis_ctx_keys_of_these_calls": redis_ours,
            "wrap_call_lost_packets": wrap_lost,
            "wrap_call": wrap or None,
            "connector_rtp_lost": int(after.get("avc_rtp_packets_lost_total", 0)),
            "connector_rtp_late": int(after.get("avc_rtp_packets_late_total", 0)),
            "connector_outcomes": {
                k.split('"')[1]: int(v) for k, v in after.items() if k.startswith("avc_calls_total{")
            },
            "endings": dict(soak.endings),
            # Per answered call; +3 is normal: the connector's loss concealment repeats the last frame, fading.
            "echo_tone_frames_minus_sent": {
                "min": min(soak.echo_surplus, default=0),
                "mean": round(float(np.mean(soak.echo_surplus)), 2) if soak.echo_surplus else 0,
            },
            "cancel_answered_first": soak.cancel_missed,
            "rejected_sessions_deleted_after_s": {
                "max": round(max(soak.reject_linger, default=0.0), 2),
                "over_2s": sum(1 for t in soak.reject_linger if t > 2.0),
                "of": len(soak.reject_linger),
                "never": soak.reject_not_deleted,
            },
            "failures": dict(soak.failures),
            "failure_examples": soak.failure_examples,
            "sequential": args.sequential,
            "concurrent": args.concurrent,
            "minutes": args.minutes,
            "wall_s": round(time.monotonic() - soak.started, 1),
        }
    finally:
        exit_code = await soak.close()
    result["connector_exit_code"] = exit_code
    result["connector_log_errors"] = log_errors(args.log)
    leaked = (
        result["calls_left"] != 0
        or result["ports_leaked"] != 0
        or result["sessions_left_on_node"] != 0
        or result["fds_end"] - result["fds_start"] > args.fd_tolerance
        or (result["redis_ctx_keys_of_these_calls"] or 0) != 0
        or (args.minutes > 0 and wrap_lost != 0)
    )
    result["pass"] = bool(slope is not None and slope < 1.0 and not leaked and soak.failed == 0)
    return result


def port_range(value: str) -> tuple[int, int]:
    low, _, high = value.partition("-")
    return int(low), int(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=500, help="calls of phase 1, one at a time")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of phase 2 (0: skip it)")
    parser.add_argument("--concurrent", type=int, default=20, help="calls at once in phase 2")
    parser.add_argument("--min-duration", type=float, default=2.0, help="shortest RTP of a phase-2 call, s")
    parser.add_argument("--max-duration", type=float, default=15.0, help="longest RTP of a phase-2 call, s")
    parser.add_argument("--warmup", type=int, default=100, help="phase-1 calls before the RSS slope counts")
    parser.add_argument("--sample-every", type=int, default=25, help="calls between RSS/fd samples")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the last call before the checks")
    parser.add_argument("--fd-tolerance", type=int, default=2, help="fds above the baseline still passing")
    parser.add_argument("--echo-slack", type=int, default=3, help="tone frames a call's echo may miss")
    parser.add_argument("--answer-delay-ms", type=int, default=150, help="AVC_ANSWER_DELAY_MS: ringing time")
    parser.add_argument("--rtp-timeout", type=float, default=2.0, help="AVC_RTP_TIMEOUT, s")
    parser.add_argument("--echo-delay-ms", type=int, default=100, help="AVC_ECHO_DELAY_MS")
    parser.add_argument("--rtp-ports", type=port_range, default=(46000, 46999), help="the connector's RTP range")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", default="/tmp/avc-bench-soak.log", help="the connector's log")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
