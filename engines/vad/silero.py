"""Silero VAD 5/6 through onnxruntime, without torch.

The ONNX graph is recurrent: each call takes 512 new samples at 16 kHz preceded by the last 64
samples of the previous call (the "context" that silero-vad's own OnnxWrapper keeps) and the
recurrent state of shape (2, batch, 128), and returns the speech probability and the next
state. One InferenceSession (thread-safe for `run`) is shared by every call; each call's
context and state live in its `SileroStream`.

A frame costs about 0.1-0.2 ms of one core, so a caller may run it inline; with many calls per
process, run a call's frames through an `InferencePool` to keep the event loop free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
import onnxruntime

from engines.base import ASR_SAMPLE_RATE
from engines.errors import EngineInputError
from engines.manifest import Manifest
from engines.options import parse_options

FRAME_SIZE: Final = 512
CONTEXT_SIZE: Final = 64
STATE_SHAPE: Final = (2, 1, 128)
_SAMPLE_RATE: Final = np.array(ASR_SAMPLE_RATE, dtype=np.int64)
_INT16_SCALE: Final = 1.0 / 32768.0


@dataclass(frozen=True, slots=True)
class SileroOptions:
    model: str = "silero-vad"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


class SileroStream:
    """One audio stream's recurrent state; frames must arrive in order."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, CONTEXT_SIZE), dtype=np.float32)

    def reset(self) -> None:
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, CONTEXT_SIZE), dtype=np.float32)

    def probability(self, frame: npt.NDArray[np.int16]) -> float:
        if frame.ndim != 1 or frame.shape[0] != FRAME_SIZE:
            raise EngineInputError(f"silero needs {FRAME_SIZE} mono samples per frame, got shape {frame.shape}")
        if frame.dtype != np.int16:
            raise EngineInputError(f"silero needs int16 samples, got {frame.dtype}")
        samples = frame.astype(np.float32) * np.float32(_INT16_SCALE)
        window = np.concatenate((self._context, samples[np.newaxis, :]), axis=1)
        output, state = self._session.run(None, {"input": window, "state": self._state, "sr": _SAMPLE_RATE})
        self._state = state
        self._context = window[:, -CONTEXT_SIZE:]
        return float(output[0, 0])


class SileroVad:
    """The Silero model, loaded once per process."""

    name: ClassVar[str] = "silero"  # the provider, as metrics and logs name it

    def __init__(self, model_path: Path, *, threads: int = 1) -> None:
        options = onnxruntime.SessionOptions()
        # Frames are tiny: one thread per run avoids thread hand-off costs larger than the work.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @property
    def frame_size(self) -> int:
        return FRAME_SIZE

    def new_stream(self) -> SileroStream:
        return SileroStream(self._session)

    def close(self) -> None:
        """Nothing to release: the session goes with the last reference."""


def load(manifest: Manifest, options: Mapping[str, object]) -> SileroVad:
    """Registry factory: `{"vad": {"provider": "silero", "threads": 1}}`."""
    parsed = parse_options(SileroOptions, options, "vad silero")
    return SileroVad(manifest.path(parsed.model), threads=parsed.threads)
