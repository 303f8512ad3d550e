"""Shared pieces of the hypothesis fuzz tests (tests/avc/**/test_fuzz_*.py).

`FUZZ` is the settings every fuzz test runs under: `AVC_FUZZ_EXAMPLES` (default 300) examples per test,
derandomized, no example database, no deadline. The strategies here are the mutators and hostile values that
more than one fuzz module draws from: byte-level mutants of captured seeds, line-level mutants of text seeds,
hostile text, any JSON value, and the SIP texts of the captures to seed them with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.support.captures import CAPTURE_DIR, SippMessage, event_datagrams, sipp_messages

EXAMPLES = int(os.environ.get("AVC_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def event_param_texts(name: str) -> set[str]:
    """The `name` parameter of every captured E_UA_SESSION event ("" where absent or null): SIP seeds."""
    return {json.loads(datagram)["params"].get(name) or "" for datagram in event_datagrams()}


def all_sipp_messages() -> list[SippMessage]:
    """Every SIP message of every captured SIPp message log: SIP seeds."""
    return [message for log in sorted(CAPTURE_DIR.glob("*_sipp_messages.log")) for message in sipp_messages(log.name)]


# Every character category, astral and combining characters, lone surrogates, NULs, bidi overrides, CR/LF.
_ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
# Special values every fuzz module wants among its hostile texts: empty, NUL and a lone surrogate.
_NASTY_BASE = ("", "\x00", "\ud800")
# Numbers and numeric-looking strings that break naive JSON consumers: beyond float or 64 bits, negative zero,
# and digits that are not ASCII (which `int()` accepts).
_JSON_SPECIALS: tuple[Any, ...] = (
    10**400,
    -(2**63),
    2**31,
    2**64,
    1e308,
    1.5,
    0.0,
    -0.0,
    "200",
    "\u0663",
    "\uff11",
    "\uff11\uff10\uff10",
)


def nasty_text(specials: Iterable[str] = (), *, max_size: int = 30) -> st.SearchStrategy[str]:
    """Any text up to `max_size` characters, or "", NUL, a lone surrogate, or one of `specials`."""
    return st.text(_ANY_CHARACTER, max_size=max_size) | st.sampled_from(_NASTY_BASE + tuple(specials))


def any_text(max_size: int) -> st.SearchStrategy[str]:
    """Any text, or any bytes decoded with surrogateescape (what a lenient reader of the wire would see)."""
    return st.text(max_size=max_size) | st.binary(max_size=max_size).map(
        lambda raw: raw.decode("utf-8", "surrogateescape")
    )


def json_scalars(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Any JSON scalar (NaN and infinities included), strings drawn from `text`, plus awkward numbers."""
    return st.none() | st.booleans() | st.integers() | st.floats() | text | st.sampled_from(_JSON_SPECIALS)


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Any small JSON value: `json_scalars(text)` nested in lists and objects keyed by `text`."""
    return st.recursive(
        json_scalars(text),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=8,
    )


def json_bytes(value: Any, *, ensure_ascii: bool = True) -> bytes:
    """`value` as JSON text in UTF-8, NaN and lone surrogates kept (as a careless peer would send them)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True).encode("utf-8", "surrogatepass")


# Bytes that steer JSON, HTTP and UTF-8 decoders; the "set" mutation draws these or any other byte.
_STEERING_BYTES = b'\x00\x80\xff"\\{}[],:\r\n 0-9\xc3\xed\xf4'


@st.composite
def byte_mutants(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with one to six byte-level mutations: flips, set bytes, truncation, insertion, deletion, splicing
    with another seed and repetition."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(st.sampled_from(("flip", "set", "truncate", "insert", "delete", "splice", "repeat")))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and data:
            data[position] = draw(st.sampled_from(_STEERING_BYTES) | st.integers(0, 255))
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 32))]
        elif operation == "splice":
            other = draw(st.sampled_from(seeds))
            cut = draw(st.integers(0, len(other)))
            data = data[:position] + bytearray(other[cut:])
        elif operation == "repeat":
            data[position:position] = data[position : position + 8] * draw(st.integers(1, 64))
    return bytes(data)


def mutate_lines(
    draw: st.DrawFn, lines: list[str], new_lines: st.SearchStrategy[str], text: st.SearchStrategy[str]
) -> list[str]:
    """`lines` with one to six lines dropped, duplicated, swapped, replaced or added (from `new_lines`), blank
    lines added, characters changed (to `text`) or the tail truncated mid-line. For use inside @st.composite."""
    lines = list(lines)
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(
            st.sampled_from(("drop", "duplicate", "swap", "replace", "insert", "blank", "chars", "truncate"))
        )
        index = draw(st.integers(0, max(len(lines) - 1, 0)))
        if operation == "drop" and lines:
            del lines[index]
        elif operation == "duplicate" and lines:
            lines.insert(index, lines[index])
        elif operation == "swap" and len(lines) > 1:
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif operation == "replace" and lines:
            lines[index] = draw(new_lines)
        elif operation == "insert":
            lines.insert(index, draw(new_lines))
        elif operation == "blank":
            lines.insert(index, draw(st.sampled_from(["", " ", "\t"])))
        elif operation == "chars" and lines and lines[index]:
            position = draw(st.integers(0, len(lines[index])))
            lines[index] = lines[index][:position] + draw(text) + lines[index][position + draw(st.integers(0, 3)) :]
        elif operation == "truncate":
            lines = lines[: index + 1]
            if lines:
                lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
    return lines
