"""How the MI core takes a command's parameters (the recipes `which` prints) and how a command fails.

A request whose parameter names match none of the command's recipes is refused before the command runs; a
command that fails answers a JSON-RPC error with the code and message OpenSIPS uses (`MIFault`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Parameter sets ("recipes") per command, as `which` prints them. A request whose parameter names match none of
# them is refused by the MI core with -32602 "Too few or too many parameters" before the command runs.
_REPLY_RECIPES = (
    ("key", "method", "code", "reason"),
    ("key", "method", "code", "reason", "body"),
    ("key", "method", "code", "reason", "extra_headers"),
    ("key", "method", "code", "reason", "body", "content_type"),
    ("key", "method", "code", "reason", "body", "extra_headers"),
    ("key", "method", "code", "reason", "body", "content_type", "extra_headers"),
)
_DLG_LIST_RECIPES = ((), ("callid",), ("callid", "from_tag"), ("index", "counter"))
RECIPES: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "version": ((),),
    "uptime": ((),),
    "ps": ((),),
    "which": ((), ("command",)),
    "events_list": ((),),
    "event_subscribe": (("event", "socket"), ("event", "socket", "expire")),
    "subscribers_list": ((), ("event",), ("event", "socket")),
    "ua_session_reply": _REPLY_RECIPES,
    # Not captured: the reply's parameter sets without code and reason (ua_api.c reads the same optional ones).
    "ua_session_update": (
        ("key", "method"),
        ("key", "method", "body"),
        ("key", "method", "extra_headers"),
        ("key", "method", "body", "content_type"),
        ("key", "method", "body", "extra_headers"),
        ("key", "method", "body", "content_type", "extra_headers"),
    ),
    "ua_session_terminate": (("key",), ("key", "extra_headers")),
    "ua_session_list": ((), ("key",)),
    "dlg_push_var": (("dlg_val_name", "dlg_val_value", "DID"),),
    "dlg_list": _DLG_LIST_RECIPES,
    "dlg_list_ctx": _DLG_LIST_RECIPES,
    "dlg_end_dlg": (("dialog_id",), ("dialog_id", "extra_hdrs")),
    # MI core cache commands (not captured; the documented parameters).
    "cache_store": (("system", "attr", "value"), ("system", "attr", "value", "expire")),
    "cache_fetch": (("system", "attr"),),
    "cache_remove": (("system", "attr"),),
}


class MIFault(Exception):
    """A JSON-RPC error reply: the command failed the way OpenSIPS reports it."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(f"{code} {message}" + (f" ({data})" if data else ""))
        self.code = code
        self.message = message
        self.data = data


def bad_type(name: str) -> MIFault:
    return MIFault(-32602, "Invalid params", f"Bad type for parameter '{name}'")


def str_param(params: Mapping[str, Any], name: str) -> str:
    # get_mi_string_param accepts numbers too and prints them as integers.
    value = params[name]
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value))
    raise bad_type(name)


def int_param(params: Mapping[str, Any], name: str) -> int:
    # get_mi_int_param accepts numbers and strings holding a (signed) integer.
    value = params[name]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        text = value[1:] if value[:1] in "+-" else value
        if text.isdigit() and text.isascii():
            return int(value)
    raise bad_type(name)


def opt_str(params: Mapping[str, Any], name: str) -> str | None:
    return str_param(params, name) if name in params else None
