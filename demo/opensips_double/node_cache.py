"""The AI node's `cachedb_local` collection, as the MI core's cache commands and the node's script see it.

The connector keeps a liveness key there (`cache_store` with an expiry, every few seconds while it can take calls;
`cache_remove` when it drains), and opensips/ai-node.cfg answers OPTIONS and new INVITEs with 503 while the key is
missing, so the edge's dispatcher takes the node out of rotation. Built from the MI core's documented parameters
(`system`, `attr`, `value`, `expire`); no capture shows these commands, so their replies are the core's generic
"OK" and the cachedb error texts of the 3.5 sources, guessed where marked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from demo.opensips_double.mi_params import MIFault, int_param, str_param

LIVENESS_KEY = "avc_alive"  # what opensips/ai-node.cfg checks


class NodeCache:
    """Keys with their expiry (seconds on `clock`; none for `expire` 0), per cachedb system name."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._values: dict[tuple[str, str], tuple[str, float | None]] = {}

    def clear(self) -> None:
        """An OpenSIPS restart: cachedb_local lives in the node's memory only."""
        self._values.clear()

    def fetch(self, system: str, attr: str) -> str | None:
        entry = self._values.get((system, attr))
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and self._clock() >= expires:
            del self._values[(system, attr)]  # cachedb_local drops an expired key when it is read
            return None
        return value

    def cmd_store(self, params: Mapping[str, Any]) -> Any:
        system, attr, value = str_param(params, "system"), str_param(params, "attr"), str_param(params, "value")
        expire = int_param(params, "expire") if "expire" in params else 0
        if not value or expire < 0:
            raise MIFault(400, "Bad params")  # guessed text
        self._values[(system, attr)] = (value, self._clock() + expire if expire else None)
        return "OK"

    def cmd_fetch(self, params: Mapping[str, Any]) -> Any:
        system, attr = str_param(params, "system"), str_param(params, "attr")
        value = self.fetch(system, attr)
        if value is None:
            raise MIFault(400, "Value not found")
        return {"key": attr, "value": value}  # guessed layout

    def cmd_remove(self, params: Mapping[str, Any]) -> Any:
        self._values.pop((str_param(params, "system"), str_param(params, "attr")), None)
        return "OK"
