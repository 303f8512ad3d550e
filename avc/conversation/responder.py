"""What the engine chain asks for a reply: the `Responder` seam, and two built-in responders.

The chain turns speech into text and text into speech; a responder decides what to say. The banking dialogue
plugs in here (`avc.conversation.banking_responder`); `RepeatResponder` (deterministic, for diagnostics and tests) and
`LlmResponder` (free conversation with the configured LLM, streamed sentence by sentence) need nothing else.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from avc.conversation.sentences import sentences_of
from engines.base import ChatMessage, Llm

ExpectedAnswer = Literal["free", "yes_no", "digits", "date"]
"""The kind of answer a bot turn asks the caller for: it tunes turn-taking only (a short answer may end sooner, a date
gets more patience). The dialogue's own `banking.intents.Expect` says how to read the answer; this says how to wait."""
STILL_THERE = "Are you still there?"
# The diagnostic responders' answer to a broken engine: no agent to hand over to, so an apology and a hang-up.
TECHNICAL_GOODBYE = "Sorry, something went wrong on our side. Please call again later. Goodbye."


@dataclass
class TurnTiming:
    """Stage times of one caller turn, loop clock seconds; the chain fills most, a responder some."""

    speech_end: float = 0.0
    turn_end: float = 0.0
    asr_done: float = 0.0
    first_sentence: float = 0.0
    llm_first_token: float | None = None
    tts_first_audio: float = 0.0
    first_packet: float = 0.0

    def stages(self) -> dict[str, float]:
        out = {
            "endpoint": self.turn_end - self.speech_end,
            "asr": self.asr_done - self.turn_end,
            "dialogue": self.first_sentence - self.asr_done,
            "tts_first_audio": self.tts_first_audio - self.first_sentence,
            "voice_to_voice": self.first_packet - self.speech_end,
        }
        if self.llm_first_token is not None:
            out["llm_first_token"] = self.llm_first_token - self.asr_done
        return {k: round(v, 4) for k, v in out.items() if v >= 0}


async def _listed(sentences: Sequence[str]) -> AsyncIterator[str]:
    for sentence in sentences:
        yield sentence


@dataclass
class BotTurn:
    """One reply: sentences to speak in order (streamed), then what to do and what answer to expect."""

    sentences: AsyncIterator[str]
    expect: ExpectedAnswer = "free"
    max_digits: int | None = None
    transfer: Mapping[str, str] | None = None  # context headers for the REFER, after speaking
    hangup: bool = False
    hangup_outcome: str = "goodbye"  # the call's outcome (avc_calls_total) when this turn hangs up
    # With expect "date": whether a partial transcript already holds a whole answer, so the turn may end without
    # the patience a date otherwise gets (turn-taking knows no dates; the responder does).
    complete_answer: Callable[[str], bool] | None = None

    @classmethod
    def say(cls, *sentences: str, **kwargs: object) -> BotTurn:
        return cls(_listed(sentences), **kwargs)  # type: ignore[arg-type]


class Responder(Protocol):
    async def greet(self) -> BotTurn: ...

    async def on_text(self, text: str, timing: TurnTiming) -> BotTurn: ...

    async def on_digits(self, digits: str, timing: TurnTiming) -> BotTurn: ...

    def on_spoken(self, said: str, interrupted: bool) -> None:
        """What the caller actually heard of the last reply (cut short by a barge-in)."""

    async def on_silence(self) -> BotTurn:
        """The caller said and pressed nothing for `AVC_NO_INPUT_S` after the bot finished speaking."""
        ...

    async def transfer_failed(self) -> BotTurn: ...

    async def engine_failed(self, stage: str) -> BotTurn:
        """Speech recognition ("asr") or synthesis ("tts") failed or hung on this call: what to say (from
        `static_prompts`, so it plays without the synthesiser) and do instead of leaving the caller in silence."""
        ...

    async def close(self, outcome: str) -> None: ...

    def static_prompts(self) -> Sequence[str]:
        """Sentences worth synthesising once per process (greeting, 'please enter ...')."""

    def call_state(self) -> Mapping[str, str]:
        """Facts for operations, mirrored into the edge dialog (e.g. ai_intent, ai_auth_level); no PII."""


@runtime_checkable
class Speculating(Protocol):
    """A responder that can start on the speculative transcript while the end of the turn is still awaited."""

    def prefetch(self, text: str) -> None: ...


ResponderFactory = Callable[[str, str | None], Responder]
"""(Call-ID, ANI) -> a responder for that call."""


class RepeatResponder:
    """Says back what it heard. Deterministic: the diagnostics mode, and the chain's tests."""

    GREETING = "Hello, this is the test line. Say something and I will repeat it."

    def __init__(self, call_id: str, ani: str | None) -> None:
        self.heard: list[str] = []
        self.spoken: list[tuple[str, bool]] = []

    async def greet(self) -> BotTurn:
        return BotTurn.say(self.GREETING)

    async def on_text(self, text: str, timing: TurnTiming) -> BotTurn:
        self.heard.append(text)
        if "goodbye" in text.lower():
            return BotTurn.say("Goodbye.", hangup=True)
        return BotTurn.say(f"You said: {text}")

    async def on_digits(self, digits: str, timing: TurnTiming) -> BotTurn:
        return BotTurn.say(f"You pressed {len(digits)} keys.")

    def on_spoken(self, said: str, interrupted: bool) -> None:
        self.spoken.append((said, interrupted))

    async def on_silence(self) -> BotTurn:
        return BotTurn.say(STILL_THERE)

    async def transfer_failed(self) -> BotTurn:
        return BotTurn.say("Nobody is available right now.")

    async def engine_failed(self, stage: str) -> BotTurn:
        return BotTurn.say(TECHNICAL_GOODBYE, hangup=True, hangup_outcome="engine_failure")

    async def close(self, outcome: str) -> None:
        return None

    def static_prompts(self) -> Sequence[str]:
        return [self.GREETING, "Goodbye.", STILL_THERE, TECHNICAL_GOODBYE]

    def call_state(self) -> Mapping[str, str]:
        return {}


@dataclass
class LlmResponder:
    """Free conversation with an LLM, its answer spoken sentence by sentence while it is still generating."""

    llm: Llm
    system_prompt: str = (
        "You are the friendly voice assistant of a bank's phone line. Answer in one or two short sentences "
        "of plain spoken English. Never ask for or repeat card numbers, PINs or codes."
    )
    greeting: str = "Hello, thank you for calling. How can I help you today?"
    max_tokens: int = 96
    history: list[ChatMessage] = field(default_factory=list)

    async def greet(self) -> BotTurn:
        return BotTurn.say(self.greeting)

    async def on_text(self, text: str, timing: TurnTiming) -> BotTurn:
        self.history.append(ChatMessage("user", text))
        messages = [ChatMessage("system", self.system_prompt), *self.history[-8:]]
        return BotTurn(sentences_of(self._tokens(messages, timing)))

    async def _tokens(self, messages: Sequence[ChatMessage], timing: TurnTiming) -> AsyncIterator[str]:
        stream = self.llm.stream_chat(messages, max_tokens=self.max_tokens)
        try:
            async for piece in stream:
                if timing.llm_first_token is None:
                    timing.llm_first_token = time.monotonic()
                yield piece
        finally:
            await stream.aclose()  # a barge-in cancels generation, not just playback

    async def on_digits(self, digits: str, timing: TurnTiming) -> BotTurn:
        return BotTurn.say("Thank you.")

    def on_spoken(self, said: str, interrupted: bool) -> None:
        # History keeps only the words the caller heard, so the model does not believe it said the rest.
        if said:
            self.history.append(ChatMessage("assistant", said + (" ..." if interrupted else "")))

    async def on_silence(self) -> BotTurn:
        return BotTurn.say(STILL_THERE)

    async def transfer_failed(self) -> BotTurn:
        return BotTurn.say("I'm sorry, nobody is available right now. How else can I help?")

    async def engine_failed(self, stage: str) -> BotTurn:
        return BotTurn.say(TECHNICAL_GOODBYE, hangup=True, hangup_outcome="engine_failure")

    async def close(self, outcome: str) -> None:
        return None

    def static_prompts(self) -> Sequence[str]:
        return [self.greeting, STILL_THERE, TECHNICAL_GOODBYE]

    def call_state(self) -> Mapping[str, str]:
        return {}
