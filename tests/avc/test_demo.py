"""`make demo` end to end: the scripted bank call runs, says it uses the OpenSIPS double, and leaves its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

pytestmark = [pytest.mark.models, pytest.mark.slow]


def test_the_demo_call_completes_and_writes_transcript_wav_record_and_rows(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "avc.demo"],
        env={**os.environ, "AVC_DEMO_OUT": str(tmp_path), "AVC_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "protocol double" in out and "the bot hung up after its goodbye" in out
    assert "caller (talking over the bot)" in out

    record = json.loads((tmp_path / "demo-call.json").read_text())
    audit = {(row["operation"], row["outcome"]) for row in record["postgres"]["banking_transactions"]}
    assert ("delivery_status", "ok") in audit
    assert any(op == "block_card" for op, _ in audit)
    assert record["barge_ins"] >= 1
    stored = " ".join(row["text"] for row in record["postgres"]["conversation_turns"])
    assert "1881" not in stored and "1980" not in stored  # keyed digits and date of birth never stored in clear
    assert record["dialog_values_at_edge"]["ai_auth_level"] == "1"

    with wave.open(str(tmp_path / "demo-call.wav")) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        assert wav.getnframes() / 8000 > 20
