from collections.abc import Callable

import pytest

from avc.conversation.turns import Signal, TurnDetector, TurnSettings

FRAME = 0.032


def run(
    detector: TurnDetector, probs: list[float], start: float = 0.0, bot: bool = False
) -> list[tuple[float, Signal]]:
    out = []
    for i, p in enumerate(probs):
        now = start + (i + 1) * FRAME
        signal = detector.feed(p, now, FRAME, bot)
        if signal is not None:
            out.append((round(now, 3), signal))
    return out


def test_speech_then_silence_gives_start_speculation_and_end() -> None:
    detector = TurnDetector()
    signals = [s for _, s in run(detector, [0.9] * 20 + [0.05] * 20)]
    assert signals == [Signal.SPEECH_START, Signal.SPECULATE, Signal.TURN_END]


def test_without_evidence_the_turn_ends_after_the_configured_silence() -> None:
    detector = TurnDetector(TurnSettings(end_silence_s=0.45))
    signals = dict((s, t) for t, s in run(detector, [0.9] * 10 + [0.0] * 30))
    silence_began = 10 * FRAME
    assert 0.45 <= signals[Signal.TURN_END] - silence_began < 0.45 + FRAME + 1e-9


def test_a_finished_sentence_ends_the_turn_early() -> None:
    detector = TurnDetector(TurnSettings(complete_silence_s=0.25, end_silence_s=0.6))
    run(detector, [0.9] * 10 + [0.0] * 5)
    detector.evidence("Where is my new card?")
    later = run(detector, [0.0] * 20, start=15 * FRAME)
    end = next(t for t, s in later if s is Signal.TURN_END)
    assert end - 10 * FRAME < 0.25 + FRAME + 1e-9


def test_a_date_is_never_cut_at_a_pause_that_looks_final() -> None:
    detector = TurnDetector(TurnSettings(complete_silence_s=0.25, end_silence_s=0.6, hesitation_s=0.5))
    detector.expect(short_answer=False, patient=True)
    run(detector, [0.9] * 10 + [0.0] * 5)
    detector.evidence("March fifth.")
    assert not detector.finished(30 * FRAME)
    later = run(detector, [0.0] * 60, start=15 * FRAME)
    end = next(t for t, s in later if s is Signal.TURN_END)
    assert end - 10 * FRAME >= 0.6 + 0.5  # the usual end silence, and the hesitation allowance a date gets


def test_a_date_the_caller_has_said_whole_ends_as_soon_as_a_finished_sentence() -> None:
    detector = TurnDetector(TurnSettings(complete_silence_s=0.25, end_silence_s=0.6, hesitation_s=0.5))
    detector.expect(short_answer=False, patient=True, complete=lambda text: "1980" in text)
    run(detector, [0.9] * 10 + [0.0] * 5)
    detector.evidence("March 5th, 1980.")
    later = run(detector, [0.0] * 60, start=15 * FRAME)
    end = next(t for t, s in later if s is Signal.TURN_END)
    assert end - 10 * FRAME < 0.25 + FRAME + 1e-9


def test_a_date_missing_its_year_or_trailing_off_still_gets_the_hesitation_allowance() -> None:
    for heard in ("March 5th.", "March 5th, 1980, and"):
        detector = TurnDetector(TurnSettings(complete_silence_s=0.25, end_silence_s=0.6, hesitation_s=0.5))
        detector.expect(short_answer=False, patient=True, complete=lambda text: "1980" in text and "and" not in text)
        run(detector, [0.9] * 10 + [0.0] * 5)
        detector.evidence(heard)
        later = run(detector, [0.0] * 60, start=15 * FRAME)
        end = next(t for t, s in later if s is Signal.TURN_END)
        assert end - 10 * FRAME >= 0.6 + 0.5, heard


def test_words_after_a_whole_date_make_the_turn_patient_again() -> None:
    detector = TurnDetector(TurnSettings(complete_silence_s=0.25, end_silence_s=0.6, hesitation_s=0.5))
    detector.expect(short_answer=False, patient=True, complete=lambda text: "1980" in text)
    run(detector, [0.9] * 10 + [0.0] * 5)
    detector.evidence("March 5th, 1980.")
    run(detector, [0.9] * 5, start=15 * FRAME)  # "... no wait"
    assert detector.end_wait() == 0.6 + 0.5


def test_outside_a_date_the_completeness_test_is_ignored() -> None:
    detector = TurnDetector(TurnSettings(complete_silence_s=0.25, end_silence_s=0.6, hesitation_s=0.5))
    detector.expect(short_answer=False, complete=lambda text: True)
    run(detector, [0.9] * 10 + [0.0] * 5)
    detector.evidence("I want to check my card and")
    assert not detector.finished(40 * FRAME)


def test_a_short_answer_ends_sooner() -> None:
    detector = TurnDetector()
    detector.expect(short_answer=True)
    signals = dict((s, t) for t, s in run(detector, [0.9] * 10 + [0.0] * 30))
    assert signals[Signal.TURN_END] - 10 * FRAME < 0.4


def test_unfinished_words_buy_the_caller_more_time() -> None:
    detector = TurnDetector()
    out = run(detector, [0.9] * 10 + [0.0] * 8)
    assert out[-1][1] is Signal.SPECULATE
    detector.evidence("I want to check my card and")
    later = run(detector, [0.0] * 40, start=18 * FRAME)
    end = next(t for t, s in later if s is Signal.TURN_END)
    assert end - 10 * FRAME >= 0.6 + 0.5 - 1e-9


def test_a_click_shorter_than_min_speech_is_ignored() -> None:
    assert run(TurnDetector(), [0.9, 0.9, 0.0, 0.0, 0.0] * 3) == []


def test_speech_resuming_after_speculation_cancels_the_end() -> None:
    detector = TurnDetector()
    signals = [s for _, s in run(detector, [0.9] * 10 + [0.0] * 8 + [0.9] * 10 + [0.0] * 25)]
    assert signals == [Signal.SPEECH_START, Signal.SPECULATE, Signal.SPECULATE, Signal.TURN_END]


def test_barge_in_pauses_at_once_and_confirms_when_sustained() -> None:
    detector = TurnDetector()
    out = run(detector, [0.1] * 3 + [0.95] * 10, bot=True)
    assert [s for _, s in out] == [Signal.BARGE_IN_PAUSE, Signal.BARGE_IN_CONFIRM]
    pause, confirm = out[0][0], out[1][0]
    assert pause == round(4 * FRAME, 3)  # the very first loud frame
    assert confirm - (pause - FRAME) >= 0.16
    assert detector.in_speech  # the interruption is the start of the caller's turn


def test_a_cough_pauses_the_bot_then_it_resumes() -> None:
    detector = TurnDetector()
    out = [s for _, s in run(detector, [0.95, 0.95] + [0.05] * 12, bot=True)]
    assert out == [Signal.BARGE_IN_PAUSE, Signal.BARGE_IN_RESUME]
    assert not detector.in_speech


def test_echo_below_the_raised_threshold_does_not_interrupt() -> None:
    assert run(TurnDetector(), [0.7] * 30, bot=True) == []


# A new utterance starts clean: what the last one's speculation heard must neither end it early nor make it wait
# longer. Each case ends a first turn on some evidence, then starts a second utterance (after a normal turn end, or
# by barging in) with no loud frame past the one that starts it (a loud frame inside an utterance clears evidence,
# which would hide leftovers), and compares it with the same audio on a fresh detector.
def plain() -> TurnDetector:
    return TurnDetector(TurnSettings(complete_silence_s=0.25, end_silence_s=0.6, hesitation_s=0.5))


def date() -> TurnDetector:
    detector = plain()
    detector.expect(short_answer=False, patient=True, complete=lambda text: "1980" in text)
    return detector


LEFTOVERS = [
    pytest.param(plain, "Where is my new card?", 0.6, id="finished-sentence"),  # would end the next one early
    pytest.param(plain, "I want to check my card and", 0.6, id="trailing-and"),  # would buy it the hesitation time
    pytest.param(date, "March 5th, 1980.", 0.6 + 0.5, id="whole-date"),  # would end it early
]


def first_turn(detector: TurnDetector, heard: str) -> float:
    """Speech, a speculation that heard `heard`, the end of the turn; returns when the turn ended."""
    assert [s for _, s in run(detector, [0.9] * 10 + [0.0] * 5)] == [Signal.SPEECH_START, Signal.SPECULATE]
    detector.evidence(heard)
    end = next(t for t, s in run(detector, [0.0] * 60, start=15 * FRAME) if s is Signal.TURN_END)
    assert not detector.in_speech
    return end


def second_utterance(detector: TurnDetector, start: float, barge_in: bool) -> tuple[float, list[tuple[float, Signal]]]:
    """Loud frames until the utterance starts (and not one more), then silence until the turn ends; returns when
    the last loud frame ended and what the silence brought."""
    started = Signal.BARGE_IN_CONFIRM if barge_in else Signal.SPEECH_START
    now = start
    while detector.feed(0.95, now := now + FRAME, FRAME, bot_speaking=barge_in) is not started:
        assert now < start + 1.0, f"no {started}"
    assert detector.in_speech and detector.speech_end == now
    return now, run(detector, [0.0] * 60, start=now)  # after a barge-in the bot's audio is dropped: it is quiet


def check_second_utterance(make: Callable[[], TurnDetector], heard: str, wait: float, barge_in: bool) -> None:
    detector = make()
    start = first_turn(detector, heard) + 10 * FRAME
    speech_end, out = second_utterance(detector, start, barge_in)
    assert out == second_utterance(make(), start, barge_in)[1]
    assert [s for _, s in out] == [Signal.SPECULATE, Signal.TURN_END]
    assert wait - 1e-3 <= out[-1][0] - speech_end < wait + FRAME + 1e-3


@pytest.mark.parametrize(("make", "heard", "wait"), LEFTOVERS)
def test_a_new_utterance_after_a_turn_end_never_sees_the_last_ones_evidence(
    make: Callable[[], TurnDetector], heard: str, wait: float
) -> None:
    check_second_utterance(make, heard, wait, barge_in=False)


@pytest.mark.parametrize(("make", "heard", "wait"), LEFTOVERS)
def test_a_new_utterance_after_a_barge_in_never_sees_the_last_ones_evidence(
    make: Callable[[], TurnDetector], heard: str, wait: float
) -> None:
    check_second_utterance(make, heard, wait, barge_in=True)
