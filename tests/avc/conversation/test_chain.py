"""The engine chain over real RTP with real models: Silero VAD, Whisper tiny.en, Piper joe, SmolLM2.

The caller speaks with Piper's voice through G.711 on loopback; what the bot says is recorded on the caller's side
and transcribed back with Whisper. OpenSIPS is the protocol double.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from avc.config import Settings
from avc.conversation.chain import ChainApp
from avc.conversation.engine_setup import with_cloud_engines
from avc.conversation.responder import LlmResponder, RepeatResponder, Responder
from avc.metrics import Metrics
from demo.opensips_double import sdp_offer
from demo.voice_caller import VoiceCaller, loud, say, transcribe
from engines.fallback import FallbackTts
from engines.manifest import Manifest
from engines.offload import InferencePool
from engines.registry import Engines
from engines.tts.elevenlabs import ElevenLabsTts
from tests.support.chain_node import chain_node
from tests.support.cloud.elevenlabs_server import ElevenLabsDouble, SpeechReply

pytestmark = pytest.mark.models


@pytest.fixture
async def harness(engines: Engines) -> AsyncIterator[dict[str, Any]]:
    responders: list[Responder] = []
    kind: dict[str, str] = {"responder": "repeat"}

    def make_responder(call_id: str, ani: str | None) -> Responder:
        responder: Responder
        responder = LlmResponder(engines.llm) if kind["responder"] == "llm" else RepeatResponder(call_id, ani)
        responders.append(responder)
        return responder

    async with chain_node(engines, make_responder, list(RepeatResponder("", None).static_prompts())) as node:
        yield {
            "osips": node.osips,
            "connector": node.connector,
            "group": node.group,
            "responders": responders,
            "kind": kind,
            "metrics": node.metrics,
        }


async def call_in(h: dict[str, Any]) -> VoiceCaller:
    return await VoiceCaller.dial(h["osips"], h["group"])


async def test_the_bot_greets_hears_the_caller_and_answers_in_speech(harness: dict[str, Any], engines: Engines) -> None:
    caller = await call_in(harness)
    await caller.wait_quiet()
    greeting = await transcribe(engines, [p.payload for p in caller.bot_frames()])
    assert "repeat" in greeting.lower()

    words = await say(engines, "Where is my new credit card?")
    caller.speak(words)
    spoke_at = caller.speech_started
    assert spoke_at is not None
    await caller.wait_quiet(since=spoke_at + len(words) * 0.02)
    reply = await transcribe(engines, [p.payload for p in caller.bot_frames(since=spoke_at)])
    assert "card" in reply.lower() and "said" in reply.lower()

    responder = harness["responders"][0]
    assert isinstance(responder, RepeatResponder)
    assert "card" in responder.heard[0].lower()
    app = next(iter(harness["connector"].calls.values()))._app
    assert isinstance(app, ChainApp)
    assert {"endpoint", "asr", "tts_first_audio", "voice_to_voice"} <= set(app.turns[-1])
    assert b'avc_turn_stage_seconds_count{stage="voice_to_voice"} 1.0' in harness["metrics"].render()


async def test_caller_talking_over_the_bot_stops_its_audio_and_trims_the_history(
    harness: dict[str, Any], engines: Engines
) -> None:
    caller = await call_in(harness)
    loop = asyncio.get_running_loop()
    await caller.wait_loud()
    await asyncio.sleep(0.8)  # well into the greeting
    interruption = await say(engines, "Sorry, I need to speak to somebody about my account please.")
    caller.speak(interruption)
    onset = caller.speech_started
    assert onset is not None
    await asyncio.sleep(1.0)
    bot_during = [p for p in caller.bot_frames(since=onset) if p.arrival < onset + 1.0 and loud(p.payload)]
    last_bot_speech = max((p.arrival for p in bot_during), default=onset)
    assert last_bot_speech - onset < 0.5, "the bot kept talking over the caller"

    await caller.wait_quiet(since=onset + len(interruption) * 0.02)
    responder = harness["responders"][0]
    assert isinstance(responder, RepeatResponder)
    said, interrupted = responder.spoken[0]
    assert interrupted and 0 < len(said.split()) < len(RepeatResponder.GREETING.split())
    assert harness["metrics"].barge_ins._value.get() >= 1
    assert loop.time() > onset


async def test_llm_answers_are_spoken_while_they_are_generated(harness: dict[str, Any], engines: Engines) -> None:
    harness["kind"]["responder"] = "llm"
    caller = await call_in(harness)
    await caller.wait_quiet()
    words = await say(engines, "Hello, what are your opening hours?")
    caller.speak(words)
    assert caller.speech_started is not None
    await caller.wait_quiet(since=caller.speech_started + len(words) * 0.02, timeout_s=30.0)
    responder = harness["responders"][0]
    assert isinstance(responder, LlmResponder)
    async with asyncio.timeout(60):  # later sentences may still be generating on a loaded machine
        while [m.role for m in responder.history][-2:] != ["user", "assistant"]:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    app = next(iter(harness["connector"].calls.values()))._app
    assert isinstance(app, ChainApp) and "llm_first_token" in app.turns[-1]


async def test_a_silent_caller_is_asked_again_and_one_who_talks_past_the_deadline_is_not(engines: Engines) -> None:
    def make_responder(call_id: str, ani: str | None) -> Responder:
        return RepeatResponder(call_id, ani)

    prompts = list(RepeatResponder("", None).static_prompts())
    words = await say(engines, "Yes, I am still here, I was looking for my card in the kitchen drawer.")
    assert len(words) * 0.02 > 2.5
    async with chain_node(engines, make_responder, prompts, no_input_s=1.5) as node:
        caller = await VoiceCaller.dial(node.osips, node.group)
        loop = asyncio.get_running_loop()
        await caller.wait_quiet()  # the greeting, then nothing from the caller
        greeted = loop.time()
        asked = await caller.wait_loud(since=greeted, timeout_s=10.0)
        await caller.wait_quiet(since=asked, quiet_s=0.3)
        # Speech that starts in time and lasts longer than the deadline is a turn, not a silence.
        caller.speak(words)
        spoke = caller.speech_started
        assert spoke is not None
        await caller.wait_loud(since=spoke + len(words) * 0.02, timeout_s=20.0)
        assert b"avc_no_inputs_total 1.0" in node.metrics.render()
        heard = await transcribe(engines, [p.payload for p in caller.bot_frames(since=greeted) if p.arrival < spoke])
        assert "still there" in heard.lower()


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


class TranscriptResponder(RepeatResponder):
    """Keeps a transcript per call, written into `folder` when the call closes."""

    def __init__(self, call_id: str, ani: str | None, folder: Path) -> None:
        super().__init__(call_id, ani)
        self.call_id = call_id
        self.folder = folder

    async def close(self, outcome: str) -> None:
        said = "\n".join(text for text, _ in self.spoken)
        (self.folder / f"{self.call_id}.txt").write_text(f"{outcome}\n{said}\n", encoding="utf-8")


async def test_a_responder_that_fails_to_close_is_logged_and_counted(
    engines: Engines, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "transcripts"  # never created: the final write fails as on a lost volume
    metrics = Metrics()

    def make_responder(call_id: str, ani: str | None) -> Responder:
        return TranscriptResponder(call_id, ani, gone)

    prompts = list(RepeatResponder("", None).static_prompts())
    async with chain_node(engines, make_responder, prompts, metrics) as node:
        peer = await node.group.create_peer()
        call = await node.osips.invite(sdp_offer("127.0.0.1", peer.port))
        assert (await call.wait_final(5.0)).code == 200
        await asyncio.sleep(0.5)  # into the greeting
        await call.bye()
        await eventually(lambda: not node.connector.calls)

    errors = metrics.registry.get_sample_value("avc_close_errors_total", {"part": "responder"})
    assert errors == 1.0
    [record] = [r for r in caplog.records if "closing the responder failed" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert isinstance(record.exc_info[1], FileNotFoundError)
    assert "outcome caller_hangup" in record.getMessage()


async def test_a_cloud_voice_that_breaks_mid_sentence_is_counted_against_the_cloud(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk_chain0123456789VOICEKEY"
    async with ElevenLabsDouble(key) as double:
        monkeypatch.setenv("ELEVENLABS_API_KEY", key)
        monkeypatch.setenv("ELEVENLABS_BASE_URL", double.base_url)
        double.replies.append(SpeechReply(drop_after_bytes=600))
        metrics = Metrics()
        # The production wiring: ElevenLabs in front, the local Piper voice behind it.
        cloud = with_cloud_engines(
            Settings(tts_provider="elevenlabs"), engines, Manifest(root=Path("."), entries={}), metrics
        )
        assert isinstance(cloud.tts, FallbackTts)
        try:
            # No cached prompts: the greeting is synthesised, and the cloud voice breaks after its first audio.
            async with chain_node(cloud, RepeatResponder, [], metrics) as node:
                await VoiceCaller.dial(node.osips, node.group)
                errors = {"engine": "tts", "provider": "elevenlabs"}
                await eventually(lambda: metrics.registry.get_sample_value("avc_engine_errors_total", errors) == 1.0)
                assert (
                    metrics.registry.get_sample_value("avc_engine_errors_total", {"engine": "tts", "provider": "piper"})
                    is None
                )
        finally:
            primary = cloud.tts.primary
            assert isinstance(primary, ElevenLabsTts)
            await primary.aclose()


class _StuckWorkers:
    """Every worker of one engine's inference pool held by a job that waits: the engine itself hangs, as a wedged
    runtime or a starved CPU makes it. Released on exit so the session's shared engines work again."""

    def __init__(self, pool: InferencePool) -> None:
        self._pool = pool
        self._release = threading.Event()
        self._jobs: list[asyncio.Task[bool]] = []

    async def __aenter__(self) -> _StuckWorkers:
        self._jobs = [asyncio.create_task(self._pool.run(self._release.wait, 30.0)) for _ in range(self._pool.workers)]
        await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        await asyncio.gather(*self._jobs)


@pytest.mark.parametrize("stage", ["asr", "tts"])
async def test_a_hung_engine_gets_the_caller_an_apology_within_two_seconds_not_silence(
    engines: Engines, stage: str
) -> None:
    made: list[RepeatResponder] = []

    def make_responder(call_id: str, ani: str | None) -> Responder:
        made.append(RepeatResponder(call_id, ani))
        return made[-1]

    words = await say(engines, "Where is my new card, it has not arrived yet.")  # synthesised before any hang
    pool = engines.asr._pool if stage == "asr" else engines.tts._pool  # type: ignore[attr-defined]
    async with chain_node(engines, make_responder, list(RepeatResponder("", None).static_prompts())) as node:
        caller = await VoiceCaller.dial(node.osips, node.group)
        await caller.wait_quiet()  # the greeting
        loop = asyncio.get_running_loop()
        async with _StuckWorkers(pool):
            caller.speak(words)
            spoke = caller.speech_started
            assert spoke is not None
            spoken_end = spoke + len(words) * 0.02
            apology = await caller.wait_loud(since=spoken_end, timeout_s=10.0)
            await caller.call.wait_ended(10.0)  # the diagnostic responder apologises and hangs up
        # End of speech + end-of-turn wait + the 2 s stall limit, with room for this busy machine.
        assert apology - spoken_end < 3.5, f"{apology - spoken_end:.2f} s of silence"
        heard = await transcribe(engines, [p.payload for p in caller.bot_frames(since=spoken_end)])
        assert "went wrong" in heard.lower()
        assert b'avc_calls_total{outcome="engine_failure"} 1.0' in node.metrics.render()
        assert loop.time() > apology
