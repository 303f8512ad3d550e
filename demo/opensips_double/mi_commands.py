"""The MI commands the double answers, with the result shapes and error codes of captures 01-13 (unknown key,
missing `reason`, `DID` not a list, unknown command...): the core's, the event interface's, b2b_entities' UA
sessions and the edge's dialog module.

Where the captures are silent the handlers follow the OpenSIPS 3.5 sources (b2b_entities ua_api.c, evi, dialog)
and say so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from demo.opensips_double.edge_dialog import DLG_CONFIRMED, DLG_CONFIRMED_NA, DLG_DELETED, EdgeDialog
from demo.opensips_double.event_interface import DEFAULT_EXPIRE, PUBLISHED_EVENTS, parse_event_socket
from demo.opensips_double.mi_params import RECIPES, MIFault, bad_type, int_param, opt_str, str_param
from demo.opensips_double.session import CallState, Reply
from demo.opensips_double.wire import SERVER, SIP_SOCKET, garbled_headers

if TYPE_CHECKING:
    from demo.opensips_double.double import OpenSIPSDouble

log = logging.getLogger(__name__)


class MICommands:
    """The command handlers, each taking the request's named parameters (already matched to a recipe)."""

    def __init__(self, double: OpenSIPSDouble) -> None:
        self._double = double
        self._events = double._events
        self.table: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            "version": self._cmd_version,
            "uptime": self._cmd_uptime,
            "ps": self._cmd_ps,
            "which": self._cmd_which,
            "events_list": self._cmd_events_list,
            "event_subscribe": self._cmd_event_subscribe,
            "subscribers_list": self._cmd_subscribers_list,
            "ua_session_reply": self._cmd_ua_session_reply,
            "ua_session_update": self._cmd_ua_session_update,
            "ua_session_terminate": self._cmd_ua_session_terminate,
            "ua_session_list": self._cmd_ua_session_list,
            "dlg_push_var": self._cmd_dlg_push_var,
            "dlg_list": lambda params: self._cmd_dlg_list(params, with_context=False),
            "dlg_list_ctx": lambda params: self._cmd_dlg_list(params, with_context=True),
            "dlg_end_dlg": self._cmd_dlg_end_dlg,
            "cache_store": double.cache.cmd_store,
            "cache_fetch": double.cache.cmd_fetch,
            "cache_remove": double.cache.cmd_remove,
        }

    # -- MI: core and event interface ------------------------------------------------------------------------

    def _cmd_version(self, params: Mapping[str, Any]) -> Any:
        return {"Server": SERVER}

    def _cmd_uptime(self, params: Mapping[str, Any]) -> Any:
        now = time.time()
        return {
            "Now": time.ctime(now),
            "Up since": time.ctime(self._double._started_at),
            "Up time": f"{int(now - self._double._started_at)} [sec]",
        }

    def _cmd_ps(self, params: Mapping[str, Any]) -> Any:
        types = [
            "attendant",
            f"HTTPD {self._double.host}:{self._double.mi_http_address[1]}",
            "MI Datagram",
            "time_keeper",
            "timer",
            *[f"SIP receiver {SIP_SOCKET}"] * 4,
            "Timer handler",
        ]
        return {
            "Processes": [
                {"ID": index, "PID": pid, "Type": kind}
                for index, (pid, kind) in enumerate(zip(self._double._pids, types, strict=True))
            ]
        }

    def _cmd_which(self, params: Mapping[str, Any]) -> Any:
        if "command" not in params:
            return list(RECIPES)
        command = str_param(params, "command")
        if command.endswith(":"):
            matching = [name for name in RECIPES if name.startswith(command)]
            if matching:
                return matching
        elif command in RECIPES:
            return [list(recipe) for recipe in RECIPES[command]]
        raise MIFault(404, "unknown MI command")

    def _cmd_events_list(self, params: Mapping[str, Any]) -> Any:
        return {"Events": [{"name": name, "id": index} for index, name in enumerate(PUBLISHED_EVENTS)]}

    def _cmd_event_subscribe(self, params: Mapping[str, Any]) -> Any:
        event = str_param(params, "event")
        spec = str_param(params, "socket")
        if not event:
            raise bad_type("event")
        if not spec:
            raise bad_type("socket")
        expire = int_param(params, "expire") if "expire" in params else DEFAULT_EXPIRE
        if expire < 0:
            raise MIFault(-32602, "Invalid params", "Negative expire value")
        if event not in PUBLISHED_EVENTS:
            raise MIFault(400, "Bad parameter value")
        try:
            target = parse_event_socket(spec)
        except ValueError as exc:
            raise MIFault(400, "Bad parameter value") from exc
        self._events.subscribe(event, spec, expire, target)
        return "OK"

    def _cmd_subscribers_list(self, params: Mapping[str, Any]) -> Any:
        if "event" not in params:
            return {"Events": [self._events.item(index) for index in range(len(PUBLISHED_EVENTS))]}
        event = str_param(params, "event")
        if event not in PUBLISHED_EVENTS:
            raise MIFault(404, "Event not published")
        index = PUBLISHED_EVENTS.index(event)
        if "socket" not in params:
            return {"Event": self._events.item(index)}
        spec = str_param(params, "socket")
        subscriber = next((s for s in self._events.live(event) if s.socket == spec), None)
        if subscriber is None:
            raise MIFault(404, "Subscriber does not exist")
        return {"Event": self._events.item(index, subscriber)}

    # -- MI: b2b_entities UA sessions -------------------------------------------------------------------------

    def _cmd_ua_session_reply(self, params: Mapping[str, Any]) -> Any:
        key = str_param(params, "key")
        method = str_param(params, "method").upper()
        code = int_param(params, "code")
        reason = str_param(params, "reason")
        body = opt_str(params, "body")
        reply = Reply(
            code, reason, body, opt_str(params, "content_type"), _as_sent(body, opt_str(params, "extra_headers"))
        )
        call = self._double._sessions.get(key)
        if call is None:
            raise MIFault(500, "Failed to send reply")
        call._app_reply(method, reply)
        return "OK"

    def _cmd_ua_session_update(self, params: Mapping[str, Any]) -> Any:
        key = str_param(params, "key")
        method = str_param(params, "method").upper()
        body = opt_str(params, "body")
        content_type = opt_str(params, "content_type")
        extra_headers = _as_sent(body, opt_str(params, "extra_headers"))
        call = self._double._sessions.get(key)
        if call is None or not method:
            raise MIFault(500, "Failed to send sequential request")
        call._app_request(method, body, content_type, extra_headers)
        return "OK"

    def _cmd_ua_session_terminate(self, params: Mapping[str, Any]) -> Any:
        key = str_param(params, "key")
        extra_headers = opt_str(params, "extra_headers")
        call = self._double._sessions.get(key)
        if call is None:
            raise MIFault(500, "Failed to terminate session")
        call._app_terminate(extra_headers)
        return "OK"

    def _cmd_ua_session_list(self, params: Mapping[str, Any]) -> Any:
        if "key" not in params:
            return [self._double._sessions[key]._session_item() for key in self._double.sessions]
        key = str_param(params, "key")
        parts = key.split(".")
        if len(parts) < 3 or parts[0] != "B2B" or not all(part.isdigit() for part in parts[1:]):
            raise MIFault(400, "Bad format for b2b key")
        call = self._double._sessions.get(key)
        if call is None:
            raise MIFault(404, "Entity not found")
        return call._session_item()

    # -- MI: the edge's dialog module -------------------------------------------------------------------------

    def _find_dialog(self, ident: str) -> EdgeDialog | None:
        dialog = self._double._dialogs.get(ident)
        if dialog is None:
            dialog = next((d for d in self._double._dialogs.values() if ident in (d.did, str(d.db_id))), None)
        return dialog if dialog is not None and dialog.alive else None

    def _cmd_dlg_push_var(self, params: Mapping[str, Any]) -> Any:
        name = str_param(params, "dlg_val_name")
        value = str_param(params, "dlg_val_value")
        dids = params["DID"]
        if not isinstance(dids, list) or not dids:
            raise bad_type("DID")
        idents = []
        for did in dids:
            if isinstance(did, bool) or not isinstance(did, str | int):
                raise bad_type("DID")
            idents.append(str(did))
        for ident in idents:
            dialog = self._find_dialog(ident)
            if dialog is not None:  # an unknown DID still answers OK (capture 10)
                dialog.push(name, value)
        return "OK"

    def _cmd_dlg_list(self, params: Mapping[str, Any], *, with_context: bool) -> Any:
        if "callid" in params:
            callid = str_param(params, "callid")
            from_tag = opt_str(params, "from_tag")
            dialog = self._double._dialogs.get(callid)
            if dialog is None or not dialog.alive or (from_tag is not None and from_tag != dialog.caller_tag):
                raise MIFault(404, "No such dialog")
            return {"Dialog": dialog.to_mi(with_context)}
        alive = [dialog for dialog in self._double._dialogs.values() if dialog.alive]
        if "index" in params:
            index = int_param(params, "index")
            counter = int_param(params, "counter")
            chosen = alive[index : index + counter]
            return {"count": len(alive), "Dialogs": [d.to_mi(with_context) for d in chosen]}
        return {"Dialogs": [d.to_mi(with_context) for d in alive]}

    def _cmd_dlg_end_dlg(self, params: Mapping[str, Any]) -> Any:
        ident = str_param(params, "dialog_id")
        opt_str(params, "extra_hdrs")
        dialog = self._find_dialog(ident)
        if dialog is None or dialog.state not in (DLG_CONFIRMED_NA, DLG_CONFIRMED):
            raise MIFault(404, "Requested Dialog not found")
        call = next((c for c in self._double._sessions.values() if c.call_id == dialog.callid), None)
        if call is not None and call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            # The edge sends BYE both ways; the B2B node sees it as the caller's BYE.
            self._double._loop.call_soon(call._caller_bye)
        else:
            dialog.state = DLG_DELETED
        return "OK"


def _as_sent(body: str | None, extra_headers: str | None) -> str | None:
    # 3.5.9 copies extra_headers only when a body is given; without one the caller gets garbage in their place.
    if extra_headers and body is None:
        return garbled_headers(extra_headers)
    return extra_headers
