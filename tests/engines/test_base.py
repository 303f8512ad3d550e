"""The values exchanged with engines: chat messages in the OpenAI form every LLM provider takes."""

from __future__ import annotations

import json

from engines.base import ChatMessage, ToolCall


def test_plain_message_has_only_role_and_content() -> None:
    assert ChatMessage("user", "What is my balance?").as_openai() == {"role": "user", "content": "What is my balance?"}


def test_tool_call_arguments_travel_as_a_json_string() -> None:
    call = ToolCall(id="call_1", name="get_balance", arguments={"account": "current"})
    message = ChatMessage("assistant", "", tool_calls=(call,)).as_openai()
    (sent,) = message["tool_calls"]
    assert sent["type"] == "function" and sent["function"]["name"] == "get_balance"
    assert json.loads(sent["function"]["arguments"]) == {"account": "current"}


def test_tool_result_refers_to_its_call() -> None:
    message = ChatMessage("tool", '{"balance": "120.00"}', tool_call_id="call_1").as_openai()
    assert message == {"role": "tool", "content": '{"balance": "120.00"}', "tool_call_id": "call_1"}
