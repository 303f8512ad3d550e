"""The small interfaces every engine provider implements, and the values they exchange.

Audio between the connector and the engines is mono 16-bit PCM in numpy arrays: 16 kHz towards
VAD and ASR, the voice's own rate out of TTS (the connector resamples to 8 kHz for G.711).
Providers are loaded once per process and shared by every call; anything with per-call state
(Silero's recurrent state, an utterance being recognised) lives in a stream object that
`new_stream()` hands to each call. Blocking inference never runs on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

ASR_SAMPLE_RATE: Final = 16_000
"""Sample rate of the audio fed to VAD and ASR."""

Pcm16 = npt.NDArray[np.int16]
"""Mono signed 16-bit PCM samples."""

JsonObject = dict[str, Any]


class VadStream(Protocol):
    """Per-call VAD state: feed consecutive frames of one audio stream, in order."""

    def probability(self, frame: Pcm16) -> float:
        """Speech probability in [0, 1] of exactly `Vad.frame_size` samples at 16 kHz."""
        ...

    def reset(self) -> None:
        """Forget the audio seen so far (e.g. after a gap in the stream)."""
        ...


@runtime_checkable
class Vad(Protocol):
    """Voice activity detection shared by all calls of a process."""

    @property
    def frame_size(self) -> int:
        """Samples at 16 kHz that each `VadStream.probability` call takes."""
        ...

    def new_stream(self) -> VadStream: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class AsrResult:
    """The recognised text of one utterance; times are seconds from the utterance's first sample."""

    text: str
    start_s: float
    end_s: float
    confidence: float | None = None


class AsrStream(Protocol):
    """One caller's audio being recognised, one utterance at a time."""

    def feed(self, pcm16k: Pcm16) -> None:
        """Append 16 kHz samples to the current utterance; cheap, never blocks."""
        ...

    def partial(self) -> str:
        """The latest partial hypothesis of the current utterance ("" when none yet)."""
        ...

    async def update_partial(self) -> str:
        """Recognise what has been fed so far and return it as the new partial hypothesis."""
        ...

    async def finalize(self) -> AsrResult:
        """End the current utterance and return its text; the stream then starts a new utterance."""
        ...


@runtime_checkable
class StreamingAsr(Protocol):
    """Speech recognition shared by all calls of a process."""

    def new_stream(self, careful: bool = False) -> AsrStream:
        """A stream for one caller. `careful`: the answer has a fixed form that one misheard word ruins (a date
        of birth), so spend more search on it where the engine can (a wider beam); the cost is a little latency."""
        ...

    def close(self) -> None: ...


Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the LLM may call; `parameters` is the JSON schema of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call requested by the LLM."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat turn. `tool_calls` / `tool_call_id` carry tool use once a provider supports it."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def as_openai(self) -> JsonObject:
        """The OpenAI chat-completions form, which llama.cpp and the cloud providers all take.

        Tool-call arguments travel as a JSON string, as that API defines them.
        """
        message: JsonObject = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in self.tool_calls
            ]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


@runtime_checkable
class Llm(Protocol):
    """A chat model shared by all calls of a process."""

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> AsyncGenerator[str, None]:
        """Stream the assistant's reply as text pieces; `aclose()` it to stop generation early."""
        ...

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, max_tokens: int
    ) -> JsonObject:
        """Return one JSON object constrained to `schema`; raises `LlmOutputError` if unusable."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Tts(Protocol):
    """Speech synthesis shared by all calls of a process."""

    @property
    def sample_rate(self) -> int:
        """Rate of the PCM chunks that `stream` yields."""
        ...

    def stream(self, text: str) -> AsyncGenerator[Pcm16, None]:
        """Synthesise `text` as consecutive int16 PCM chunks; `aclose()` it to stop early."""
        ...

    def close(self) -> None: ...


Vectors = npt.NDArray[np.float32]
"""Rows of unit-length float32 sentence embeddings."""


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings shared by all calls of a process; blocking, so callers run it off the loop."""

    @property
    def dimension(self) -> int:
        """Length of each embedding."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit-length row per text, in order; similar meanings give a large dot product."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class VectorHit:
    """One stored vector near a query: its cosine similarity and the payload stored with it."""

    score: float
    payload: Mapping[str, str]


@runtime_checkable
class VectorStore(Protocol):
    """Named collections of vectors with string payloads, searched by cosine similarity; blocking."""

    def collections(self) -> list[str]: ...

    def replace_collection(self, name: str, vectors: Vectors, payloads: Sequence[Mapping[str, str]]) -> None:
        """Create `name` afresh holding `vectors` (rows) with their `payloads`, dropping any old one."""
        ...

    def delete_collection(self, name: str) -> None: ...

    def search(
        self, name: str, vector: Vectors, limit: int, where: Mapping[str, Sequence[str]] | None = None
    ) -> list[VectorHit]:
        """The `limit` nearest of `name` to `vector`, best first; `where` keeps payloads whose field is in the list."""
        ...

    def points(self, name: str) -> tuple[Vectors, list[Mapping[str, str]]]:
        """Every vector of `name` with its payload (for calibration and audits; collections are small)."""
        ...

    def close(self) -> None: ...
