"""The per-call engine chain: audio in -> VAD -> turn detection -> ASR -> responder -> TTS -> audio out.

One `ChainApp` per call, on the call's audio seam (`avc.app`). Engines are loaded once per process and shared
(`ChainDeps`); their inference runs in their own bounded thread pools, so the media tick never waits for a model.

Listening: 20 ms frames from the media tick are queued, cut into VAD frames (32 ms for Silero) and judged in the
VAD pool. Speech goes to a fresh ASR stream per utterance, with a little audio from before the detected onset.
At the first pause the chain already decodes what it has (speculation), so when the silence lasts long enough to
end the turn the text is usually ready: ASR time hides inside the endpointing wait.

Speaking: the responder's sentences are synthesised one at a time and queued for playout as they come, so the
first sentence plays while later ones are still being generated. Each sentence's place in the outbound frame
count is kept: after a barge-in the conversation records only what the caller actually heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avc.app import CallApp, CallControl
from avc.conversation.prompts import PromptCache
from avc.conversation.responder import BotTurn, Responder, ResponderFactory, Speculating, TurnTiming
from avc.conversation.turns import Signal, TurnDetector, TurnSettings
from avc.media.audio_format import LINE_RATE as PROMPT_RATE
from avc.media.dtmf import DtmfEvent
from avc.metrics import Metrics
from engines.base import ASR_SAMPLE_RATE, AsrStream
from engines.fallback import failed_provider
from engines.offload import InferencePool
from engines.registry import Engines

log = logging.getLogger(__name__)

PREROLL_S = 0.3  # audio kept from before the detected onset: VAD needs a few frames to be sure
INTER_DIGIT_S = 3.0
# The longest the caller waits on a speech engine before the line gives up on it: a final decode after the turn
# ends, or the next piece of synthesised audio. Whisper's final decode takes 0.3-0.6 s on a busy 2-core node and a
# sentence's first audio 0.1 s, so this is a hang or a dead cloud, and the caller hears an apology instead of
# silence (the responder's `engine_failed`, from the prompt cache, so it needs no synthesiser).
ENGINE_STALL_S = 2.0
DIGIT_TERMINATOR = "#"


@dataclass
class ChainDeps:
    """What every call's chain shares."""

    engines: Engines
    prompts: PromptCache
    responder_factory: ResponderFactory
    metrics: Metrics
    turn_settings: TurnSettings = field(default_factory=TurnSettings)
    vad_pool: InferencePool = field(default_factory=lambda: InferencePool("vad", 1))
    cleanup: Callable[[], Awaitable[None]] | None = None  # the responders' shared services
    no_input_s: float = 8.0  # silence after the bot's turn before it asks again; 0: never

    async def close(self) -> None:
        if self.cleanup is not None:
            await self.cleanup()
        self.vad_pool.close()
        self.engines.close()


@dataclass
class _Spoken:
    text: str
    start: int  # outbound frame index of the sentence's first frame
    end: int


class ChainApp:
    """One call's conversation: owns the call's VAD and ASR streams, turn detector, responder and speaker task, and
    the record of what the caller actually heard. Each `avc.call.Call` builds one (through `chain_factory`), feeds it
    audio and digits from the media tick (`on_audio`, `on_dtmf`) and runs `run()` as its application task until the
    call ends, when the responder is closed."""

    def __init__(self, call: CallControl, deps: ChainDeps) -> None:
        self._call = call
        self._deps = deps
        # Frames with their arrival time: turn-taking runs on the audio's own clock (a count of samples), so a
        # loaded CPU that processes a backlog late never stretches a pause into an end of turn; arrival times
        # turn audio instants back into wall-clock ones for latency figures.
        self._audio: asyncio.Queue[tuple[np.ndarray, float]] = asyncio.Queue()
        self._audio_t = 0.0
        self._speech_end_wall = 0.0
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._vad = deps.engines.vad.new_stream()
        self._frame = deps.engines.vad.frame_size
        self._detector = TurnDetector(deps.turn_settings)
        self._asr: AsrStream | None = None
        self._speculation: asyncio.Task[str] | None = None
        self._speaker: asyncio.Task[None] | None = None
        self._responder: Responder | None = None
        self._preroll: deque[np.ndarray] = deque(maxlen=max(1, int(PREROLL_S * ASR_SAMPLE_RATE / self._frame)))
        self._max_digits: int | None = None
        self._careful = False  # the answer expected next is a date: decode it with a wider beam
        self._barge_onset: float | None = None
        self._no_input: asyncio.Task[None] | None = None  # armed once the bot has finished a turn
        self.turns: list[dict[str, Any]] = []
        self.state: dict[str, str] = {}  # what the responder reports for operations (intent, auth level)
        self.outcome = "caller_hangup"

    # -- the audio seam ---------------------------------------------------------------------------

    def on_audio(self, pcm: np.ndarray) -> None:
        self._audio.put_nowait((pcm, time.monotonic()))

    def on_dtmf(self, event: DtmfEvent) -> None:
        self._deps.metrics.dtmf.labels(event.source).inc()
        self._digits.put_nowait(event.digit)

    async def run(self) -> None:
        facts = self._call.facts
        self._responder = self._deps.responder_factory(facts.call_id, facts.ani)
        try:
            self._start_speaking(await self._responder.greet(), None)
            await asyncio.gather(self._listen(), self._keys())
        finally:
            self._disarm_no_input()
            await self._stop_speaking(flush=True)
            if self._speculation is not None:
                self._speculation.cancel()
            await self._close_responder(self._responder)

    async def _close_responder(self, responder: Responder) -> None:
        """The responder's final write (journal record, context delete). The call is over either way, so a failure
        ends nothing, but it means a lost record: operations must see it (`avc_close_errors_total`)."""
        try:
            await responder.close(self.outcome)
        except Exception:
            self._deps.metrics.close_errors.labels("responder").inc()
            log.exception("closing the responder failed (outcome %s): its final record may be lost", self.outcome)

    # -- listening ----------------------------------------------------------------------------------

    async def _listen(self) -> None:
        pending = np.zeros(0, dtype=np.int16)
        frame_s = self._frame / ASR_SAMPLE_RATE
        while True:
            chunk, arrived = await self._audio.get()
            pending = np.concatenate((pending, chunk))
            if self._detector.finished(self._audio_t):
                # The speculation came back with a finished sentence between two VAD frames: answer now.
                self._detector.end_turn()
                await self._end_of_turn(TurnTiming(speech_end=self._speech_end_wall, turn_end=time.monotonic()))
            while pending.size >= self._frame:
                frame, pending = pending[: self._frame], pending[self._frame :]
                prob = await self._deps.vad_pool.run(self._vad.probability, frame)
                self._audio_t += frame_s
                signal = self._detector.feed(prob, self._audio_t, frame_s, self._bot_speaking())
                if self._detector.speech_end == self._audio_t:
                    self._speech_end_wall = arrived
                self._preroll.append(frame)
                if signal is Signal.SPEECH_START or signal is Signal.BARGE_IN_CONFIRM:
                    self._disarm_no_input()
                    if signal is Signal.BARGE_IN_CONFIRM:
                        await self._barge_in()
                    self._begin_utterance()
                elif self._asr is not None and self._detector.in_speech:
                    self._asr.feed(frame)
                if signal is Signal.SPECULATE:
                    self._speculate()
                elif signal is Signal.BARGE_IN_PAUSE:
                    self._barge_onset = arrived - frame_s
                    self._call.media.pause()
                elif signal is Signal.BARGE_IN_RESUME:
                    self._call.media.resume()
                elif signal is Signal.TURN_END:
                    await self._end_of_turn(TurnTiming(speech_end=self._speech_end_wall, turn_end=time.monotonic()))

    def _begin_utterance(self) -> None:
        self._asr = self._deps.engines.asr.new_stream(careful=self._careful)
        for frame in self._preroll:
            self._asr.feed(frame)
        if self._speculation is not None:
            self._speculation.cancel()
            self._speculation = None

    def _speculate(self) -> None:
        asr = self._asr
        if asr is None:
            return
        task = asyncio.create_task(asr.update_partial())
        task.add_done_callback(self._on_speculation)
        self._speculation = task

    def _on_speculation(self, task: asyncio.Task[str]) -> None:
        if task is self._speculation and not task.cancelled() and task.exception() is None:
            self._detector.evidence(task.result())
            # The end of the turn answers these very words: let the responder start understanding them now.
            if isinstance(self._responder, Speculating) and task.result().strip():
                self._responder.prefetch(task.result().strip())

    async def _end_of_turn(self, timing: TurnTiming) -> None:
        speculation, self._speculation = self._speculation, None
        asr, self._asr = self._asr, None
        if speculation is None or asr is None:
            return
        try:
            async with asyncio.timeout(ENGINE_STALL_S):
                text = (await speculation).strip()
        except Exception as exc:
            provider = failed_provider(self._deps.engines.asr, exc)
            self._deps.metrics.engine_errors.labels("asr", provider).inc()
            log.error("speech recognition (%s) failed: %s", provider, _why(exc), exc_info=not _is_stall(exc))
            await self._engine_failed("asr", timing)
            return
        timing.asr_done = time.monotonic()
        if not text:
            log.debug("end of turn with no words (noise)")
            return
        assert self._responder is not None
        log.info("caller turn: %d characters, asr %.0f ms", len(text), (timing.asr_done - timing.turn_end) * 1000)
        await self._stop_speaking(flush=True)
        self._start_speaking(await self._responder.on_text(text, timing), timing)

    # -- keys ---------------------------------------------------------------------------------------

    async def _keys(self) -> None:
        while True:
            first = await self._digits.get()
            self._disarm_no_input()
            # A key press interrupts a prompt, as on any IVR.
            await self._stop_speaking(flush=True)
            digits = first
            while digits[-1] != DIGIT_TERMINATOR and (self._max_digits is None or len(digits) < self._max_digits):
                try:
                    digits += await asyncio.wait_for(self._digits.get(), INTER_DIGIT_S)
                except TimeoutError:
                    break
            assert self._responder is not None
            timing = TurnTiming(speech_end=time.monotonic())
            timing.turn_end = timing.asr_done = timing.speech_end
            log.info("caller keyed %d digits", len(digits))  # never the digits themselves
            self._start_speaking(await self._responder.on_digits(digits.rstrip(DIGIT_TERMINATOR), timing), timing)

    # -- speaking -----------------------------------------------------------------------------------

    def _bot_speaking(self) -> bool:
        return (self._speaker is not None and not self._speaker.done()) or self._call.media.speaking

    def _start_speaking(self, turn: BotTurn, timing: TurnTiming | None, failure_turn: bool = False) -> None:
        self._disarm_no_input()
        self._publish_state()
        self._detector.expect(
            short_answer=turn.expect in ("yes_no", "digits"),
            patient=turn.expect == "date",
            complete=turn.complete_answer,
        )
        self._max_digits = turn.max_digits
        self._careful = turn.expect == "date"  # one misheard word fails a caller's verification
        self._speaker = asyncio.create_task(self._speak(turn, timing or TurnTiming(), failure_turn), name="speaker")

    def _publish_state(self) -> None:
        if self._responder is None:
            return
        for name, value in self._responder.call_state().items():
            if self.state.get(name) != value:
                self.state[name] = value
                self._call.mirror(name, value)  # queued: never waits for the edge

    def snapshot(self) -> Mapping[str, object]:
        """For `avc calls`: the responder's facts and the last turn's latency."""
        v2v = self.turns[-1].get("voice_to_voice") if self.turns else None
        return {**self.state, "last_voice_to_voice_ms": round(v2v * 1000) if v2v is not None else None}

    async def _stop_speaking(self, flush: bool) -> None:
        speaker, self._speaker = self._speaker, None
        if flush:
            self._call.media.flush()
        if speaker is not None and not speaker.done():
            speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaker

    async def _barge_in(self) -> None:
        media = self._call.media
        onset = self._barge_onset or time.monotonic()
        self._barge_onset = None
        media.flush()  # silence on the very next packet
        self._deps.metrics.barge_ins.inc()
        if media.last_audio_sent >= onset:
            self._deps.metrics.barge_in_stop.observe(media.last_audio_sent - onset)
        log.info("barge-in: the caller interrupted the bot")
        await self._stop_speaking(flush=False)

    async def _speak(self, turn: BotTurn, timing: TurnTiming, failure_turn: bool = False) -> None:
        media = self._call.media
        tts = self._deps.engines.tts
        spoken: list[_Spoken] = []
        first_sentence = True
        try:
            async for sentence in _first_clause_apart(turn.sentences):
                if first_sentence:
                    timing.first_sentence = time.monotonic()
                start = media.frames_queued
                cached = self._deps.prompts.get(sentence)
                if cached is not None:
                    media.play(cached, PROMPT_RATE)
                    if first_sentence:
                        timing.tts_first_audio = time.monotonic()
                else:
                    chunks: list[np.ndarray] = []
                    stream = tts.stream(sentence)
                    try:
                        while True:
                            async with asyncio.timeout(ENGINE_STALL_S):  # a hung synthesiser is a failed one
                                chunk = await anext(stream, None)
                            if chunk is None:
                                break
                            if first_sentence and not timing.tts_first_audio:
                                timing.tts_first_audio = time.monotonic()
                            media.play(chunk, tts.sample_rate, pad=False)
                            chunks.append(chunk)
                    finally:
                        await stream.aclose()
                    media.play(np.zeros(0, dtype=np.int16), tts.sample_rate)
                    if chunks and not any(ch.isdigit() for ch in sentence):
                        # Sentences without facts recur across calls ("Thank you, you're verified."): keep them.
                        self._deps.prompts.put_synthesized(sentence, np.concatenate(chunks), tts.sample_rate)
                spoken.append(_Spoken(sentence, start, media.frames_queued))
                if first_sentence and media.frames_queued > start:
                    media.when_sent(start).add_done_callback(lambda f: self._first_packet(f, timing))
                first_sentence = False
            if spoken and spoken[-1].end > spoken[-1].start:
                await media.when_sent(spoken[-1].end - 1)
        except asyncio.CancelledError:
            self._report_spoken(spoken, interrupted=True)
            raise
        except Exception as exc:
            provider = failed_provider(tts, exc)
            self._deps.metrics.engine_errors.labels("tts", provider).inc()
            log.error("speaking failed (tts provider %s): %s", provider, _why(exc), exc_info=not _is_stall(exc))
            self._report_spoken(spoken, interrupted=True)
            if failure_turn:  # even the apology could not be played: end the call rather than leave silence
                self.outcome = "engine_failure"
                await self._call.hangup("engine_failure")
                return
            # Not `_start_speaking`: this task is the speaker, and the apology must not cancel it midway.
            self._publish_state()
            assert self._responder is not None
            await self._speak(await self._responder.engine_failed("tts"), TurnTiming(), failure_turn=True)
            return
        self._report_spoken(spoken, interrupted=False)
        await self._after_speaking(turn, asked=bool(spoken))

    async def _engine_failed(self, stage: str, timing: TurnTiming) -> None:
        assert self._responder is not None
        await self._stop_speaking(flush=True)
        self._start_speaking(await self._responder.engine_failed(stage), timing, failure_turn=True)

    async def _after_speaking(self, turn: BotTurn, asked: bool) -> None:
        if turn.transfer is not None:
            result = await self._call.transfer(context=turn.transfer)
            if not result.ok:
                assert self._responder is not None
                self._start_speaking(await self._responder.transfer_failed(), None)
            else:
                self.outcome = "transferred"
        elif turn.hangup:
            self.outcome = turn.hangup_outcome
            await self._call.hangup(turn.hangup_outcome)
        elif asked and self._deps.no_input_s > 0 and not self._detector.in_speech:  # a silent turn asks nothing
            self._no_input = asyncio.create_task(self._ask_again_after(self._deps.no_input_s), name="no-input")

    async def _ask_again_after(self, wait_s: float) -> None:
        """Dead air is the worst a phone line can do: a caller who says nothing after the bot's turn (a muted
        phone, a question not heard) is asked again instead of both sides waiting for ever."""
        await asyncio.sleep(wait_s)
        if self._detector.in_speech or not self._digits.empty() or self._bot_speaking():
            return
        assert self._responder is not None
        self._deps.metrics.no_inputs.inc()
        log.info("no input for %.0f s after the bot's turn: asking again", wait_s)
        # Shielded: a caller who starts talking meanwhile cancels the prompt, never the dialogue's bookkeeping.
        self._start_speaking(await asyncio.shield(self._responder.on_silence()), None)

    def _disarm_no_input(self) -> None:
        task, self._no_input = self._no_input, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _report_spoken(self, spoken: Sequence[_Spoken], interrupted: bool) -> None:
        if self._responder is None or not spoken:
            return
        played = self._call.media.frames_played
        words: list[str] = []
        for part in spoken:
            if played >= part.end:
                words.append(part.text)
            elif played > part.start:
                share = (played - part.start) / max(1, part.end - part.start)
                sentence_words = part.text.split()
                words.extend(sentence_words[: int(len(sentence_words) * share)])
        self._responder.on_spoken(" ".join(words), interrupted)

    def _first_packet(self, future: asyncio.Future[float], timing: TurnTiming) -> None:
        if future.cancelled() or not timing.speech_end:
            return
        timing.first_packet = future.result()
        stages = timing.stages()
        for stage, seconds in stages.items():
            self._deps.metrics.turn_stage.labels(stage).observe(seconds)
        self.turns.append(stages)
        if "voice_to_voice" in stages:  # operations see it at the edge too (`dlg_list_ctx`), like `avc calls`
            self._call.mirror("ai_last_v2v_ms", str(round(stages["voice_to_voice"] * 1000)))
        log.info(
            "turn latency: %s",
            " ".join(f"{k}={v * 1000:.0f}ms" for k, v in stages.items()),
            extra={"turn_stages": stages},
        )


FIRST_CLAUSE_MIN_WORDS = 10


async def _first_clause_apart(sentences: AsyncIterator[str]) -> AsyncIterator[str]:
    """Speak a long first sentence's opening clause on its own: synthesis time grows with length, and the
    caller waits for all of the first piece before hearing anything. Later sentences synthesise while
    earlier ones play, so they stay whole."""
    first = True
    async for sentence in sentences:
        if first and len(sentence.split()) >= FIRST_CLAUSE_MIN_WORDS and ", " in sentence:
            head, tail = sentence.split(", ", 1)
            if len(head.split()) >= 3 and not _ends_in_digits(head):
                yield head + ","
                yield tail
                first = False
                continue
        first = False
        yield sentence


def _ends_in_digits(text: str) -> bool:
    # "November 18, 2026": a comma inside a date must not cut it.
    return text.rstrip()[-1:].isdigit()


def chain_factory(deps: ChainDeps) -> Callable[[CallControl], CallApp]:
    def make(call: CallControl) -> CallApp:
        return ChainApp(call, deps)

    return make


def _is_stall(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


def _why(exc: BaseException) -> str:
    if _is_stall(exc):
        return f"no answer within {ENGINE_STALL_S:g} s"
    return f"{type(exc).__name__}: {exc}"
