"""Piper speech synthesis (piper-tts 1.8 Python API), one sentence at a time.

Piper phonemizes the whole text with espeak-ng, then synthesises sentence by sentence; each
sentence is one step of `PiperVoice.synthesize`'s generator, run in the model's pool, so the
first sentence plays while the next is synthesised and closing the stream (barge-in) stops
synthesis at the next sentence boundary. Audio is int16 at the voice's own rate (22,050 Hz for
en_US-joe-medium); resampling to 8 kHz is the connector's job.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import onnxruntime
from piper import AudioChunk, PiperConfig, PiperVoice, SynthesisConfig

from engines.errors import EngineInputError, ModelMissingError
from engines.manifest import Manifest
from engines.offload import InferencePool
from engines.options import parse_options


@dataclass(frozen=True, slots=True)
class PiperOptions:
    model: str = "piper-joe-medium"
    threads: int = 1
    workers: int = 1
    length_scale: float | None = None
    max_text_chars: int = 2000

    def __post_init__(self) -> None:
        if self.threads < 1 or self.workers < 1 or self.max_text_chars < 1:
            raise ValueError("threads, workers and max_text_chars must be >= 1")
        if self.length_scale is not None and not 0.5 <= self.length_scale <= 2.0:
            raise ValueError(f"length_scale must be within 0.5..2.0, got {self.length_scale}")


def _voice_files(voice_dir: Path) -> tuple[Path, Path]:
    models = sorted(voice_dir.glob("*.onnx"))
    if len(models) != 1:
        raise ModelMissingError(f"expected one .onnx voice in {voice_dir}, found {len(models)}")
    config = models[0].with_name(models[0].name + ".json")
    if not config.is_file():
        raise ModelMissingError(f"voice config {config} is missing")
    return models[0], config


class PiperTts:
    """A Piper voice loaded once per process; `workers` texts synthesise in parallel."""

    name: ClassVar[str] = "piper"  # the provider, as metrics and logs name it

    def __init__(self, voice_dir: Path, options: PiperOptions) -> None:
        self.options = options
        model_path, config_path = _voice_files(voice_dir)
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = options.threads
        session_options.inter_op_num_threads = 1
        # Built directly rather than with PiperVoice.load, which cannot bound onnxruntime's threads.
        self._voice = PiperVoice(
            session=onnxruntime.InferenceSession(
                str(model_path), sess_options=session_options, providers=["CPUExecutionProvider"]
            ),
            config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))),
        )
        self._synthesis = SynthesisConfig(length_scale=options.length_scale)
        self._pool = InferencePool("piper", options.workers)

    @property
    def sample_rate(self) -> int:
        return self._voice.config.sample_rate

    async def stream(self, text: str) -> AsyncGenerator[npt.NDArray[np.int16], None]:
        if len(text) > self.options.max_text_chars:
            raise EngineInputError(
                f"text of {len(text)} characters exceeds max_text_chars={self.options.max_text_chars}"
            )
        if not text.strip():
            return
        sentences: Iterator[AudioChunk] = iter(self._voice.synthesize(text, self._synthesis))
        try:
            while (chunk := await self._pool.run(next, sentences, None)) is not None:
                yield chunk.audio_int16_array
        finally:
            # Raises ValueError if a cancelled step is still running in the pool; the generator is
            # then collected once that step ends.
            if isinstance(sentences, Generator):
                with contextlib.suppress(ValueError):
                    sentences.close()

    def close(self) -> None:
        self._pool.close()


def load(manifest: Manifest, options: Mapping[str, object]) -> PiperTts:
    """Registry factory: `{"tts": {"provider": "piper", "model": "piper-joe-medium"}}`."""
    parsed = parse_options(PiperOptions, options, "tts piper")
    return PiperTts(manifest.path(parsed.model), parsed)
