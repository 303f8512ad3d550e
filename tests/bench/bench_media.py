"""Media benchmark: how many echo calls one core carries with zero loss and tight pacing.

`make bench-media` (or `python -m tests.bench.bench_media --help`). The connector runs as its own process
(`avc serve`, echo mode) pinned to CPU 0; this process, pinned to CPU 1, plays OpenSIPS (the protocol double)
and every caller (real RTP on loopback, a 1 kHz tone each way). Calls are added in steps; at each step the
window's figures are taken from three places:
- loss: sequence gaps in what the callers received, plus the connector's own lost/late counters (/metrics);
- send-interval jitter: on a sample of calls, inter-arrival times taken from KERNEL receive timestamps
  (SO_TIMESTAMPNS), so this process's own scheduling noise does not count against the connector;
- CPU and RSS of the connector process from /proc.
The largest step with zero loss and p99 |interval - 20 ms| <= 5 ms is the answer; it is then re-run `--repeat`
times for median/p95 figures. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from demo.opensips_double import OpenSIPSDouble, sdp_offer
from demo.rtp_peer import RtpPeer, RtpPeerGroup, sine_payloads

PERIOD = 0.020
JITTER_LIMIT_MS = 5.0
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
RTP_HEADER = struct.Struct("!BBHII")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ProbePeer:
    """A caller whose receive times come from the kernel, not from this (busy) process's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, payload: bytes) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.remote: tuple[str, int] | None = None
        self.arrivals: list[tuple[float, int]] = []  # (kernel time, sequence)
        self._loop = loop
        self._payload = payload
        self._seq = 0
        self._ts = 0
        self._ssrc = int.from_bytes(os.urandom(4), "big")
        loop.add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return
            if len(data) < 12:
                continue
            stamp = time.time()
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    stamp = sec + nsec / 1e9
            _, pt, seq, _, _ = RTP_HEADER.unpack_from(data)
            if pt & 0x7F == 0:
                self.arrivals.append((stamp, seq))

    def send(self) -> None:
        if self.remote is None:
            return
        header = RTP_HEADER.pack(0x80, 0, self._seq & 0xFFFF, self._ts & 0xFFFFFFFF, self._ssrc)
        self._seq += 1
        self._ts += 160
        self.sock.sendto(header + self._payload, self.remote)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


@dataclass
class StepResult:
    calls: int
    lost_at_callers: int
    connector_lost: int
    connector_late: int
    packets_checked: int
    jitter_p99_ms: float
    jitter_max_ms: float
    cpu_core_fraction: float
    rss_mb: float
    generator_skipped_ticks: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.lost_at_callers == 0
            and self.connector_lost == 0
            and self.connector_late == 0
            and self.jitter_p99_ms <= JITTER_LIMIT_MS
        )


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else math.nan


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def start_connector(env: dict[str, str], log_path: str) -> subprocess.Popen[bytes]:
    """`avc serve` pinned to CPU 0; its log goes to `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "avc.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {0}),
        )


def answer_port(body: str | None) -> int:
    match = re.search(r"^m=audio (\d+) ", body or "", re.MULTILINE)
    if match is None:
        raise RuntimeError(f"200 OK without an audio port: {body!r}")
    return int(match.group(1))


def gaps(sequences: list[int]) -> tuple[int, int]:
    """(lost, checked) for a run of 16-bit sequence numbers received in order or not."""
    if len(sequences) < 2:
        return 0, len(sequences)
    extended = np.unwrap(np.array(sequences, dtype=np.float64), period=65536)
    expected = int(extended.max() - extended.min()) + 1
    return max(0, expected - len(set(extended.astype(np.int64).tolist()))), len(sequences)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.osips: OpenSIPSDouble | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""
        self.group = RtpPeerGroup()
        self.probe_payload = sine_payloads(1000)(0)
        self.probe_task: asyncio.Task[None] | None = None
        self.probes: list[ProbePeer] = []

    async def start(self) -> None:
        self.osips = OpenSIPSDouble()
        await self.osips.start()
        http_port = free_port(socket.SOCK_STREAM)
        self.metrics_url = f"http://127.0.0.1:{http_port}/metrics"
        env = dict(os.environ)
        env.update(
            AVC_MI_URL=self.osips.mi_datagram_uri,
            AVC_EVENT_PORT=str(free_port()),
            AVC_HTTP_PORT=str(http_port),
            AVC_MODE="echo",
            AVC_ECHO_DELAY_MS="200",
            AVC_MAX_CALLS="2000",
            AVC_RTP_PORT_MIN="30000",
            AVC_RTP_PORT_MAX="39999",
            AVC_LOG_LEVEL="WARNING",
            AVC_RTP_TIMEOUT="60",
        )
        self.proc = start_connector(env, self.args.log)
        await self.osips.wait_subscribed(15.0)
        self.baseline_rss = proc_rss_mb(self.proc.pid)
        loop = asyncio.get_running_loop()
        self.probe_task = loop.create_task(self._drive_probes())

    async def _drive_probes(self) -> None:
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * PERIOD - loop.time()))
            for probe in self.probes:
                probe.send()

    async def place(self, count: int) -> tuple[list[Any], list[RtpPeer]]:
        assert self.osips is not None
        calls: list[Any] = []
        peers: list[RtpPeer] = []
        source = sine_payloads(1000)
        for i in range(count):
            if i < self.args.probes:
                probe = ProbePeer(asyncio.get_running_loop(), self.probe_payload)
                call = await self.osips.invite(sdp_offer("127.0.0.1", probe.port))
                reply = await call.wait_final(10.0)
                if reply.code != 200:
                    raise RuntimeError(f"call {i} answered {reply.code}")
                probe.remote = ("127.0.0.1", answer_port(reply.body))
                self.probes.append(probe)
            else:
                peer = await self.group.create_peer(keep_payload=False)
                call = await self.osips.invite(sdp_offer("127.0.0.1", peer.port))
                reply = await call.wait_final(10.0)
                if reply.code != 200:
                    raise RuntimeError(f"call {i} answered {reply.code}")
                peer.set_remote("127.0.0.1", answer_port(reply.body))
                peer.start_sending(source)
                peers.append(peer)
            calls.append(call)
            if i % 20 == 19:
                await asyncio.sleep(0.05)  # a ramp, not a flood: OpenSIPS paces new calls too
        return calls, peers

    async def step(self, count: int) -> StepResult:
        assert self.proc is not None
        leftover = scrape(self.metrics_url).get("avc_calls_active", 0)
        calls, peers = await self.place(count)
        await asyncio.sleep(self.args.warmup)
        for probe in self.probes:
            probe.arrivals.clear()
        marks = [len(p.received) for p in peers]
        skipped0 = self.group.skipped_ticks
        before = scrape(self.metrics_url)
        cpu0, t0 = proc_cpu_seconds(self.proc.pid), time.monotonic()
        await asyncio.sleep(self.args.window)
        cpu1, t1 = proc_cpu_seconds(self.proc.pid), time.monotonic()
        after = scrape(self.metrics_url)
        rss = proc_rss_mb(self.proc.pid)

        lost = checked = 0
        for peer, mark in zip(peers, marks, strict=True):
            seqs = [p.sequence for p in peer.received[mark:] if p.payload_type == 0]
            gap, n = gaps(seqs)
            lost, checked = lost + gap, checked + n
        deviations: list[float] = []
        for probe in self.probes:
            arrivals = sorted(probe.arrivals, key=lambda a: a[0])
            gap, n = gaps([seq for _, seq in arrivals])
            lost, checked = lost + gap, checked + n
            times = np.array([t for t, _ in arrivals])
            deviations.extend((np.abs(np.diff(times) - PERIOD) * 1000).tolist())
        dev = np.array(deviations) if deviations else np.array([math.inf])

        def delta(name: str) -> int:
            return int(after.get(name, 0) - before.get(name, 0))

        result = StepResult(
            calls=count,
            lost_at_callers=lost,
            connector_lost=delta("avc_rtp_packets_lost_total"),
            connector_late=delta("avc_rtp_packets_late_total"),
            packets_checked=checked,
            jitter_p99_ms=round(float(np.percentile(dev, 99)), 3),
            jitter_max_ms=round(float(dev.max()), 3),
            cpu_core_fraction=round((cpu1 - cpu0) / (t1 - t0), 4),
            rss_mb=round(rss, 1),
            generator_skipped_ticks=self.group.skipped_ticks - skipped0,
            extra={
                "connector_received": delta("avc_rtp_packets_received_total"),
                "calls_left_from_previous_step": int(leftover),
                "generator_max_lateness_ms": round(self.group.max_lateness * 1000, 1),
                "connector_ticks_late_over_2ms_pct": round(
                    100
                    * (
                        1
                        - delta('avc_media_tick_lateness_seconds_bucket{le="0.002"}')
                        / max(1, delta("avc_media_tick_lateness_seconds_count"))
                    ),
                    2,
                ),
                "connector_gc_gen2_pauses": delta('avc_gc_pause_seconds_count{generation="2"}'),
                "connector_gc_pauses_over_2ms": delta("avc_gc_pause_seconds_count")
                - sum(delta(f'avc_gc_pause_seconds_bucket{{generation="{g}",le="0.002"}}') for g in range(3)),
                "connector_ticks_late_over_5ms_pct": round(
                    100
                    * (
                        1
                        - delta('avc_media_tick_lateness_seconds_bucket{le="0.005"}')
                        / max(1, delta("avc_media_tick_lateness_seconds_count"))
                    ),
                    2,
                ),
            },
        )
        await self.hang_up(calls, peers)
        return result

    async def hang_up(self, calls: list[Any], peers: list[RtpPeer]) -> None:
        for peer in peers:
            peer.stop_sending()
            peer.close()
        for probe in self.probes:
            probe.close()
        self.probes.clear()
        for call in calls:
            await call.bye()
        # Let the connector release everything before the next step measures its baseline.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if scrape(self.metrics_url).get("avc_calls_active", 0) == 0:
                break
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self.probe_task is not None:
            self.probe_task.cancel()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        await self.group.close()
        if self.osips is not None:
            await self.osips.close()


def summarize(values: list[float]) -> dict[str, float]:
    arr = np.array(values, dtype=np.float64)
    return {"median": round(float(np.median(arr)), 4), "p95": round(float(np.percentile(arr, 95)), 4)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    os.sched_setaffinity(0, {1})
    # The callers' side keeps every packet it receives: a full collection over them would stall it for tens of
    # milliseconds and make its own sending bursty. The run is bounded, so collection can wait.
    gc.disable()
    bench = Bench(args)
    await bench.start()
    steps: list[StepResult] = []
    try:
        for count in args.steps:
            result = await bench.step(count)
            steps.append(result)
            print(json.dumps({"step": result.calls, "ok": result.ok, **vars(result)}), flush=True)
            if not result.ok:
                break
        passing = [s for s in steps if s.ok]
        best = max((s.calls for s in passing), default=0)
        repeats: list[StepResult] = []
        if best:
            for _ in range(args.repeat):
                repeats.append(await bench.step(best))
                print(json.dumps({"repeat": best, "ok": repeats[-1].ok, **vars(repeats[-1])}), flush=True)
    finally:
        await bench.close()
    per_call_cpu = [r.cpu_core_fraction / r.calls * 100 for r in repeats]
    per_call_rss = [(r.rss_mb - bench.baseline_rss) / r.calls * 1024 for r in repeats]
    return {
        "benchmark": "media",
        "max_calls_one_core": best,
        "criteria": {"loss": 0, "p99_send_interval_jitter_ms_max": JITTER_LIMIT_MS},
        "repeats_at_max": len(repeats),
        "repeats_all_ok": all(r.ok for r in repeats),
        "jitter_p99_ms": summarize([r.jitter_p99_ms for r in repeats]) if repeats else None,
        "cpu_percent_of_core_per_call": summarize(per_call_cpu) if repeats else None,
        "cpu_core_fraction_at_max": summarize([r.cpu_core_fraction for r in repeats]) if repeats else None,
        "rss_kib_per_call": summarize(per_call_rss) if repeats else None,
        "rss_mb_idle": round(bench.baseline_rss, 1),
        "steps": [
            {"calls": s.calls, "ok": s.ok, "jitter_p99_ms": s.jitter_p99_ms, "cpu": s.cpu_core_fraction} for s in steps
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=lambda v: [int(x) for x in v.split(",")], default=[50, 100, 150, 200, 250, 300])
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--probes", type=int, default=10, help="calls measured with kernel timestamps")
    parser.add_argument("--repeat", type=int, default=3, help="re-runs of the best step for median/p95")
    parser.add_argument("--log", default="/tmp/avc-bench-media.log", help="the connector's log")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench-media needs 2 CPUs: one for the connector, one for OpenSIPS and the callers")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
