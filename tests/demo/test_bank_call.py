"""`make demo` end to end: the scripted bank call runs, says it uses the OpenSIPS double, and leaves its outputs."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from avc.config import load_settings
from demo.opensips_double import OpenSIPSDouble

pytestmark = [pytest.mark.models, pytest.mark.slow]


@pytest.fixture
async def demo_env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """The demo's environment with a database of its own, dropped afterwards (the demo keeps `avc_demo`)."""
    name = f"avc_demo_test_{secrets.token_hex(4)}"
    yield {**os.environ, "AVC_DEMO_OUT": str(tmp_path), "AVC_LOG_LEVEL": "WARNING", "AVC_DEMO_DATABASE": name}
    conn = await asyncpg.connect(load_settings().pg_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def run_demo(env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "demo", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 600)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_the_demo_call_completes_and_writes_transcript_wav_record_and_rows(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    code, out = await run_demo(demo_env)
    assert code == 0, out[-4000:]
    assert "protocol double" in out and "its BYE reached the caller over SIP" in out
    assert "caller (talking over the bot)" in out

    record = json.loads((tmp_path / "demo-call.json").read_text())
    assert "SIP at 127.0.0.1:" in record["opensips"]  # the caller dialled the double's SIP socket
    audit = {(row["operation"], row["outcome"]) for row in record["postgres"]["banking_transactions"]}
    assert ("delivery_status", "ok") in audit
    assert any(op == "block_card" for op, _ in audit)
    assert record["barge_ins"] >= 1
    stored = " ".join(row["text"] for row in record["postgres"]["conversation_turns"])
    assert "1881" not in stored and "1980" not in stored  # keyed digits and date of birth never stored in clear
    edge = record["dialog_values_at_edge"]  # what `opensips-cli -x mi dlg_list_ctx` shows operations
    assert edge["ai_auth_level"] == "1" and edge["ai_state"] == "active"
    assert int(edge["ai_last_v2v_ms"]) > 0 and edge["ai_intent"]

    with wave.open(str(tmp_path / "demo-call.wav")) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        assert wav.getnframes() / 8000 > 20


async def test_with_avc_demo_opensips_the_same_caller_goes_through_the_opensips_it_names(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    # The documented setting for a real OpenSIPS, pointed here at a double the demo did not start: the demo must
    # dial that SIP address and configure its connector from AVC_MI_URL / AVC_EDGE_MI_URL, as `avc serve` does.
    async with OpenSIPSDouble() as osips:
        host, port = await osips.listen_sip()
        target = f"sip:bank@{host}:{port}"
        env = {
            **demo_env,
            "AVC_DEMO_OPENSIPS": target,
            "AVC_MI_URL": osips.mi_http_url,
            "AVC_EDGE_MI_URL": osips.mi_http_url,
            "AVC_EVENT_PORT": "0",
        }
        code, out = await run_demo(env)
        invites = [m for m in osips.sip.received_messages if m.method == "INVITE"]
    assert code == 0, out[-4000:]
    assert f"calling through the OpenSIPS at {target}" in out and "its BYE reached the caller over SIP" in out
    record = json.loads((tmp_path / "demo-call.json").read_text())
    assert record["opensips"] == f"OpenSIPS at {target}"
    [call] = osips.calls
    assert call.terminated_by_app and call.call_id == record["call_id"]
    assert invites[0].get("P-Asserted-Identity") == "<tel:+12025550101>"  # the caller's number, as a carrier sends it
    assert record["dialog_values_at_edge"]["ai_auth_level"] == "1"


async def test_a_second_demo_on_the_same_database_is_refused_not_sabotaged(demo_env: dict[str, str]) -> None:
    name = demo_env["AVC_DEMO_DATABASE"]
    conn = await asyncpg.connect(load_settings().pg_dsn)
    try:
        # What a running demo holds for its whole call.
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"demo:{name}")
        code, out = await run_demo(demo_env)
    finally:
        await conn.close()
    assert code != 0
    assert f"another demo is using the database {name} right now" in out
