"""OpenAI chat completions over HTTPS: streamed replies, tool calls, and schema-constrained JSON.

Speaks `POST {base}/chat/completions` directly (see `engines.cloud` for why not the SDK). A
streamed answer is a server-sent event stream of `chat.completion.chunk` objects ending with
`data: [DONE]`; text arrives in `delta.content`, tool calls in `delta.tool_calls` fragments that
carry an `index`, the call's `id` and function `name` in the first fragment, and the JSON
arguments split over the following ones. `complete_json` uses Structured Outputs
(`response_format` `json_schema` with `strict: true`) and still checks that the answer is a JSON
object, since a refusal or a cut-off answer is not.

Attempts that fail before any text was delivered are retried (`engines.resilience`); the key
comes from `OPENAI_API_KEY`, the base URL from the `base_url` option or `OPENAI_BASE_URL`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from engines.base import ChatMessage, JsonObject, ToolCall, ToolSpec
from engines.cloud import ApiKey, CloudOptions, HttpClient, api_key_from_env, base_url, error_code
from engines.errors import EngineInputError, LlmOutputError
from engines.manifest import Manifest
from engines.options import parse_options
from engines.resilience import EngineUnavailableError, retry_call, retry_stream

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
API_KEY_VARIABLE: Final = "OPENAI_API_KEY"
BASE_URL_VARIABLE: Final = "OPENAI_BASE_URL"
_MAX_LINE_BYTES: Final = 1 << 20
_SCHEMA_NAME: Final = "answer"


@dataclass(frozen=True, slots=True)
class OpenAiOptions(CloudOptions):
    model: str = "gpt-4o-mini"

    def __post_init__(self) -> None:
        CloudOptions.__post_init__(self)
        if not self.model:
            raise ValueError("model must not be empty")


async def sse_data(chunks: AsyncIterable[bytes], *, label: str) -> AsyncGenerator[str, None]:
    """The `data` of each server-sent event in `chunks`, per the WHATWG event-stream format.

    Lines end in LF or CRLF and may be split anywhere across chunks, even inside a UTF-8
    character, since lines are cut on bytes before decoding. Comments (`: keep-alive`) and
    fields other than `data` are skipped; the data lines of one event are joined with LF.
    """
    pending = bytearray()
    data: list[str] = []
    async for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            line = bytes(pending[start:end]).removesuffix(b"\r")
            start = end + 1
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                try:
                    data.append(value.removeprefix(b" ").decode("utf-8"))
                except UnicodeDecodeError:
                    raise EngineUnavailableError(f"{label}: event stream is not UTF-8", retryable=False) from None
        del pending[:start]
        if len(pending) > _MAX_LINE_BYTES:
            raise EngineUnavailableError(f"{label}: event-stream line over {_MAX_LINE_BYTES} bytes", retryable=False)


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Joins streamed `delta.tool_calls` fragments into `ToolCall`s, by their `index`.

    The id and name come whole in a call's first fragment (a server that repeats them later is
    tolerated); argument text is concatenated and parsed once the stream has ended.
    """

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def __len__(self) -> int:
        """Calls begun so far, complete or not."""
        return len(self._calls)

    def add(self, fragments: Sequence[object]) -> None:
        for fragment in fragments:
            if not isinstance(fragment, dict):
                raise EngineUnavailableError("openai: tool call fragment is not an object", retryable=False)
            index = fragment.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                raise EngineUnavailableError("openai: tool call fragment without an integer index", retryable=False)
            call = self._calls.setdefault(index, _PartialCall())
            if isinstance(call_id := fragment.get("id"), str) and call_id and not call.id:
                call.id = call_id
            function = fragment.get("function")
            if isinstance(function, dict):
                if isinstance(name := function.get("name"), str) and name and not call.name:
                    call.name = name
                if isinstance(arguments := function.get("arguments"), str):
                    call.arguments.append(arguments)

    def finish(self) -> list[ToolCall]:
        """The complete calls in index order; `LlmOutputError` if one is incomplete or not a JSON object."""
        calls = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            if not partial.id or not partial.name:
                raise LlmOutputError(f"tool call {index} has no id or function name")
            text = "".join(partial.arguments) or "{}"
            try:
                arguments = json.loads(text)
            except json.JSONDecodeError as exc:
                raise LlmOutputError(f"tool call {partial.name!r} has invalid JSON arguments: {exc}") from None
            if not isinstance(arguments, dict):
                raise LlmOutputError(f"tool call {partial.name!r} arguments are a {type(arguments).__name__}")
            calls.append(ToolCall(id=partial.id, name=partial.name, arguments=arguments))
        return calls


@dataclass(frozen=True, slots=True)
class _Delta:
    content: str
    tool_calls: list[object]
    finish_reason: str | None


def _parse_chunk(data: str) -> _Delta | None:
    """One `chat.completion.chunk`; None for a chunk without choices (e.g. a usage report)."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise EngineUnavailableError("openai: malformed stream chunk", retryable=False) from None
    if not isinstance(chunk, dict):
        raise EngineUnavailableError("openai: stream chunk is not an object", retryable=False)
    if "error" in chunk:
        # An error the server reports inside a stream that had already begun with HTTP 200.
        raise EngineUnavailableError(f"openai: error in stream ({error_code(chunk)})", retryable=True)
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise EngineUnavailableError("openai: stream chunk without choices", retryable=False)
    if not choices:
        return None
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(delta := choice.get("delta"), dict):
        raise EngineUnavailableError("openai: stream chunk without a delta", retryable=False)
    content = delta.get("content")
    tool_calls = delta.get("tool_calls")
    finish_reason = choice.get("finish_reason")
    return _Delta(
        content=content if isinstance(content, str) else "",
        tool_calls=tool_calls if isinstance(tool_calls, list) else [],
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
    )


def _json_answer(answer: object, max_tokens: int) -> JsonObject:
    """The JSON object in a non-streamed chat completion."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict) or not isinstance(message := choice.get("message"), dict):
        raise EngineUnavailableError("openai: completion without choices[0].message", retryable=False)
    # The refusal text is not put in the error: it may quote the caller's words.
    if message.get("refusal"):
        raise LlmOutputError("model refused to answer with the JSON schema")
    if choice.get("finish_reason") == "length":
        raise LlmOutputError(f"JSON answer cut off at max_tokens={max_tokens}")
    content = message.get("content")
    try:
        value = json.loads(content if isinstance(content, str) else "")
    except json.JSONDecodeError as exc:
        raise LlmOutputError(f"model returned invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LlmOutputError(f"model returned JSON {type(value).__name__}, expected an object")
    return value


def _tool_json(tool: ToolSpec) -> JsonObject:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)},
    }


class OpenAiLlm:
    """An OpenAI (or API-compatible) chat model, shared by every call of the process."""

    name: ClassVar[str] = "openai"

    def __init__(self, options: OpenAiOptions, api_key: ApiKey) -> None:
        self.options = options
        self._api_key = api_key
        base = base_url(options.base_url, BASE_URL_VARIABLE, DEFAULT_BASE_URL, "llm openai")
        self.url = base / "chat" / "completions"
        self._http = HttpClient(self.name, options.timeouts(), max_connections=options.max_connections)
        self._retry = options.retry_policy()

    def _headers(self, accept: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key.reveal()}", "Accept": accept}

    def _body(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float, stop: Sequence[str], stream: bool
    ) -> JsonObject:
        if not messages:
            raise EngineInputError("a chat needs at least one message")
        if max_tokens < 1:
            raise EngineInputError(f"max_tokens must be >= 1, got {max_tokens}")
        body: JsonObject = {
            "model": self.options.model,
            "messages": [message.as_openai() for message in messages],
            "max_completion_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
        }
        if stop:
            body["stop"] = list(stop)
        return body

    async def _deltas(self, body: JsonObject) -> AsyncGenerator[_Delta, None]:
        """The deltas of one streamed completion; an answer that ends before `[DONE]` is an error."""
        done = False
        chunks = self._http.stream_post(
            self.url, headers=self._headers("text/event-stream"), body=body, content_types=("text/event-stream",)
        )
        async with aclosing(sse_data(chunks, label=self.name)) as events:
            async for data in events:
                if done:
                    continue  # nothing follows [DONE]; reading to the end lets the connection be reused
                if data == "[DONE]":
                    done = True
                elif (delta := _parse_chunk(data)) is not None:
                    yield delta
        if not done:
            raise EngineUnavailableError("openai: stream ended before [DONE]", retryable=True)

    async def _text(self, body: JsonObject) -> AsyncGenerator[str, None]:
        async with aclosing(self._deltas(body)) as deltas:
            async for delta in deltas:
                if delta.content:
                    yield delta.content

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> AsyncGenerator[str, None]:
        body = self._body(messages, max_tokens=max_tokens, temperature=temperature, stop=stop, stream=True)
        # Retries end with the first text piece: after it, the caller may already be hearing the answer.
        async with aclosing(retry_stream(lambda: self._text(body), self._retry, label=self.name)) as pieces:
            async for piece in pieces:
                yield piece

    async def chat_with_tools(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int,
        temperature: float = 0.0,
    ) -> tuple[str, list[ToolCall]]:
        """The assistant's whole reply: its text and the tool calls it requests (either may be empty).

        Streamed under the hood so that the first-byte timeout applies, but nothing is handed
        out before the end, so a failed attempt can be retried as a whole.
        """
        body = self._body(messages, max_tokens=max_tokens, temperature=temperature, stop=(), stream=True)
        if tools:
            body["tools"] = [_tool_json(tool) for tool in tools]
            body["tool_choice"] = "auto"
        return await retry_call(lambda: self._collect(body, max_tokens), self._retry, label=self.name)

    async def _collect(self, body: JsonObject, max_tokens: int) -> tuple[str, list[ToolCall]]:
        text: list[str] = []
        calls = ToolCallAssembler()
        finish_reason: str | None = None
        async with aclosing(self._deltas(body)) as deltas:
            async for delta in deltas:
                text.append(delta.content)
                calls.add(delta.tool_calls)
                finish_reason = delta.finish_reason or finish_reason
        # Cut-off text is still worth saying (as `stream_chat` would have); a cut-off call is not.
        if finish_reason == "length" and calls:
            raise LlmOutputError(f"tool call cut off at max_tokens={max_tokens}")
        return "".join(text), calls.finish()

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, max_tokens: int
    ) -> JsonObject:
        body = self._body(messages, max_tokens=max_tokens, temperature=0.0, stop=(), stream=False)
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": _SCHEMA_NAME, "schema": dict(schema), "strict": True},
        }
        headers = self._headers("application/json")
        answer = await retry_call(
            lambda: self._http.post_json(self.url, headers=headers, body=body), self._retry, label=self.name
        )
        return _json_answer(answer, max_tokens)

    async def aclose(self) -> None:
        await self._http.aclose()

    def close(self) -> None:
        self._http.close()


def load(manifest: Manifest, options: Mapping[str, object]) -> OpenAiLlm:
    """Registry factory: `{"llm": {"provider": "openai", "model": "gpt-4o-mini"}}`; needs OPENAI_API_KEY."""
    del manifest  # a cloud model has no local files
    parsed = parse_options(OpenAiOptions, options, "llm openai")
    return OpenAiLlm(parsed, api_key_from_env(API_KEY_VARIABLE, "llm openai"))
