"""The OpenAI provider against a local server that speaks the chat-completions wire format.

Every request goes to `OpenAiDouble` on 127.0.0.1; the key and base URL come from the
environment exactly as in production.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import AsyncGenerator

import pytest

from engines.base import ChatMessage, Llm, ToolCall, ToolSpec
from engines.errors import EngineConfigError, EngineInputError, LlmOutputError
from engines.llm.openai import OpenAiLlm, ToolCallAssembler, load, sse_data
from engines.resilience import EngineUnavailableError
from tests.support.cloud import CLOUD_MANIFEST, FAST, OPENAI_KEY, drain, serving
from tests.support.cloud.openai_server import OpenAiDouble, Reply, ScriptedToolCall, rate_limited, server_error

CHAT = [
    ChatMessage("system", "You are the voice assistant of Example Bank."),
    ChatMessage("user", "What is my balance?"),
]
BALANCE_TOOL = ToolSpec(
    name="get_balance",
    description="The balance of one of the caller's accounts.",
    parameters={
        "type": "object",
        "properties": {"account": {"type": "string", "enum": ["checking", "savings"]}},
        "required": ["account"],
        "additionalProperties": False,
    },
)
INTENT_SCHEMA = {
    "type": "object",
    "properties": {"intent": {"type": "string"}},
    "required": ["intent"],
    "additionalProperties": False,
}


async def chunked(*pieces: bytes) -> AsyncGenerator[bytes, None]:
    for piece in pieces:
        yield piece


# -- the event-stream format --------------------------------------------------------------------------------------


async def test_sse_lines_split_anywhere_are_reassembled() -> None:
    wire = 'data: {"a":"é"}\r\n\r\n: keep-alive\n\nevent: ping\ndata: line one\ndata: line two\n\ndata: [DONE]\n\n'
    raw = wire.encode()
    cut = raw.index("é".encode()) + 1  # inside the two bytes of "é"
    events = await drain(sse_data(chunked(raw[:5], raw[5:cut], raw[cut:40], raw[40:]), label="openai"))
    assert events == ['{"a":"é"}', "line one\nline two", "[DONE]"]


async def test_sse_stream_that_is_not_utf8_is_a_typed_error() -> None:
    with pytest.raises(EngineUnavailableError, match="not UTF-8"):
        await drain(sse_data(chunked(b"data: \xff\xfe\n\n"), label="openai"))


# -- streamed text ------------------------------------------------------------------------------------------------


async def test_stream_chat_yields_the_content_deltas_in_order(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    assert isinstance(openai_llm, Llm)
    pieces = await drain(openai_llm.stream_chat(CHAT, max_tokens=64, temperature=0.2))
    assert pieces == ["Your balance", " is", " 42 euros", "."]
    [request] = openai_server.requests
    assert request.body == {
        "model": "gpt-4o-mini",
        "messages": [message.as_openai() for message in CHAT],
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "stream": True,
    }
    assert request.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.headers["Accept"] == "text/event-stream"


async def test_stop_sequences_and_model_option_are_sent(openai_server: OpenAiDouble) -> None:
    engine = load(CLOUD_MANIFEST, {**FAST, "model": "gpt-4.1-nano"})
    try:
        await drain(engine.stream_chat(CHAT, max_tokens=16, stop=["\n\n"]))
    finally:
        await engine.aclose()
    assert openai_server.requests[0].body["model"] == "gpt-4.1-nano"
    assert openai_server.requests[0].body["stop"] == ["\n\n"]


async def test_a_chat_without_messages_is_refused_before_any_request(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    with pytest.raises(EngineInputError, match="at least one message"):
        await drain(openai_llm.stream_chat([], max_tokens=16))
    assert openai_server.requests == []


async def test_closing_the_stream_early_leaves_the_engine_usable(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.append(Reply(text=("One.", " Two.", " Three."), chunk_delay_s=0.01))
    stream = openai_llm.stream_chat(CHAT, max_tokens=64)
    assert await anext(stream) == "One."
    await stream.aclose()  # the caller barged in
    assert await drain(openai_llm.stream_chat(CHAT, max_tokens=64)) == ["Your balance", " is", " 42 euros", "."]


# -- tool calls ---------------------------------------------------------------------------------------------------


async def test_streamed_tool_call_fragments_are_assembled(openai_llm: OpenAiLlm, openai_server: OpenAiDouble) -> None:
    openai_server.replies.append(
        Reply(
            text=(),
            tool_calls=(
                ScriptedToolCall("call_Xq1", "get_balance", '{"account": "checking"}', fragment_size=3),
                ScriptedToolCall("call_Xq2", "get_balance", '{"account": "savings"}', fragment_size=7),
            ),
        )
    )
    text, calls = await openai_llm.chat_with_tools(CHAT, [BALANCE_TOOL], max_tokens=64)
    assert text == ""
    assert calls == [
        ToolCall(id="call_Xq1", name="get_balance", arguments={"account": "checking"}),
        ToolCall(id="call_Xq2", name="get_balance", arguments={"account": "savings"}),
    ]
    body = openai_server.requests[0].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_balance",
                "description": BALANCE_TOOL.description,
                "parameters": dict(BALANCE_TOOL.parameters),
            },
        }
    ]
    assert body["tool_choice"] == "auto"


async def test_tool_results_travel_back_in_the_openai_form(openai_llm: OpenAiLlm, openai_server: OpenAiDouble) -> None:
    call = ToolCall(id="call_Xq1", name="get_balance", arguments={"account": "checking"})
    history = [
        *CHAT,
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"balance": "42.00 EUR"}', tool_call_id="call_Xq1"),
    ]
    text, calls = await openai_llm.chat_with_tools(history, [BALANCE_TOOL], max_tokens=64)
    assert (text, calls) == ("Your balance is 42 euros.", [])
    sent = openai_server.requests[0].body["messages"]
    assert sent[2]["tool_calls"] == [
        {
            "id": "call_Xq1",
            "type": "function",
            "function": {"name": "get_balance", "arguments": '{"account": "checking"}'},
        }
    ]
    assert sent[3] == {"role": "tool", "content": '{"balance": "42.00 EUR"}', "tool_call_id": "call_Xq1"}


async def test_tool_call_with_invalid_json_arguments_is_an_output_error(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.append(
        Reply(text=(), tool_calls=(ScriptedToolCall("call_1", "get_balance", '{"account": '),))
    )
    with pytest.raises(LlmOutputError, match="invalid JSON arguments"):
        await openai_llm.chat_with_tools(CHAT, [BALANCE_TOOL], max_tokens=64)


async def test_tool_call_cut_off_at_max_tokens_is_an_output_error(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.append(
        Reply(text=(), tool_calls=(ScriptedToolCall("call_1", "get_balance", '{"acc'),), finish_reason="length")
    )
    with pytest.raises(LlmOutputError, match="cut off at max_tokens=5"):
        await openai_llm.chat_with_tools(CHAT, [BALANCE_TOOL], max_tokens=5)


async def test_text_reply_cut_off_at_max_tokens_is_returned_as_it_is(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.append(Reply(text=("Your balance", " is"), finish_reason="length"))
    assert await openai_llm.chat_with_tools(CHAT, [BALANCE_TOOL], max_tokens=2) == ("Your balance is", [])


def test_assembler_requires_an_integer_index() -> None:
    assembler = ToolCallAssembler()
    with pytest.raises(EngineUnavailableError, match="integer index"):
        assembler.add([{"id": "call_1", "function": {"name": "get_balance", "arguments": "{}"}}])


def test_assembler_keeps_the_first_name_when_a_server_repeats_it() -> None:
    assembler = ToolCallAssembler()
    assembler.add([{"index": 0, "id": "call_1", "function": {"name": "get_balance", "arguments": ""}}])
    assembler.add([{"index": 0, "function": {"name": "get_balance", "arguments": "{}"}}])
    assert assembler.finish() == [ToolCall(id="call_1", name="get_balance", arguments={})]


# -- JSON output --------------------------------------------------------------------------------------------------


async def test_complete_json_asks_for_a_strict_schema_and_returns_the_object(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    assert await openai_llm.complete_json(CHAT, INTENT_SCHEMA, max_tokens=32) == {"intent": "balance"}
    body = openai_server.requests[0].body
    assert body["stream"] is False
    assert body["temperature"] == 0.0
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": INTENT_SCHEMA, "strict": True},
    }


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(json_content="[1, 2]"), "expected an object"),
        (Reply(json_content='{"intent": "bal'), "invalid JSON"),
        (Reply(json_content='{"intent": "bal', finish_reason="length"), "cut off at max_tokens=32"),
        (Reply(refusal="I can't help with that."), "refused"),
    ],
)
async def test_unusable_json_answers_are_output_errors(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble, reply: Reply, message: str
) -> None:
    openai_server.replies.append(reply)
    with pytest.raises(LlmOutputError, match=message):
        await openai_llm.complete_json(CHAT, INTENT_SCHEMA, max_tokens=32)
    assert len(openai_server.requests) == 1, "an unusable answer is not retried"


# -- failures -----------------------------------------------------------------------------------------------------


async def test_server_error_before_the_first_token_is_retried(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.append(server_error())
    assert await drain(openai_llm.stream_chat(CHAT, max_tokens=64)) == ["Your balance", " is", " 42 euros", "."]
    assert len(openai_server.requests) == 2


async def test_failure_after_the_first_token_is_not_retried(openai_llm: OpenAiLlm, openai_server: OpenAiDouble) -> None:
    openai_server.replies.append(Reply(drop_after_chunks=3))
    delivered: list[str] = []
    with pytest.raises(EngineUnavailableError, match="ClientPayloadError"):
        await drain(openai_llm.stream_chat(CHAT, max_tokens=64), delivered)
    assert delivered == ["Your balance", " is"]
    assert len(openai_server.requests) == 1


async def test_garbage_in_the_stream_is_a_typed_error(openai_llm: OpenAiLlm, openai_server: OpenAiDouble) -> None:
    openai_server.replies.append(Reply(garbage_after_chunks=1))
    with pytest.raises(EngineUnavailableError, match="malformed stream chunk"):
        await drain(openai_llm.stream_chat(CHAT, max_tokens=64))


async def test_rate_limit_asking_for_a_long_wait_fails_fast(openai_llm: OpenAiLlm, openai_server: OpenAiDouble) -> None:
    openai_server.replies.append(rate_limited(retry_after_s=20))
    with pytest.raises(EngineUnavailableError, match=r"HTTP 429 \(rate_limit_exceeded\)") as raised:
        await drain(openai_llm.stream_chat(CHAT, max_tokens=64))
    assert raised.value.retry_after == 20
    assert len(openai_server.requests) == 1


async def test_rate_limit_asking_for_a_short_wait_is_retried(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    openai_server.replies.append(rate_limited(retry_after_s=0.01))
    assert await openai_llm.complete_json(CHAT, INTENT_SCHEMA, max_tokens=32) == {"intent": "balance"}
    assert len(openai_server.requests) == 2


async def test_no_first_byte_within_the_timeout_is_a_typed_error(openai_server: OpenAiDouble) -> None:
    openai_server.replies.append(Reply(stall_before_headers=True))
    engine = load(CLOUD_MANIFEST, {**FAST, "first_byte_timeout": 0.1, "max_attempts": 1})
    try:
        with pytest.raises(EngineUnavailableError, match=r"first byte timeout after 0.1 s") as raised:
            await drain(engine.stream_chat(CHAT, max_tokens=64))
    finally:
        await engine.aclose()
    assert raised.value.retryable


async def test_stream_stalling_midway_hits_the_total_timeout(openai_server: OpenAiDouble) -> None:
    openai_server.replies.append(Reply(stall_after_chunks=2))
    engine = load(CLOUD_MANIFEST, {**FAST, "connect_timeout": 0.1, "first_byte_timeout": 0.1, "total_timeout": 0.3})
    delivered: list[str] = []
    try:
        with pytest.raises(EngineUnavailableError, match=r"total timeout after 0\.3 s"):
            await drain(engine.stream_chat(CHAT, max_tokens=64), delivered)
    finally:
        await engine.aclose()
    assert delivered == ["Your balance"]
    assert len(openai_server.requests) == 1


async def test_unreachable_server_is_a_retryable_typed_error(openai_server: OpenAiDouble) -> None:
    engine = load(CLOUD_MANIFEST, {**FAST, "base_url": "http://127.0.0.1:9/v1", "max_attempts": 1})
    try:
        with pytest.raises(EngineUnavailableError, match="ClientConnectorError") as raised:
            await engine.complete_json(CHAT, INTENT_SCHEMA, max_tokens=32)
    finally:
        await engine.aclose()
    assert raised.value.retryable
    assert openai_server.requests == []


async def test_the_key_never_appears_in_errors_or_logs(
    openai_server: OpenAiDouble, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-proj-WRONG0123456789ABCD"
    monkeypatch.setenv("OPENAI_API_KEY", wrong_key)
    engine = load(CLOUD_MANIFEST, FAST)
    try:
        with pytest.raises(EngineUnavailableError, match=r"HTTP 401 \(invalid_api_key\)") as raised:
            await drain(engine.stream_chat(CHAT, max_tokens=64))
    finally:
        await engine.aclose()
    assert not raised.value.retryable
    assert len(openai_server.requests) == 1, "a refused key is not retried"
    assert openai_server.requests[0].headers["Authorization"] == f"Bearer {wrong_key}"
    # The server's message echoes the key's first and last characters; none of it may surface.
    texts = [str(raised.value), repr(raised.value), repr(engine.__dict__), caplog.text]
    for fragment in (wrong_key, "ABCD", "WRONG"):
        assert all(fragment not in text for text in texts)

    # A retried failure logs a warning: it must not carry the (valid) key either.
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    openai_server.replies.append(server_error())
    engine = load(CLOUD_MANIFEST, FAST)
    try:
        await drain(engine.stream_chat(CHAT, max_tokens=64))
    finally:
        await engine.aclose()
    assert "retrying" in caplog.text
    assert OPENAI_KEY not in caplog.text and "SECRETKEY" not in caplog.text


# -- configuration ------------------------------------------------------------------------------------------------


def test_missing_key_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EngineConfigError, match="OPENAI_API_KEY"):
        load(CLOUD_MANIFEST, {})


def test_key_with_control_characters_is_refused_without_quoting_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc\r\nX-Injected: 1")
    with pytest.raises(EngineConfigError, match="control characters") as raised:
        load(CLOUD_MANIFEST, {})
    assert "Injected" not in str(raised.value)


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("http://api.example.com/v1", "plain http"),
        ("ftp://127.0.0.1/v1", "absolute http"),
        ("https://api.example.com/v1?key=1", "query"),
    ],
)
def test_unsafe_base_urls_are_refused(monkeypatch: pytest.MonkeyPatch, base_url: str, message: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with pytest.raises(EngineConfigError, match=message):
        load(CLOUD_MANIFEST, {"base_url": base_url})


@pytest.mark.parametrize(
    "options",
    [{"modle": "gpt-4o"}, {"total_timeout": "fast"}, {"first_byte_timeout": 5.0, "total_timeout": 1.0}, {"model": ""}],
)
def test_bad_options_stop_start_up(monkeypatch: pytest.MonkeyPatch, options: dict[str, object]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with pytest.raises(EngineConfigError, match="llm openai"):
        load(CLOUD_MANIFEST, options)


def test_default_base_url_is_the_openai_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    engine = load(CLOUD_MANIFEST, {})
    assert str(engine.url) == "https://api.openai.com/v1/chat/completions"
    engine.close()


def test_sync_close_after_the_event_loop_ended_leaves_nothing_unclosed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def answer_once() -> tuple[OpenAiLlm, list[str]]:
        async with serving(OpenAiDouble(OPENAI_KEY), monkeypatch):
            engine = load(CLOUD_MANIFEST, FAST)
            return engine, await drain(engine.stream_chat(CHAT, max_tokens=8))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine, pieces = asyncio.run(answer_once())
        engine.close()  # as `Engines.close()` does at shutdown, after the loop has ended
        del engine
        gc.collect()
    assert pieces == ["Your balance", " is", " 42 euros", "."]
    assert [str(warning.message) for warning in caught if "nclosed" in str(warning.message)] == []


async def test_sync_close_inside_the_loop_releases_the_session(
    openai_llm: OpenAiLlm, openai_server: OpenAiDouble
) -> None:
    await drain(openai_llm.stream_chat(CHAT, max_tokens=8))
    openai_llm.close()
    assert await drain(openai_llm.stream_chat(CHAT, max_tokens=8)) == ["Your balance", " is", " 42 euros", "."]
