"""Structured logging: one JSON object per line, with the call key and Call-ID of the task that logged.

The call identity travels in context variables, so every line logged while a call's task runs carries
it without passing loggers around. Callers' digits never reach a log line: code logs digit counts, not
digits, and the banking layer redacts text before it is logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

CALL_KEY: ContextVar[str | None] = ContextVar("avc_call_key", default=None)
CALL_ID: ContextVar[str | None] = ContextVar("avc_call_id", default=None)

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        key, call_id = CALL_KEY.get(), CALL_ID.get()
        if key:
            entry["call_key"] = key
        if call_id:
            entry["call_id"] = call_id
        for name, value in vars(record).items():
            if name not in _RESERVED and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        key = CALL_KEY.get()
        prefix = f"[{key}] " if key else ""
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {prefix}{record.getMessage()}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup_logging(level: str = "INFO", json_lines: bool = True, per_module: str = "") -> None:
    """Configure the root logger. `per_module` is `avc.media.rtp=DEBUG,avc.opensips.mi=WARNING` style."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for item in filter(None, (part.strip() for part in per_module.split(","))):
        name, _, module_level = item.partition("=")
        logging.getLogger(name.strip()).setLevel(module_level.strip().upper() or "INFO")
