"""A caller on a bad line: 5 % loss, 60 ms jitter, 2 % reordering and 2 % duplicates on the RTP the caller sends.

The whole chain over real RTP behind the OpenSIPS double, with the real models (Silero, Whisper tiny.en, Piper); the
repeat responder records what the connector understood. The connector's jitter buffer and concealment must keep the
words intelligible, and the bot's own audio, measured on the caller's side, must stay paced while the inbound stream
is a mess. `tests/bench/bench_impairment.py` measures the WER change on real recordings.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from avc.conversation.responder import RepeatResponder, Responder
from demo.rtp_peer import Impairment
from demo.voice_caller import VoiceCaller, loud, say
from engines.registry import Engines
from tests.engines.speech import word_error_rate
from tests.support.chain_node import ChainNode, chain_node

pytestmark = [pytest.mark.models, pytest.mark.slow]

BAD_LINE = Impairment(loss=0.05, jitter_ms=60, reorder=0.02, duplicate=0.02, seed=2024)
SENTENCES = [
    "Where is my new credit card? It has not arrived yet.",
    "I would like to check the balance of my savings account.",
]
# Measured on a loaded 2-core machine with four seeds of this line: WER 0.0 to 0.09 (22 words; "where is" heard as
# "where's" is the usual error). 0.25 is five words wrong: beyond it the caller is no longer understood.
WER_BOUND = 0.25
MAX_BOT_GAP_S = 0.060
# A gap is the machine's, not the connector's, when the whole process was off the CPU meanwhile: a thread that only
# sleeps woke late inside it (stalls from this long up are recorded).
STARVED_S = 0.020


@pytest.fixture
async def node(engines: Engines) -> AsyncIterator[tuple[ChainNode, list[RepeatResponder]]]:
    responders: list[RepeatResponder] = []

    def make_responder(call_id: str, ani: str | None) -> Responder:
        responders.append(RepeatResponder(call_id, ani))
        return responders[-1]

    async with chain_node(engines, make_responder, list(RepeatResponder("", None).static_prompts())) as chain:
        yield chain, responders


@pytest.fixture
def starvation() -> Iterator[list[tuple[float, float]]]:
    """(woke, overslept) of a thread sleeping 2 ms at a time: where the process was descheduled (a shared, loaded
    machine), not where the event loop was busy (the GIL is free while the loop's own Python code runs)."""
    stalls: list[tuple[float, float]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            before = time.monotonic()
            time.sleep(0.002)
            woke = time.monotonic()
            if woke - before - 0.002 > STARVED_S:
                stalls.append((woke, woke - before - 0.002))

    thread = threading.Thread(target=watch, name="starvation watch", daemon=True)
    thread.start()
    yield stalls
    stop.set()
    thread.join()


def bot_gaps(caller: VoiceCaller, since: float) -> list[tuple[float, float]]:
    """(arrival, gap) between consecutive bot packets, from its first loud packet after `since` to its last one."""
    frames = caller.bot_frames(since)
    spoken = [n for n, p in enumerate(frames) if loud(p.payload)]
    if not spoken:
        return []
    talk = frames[spoken[0] : spoken[-1] + 1]
    return [(b.arrival, b.arrival - a.arrival) for a, b in itertools.pairwise(talk)]


async def test_a_caller_on_a_lossy_jittery_line_is_understood_and_hears_a_paced_bot(
    node: tuple[ChainNode, list[RepeatResponder]], engines: Engines, starvation: list[tuple[float, float]]
) -> None:
    chain, responders = node
    spoken = [await say(engines, text) for text in SENTENCES]
    caller = await VoiceCaller.dial(chain.osips, chain.group)
    caller.peer.impair(BAD_LINE)
    await caller.wait_quiet()
    gaps = bot_gaps(caller, 0.0)  # the greeting

    for words in spoken:
        caller.speak(words)
        assert caller.speech_started is not None
        done = caller.speech_started + len(words) * 0.02
        await caller.wait_quiet(since=done, timeout_s=20.0)
        gaps += bot_gaps(caller, done)

    heard = responders[0].heard
    wer = word_error_rate(" ".join(SENTENCES), " ".join(heard))
    worst = max(gap for _, gap in gaps)
    print(f"heard {heard!r}: WER {wer:.3f}; worst gap between bot packets {worst * 1000:.1f} ms")
    assert len(heard) == len(SENTENCES), heard  # one turn per sentence: no turn split by a hole in the audio
    assert wer <= WER_BOUND, heard

    # The line really was bad, and the connector's jitter buffer saw it.
    stats = caller.peer.impairment_stats
    assert stats is not None and stats.dropped > 0 and stats.duplicated > 0 and stats.swapped > 0
    counters = next(iter(chain.connector.calls.values())).media.counters
    assert counters.duplicate > 0 and counters.lost + counters.late > 0

    # The bot's speech reached the caller paced: no hole in it while it talked, but where the machine took the CPU
    # away from the whole process (other jobs on a shared machine), which no pacing survives.
    assert len(gaps) > 100
    holes = [(at, gap) for at, gap in gaps if gap > MAX_BOT_GAP_S]
    unexplained = [
        round(gap * 1000, 1)
        for at, gap in holes
        # Excused only by a stall inside the gap that is long enough to account for its excess.
        if not any(woke - slept < at and woke > at - gap and slept >= gap - MAX_BOT_GAP_S for woke, slept in starvation)
    ]
    assert not unexplained, f"gaps (ms) in the bot's speech with the process on the CPU: {unexplained}"
    assert len(holes) <= 3 and worst < 0.25, f"the machine starved this test: {holes}"
