"""Tests for avc.conversation.understand_tool: `avc understand` and `avc reindex`, the designers' tools."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avc.conversation.understand_tool import UtteranceError, utterances
from banking.intents import Expect

REPO = Path(__file__).resolve().parents[3]


def test_arguments_are_utterances_with_the_expect_given() -> None:
    lines = list(utterances(["where's my card", "yes"], Expect.YES_NO, io.StringIO("ignored\n")))
    assert lines == [("where's my card", Expect.YES_NO), ("yes", Expect.YES_NO)]


def test_stdin_takes_json_lines_with_their_own_expect_and_plain_lines() -> None:
    stdin = io.StringIO('{"text": "sure", "expect": "yes_no"}\n\nlock my card\n{"text": "hello"}\n')
    assert list(utterances([], Expect.FREE, stdin)) == [
        ("sure", Expect.YES_NO),
        ("lock my card", Expect.FREE),
        ("hello", Expect.FREE),
    ]


@pytest.mark.parametrize("line", ['{"expect": "free"}', '{"text": 3}', '{"text": "x", "expect": "maybe"}', "{bad"])
def test_a_json_line_that_is_not_an_utterance_is_refused_with_its_line_number(line: str) -> None:
    with pytest.raises(UtteranceError, match="stdin line 2"):
        list(utterances([], Expect.FREE, io.StringIO(f"hello\n{line}\n")))


@pytest.mark.models
@pytest.mark.slow
def test_reindex_then_understand_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "AVC_VECTORS_PATH": str(tmp_path / "vectors"), "AVC_MODELS_DIR": str(REPO / ".models")}
    avc = [sys.executable, "-m", "avc.cli"]
    reindexed = subprocess.run([*avc, "reindex"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert reindexed.returncode == 0, reindexed.stderr
    summary = json.loads(reindexed.stdout.strip().splitlines()[-1])
    assert summary["examples"] > 800 and summary["knowledge_entries"] >= 30
    assert summary["collection"].startswith("avc_understanding_") and 0.5 < summary["cross_validated"]["accuracy"] <= 1
    stdin = '{"text": "could you switch my card back on, I found it", "expect": "free"}\nhow late is the branch open\n'
    understood = subprocess.run(
        [*avc, "understand"], cwd=tmp_path, env=env, input=stdin, capture_output=True, text=True, timeout=300
    )
    assert understood.returncode == 0, understood.stderr
    first, second = (json.loads(line) for line in understood.stdout.strip().splitlines())
    assert first["intent"] == "unlock_card" and first["understander"] == "semantic" and first["ms"] > 0
    assert second["intent"] == "knowledge" and second["entry"] and second["answer"]
    refused = subprocess.run(
        [*avc, "understand"], cwd=tmp_path, env=env, input="{oops\n", capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2 and "stdin line 1" in refused.stderr
