"""Deterministic understanding of the common phrasings, with no LLM: fast, free and predictable.

Each rule fires on a clear phrasing or not at all. When nothing fires, or two service intents do ("I
lost my card, what is my balance?"), the fast path returns None and leaves the utterance to a slower
understander; with the fast path alone, that counts as not understood. An action word under a negation
("don't lock my card") is never read as the action.

Order of precedence: an angry caller (swearing, "this is ridiculous") and a request for a human always
win, both as AGENT, the first marked `angry`; then the answer the dialogue asked for (yes/no, a digit
string, a date); then goodbye and repeat; then one service intent; then a bare yes/no, digit string or
date said out of turn; then small talk said on its own ("hello?", "thank you").
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Final

from banking.dates import DateOrder, parse_date
from banking.intents import Expect, Intent, Slots, Understanding
from banking.numbers import parse_digit_string

# A rule that matches the whole short answer is certain; a keyword in a longer sentence less so.
EXACT: Final = 1.0
KEYWORD: Final = 0.9
_MAX_YES_NO_WORDS: Final = 6

_AGENT_RE: Final = re.compile(
    r"\b(agents?|human|humans|representative|operator|real person|live person|a person|somebody real|someone real|"
    r"customer service|customer care)\b"
)
# Anger aimed at the line or the situation, not a mild complaint: "stupid question, but..." is not angry.
_ANGRY_RE: Final = re.compile(
    r"\b(fuck\w*|shit\w*|bullshit|damn\w*|goddamn|bloody|crap|pissed|screw (you|this)|"
    r"ridiculous|unacceptable|outrageous|disgraceful|appalling|useless|pathetic|incompetent|idiots?|morons?|liars|"
    r"(you|this|stupid) (stupid|idiot|dumb|useless) ?(machine|robot|bot|system|thing)?|"
    r"stupid (machine|robot|bot|system|thing)|"
    r"fed up|sick (of|and tired)|furious|(so|really|very) angry|i'?m angry|waste of (my )?time|this is a joke)\b"
)
_SMALL_TALK_RE: Final = re.compile(
    r"(hi|hello|hey|hiya|good (morning|afternoon|evening))( there)?|"
    r"(thanks?|thank you)( so much| very much| a lot)?|"
    r"how are you( doing)?( today)?|nice to (meet|talk to) you"
)
_GOODBYE_RE: Final = re.compile(
    r"\b(good ?bye|bye|that'?s all|that is all|that'?s everything|that'?s it|nothing else|nothing more|"
    r"i'?m done|i am done|i'?m all set|all good thanks|hang up)\b"
)
_REPEAT_RE: Final = re.compile(r"\b(repeat|say (that|it) again|come again|pardon|what did you say|didn'?t catch)\b")

_SERVICE_RULES: Final[tuple[tuple[Intent, re.Pattern[str]], ...]] = (
    (
        Intent.CARD_DELIVERY,
        re.compile(
            r"\b(arriv\w*|deliver\w*|ship\w*|track\w*|in the mail|mailed|"
            r"where('?s| is) my (new |replacement )?card|(receiv\w*|got|gotten|get) my (new |replacement )?card)\b"
        ),
    ),
    (
        Intent.LOST_STOLEN,
        re.compile(
            r"\b(lost|lose|stolen|stole|steal|missing|misplaced|can'?t find|cannot find|fraud\w*|"
            r"(?<!temporarily )(?<!temporary )block|cancel)\b"
        ),
    ),
    (Intent.LOCK_CARD, re.compile(r"\b(lock|freeze|pause|suspend|put a hold|temporar(il)?y (block|hold))\b")),
    (Intent.UNLOCK_CARD, re.compile(r"\b(unlock|unfreeze|unblock|unpause|reactivate|turn (my card |it )?back on)\b")),
    (Intent.ACTIVATE_CARD, re.compile(r"\b(activate|activation|turn on my (new )?card|start using my (new )?card)\b")),
    (
        Intent.BALANCE,
        re.compile(
            r"\b(balance|available credit|credit (limit|available|left)|how much (do i owe|can i spend|credit)|"
            r"what do i owe|spending limit)\b"
        ),
    ),
    (
        Intent.TRANSACTIONS,
        re.compile(
            r"\b(transactions?|purchases?|charges?|payments?|spent|spending|statement|recent activity|"
            r"what did i buy)\b"
        ),
    ),
)
# An action under a negation within three words ("I don't want to lock it") is not that action.
_ACTIONS: Final = frozenset({Intent.LOST_STOLEN, Intent.LOCK_CARD, Intent.UNLOCK_CARD, Intent.ACTIVATE_CARD})
_NEGATION_RE: Final = re.compile(r"\b(don'?t|do not|not|never|no longer|didn'?t|won'?t)(\s+\S+){0,3}\s*$")

_YES_FIRST_RE: Final = re.compile(r"yes|yeah|yea|yep|yup|sure|correct|right|ok|okay|affirmative|absolutely|definitely")
_NO_FIRST_RE: Final = re.compile(r"no|nope|nah|negative|wrong|cancel")
_YES_PHRASES_RE: Final = re.compile(r"^(go ahead|that'?s right|that is right|do it|please do|of course)\b")
_NO_PHRASES_RE: Final = re.compile(r"^(not really|don'?t|do not|absolutely not|no thanks?)\b")
_MENU_ORDINALS: Final = {"first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5"}
_MENU_CHOICE_RE: Final = re.compile(r"^(the )?(?P<ordinal>first|second|third|fourth|fifth)( one| card)?$")


def normalize(text: str) -> str:
    """Lower case, typographic apostrophes made plain, other punctuation turned into spaces."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"[^\w'\s]", " ", text)
    return " ".join(text.split())


def _yes_no(normalized: str) -> Intent | None:
    words = normalized.split()
    if not words or len(words) > _MAX_YES_NO_WORDS:
        return None
    yes = _YES_FIRST_RE.fullmatch(words[0]) is not None or _YES_PHRASES_RE.match(normalized) is not None
    no = _NO_FIRST_RE.fullmatch(words[0]) is not None or _NO_PHRASES_RE.match(normalized) is not None
    if yes == no:
        return None
    return Intent.YES if yes else Intent.NO


def _digits(text: str, normalized: str) -> str | None:
    if (choice := _MENU_CHOICE_RE.match(normalized)) is not None:
        return _MENU_ORDINALS[choice["ordinal"]]
    return parse_digit_string(text)


def _service_intent(normalized: str) -> Intent | None:
    found: set[Intent] = set()
    for intent, pattern in _SERVICE_RULES:
        for match in pattern.finditer(normalized):
            if intent in _ACTIONS and _NEGATION_RE.search(normalized[: match.start()]) is not None:
                continue
            found.add(intent)
            break
    return found.pop() if len(found) == 1 else None


def understand(
    text: str, expect: Expect = Expect.FREE, order: DateOrder = DateOrder.MDY, *, keywords: bool = True
) -> Understanding | None:
    """The fast-path reading of one utterance, or None when it needs a smarter understander.

    `keywords=False` keeps only what a rule is certain of (an angry caller, a request for a human, the
    yes/no, digits or date asked for, small talk said on its own) and leaves goodbye, repeat, the
    service intents and answers given out of turn, which one word in a sentence may misread, to a
    reading of the whole sentence.
    """
    normalized = normalize(text)
    if not normalized:
        return None
    if _ANGRY_RE.search(normalized):
        return Understanding(Intent.AGENT, confidence=KEYWORD, angry=True)
    if _AGENT_RE.search(normalized):
        return Understanding(Intent.AGENT, confidence=KEYWORD)
    if expect is Expect.YES_NO and (answer := _yes_no(normalized)) is not None:
        return Understanding(answer, confidence=EXACT)
    if expect is Expect.DIGITS and (digits := _digits(text, normalized)) is not None:
        return Understanding(Intent.DIGITS, Slots(digits=digits), EXACT)
    if expect is Expect.DATE and (date := parse_date(text, order)) is not None:
        return Understanding(Intent.DATE, Slots(date=date), EXACT)
    if not keywords:
        # An answer nobody asked for ("yes, my transactions please") is not certain: the sentence may go on.
        return Understanding(Intent.SMALL_TALK, confidence=EXACT) if _SMALL_TALK_RE.fullmatch(normalized) else None
    if _GOODBYE_RE.search(normalized):
        return Understanding(Intent.GOODBYE, confidence=KEYWORD)
    if _REPEAT_RE.search(normalized):
        return Understanding(Intent.REPEAT, confidence=KEYWORD)
    if (intent := _service_intent(normalized)) is not None:
        return Understanding(intent, confidence=KEYWORD)
    if (answer := _yes_no(normalized)) is not None:
        return Understanding(answer, confidence=EXACT)
    if (digits := _digits(text, normalized)) is not None:
        return Understanding(Intent.DIGITS, Slots(digits=digits), EXACT)
    if (date := parse_date(text, order)) is not None:
        return Understanding(Intent.DATE, Slots(date=date), EXACT)
    if _SMALL_TALK_RE.fullmatch(normalized):
        return Understanding(Intent.SMALL_TALK, confidence=EXACT)
    return None


class FastPathUnderstander:
    """The fast path behind the `Understander` protocol, for chaining in front of slower understanders.

    In the product it sits twice in the chain: certain rules only (`keywords=False`) first, then, after
    the semantic understander has abstained, with its keywords, before the LLM is asked.
    """

    def __init__(self, order: DateOrder = DateOrder.MDY, *, keywords: bool = True) -> None:
        self._order = order
        self._keywords = keywords
        self.name = "keywords" if keywords else "rules"

    async def understand(self, text: str, expect: Expect) -> Understanding | None:
        understanding = understand(text, expect, self._order, keywords=self._keywords)
        return None if understanding is None else replace(understanding, source=self.name)
