"""Turn-taking from VAD probabilities: when the caller starts, when they have finished, when they barge in.

Pure logic over (probability, time) pairs, one per VAD frame, so every rule here is testable without audio.

End of turn is VAD silence plus ASR evidence: after `speculate_s` of silence the chain decodes what it has. When
that text reads as a finished sentence (closing punctuation, no trailing "and"/"um"/comma), the turn ends as soon
as the silence reaches `complete_silence_s`; otherwise only after `end_silence_s` (shorter when a short answer is
expected: yes/no, digits), and words that look unfinished buy the caller `hesitation_s` more. Dates are patient:
callers pause inside them ("March fifth, ... nineteen eighty"), so a date ends early only when the speculation
already holds a whole one (the responder says what that is: `expect(complete=...)`), and otherwise waits the end
silence plus the hesitation allowance.

Barge-in, while the bot speaks, needs a higher probability (the bot's own echo and line noise reach the VAD
too) and is decided in two steps: the first loud frame pauses playout at once (a fast stop), and only speech
that lasts `barge_in_confirm_s` confirms it (the bot's audio is dropped and its reply cancelled). A cough or a
click pauses the bot for a moment, then it resumes where it stopped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

FINISHED = re.compile(r"[.?!]\s*$")
UNFINISHED = re.compile(r"(\b(and|but|or|so|because|um+|uh+|er|the|a|my|to|of|is)|[,\-])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class TurnSettings:
    speech_threshold: float = 0.5
    silence_threshold: float = 0.35
    min_speech_s: float = 0.12  # shorter bursts are clicks, not words
    speculate_s: float = 0.08
    complete_silence_s: float = 0.25
    end_silence_s: float = 0.6
    short_answer_silence_s: float = 0.35
    hesitation_s: float = 0.5
    barge_in_threshold: float = 0.8
    barge_in_confirm_s: float = 0.16
    barge_in_hold_s: float = 0.3  # a paused bot resumes if speech does not return within this


class Signal(Enum):
    SPEECH_START = auto()
    SPECULATE = auto()  # decode what we have: the turn may be over
    TURN_END = auto()
    BARGE_IN_PAUSE = auto()
    BARGE_IN_CONFIRM = auto()
    BARGE_IN_RESUME = auto()


class TurnDetector:
    """One call's turn-taking state: the caller's current utterance, its ASR evidence, what the bot's last question
    expects, and a barge-in in progress. The chain drives it: `feed` for each VAD frame, `evidence` when a
    speculative decode returns, `expect` when the bot speaks, `end_turn` when it ends a turn itself."""

    def __init__(self, settings: TurnSettings | None = None) -> None:
        self.s = settings or TurnSettings()
        self.in_speech = False
        self.speech_start = 0.0
        self.speech_end = 0.0  # when the last speech frame ended
        self._loud_since: float | None = None
        self._speculated = False
        self._short_answer = False
        self._patient = False  # dates: no early end on a finished-looking fragment
        self._complete: Callable[[str], bool] | None = None  # in patient mode: does a partial hold a whole answer
        self._partial = ""
        self._evidence = False  # the speculation for the current silence has come back
        self._whole_answer = False  # ... and it held a whole answer (meaningful only with `_evidence`)
        self._barge_started: float | None = None
        self._barge_quiet_since: float | None = None

    def _start_utterance(self, start: float, now: float) -> None:
        """The caller's speech, begun at `start`, is an utterance as of `now`. Everything the last utterance left
        (its speculation and evidence, a pending barge-in) goes; what the bot's question expects (`expect`) stays."""
        self.in_speech = True
        self.speech_start = start
        self.speech_end = now
        self._loud_since = None
        self._speculated = False
        self._partial = ""
        self._evidence = False
        self._whole_answer = False
        self._barge_started = None
        self._barge_quiet_since = None

    def expect(self, short_answer: bool, patient: bool = False, complete: Callable[[str], bool] | None = None) -> None:
        self._short_answer = short_answer
        self._patient = patient
        self._complete = complete if patient else None

    def evidence(self, partial: str) -> None:
        """What the speculative decode heard; it can end the turn early or extend the wait."""
        self._partial = partial
        self._evidence = True
        self._whole_answer = self._complete is not None and self._complete(partial)

    def finished(self, now: float) -> bool:
        """The speculation says the caller completed a sentence (in patient mode: a whole answer) and the silence
        is long enough: end now."""
        if not (self.in_speech and self._speculated and self._evidence):
            return False
        if now - self.speech_end < self.s.complete_silence_s or UNFINISHED.search(self._partial.rstrip(".?! ")):
            return False
        return self._whole_answer if self._patient else bool(FINISHED.search(self._partial))

    def end_turn(self) -> None:
        self.in_speech = False
        self._loud_since = None

    def end_wait(self) -> float:
        wait = self.s.short_answer_silence_s if self._short_answer else self.s.end_silence_s
        # A date comes in pieces ("March fifth, ... nineteen eighty"): cutting it at the pause costs a whole
        # re-ask, waiting costs half a second once.
        whole = self._evidence and self._whole_answer
        if (self._patient and not whole) or (self._partial and UNFINISHED.search(self._partial)):
            wait += self.s.hesitation_s
        return wait

    def feed(self, prob: float, now: float, frame_s: float, bot_speaking: bool) -> Signal | None:
        """One VAD frame that ended at `now`; returns what it means, if anything."""
        if bot_speaking and not self.in_speech:
            return self._barge(prob, now, frame_s)
        self._barge_started = None
        if not self.in_speech:
            if prob >= self.s.speech_threshold:
                if self._loud_since is None:
                    self._loud_since = now - frame_s
                if now - self._loud_since >= self.s.min_speech_s:
                    self._start_utterance(self._loud_since, now)
                    return Signal.SPEECH_START
            else:
                self._loud_since = None
            return None
        if prob >= self.s.silence_threshold:
            self.speech_end = now
            self._speculated = False
            self._evidence = False  # more words: what the last decode held may not be the whole answer
            return None
        silence = now - self.speech_end
        if not self._speculated and silence >= self.s.speculate_s:
            self._speculated = True
            return Signal.SPECULATE
        if self._speculated and (silence >= self.end_wait() or self.finished(now)):
            self.end_turn()
            return Signal.TURN_END
        return None

    def _barge(self, prob: float, now: float, frame_s: float) -> Signal | None:
        if self._barge_started is None:
            if prob >= self.s.barge_in_threshold:
                self._barge_started = now - frame_s
                self._barge_quiet_since = None
                return Signal.BARGE_IN_PAUSE
            return None
        if prob >= self.s.speech_threshold:
            self._barge_quiet_since = None
            if now - self._barge_started >= self.s.barge_in_confirm_s:
                # The interruption becomes the caller's turn, starting where it began.
                self._start_utterance(self._barge_started, now)
                return Signal.BARGE_IN_CONFIRM
            return None
        if self._barge_quiet_since is None:
            self._barge_quiet_since = now
        if now - self._barge_quiet_since >= self.s.barge_in_hold_s - self.s.barge_in_confirm_s or (
            now - self._barge_started >= self.s.barge_in_hold_s
        ):
            self._barge_started = None
            self._barge_quiet_since = None
            return Signal.BARGE_IN_RESUME
        return None
