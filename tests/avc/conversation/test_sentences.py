import pytest

from avc.conversation.sentences import SentenceSplitter, sentences_of


def split_stream(pieces: list[str]) -> list[str]:
    splitter = SentenceSplitter()
    out: list[str] = []
    for piece in pieces:
        out += splitter.feed(piece)
    return out + splitter.flush()


def test_sentences_come_out_as_soon_as_they_end() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Sure. Your card") == ["Sure."]
    assert splitter.feed(" was sent on Monday! It should") == ["Your card was sent on Monday!"]
    assert splitter.flush() == ["It should"]


def test_decimals_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    text = "The fee is 1.5 percent. Dr. Smith said e.g. a card. J. K. Rowling wrote it."
    assert split_stream(list(text)) == [
        "The fee is 1.5 percent.",
        "Dr. Smith said e.g. a card.",
        "J. K. Rowling wrote it.",
    ]


def test_a_run_on_answer_is_cut_before_it_grows_too_long() -> None:
    words = " ".join(["word"] * 120)
    parts = split_stream([words])
    assert all(len(p) <= 301 for p in parts) and " ".join(parts) == words


async def test_sentences_of_an_async_stream() -> None:
    async def pieces():  # type: ignore[no-untyped-def]
        for piece in ["Hello", " there.", " How can", " I help?"]:
            yield piece

    assert [s async for s in sentences_of(pieces())] == ["Hello there.", "How can I help?"]


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_blank_text_yields_nothing(text: str) -> None:
    assert split_stream([text]) == []


async def test_a_long_first_sentence_is_spoken_clause_first_but_dates_stay_whole() -> None:
    from avc.conversation.chain import _first_clause_apart

    async def of(*items: str):  # type: ignore[no-untyped-def]
        for item in items:
            yield item

    balance = "Your current balance is one hundred dollars, and your available credit is nine hundred dollars."
    assert [s async for s in _first_clause_apart(of(balance, "Anything else?"))] == [
        "Your current balance is one hundred dollars,",
        "and your available credit is nine hundred dollars.",
        "Anything else?",
    ]
    shipped = "The card ending in 7 3 1 5 was shipped with UPS on November 18, 2026."
    assert [s async for s in _first_clause_apart(of(shipped))] == [shipped]
    assert [s async for s in _first_clause_apart(of("Short, sweet.", balance))] == ["Short, sweet.", balance]
