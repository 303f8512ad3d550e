"""`make demo`: one complete bank call through the connector, on local models, with nothing to configure.

The scripted caller places a real SIP call over UDP. OpenSIPS is not installable here, so by default it calls the
protocol double from the tests (the real 3.5.9 SIP, event and MI bytes) and says so; with
`AVC_DEMO_OPENSIPS=sip:bank@HOST:PORT` the same caller dials a real OpenSIPS edge instead, and the connector follows
`AVC_MI_URL` / `AVC_EDGE_MI_URL` like `avc serve` (opensips/README.md).

The connector runs the whole chain (Silero VAD, Whisper tiny.en, the banking dialogue on the reference bank in
PostgreSQL with context in Redis, Piper) and the caller talks to it over real RTP: its words are synthesised
with Piper, its card digits are RFC 4733 DTMF. The caller asks where the card is, authenticates (date of birth
spoken, last four digits keyed), interrupts the bot once to report a lost card, blocks it and says goodbye.

Printed: the transcript (the bot's side transcribed from the RTP it sent) with each reply's voice-to-voice
latency as the caller measured it. Written to `out/`: a stereo WAV of the call (caller left, bot right), the
call's JSON record and the rows PostgreSQL holds afterwards. The demo uses its own database `avc_demo`
(`AVC_DEMO_DATABASE`), re-created on each run, so a run never changes anything else; a second demo on the same
database while one runs is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import redis.asyncio as redis

from avc.config import Settings, load_settings
from avc.connector import Connector
from avc.conversation.chain import ChainApp, chain_factory
from avc.conversation.engine_setup import build_chain
from avc.media.g711 import ulaw_decode
from avc.metrics import Metrics
from avc.opensips.mi import MIError, OpenSIPSMI, mi_client_from_url
from banking.migrate import migrate

OUT = Path(os.environ.get("AVC_DEMO_OUT", "out"))
DEMO_DATABASE = os.environ.get("AVC_DEMO_DATABASE", "avc_demo")
ALICE = {"P-Asserted-Identity": "<tel:+12025550101>"}


@dataclass
class Step:
    kind: str  # "say", "keys", or "interrupt" (say, starting 1.5 s into the bot's reply)
    text: str
    # Words of the bot's re-ask: a caller who hears the question again answers it once more, as people do. The
    # demo must not fall out of step with the bot when Whisper tiny mishears a date on a loaded CPU.
    asked_again: str | None = None


SCRIPT = [
    Step("say", "Hi. Where is my new card? It still has not arrived."),
    Step("say", "March fifth, nineteen eighty.", asked_again="birth"),
    Step("keys", "1881"),
    Step("interrupt", "Sorry, I also lost my old card. Please block it."),
    Step("keys", "1"),
    Step("say", "Yes, please."),
    Step("say", "No, that's all. Goodbye."),
]


def _say(message: str) -> None:
    print(message, flush=True)


async def _prepare_database(admin_dsn: str, name: str, stack: contextlib.AsyncExitStack) -> str:
    """A fresh database `name`, held for this run: a second demo on the same database is refused, not sabotaged."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        sys.exit(f"AVC_DEMO_DATABASE={name!r}: use lower-case letters, digits and underscores")
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        sys.exit(
            f"PostgreSQL is not reachable at {admin_dsn} ({exc}). Start it (e.g. `service postgresql start`) or "
            "point AVC_PG_DSN at a server where the user may create databases."
        )
    # The lock lives as long as this connection, which the exit stack closes when the demo ends.
    stack.push_async_callback(conn.close)
    if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"demo:{name}"):
        sys.exit(f"another demo is using the database {name} right now: wait for it, or set AVC_DEMO_DATABASE")
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    await migrate(dsn)
    return dsn


async def _check_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        sys.exit(
            f"Redis is not reachable at {url} ({exc}). Start a throwaway one with `redis-server --daemonize yes "
            "--bind 127.0.0.1 --port 6379 --save '' --appendonly no`, or point AVC_REDIS_URL at a running server."
        )
    finally:
        await client.aclose()


async def _rows(dsn: str, call_id: str) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(dsn)
    try:
        session = await conn.fetch("SELECT * FROM call_sessions WHERE call_id = $1", call_id)
        ids = [row["id"] for row in session]
        turns = await conn.fetch("SELECT * FROM conversation_turns WHERE session_id = ANY($1) ORDER BY seq", ids)
        audit = await conn.fetch(
            "SELECT * FROM banking_transactions WHERE session_id = ANY($1) ORDER BY created_at", ids
        )
    finally:
        await conn.close()

    def plain(rows: list[Any]) -> list[dict[str, Any]]:
        return [
            {k: (v if isinstance(v, int | float | bool | type(None)) else str(v)) for k, v in r.items()} for r in rows
        ]

    return {"call_sessions": plain(session), "conversation_turns": plain(turns), "banking_transactions": plain(audit)}


async def _edge_dialog_values(edge_mi_url: str, call_id: str) -> dict[str, str]:
    """The call's dialog values at the edge, read as operations read them (`mi dlg_list_ctx`)."""
    if not edge_mi_url:
        return {}
    edge = OpenSIPSMI(mi_client_from_url(edge_mi_url))
    try:
        result = await edge.dlg_list_ctx(call_id)
    except MIError as exc:
        return {"error": str(exc)}
    finally:
        await edge.close()
    values = result.get("Dialog", {}).get("context", {}).get("values", [])
    return {name: value for item in values for name, value in item.items()}


async def _wait_ready(connector: Connector, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not connector.ready:  # noqa: ASYNC110 - the subscription task flips it
            await asyncio.sleep(0.05)


async def demo() -> dict[str, Any]:
    try:
        from demo.opensips_double import OpenSIPSDouble
        from demo.rtp_peer import RtpPeerGroup
        from demo.sip_caller import SipCaller
        from demo.voice_caller import VoiceCaller, say, transcribe
    except ImportError:
        sys.exit("run `make demo` from the repository root: the demo uses the caller and double in tests/support")

    base = load_settings()
    target = os.environ.get("AVC_DEMO_OPENSIPS", "").strip()
    if target and not base.edge_mi_url:
        _say("AVC_DEMO_OPENSIPS is set but AVC_EDGE_MI_URL is not: the edge's dialog values will not be read")
    await _check_redis(base.redis_url)
    metrics = Metrics()
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        dsn = await _prepare_database(base.pg_dsn, DEMO_DATABASE, stack)
        _say(f"reference bank and call records: PostgreSQL database {DEMO_DATABASE} (migrated and seeded from sql/)")
        env = dict(os.environ)
        if target:
            _say(f"calling through the OpenSIPS at {target} (AVC_DEMO_OPENSIPS); the connector takes its events and")
            _say(f"MI from {base.mi_url} (AVC_MI_URL), as `avc serve` would.")
            opensips = f"OpenSIPS at {target}"
        else:
            _say("OpenSIPS 3.5 is not installable on this machine, so this demo calls the OpenSIPS protocol double")
            _say("(demo/opensips_double/): it speaks the exact SIP, event and MI bytes of 3.5.9. Set")
            _say("AVC_DEMO_OPENSIPS=sip:bank@HOST:PORT to place the same call through a real OpenSIPS edge instead.")
            osips = await stack.enter_async_context(OpenSIPSDouble())
            host, port = await osips.listen_sip()
            target = f"sip:bank@{host}:{port}"
            env.update(AVC_MI_URL=osips.mi_datagram_uri, AVC_EDGE_MI_URL=osips.mi_http_url, AVC_EVENT_PORT="0")
            opensips = f"protocol double (demo/opensips_double/), SIP at {host}:{port}"
        env.update(AVC_MODE="chain", AVC_RESPONDER="banking", AVC_PG_DSN=dsn)
        settings: Settings = load_settings(env)
        _say(f"loading the local models ({settings.asr_model}, {settings.llm_model}, {settings.tts_model}) ...")
        deps = await build_chain(settings, metrics)
        stack.push_async_callback(deps.close)
        _say(f"engines ready in {time.monotonic() - started:.1f} s")
        connector = Connector(settings, app_factory=chain_factory(deps), metrics=metrics)
        await connector.start()
        stack.push_async_callback(connector.stop)
        try:
            await _wait_ready(connector, 15.0)
        except TimeoutError:
            sys.exit(f"the connector did not subscribe to E_UA_SESSION at {settings.mi_url} within 15 s")
        group = RtpPeerGroup()
        stack.push_async_callback(group.close)
        sip = await SipCaller.start(os.environ.get("AVC_DEMO_CALLER_IP", "127.0.0.1"))
        stack.push_async_callback(sip.close)
        engines = deps.engines
        frames = {i: await say(engines, step.text) for i, step in enumerate(SCRIPT) if step.kind != "keys"}
        caller = await VoiceCaller.dial_sip(sip, target, group, ALICE)
        transcript: list[dict[str, Any]] = []
        sent_audio: list[tuple[float, list[bytes]]] = []
        call_start = asyncio.get_running_loop().time()
        edge_values: dict[str, str] = {}

        async def bot_reply(since: float, label: str) -> str:
            try:
                first = await caller.wait_loud(since=since, timeout_s=30.0)
            except TimeoutError:
                sys.exit("the bot said nothing for 30 s: the call went off the demo's script (the transcript is above)")
            await caller.wait_quiet(since=first, quiet_s=1.5, timeout_s=60.0)
            heard = await transcribe(engines, [p.payload for p in caller.bot_frames(since=since)])
            latency = None if label == "greeting" else round((first - since) * 1000)
            transcript.append({"speaker": "bot", "text": heard.strip(), "voice_to_voice_ms": latency})
            _say(f"  bot{'' if latency is None else f' (+{latency} ms)'}: {heard.strip()}")
            return heard

        _say("\n--- the call ---")
        await bot_reply(call_start, "greeting")
        for i, step in enumerate(SCRIPT):
            if i == len(SCRIPT) - 1:  # before the goodbye: the edge forgets the dialog once the call is over
                edge_values = await _edge_dialog_values(settings.edge_mi_url, caller.call.call_id)
            if step.kind == "keys":
                transcript.append({"speaker": "caller", "keys": len(step.text)})
                _say(f"  caller: [presses {len(step.text)} key{'s' * (len(step.text) > 1)} on the keypad]")
                keyed = asyncio.get_running_loop().time()
                for digit in step.text:
                    await caller.peer.send_dtmf(digit)
                    await asyncio.sleep(0.12)
                if i + 1 < len(SCRIPT) and SCRIPT[i + 1].kind == "interrupt":
                    await caller.wait_loud(since=keyed, timeout_s=30.0)
                    await asyncio.sleep(1.5)
                    continue
                await bot_reply(keyed, "reply")
                continue
            for attempt in range(2 if step.asked_again else 1):
                if step.kind == "interrupt":
                    _say(f"  caller (talking over the bot): {step.text}")
                else:
                    _say(f"  caller{' (again)' * attempt}: {step.text}")
                transcript.append({"speaker": "caller", "text": step.text, "interrupting": step.kind == "interrupt"})
                sent_audio.append((asyncio.get_running_loop().time(), frames[i]))
                caller.speak(frames[i])
                async with asyncio.timeout(30):
                    while caller.queue or caller.last_loud_sent is None:  # noqa: ASYNC110 - until the words are out
                        await asyncio.sleep(0.01)
                heard = await bot_reply(caller.last_loud_sent, "reply")
                if step.asked_again is None or step.asked_again not in heard.lower():
                    break
                # A person asked again says it again, not the same recording: a voice whose one rendering the
                # recogniser misreads would otherwise fail the same way twice.
                frames[i] = await say(engines, step.text)
        await caller.call.wait_ended(20.0)
        _say("--- the bot hung up after its goodbye (its BYE reached the caller over SIP) ---\n")
        app = next((c._app for c in connector.calls.values()), None)
        stages = app.turns if isinstance(app, ChainApp) else []
        await asyncio.sleep(0.5)
        caller.peer.stop_sending()
        barge_ins = metrics.barge_ins._value.get()
        write_wav(caller, sent_audio, call_start)
    rows = await _rows(dsn, caller.call.call_id)
    record = {
        "call_id": caller.call.call_id,
        "opensips": opensips,
        "engines": {"asr": settings.asr_model, "llm": settings.llm_model, "tts": settings.tts_model},
        "transcript": transcript,
        "turn_stages": stages,
        "barge_ins": barge_ins,
        "dialog_values_at_edge": edge_values,
        "postgres": rows,
    }
    (OUT / "demo-call.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def write_wav(caller: Any, sent: list[tuple[float, list[bytes]]], call_start: float) -> None:
    """out/demo-call.wav: 8 kHz stereo, the caller's words on the left, the bot's audio on the right."""
    OUT.mkdir(exist_ok=True)
    received = caller.bot_frames()
    end = max([p.arrival for p in received] + [t + len(f) * 0.02 for t, f in sent] + [call_start])
    length = int((end - call_start) * 8000) + 160
    stereo = np.zeros((length, 2), dtype=np.int16)

    def place(channel: int, at: float, pcm: np.ndarray) -> None:
        start = int((at - call_start) * 8000)
        n = min(pcm.size, length - start)
        if start >= 0 and n > 0:
            stereo[start : start + n, channel] = pcm[:n]

    for at, frames in sent:
        place(0, at, ulaw_decode(b"".join(frames)))
    for packet in received:
        place(1, packet.arrival, ulaw_decode(packet.payload))
    with wave.open(str(OUT / "demo-call.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(stereo.tobytes())


def main() -> None:
    started = time.monotonic()
    record = asyncio.run(demo())
    rows = record["postgres"]
    print(f"rows written to PostgreSQL ({DEMO_DATABASE}):")
    for table, items in rows.items():
        print(f"  {table}: {len(items)}")
    for row in rows["banking_transactions"]:
        print(f"    audit: {row['operation']} -> {row['outcome']} (auth level {row.get('auth_level')})")
    v2v = [t["voice_to_voice_ms"] for t in record["transcript"] if t.get("voice_to_voice_ms")]
    print(f"voice-to-voice as the caller heard it: median {int(np.median(v2v))} ms over {len(v2v)} replies")
    print(f"written: {OUT / 'demo-call.wav'} (caller left, bot right), {OUT / 'demo-call.json'}")
    print(f"demo wall time: {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
