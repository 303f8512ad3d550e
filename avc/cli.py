"""`avc` command line: `avc serve` runs a connector node, `avc calls` lists the live calls of a node, `avc understand`
reads utterances as a call would and `avc reindex` rebuilds the understanding index (the designers' tools)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress

from avc.config import ConfigError, Settings, load_settings
from avc.connector import Connector
from avc.conversation import understand_tool
from avc.conversation.chain import chain_factory
from avc.conversation.engine_setup import build_chain
from avc.logs import setup_logging
from avc.metrics import Metrics
from avc.ops_http import start_http
from banking.intent_catalog import ContentError
from banking.intents import Expect
from engines.errors import EngineError

log = logging.getLogger("avc")


async def serve(settings: Settings) -> None:
    metrics = Metrics()
    connector = Connector(settings, metrics=metrics)
    # Health and readiness answer from the start: /readyz stays false while the models load.
    runner = await start_http(connector, settings.http_host, settings.http_port)
    # Callers a crashed predecessor left on the node hear silence until something ends their calls: end them now,
    # not after the models have loaded (tens of seconds).
    await connector.reconcile_before_start()
    deps = None
    if settings.mode == "chain":
        # Models load before the node subscribes to events: no call arrives before it can be answered.
        deps = await build_chain(settings, metrics)
        connector.app_factory = chain_factory(deps)
    await connector.start()
    # Everything loaded so far (models, modules) lives for the whole process: keep it out of the cyclic
    # collector's full passes, whose pauses would otherwise land on the 20 ms media tick.
    gc.freeze()
    gc.callbacks.append(_gc_timer(metrics))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Graceful drain: readiness goes false and new calls get 503 so the edge moves on; active calls
    # may finish up to the drain deadline.
    log.info("signal received: draining up to %.0f s", settings.drain_timeout)
    await connector.drain()
    await connector.stop()
    await runner.cleanup()
    if deps is not None:
        await deps.close()


def _gc_timer(metrics: Metrics) -> Callable[[str, dict[str, int]], None]:
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            metrics.gc_pause.labels(str(info["generation"])).observe(time.perf_counter() - started[0])

    return on_gc


def calls(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/calls", timeout=3) as resp:
            data = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach the connector at {url}: {exc}", file=sys.stderr)
        return 1
    rows = data.get("calls", [])
    if not rows:
        print("no active calls")
        return 0
    print(
        f"{'KEY':<38} {'STATE':<12} {'DURATION':>8} {'CODEC':<5} {'ANI':<6} {'INTENT':<16} {'AUTH':<4} "
        f"{'LAST V2V':>8} {'RTP in/out/lost':<18}"
    )
    for c in rows:
        rtp = c.get("rtp") or {}
        counts = f"{rtp.get('received', 0)}/{rtp.get('sent', 0)}/{rtp.get('lost', 0)}"
        v2v = c.get("last_voice_to_voice_ms")
        print(
            f"{c['key']:<38} {c['state']:<12} {c['duration_s']:>7.1f}s {c.get('codec') or '-':<5} "
            f"{c.get('ani_last4') or '-':<6} {c.get('ai_intent') or '-':<16} {c.get('ai_auth_level') or '-':<4} "
            f"{f'{v2v} ms' if v2v is not None else '-':>8} {counts:<18}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avc", description="AI Voice Connector")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the connector (settings from AVC_* environment variables and .env)")
    calls_p = sub.add_parser("calls", help="list live calls on a running connector")
    calls_p.add_argument("--url", default=None, help="connector HTTP endpoint (default from AVC_HTTP_HOST/PORT)")
    understand_p = sub.add_parser(
        "understand", help="read utterances (arguments, or JSON lines on stdin) and print what the line understands"
    )
    understand_p.add_argument("text", nargs="*", help="utterances; none: read stdin")
    understand_p.add_argument(
        "--expect", default="free", choices=[e.value for e in Expect], help="what the bot had just asked for"
    )
    understand_p.add_argument("--llm", action="store_true", help="also ask the LLM (loads it: seconds)")
    sub.add_parser("reindex", help="rebuild the understanding index from banking/content/*.yaml")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "calls":
        return calls(args.url or f"http://{settings.http_host}:{settings.http_port}")
    if args.command in ("understand", "reindex"):
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        try:
            if args.command == "reindex":
                return understand_tool.reindex(settings, sys.stdout)
            return asyncio.run(
                understand_tool.understand(
                    settings, args.text, Expect(args.expect), with_llm=args.llm, stdin=sys.stdin, out=sys.stdout
                )
            )
        except (understand_tool.UtteranceError, EngineError, ContentError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    setup_logging(settings.log_level, settings.log_json, settings.extra.get("AVC_LOG_LEVELS", ""))
    with suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
