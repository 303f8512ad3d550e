"""What a caller means: intents, their slots, and the `Understander` seam that decides them.

An understander turns one utterance (untrusted text from speech recognition) into an `Understanding`,
or returns None when it cannot tell. The deterministic fast path is one; an LLM-backed one will be
another, chained behind it. Understanders only classify: they never fetch data or act, so a caller
talking one into a wrong intent gains nothing the dialogue's own checks would not give anyway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol, runtime_checkable


class Intent(StrEnum):
    YES = "yes"
    NO = "no"
    DIGITS = "digits"  # a digit string: a menu choice (card endings and codes arrive only by DTMF)
    DATE = "date"
    AGENT = "agent"
    CARD_DELIVERY = "card_delivery"
    LOST_STOLEN = "lost_stolen"
    LOCK_CARD = "lock_card"
    UNLOCK_CARD = "unlock_card"
    ACTIVATE_CARD = "activate_card"
    BALANCE = "balance"
    TRANSACTIONS = "transactions"
    REPEAT = "repeat"
    GOODBYE = "goodbye"
    SMALL_TALK = "small_talk"  # a greeting, thanks: answered politely, asks for nothing
    KNOWLEDGE = "knowledge"  # a question the bank's knowledge base answers (`Slots.entry` names the entry)
    OUT_OF_SCOPE = "out_of_scope"  # a request this line cannot serve: said honestly, an agent offered
    MANIPULATION = "manipulation"  # social engineering or prompt injection the guard's rules did not catch


# A reading less sure than this is "not understood", whoever made it.
MIN_CONFIDENCE: Final = 0.6

# The intents that ask for a banking service; each needs a verified caller.
SERVICE_INTENTS = frozenset(
    {
        Intent.CARD_DELIVERY,
        Intent.LOST_STOLEN,
        Intent.LOCK_CARD,
        Intent.UNLOCK_CARD,
        Intent.ACTIVATE_CARD,
        Intent.BALANCE,
        Intent.TRANSACTIONS,
    }
)


class Expect(StrEnum):
    """What the dialogue asked for, so the next input is read in that light ("one" is a menu choice)."""

    FREE = "free"
    YES_NO = "yes_no"
    DIGITS = "digits"  # keypad entry (DTMF)
    DATE = "date"
    NOTHING = "nothing"  # the conversation is over


@dataclass(frozen=True, slots=True)
class Slots:
    digits: str | None = None
    date: dt.date | None = None
    entry: str | None = None  # the knowledge base entry that answers a KNOWLEDGE question


@dataclass(frozen=True, slots=True)
class Understanding:
    """What one utterance means. `angry`: the caller is angry, whatever they asked: a human should take over.
    `source`: which understander answered (fast path, semantic, llm), for the journal and `avc understand`."""

    intent: Intent
    slots: Slots = Slots()
    confidence: float = 1.0
    angry: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within [0, 1], got {self.confidence}")


class Understander(Protocol):
    async def understand(self, text: str, expect: Expect) -> Understanding | None:
        """The intent of `text`, or None when this understander cannot tell.

        `text` has been screened for manipulation and redacted: card numbers, codes and full dates are
        masked, and answers given while a secret was asked for have every digit masked.
        """
        ...


@runtime_checkable
class Prefetching(Protocol):
    """An understander that can start on words before the turn is over (the speculative transcript)."""

    def prefetch(self, text: str, expect: Expect) -> None:
        """Begin understanding `text` in the background; `understand` of the same text and expect reuses it."""
        ...


class ChainUnderstander:
    """Asks each understander in turn (fast path first, then slower ones); the first answer wins."""

    def __init__(self, understanders: Sequence[Understander]) -> None:
        self.understanders = tuple(understanders)

    async def understand(self, text: str, expect: Expect) -> Understanding | None:
        for understander in self.understanders:
            understanding = await understander.understand(text, expect)
            if understanding is not None:
                return understanding
        return None
