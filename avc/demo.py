"""`make demo`: one complete bank call through the connector, on local models, with nothing to configure.

OpenSIPS is not installable here, so the demo plays OpenSIPS with the protocol double from the tests (the real
3.5.9 event and MI bytes) and says so. The connector runs the whole chain (Silero VAD, Whisper tiny.en, the
banking dialogue on the reference bank in PostgreSQL with context in Redis, Piper) and a scripted caller talks
to it over real RTP: its words are synthesised with Piper, its card digits are RFC 4733 DTMF. The caller asks
where the card is, authenticates (date of birth spoken, last four digits keyed), interrupts the bot once to
report a lost card, blocks it and says goodbye.

Printed: the transcript (the bot's side transcribed from the RTP it sent) with each reply's voice-to-voice
latency as the caller measured it. Written to `out/`: a stereo WAV of the call (caller left, bot right), the
call's JSON record and the rows PostgreSQL holds afterwards. The demo uses its own database `avc_demo`,
re-created on each run, so a run never changes anything else.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from avc.chain import ChainApp, chain_factory
from avc.config import Settings, load_settings
from avc.connector import Connector
from avc.engine_setup import build_chain
from avc.g711 import ulaw_decode
from avc.metrics import Metrics
from banking.migrate import migrate

OUT = Path(os.environ.get("AVC_DEMO_OUT", "out"))
DEMO_DATABASE = "avc_demo"
ALICE = {"P-Asserted-Identity": "<tel:+12025550101>"}


@dataclass
class Step:
    kind: str  # "say", "keys", or "interrupt" (say, starting 1.5 s into the bot's reply)
    text: str


SCRIPT = [
    Step("say", "Hi. Where is my new card? It still has not arrived."),
    Step("say", "March fifth, nineteen eighty."),
    Step("keys", "1881"),
    Step("interrupt", "Sorry, I also lost my old card. Please block it."),
    Step("keys", "1"),
    Step("say", "Yes, please."),
    Step("say", "No, that's all. Goodbye."),
]


def _say(message: str) -> None:
    print(message, flush=True)


async def _prepare_database(admin_dsn: str) -> str:
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        sys.exit(
            f"PostgreSQL is not reachable at {admin_dsn} ({exc}). Start it (e.g. `service postgresql start`) or "
            "point AVC_PG_DSN at a server where the user may create databases."
        )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    finally:
        await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{DEMO_DATABASE}"
    await migrate(dsn)
    return dsn


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


async def demo() -> dict[str, Any]:
    try:
        from tests.support.opensips_double import OpenSIPSDouble
        from tests.support.rtp_peer import RtpPeerGroup
        from tests.support.voice_caller import VoiceCaller, say, transcribe
    except ImportError:
        sys.exit("run `make demo` from the repository root: the demo uses the OpenSIPS double in tests/support")

    _say("OpenSIPS 3.5 is not installable on this machine, so this demo drives the connector through the OpenSIPS")
    _say("protocol double (tests/support/opensips_double.py), which speaks the exact event and MI bytes of 3.5.9.")
    base = load_settings()
    dsn = await _prepare_database(base.pg_dsn)
    _say(f"reference bank and call records: PostgreSQL database {DEMO_DATABASE} (migrated and seeded from sql/)")
    metrics = Metrics()
    started = time.monotonic()
    async with OpenSIPSDouble() as osips:
        env = dict(os.environ)
        env.update(
            AVC_MI_URL=osips.mi_datagram_uri,
            AVC_EDGE_MI_URL=osips.mi_http_url,
            AVC_EVENT_PORT="0",
            AVC_MODE="chain",
            AVC_RESPONDER="banking",
            AVC_PG_DSN=dsn,
        )
        settings: Settings = load_settings(env)
        _say(f"loading the local models ({settings.asr_model}, {settings.llm_model}, {settings.tts_model}) ...")
        deps = await build_chain(settings, metrics)
        _say(f"engines ready in {time.monotonic() - started:.1f} s")
        connector = Connector(settings, app_factory=chain_factory(deps), metrics=metrics)
        await connector.start()
        await osips.wait_subscribed(10.0)
        group = RtpPeerGroup()
        engines = deps.engines
        frames = {i: await say(engines, step.text) for i, step in enumerate(SCRIPT) if step.kind != "keys"}
        caller = await VoiceCaller.dial(osips, group, ALICE)
        transcript: list[dict[str, Any]] = []
        sent_audio: list[tuple[float, list[bytes]]] = []
        call_start = asyncio.get_running_loop().time()

        async def bot_reply(since: float, label: str) -> None:
            first = await caller.wait_loud(since=since, timeout_s=30.0)
            await caller.wait_quiet(since=first, quiet_s=1.5, timeout_s=60.0)
            heard = await transcribe(engines, [p.payload for p in caller.bot_frames(since=since)])
            latency = None if label == "greeting" else round((first - since) * 1000)
            transcript.append({"speaker": "bot", "text": heard.strip(), "voice_to_voice_ms": latency})
            _say(f"  bot{'' if latency is None else f' (+{latency} ms)'}: {heard.strip()}")

        _say("\n--- the call ---")
        await bot_reply(call_start, "greeting")
        for i, step in enumerate(SCRIPT):
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
            if step.kind == "interrupt":
                _say(f"  caller (talking over the bot): {step.text}")
            else:
                _say(f"  caller: {step.text}")
            transcript.append({"speaker": "caller", "text": step.text, "interrupting": step.kind == "interrupt"})
            sent_audio.append((asyncio.get_running_loop().time(), frames[i]))
            caller.speak(frames[i])
            async with asyncio.timeout(30):
                while caller.queue or caller.last_loud_sent is None:  # noqa: ASYNC110 - until the words are out
                    await asyncio.sleep(0.01)
            await bot_reply(caller.last_loud_sent, "reply")
        await caller.call.wait_ended(20.0)
        _say("--- the bot hung up after its goodbye ---\n")
        app = next((c._app for c in connector.calls.values()), None)
        stages = app.turns if isinstance(app, ChainApp) else []
        await asyncio.sleep(0.5)
        caller.peer.stop_sending()
        await group.close()
        await connector.stop()
        await deps.close()
        rows = await _rows(dsn, caller.call.call_id)
        record = {
            "call_id": caller.call.call_id,
            "opensips": "protocol double (tests/support/opensips_double.py)",
            "engines": {"asr": settings.asr_model, "llm": settings.llm_model, "tts": settings.tts_model},
            "transcript": transcript,
            "turn_stages": stages,
            "barge_ins": metrics.barge_ins._value.get(),
            "dialog_values_at_edge": osips.dialog_values(caller.call.call_id),
            "postgres": rows,
        }
        write_wav(caller, sent_audio, call_start)
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
