"""Whisper speech recognition through faster-whisper (CTranslate2), int8 on CPU.

Whisper is not a streaming model: a stream accumulates the utterance that VAD delimits and
decodes it once at `finalize`; `update_partial` decodes what has arrived so far when the chain
wants early evidence (e.g. for turn detection). Decoding is greedy (beam 1) at temperature 0
with no fallback, faster-whisper's own VAD off (ours runs upstream), English only, no
timestamps: this keeps latency bounded and predictable on a phone line. Transcripts are never
logged: they may hold a caller's personal data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel

from engines.base import ASR_SAMPLE_RATE, AsrResult
from engines.errors import EngineInputError
from engines.manifest import Manifest
from engines.offload import InferencePool
from engines.options import parse_options

log = logging.getLogger(__name__)

_INT16_SCALE: Final = 1.0 / 32768.0
CPU_COMPUTE_TYPES: Final = ("int8", "int8_float32", "int16", "float32")


# A careful stream's beam (a date of birth): greedy decoding turned a synthetic caller's "March fifth, nineteen
# eighty" into "March the 1980" or "Mark Smith, 1980" in 3 of 5 demo runs; a beam of 5 read both recordings right.
# On pocketsphinx-testdata through G.711 it keeps WER at 5.4 % for 10-20 % more decoding time.
CAREFUL_BEAM_SIZE = 5


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    model: str = "whisper-tiny.en"
    cpu_threads: int = 2
    workers: int = 1
    compute_type: str = "int8"
    beam_size: int = 1
    max_utterance_s: float = 30.0
    min_utterance_s: float = 0.2

    def __post_init__(self) -> None:
        if self.cpu_threads < 1 or self.workers < 1 or self.beam_size < 1:
            raise ValueError("cpu_threads, workers and beam_size must be >= 1")
        if self.compute_type not in CPU_COMPUTE_TYPES:
            raise ValueError(f"compute_type must be one of {', '.join(CPU_COMPUTE_TYPES)}, got {self.compute_type!r}")
        if not 0.0 <= self.min_utterance_s < self.max_utterance_s:
            raise ValueError("need 0 <= min_utterance_s < max_utterance_s")


class WhisperAsr:
    """A Whisper model loaded once per process; `workers` utterances decode in parallel."""

    name: ClassVar[str] = "whisper"  # the provider, as metrics and logs name it

    def __init__(self, model_dir: Path, options: WhisperOptions) -> None:
        self.options = options
        # A local folder: faster-whisper then never contacts the Hugging Face hub.
        self._model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type=options.compute_type,
            cpu_threads=options.cpu_threads,
            num_workers=options.workers,
            local_files_only=True,
        )
        self._pool = InferencePool("whisper", options.workers)

    def new_stream(self, careful: bool = False) -> WhisperStream:
        return WhisperStream(self, CAREFUL_BEAM_SIZE if careful else self.options.beam_size)

    def transcribe(self, audio: npt.NDArray[np.float32], beam_size: int | None = None) -> AsrResult:
        """Blocking decode of one utterance of float samples at 16 kHz; run it in the pool."""
        duration = audio.shape[0] / ASR_SAMPLE_RATE
        if duration < self.options.min_utterance_s:
            return AsrResult(text="", start_s=0.0, end_s=duration)
        segments, _info = self._model.transcribe(
            audio,
            language="en",
            beam_size=beam_size or self.options.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
        )
        decoded = list(segments)
        if not decoded:
            return AsrResult(text="", start_s=0.0, end_s=duration)
        text = " ".join(segment.text.strip() for segment in decoded).strip()
        mean_logprob = sum(segment.avg_logprob for segment in decoded) / len(decoded)
        return AsrResult(
            text=text,
            start_s=float(decoded[0].start),
            end_s=min(float(decoded[-1].end), duration),
            confidence=math.exp(mean_logprob),
        )

    async def recognize(self, audio: npt.NDArray[np.float32], beam_size: int | None = None) -> AsrResult:
        return await self._pool.run(self.transcribe, audio, beam_size)

    def close(self) -> None:
        self._pool.close()


class WhisperStream:
    """One caller's utterances: fed on the event loop, decoded in the model's pool."""

    def __init__(self, asr: WhisperAsr, beam_size: int) -> None:
        self._asr = asr
        self._beam_size = beam_size
        self._max_samples = int(asr.options.max_utterance_s * ASR_SAMPLE_RATE)
        self._chunks: list[npt.NDArray[np.int16]] = []
        self._samples = 0
        self._partial = ""
        # Bumped at each finalize, so a partial decode that finishes late cannot leak its text
        # into the next utterance.
        self._utterance = 0
        self._overflow_logged = False

    def feed(self, pcm16k: npt.NDArray[np.int16]) -> None:
        if pcm16k.ndim != 1 or pcm16k.dtype != np.int16:
            raise EngineInputError(f"whisper needs 1-D int16 samples, got {pcm16k.dtype} shape {pcm16k.shape}")
        room = self._max_samples - self._samples
        if pcm16k.shape[0] > room:
            if not self._overflow_logged:
                log.warning("utterance longer than %.0f s: the rest is ignored", self._asr.options.max_utterance_s)
                self._overflow_logged = True
            pcm16k = pcm16k[:room]
        if pcm16k.shape[0]:
            self._chunks.append(pcm16k.copy())
            self._samples += pcm16k.shape[0]

    def partial(self) -> str:
        return self._partial

    def _audio(self) -> npt.NDArray[np.float32]:
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) * np.float32(_INT16_SCALE)

    async def update_partial(self) -> str:
        utterance = self._utterance
        result = await self._asr.recognize(self._audio(), self._beam_size)
        if utterance == self._utterance:
            self._partial = result.text
        return self._partial

    async def finalize(self) -> AsrResult:
        audio = self._audio()
        self._chunks = []
        self._samples = 0
        self._partial = ""
        self._utterance += 1
        self._overflow_logged = False
        return await self._asr.recognize(audio, self._beam_size)


def load(manifest: Manifest, options: Mapping[str, object]) -> WhisperAsr:
    """Registry factory: `{"asr": {"provider": "whisper", "model": "whisper-base", "cpu_threads": 2}}`."""
    parsed = parse_options(WhisperOptions, options, "asr whisper")
    return WhisperAsr(manifest.path(parsed.model), parsed)
