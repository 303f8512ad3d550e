"""The edge proxy's dialog for each call (dialog module), as `dlg_list` / `dlg_list_ctx` print it.

The architecture puts a dialog-tracked edge in front of the B2B node; the double keeps one dialog per call,
addressed by Call-ID (or its DID / db id), so the app can `dlg_push_var` onto it and read it back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from demo.opensips_double.wire import B2B_CONTACT, SIP_SOCKET

DIALOG_LIFETIME = 3600
# dialog module states, as `dlg_list` prints them.
DLG_UNCONFIRMED, DLG_EARLY, DLG_CONFIRMED_NA, DLG_CONFIRMED, DLG_DELETED = 1, 2, 3, 4, 5


def _escape_dlg_value(value: str) -> str:
    """How `dlg_list_ctx` prints a dialog value: bytes outside 0x20-0x7e escaped C-style (capture 04 `ucSDP`)."""
    named = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
    out: list[str] = []
    for byte in value.encode():
        if byte < 0x20 or byte >= 0x7F:
            out.append(named.get(byte, f"\\x{byte:02x}"))
        else:
            out.append(chr(byte))
    return "".join(out)


@dataclass(slots=True)
class EdgeDialog:
    """The edge proxy's dialog for one call (dialog module), addressed by Call-ID."""

    did: str
    db_id: int
    callid: str
    from_uri: str
    to_uri: str
    caller_tag: str
    caller_contact: str
    caller_sdp: str
    invite_cseq: int
    values: list[tuple[str, str]]  # newest first, as the dialog module keeps them
    state: int = DLG_UNCONFIRMED
    callee_tag: str | None = None
    callee_sdp: str | None = None
    start_ts: int = 0

    @property
    def alive(self) -> bool:
        return self.state != DLG_DELETED

    def push(self, name: str, value: str) -> None:
        # store_dlg_value: an existing name is replaced where it stands, a new one goes to the head of the list.
        for index, (existing, _) in enumerate(self.values):
            if existing == name:
                self.values[index] = (name, value)
                return
        self.values.insert(0, (name, value))

    def to_mi(self, with_context: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "ID": self.did,
            "db_id": str(self.db_id),
            "state": self.state,
            "user_flags": "",
            "timestart": self.start_ts,
        }
        if self.start_ts:
            item["datestart"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.start_ts))
        timeout = self.start_ts + DIALOG_LIFETIME if self.start_ts else 0
        item["timeout"] = timeout
        if timeout:
            item["dateout"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timeout))
        item.update(
            callid=self.callid,
            from_uri=self.from_uri,
            to_uri=self.to_uri,
            caller_tag=self.caller_tag,
            caller_contact=self.caller_contact,
            callee_cseq="0",
            caller_route_set="",
            caller_bind_addr=SIP_SOCKET,
        )
        if self.caller_sdp:
            item["caller_sdp"] = self.caller_sdp
        callees: list[dict[str, Any]] = []
        if self.callee_tag is not None:
            callee: dict[str, Any] = {
                "callee_tag": self.callee_tag,
                "callee_contact": B2B_CONTACT,
                "caller_cseq": str(self.invite_cseq),
                "callee_route_set": "",
                "callee_bind_addr": SIP_SOCKET,
            }
            if self.callee_sdp:
                callee["callee_sdp"] = self.callee_sdp
            callees.append(callee)
        item["CALLEES"] = callees
        if with_context:
            context: dict[str, Any] = {}
            if self.values:
                context["values"] = [{name: _escape_dlg_value(value)} for name, value in self.values]
            item["context"] = context
        return item
