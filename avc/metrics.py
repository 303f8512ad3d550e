"""Prometheus metrics of one connector process.

Each `Metrics` owns its own registry (no module-level state), so tests and several connectors in one
process never share counters. Per-packet RTP counts are plain integers on each stream, summed at
scrape time by `RtpCollector`: a prometheus Counter.inc() per packet would cost a lock on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass
class RtpCounters:
    """Counters one RTP stream updates per packet; summed over all streams at scrape time."""

    sent: int = 0
    received: int = 0
    late: int = 0
    lost: int = 0
    duplicate: int = 0
    rejected_source: int = 0
    malformed: int = 0
    concealed: int = 0
    send_dropped: int = 0

    def add(self, other: RtpCounters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


_RTP_HELP = {
    "sent": "RTP packets sent",
    "received": "RTP packets received and accepted",
    "late": "RTP packets that arrived after their playout time",
    "lost": "RTP packets never received (gaps in sequence numbers)",
    "duplicate": "RTP packets received twice",
    "rejected_source": "RTP packets dropped because they came from an address not in the SDP",
    "malformed": "datagrams on an RTP port that are not valid RTP",
    "concealed": "20 ms frames filled by loss concealment",
    "send_dropped": "RTP packets not sent because the socket's send buffer was full",
}


class RtpCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[RtpCounters]], finished: RtpCounters) -> None:
        self._source = source
        self._finished = finished

    def collect(self) -> Iterator[Metric]:
        total = RtpCounters()
        total.add(self._finished)
        for c in self._source():
            total.add(c)
        for name, help_text in _RTP_HELP.items():
            family = CounterMetricFamily(f"avc_rtp_packets_{name}", help_text)
            family.add_metric([], getattr(total, name))
            yield family


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.calls_active = Gauge("avc_calls_active", "Calls in progress on this connector", registry=r)
        self.calls = Counter("avc_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self.call_rejects = Counter(
            "avc_call_rejects", "NEW sessions answered with an error, by SIP code", ["code"], registry=r
        )
        self.call_duration = Histogram(
            "avc_call_duration_seconds",
            "Call duration from answer to end",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.events = Counter("avc_events", "E_UA_SESSION events received, by type", ["event_type"], registry=r)
        self.events_malformed = Counter("avc_events_malformed", "Event datagrams that could not be parsed", registry=r)
        self.stranded_sessions = Counter(
            "avc_stranded_sessions",
            "Sessions found on the node without a call here (ended, deleted, refused) or calls whose session the "
            "node lost (session_lost), by what was done",
            ["action"],
            registry=r,
        )
        self.events_unknown_key = Counter(
            "avc_events_unknown_key", "Events for a session key this node does not know", registry=r
        )
        self.mi_requests = Counter("avc_mi_requests", "MI requests sent, by command", ["command"], registry=r)
        self.mi_errors = Counter(
            "avc_mi_errors",
            "MI requests that failed, by command and kind (timeout, transport, jsonrpc)",
            ["command", "kind"],
            registry=r,
        )
        self.mi_latency = Histogram(
            "avc_mi_latency_seconds",
            "MI round-trip time",
            ["transport"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.subscription_up = Gauge(
            "avc_event_subscription_up", "1 while the E_UA_SESSION subscription is believed active", registry=r
        )
        self.subscription_attempts = Counter(
            "avc_event_subscription_attempts", "event_subscribe attempts, by result", ["result"], registry=r
        )
        self.opensips_restarts = Counter(
            "avc_opensips_restarts_detected", "Times the subscription was found missing and renewed", registry=r
        )
        self.transfers = Counter("avc_transfers", "Transfers to a human agent, by result", ["result"], registry=r)
        self.dtmf = Counter("avc_dtmf_digits", "DTMF digits received, by source", ["source"], registry=r)
        self.dialog_pushes = Counter(
            "avc_dialog_var_pushes", "dlg_push_var calls to the edge, by result", ["result"], registry=r
        )
        self.tick_lateness = Histogram(
            "avc_media_tick_lateness_seconds",
            "How late each 20 ms media tick ran behind its schedule (send-time jitter of every stream)",
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05),
            registry=r,
        )
        self.gc_pause = Histogram(
            "avc_gc_pause_seconds",
            "Python cyclic garbage collector pauses, by generation (they stall the media tick)",
            ["generation"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
            registry=r,
        )
        self.port_pool_free = Gauge("avc_rtp_port_pool_free", "Free RTP ports", registry=r)
        self.port_pool_size = Gauge("avc_rtp_port_pool_size", "RTP ports in the pool", registry=r)
        # The conversation layer (engine chain, dialogue, storage); the media core leaves these at zero.
        self.turn_stage = Histogram(
            "avc_turn_stage_seconds",
            "Per-turn latency by stage: endpoint (speech end -> turn end), asr, dialogue, llm_first_token, "
            "tts_first_audio, voice_to_voice (caller's speech end -> first reply packet with speech)",
            ["stage"],
            buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0),
            registry=r,
        )
        self.barge_ins = Counter("avc_barge_ins", "Caller speech that interrupted the bot", registry=r)
        self.no_inputs = Counter(
            "avc_no_inputs", "Bot turns met with silence (no speech, no key) for AVC_NO_INPUT_S", registry=r
        )
        self.barge_in_stop = Histogram(
            "avc_barge_in_stop_seconds",
            "From the caller's speech onset to the bot's last packet of speech",
            buckets=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
            registry=r,
        )
        self.engine_errors = Counter(
            "avc_engine_errors", "Engine failures, by engine kind and provider", ["engine", "provider"], registry=r
        )
        self.engine_fallbacks = Counter(
            "avc_engine_fallbacks",
            "Requests served by a fallback provider after the primary failed",
            ["engine", "primary", "fallback"],
            registry=r,
        )
        self.auth_outcomes = Counter(
            "avc_auth_outcomes", "Caller authentication attempts, by result", ["result"], registry=r
        )
        self.writer_queue_depth = Gauge(
            "avc_writer_queue_depth", "Conversation records waiting to be written to PostgreSQL", registry=r
        )
        self.writer_failures = Counter(
            "avc_writer_failures", "PostgreSQL writes that failed and were queued for replay", registry=r
        )
        self.close_errors = Counter(
            "avc_close_errors",
            "Failures while ending a call, by part (responder: its final journal record or context delete)",
            ["part"],
            registry=r,
        )
        self.ready = Gauge("avc_ready", "1 while the node accepts new calls (readiness)", registry=r)
        self.rtp_finished = RtpCounters()
        self._rtp_sources: list[Callable[[], Iterable[RtpCounters]]] = []
        r.register(RtpCollector(self._live_rtp, self.rtp_finished))

    def add_rtp_source(self, source: Callable[[], Iterable[RtpCounters]]) -> None:
        """Register a callable listing the counters of the streams that are still open."""
        self._rtp_sources.append(source)

    def _live_rtp(self) -> Iterator[RtpCounters]:
        for source in self._rtp_sources:
            yield from source()

    def render(self) -> bytes:
        return generate_latest(self.registry)
