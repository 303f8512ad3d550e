"""Tests for avc.conversation.banking_responder: the dialogue's replies as the chain's spoken turns."""

from __future__ import annotations

from avc.conversation.banking_responder import bot_turn_from_reply
from banking import templates
from banking.dialogue import Hangup, Reply, Transfer
from banking.intents import Expect


def test_a_date_question_lets_turn_taking_end_on_a_whole_date_and_nothing_else() -> None:
    turn = bot_turn_from_reply(Reply(templates.ASK_DOB, Expect.DATE))
    assert turn.expect == "date" and turn.complete_answer is not None
    assert turn.complete_answer("March 5th, 1985.") and not turn.complete_answer("March 5th,")
    assert bot_turn_from_reply(Reply(templates.ASK_YES_NO, Expect.YES_NO)).complete_answer is None


def test_actions_become_a_refer_with_header_safe_context_or_a_hang_up() -> None:
    transfer = bot_turn_from_reply(
        Reply(templates.TRANSFER, Expect.NOTHING, Transfer("caller_request", "reason=caller_request"))
    )
    assert transfer.transfer == {"X-AI-Transfer-Reason": "caller_request", "X-AI-Summary": "reason=caller_request"}
    assert not transfer.hangup
    goodbye = bot_turn_from_reply(Reply(templates.GOODBYE, Expect.NOTHING, Hangup("caller_goodbye")))
    assert goodbye.hangup and goodbye.hangup_outcome == "goodbye"
    silent = bot_turn_from_reply(Reply(templates.NO_INPUT_GOODBYE, Expect.NOTHING, Hangup("no_input")))
    assert silent.hangup and silent.hangup_outcome == "no_input"  # avc_calls_total{outcome="no_input"}
