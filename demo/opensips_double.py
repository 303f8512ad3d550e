"""A protocol double of OpenSIPS 3.5.9 as the connector sees it: MI, E_UA_SESSION events, and the caller's side.

OpenSIPS cannot run on the test machines, so integration tests and benchmarks talk to this double instead. It is
"the outside world": it never imports `avc` (a double that reused our code would share our bugs) and it was built
from the real wire captures in `tests/fixtures/opensips-3.5.9/`, not from memory:

- MI over datagram and over HTTP answer compact JSON-RPC (`{"jsonrpc":"2.0","result":...,"id":N}`) with the
  result shapes and error codes of captures 01-13 (unknown key, missing `reason`, `DID` not a list, unknown
  command...). mi_http answers only a POST carrying `Content-Type: application/json`; anything else gets no
  response at all, as on the real server (capture 10), including non-POST methods and other paths, whose
  handling the captures do not show.
- Events go only to subscribed, unexpired sockets (event_datagram), from a small pool of source ports like the
  real server's worker processes, with the captures' key order and compact separators. Headers are built like
  the SIPp caller's messages that OpenSIPS relayed (Max-Forwards 69 on the initial INVITE, 70 in dialog, the B2B
  key as To-tag after the first reply, hop-by-hop ACK without Contact after a negative reply...). With the same
  key, Call-ID, tag and SIPp pid, scripted calls reproduce captures 02, 03, 08a, 08b and 09 byte for byte.
- Calls are scripted from the caller's side (`invite`, `bye`, `cancel`, `reinvite`, `info`, `options`), the app's
  in-dialog requests are recorded, and for REFER the double can play the transferee (NOTIFY with sipfrag). Or a
  caller that speaks SIP places them over UDP: `listen_sip()` opens the B2B node's SIP socket (`opensips_sip.py`),
  and the events then carry the headers that came over the wire while the app's replies and requests go back on it.
- The edge proxy's dialog (one per call, addressed by Call-ID) answers `dlg_push_var` / `dlg_list_ctx`, as the
  architecture puts a dialog-tracked edge in front of the B2B node.

Where the captures are silent the double follows the OpenSIPS 3.5 sources (b2b_entities ua_api.c, evi, dialog)
and says so in comments. Everything listens on 127.0.0.1 with ephemeral ports and sends only to loopback.
"""

# The helpers take a `timeout` argument because a test states how long it is willing to wait for the app.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from demo.opensips_sip import Datagrams, SipFront, name_addr, sip_hostport

if TYPE_CHECKING:
    from demo.opensips_sip import CallerLeg, SipMessage

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SERVER = "OpenSIPS (3.5.9 (x86_64/linux))"
UA_SESSION_EVENT = "E_UA_SESSION"
DEFAULT_EXPIRE = 3600
DIALOG_LIFETIME = 3600
B2B_CONTACT = "sip:127.0.0.1:5060"
SIP_SOCKET = "udp:127.0.0.1:5060"

# `events_list` of capture 01: the events a 3.5.9 with the project's modules publishes, in id order.
PUBLISHED_EVENTS = (
    "E_CORE_SR_STATUS_CHANGED",
    "E_CORE_THRESHOLD",
    "E_CORE_SHM_THRESHOLD",
    "E_CORE_PKG_THRESHOLD",
    "E_CORE_PROC_AUTO_SCALE",
    "E_CORE_TCP_DISCONNECT",
    "E_DLG_STATE_CHANGED",
    UA_SESSION_EVENT,
    "E_CORE_LOG",
)

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
}

# OpenSIPS `enum request_method` bit values: b2b_entities reports the last request it SENT as `last_method`.
METHOD_BITS: Mapping[str, int] = {
    "INVITE": 1,
    "CANCEL": 2,
    "ACK": 4,
    "BYE": 8,
    "INFO": 16,
    "OPTIONS": 32,
    "UPDATE": 64,
    "REGISTER": 128,
    "MESSAGE": 256,
    "SUBSCRIBE": 512,
    "NOTIFY": 1024,
    "PRACK": 2048,
    "REFER": 4096,
    "PUBLISH": 8192,
}

# b2b_entities `b2b_state_t`, as `ua_session_list` prints it.
B2B_NEW, B2B_EARLY, B2B_CONFIRMED, B2B_ESTABLISHED, B2B_MODIFIED, B2B_TERMINATED = 1, 3, 4, 5, 6, 7
# dialog module states, as `dlg_list` prints them.
DLG_UNCONFIRMED, DLG_EARLY, DLG_CONFIRMED_NA, DLG_CONFIRMED, DLG_DELETED = 1, 2, 3, 4, 5

# Static RTP payload types usable in `sdp_offer`.
STATIC_PAYLOAD_TYPES: Mapping[str, int] = {"PCMU": 0, "GSM": 3, "PCMA": 8, "G722": 9, "G729": 18}

_REASONS: Mapping[int, str] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    603: "Decline",
}
_MAX_DATAGRAM = 65507
_HTTP_HEAD_LIMIT = 16 * 1024
_HTTP_BODY_LIMIT = 1024 * 1024
_LOOPBACK_NAMES = frozenset({"localhost"})


class DoubleUsageError(RuntimeError):
    """A test scripted something the caller could not do at this point (BYE before the answer, ...)."""


class CallGone(RuntimeError):
    """The call ended (or OpenSIPS restarted) while a test was waiting for something on it."""


class _MIFault(Exception):
    """A JSON-RPC error reply: the command failed the way OpenSIPS reports it."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(f"{code} {message}" + (f" ({data})" if data else ""))
        self.code = code
        self.message = message
        self.data = data


def _bad_type(name: str) -> _MIFault:
    return _MIFault(-32602, "Invalid params", f"Bad type for parameter '{name}'")


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply the app sent with `ua_session_reply`, or one the double sent to the app's request."""

    code: int
    reason: str
    body: str | None = None
    content_type: str | None = None
    extra_headers: str | None = None


@dataclass(frozen=True, slots=True)
class AppRequest:
    """An in-dialog request the app sent with `ua_session_update`."""

    method: str
    cseq: int
    body: str | None
    content_type: str | None
    extra_headers: str | None


@dataclass(frozen=True, slots=True)
class MIRequest:
    """One MI request as the double received it (`method` is None when the payload was not a JSON-RPC call)."""

    transport: Literal["datagram", "http"]
    method: str | None
    params: Any
    id: Any
    raw: bytes


@dataclass(slots=True)
class Subscriber:
    """An event_datagram subscription: `socket` as given to `event_subscribe`."""

    socket: str
    expire: int
    subscribed_at: float
    target: tuple[str, int] | str | None  # (host, port) for udp, a path for unix; None when not on loopback


@dataclass(slots=True)
class _ServerTransaction:
    """A request from the caller's side that waits for the app's final reply."""

    method: str
    cseq: int
    branch: str
    final: asyncio.Future[Reply]
    replies: list[Reply] = field(default_factory=list)


class CallState(StrEnum):
    """Where a scripted call stands, from the caller's point of view."""

    OFFERED = "offered"  # NEW sent, no reply yet
    EARLY = "early"  # the app sent a provisional reply
    ANSWERED = "answered"  # the app sent 2xx, no ACK yet (only with auto_ack=False)
    CONFIRMED = "confirmed"  # 2xx ACKed
    CANCELLED = "cancelled"  # the caller sent CANCEL
    REJECTED = "rejected"  # the app answered the INVITE with 3xx-6xx
    ENDED = "ended"  # BYE either way, app terminate, or an OpenSIPS restart


def sdp_offer(
    host: str,
    port: int,
    codecs: Sequence[str] = ("PCMU",),
    dtmf_pt: int | None = 101,
    ptime: int | None = 20,
    direction: str | None = "sendrecv",
) -> str:
    """An SDP offer shaped like the SIPp caller's in the captures (`sdp_offer("127.0.0.1", 6000)` is capture 02's)."""
    payload_types: list[int] = []
    lines: list[str] = []
    for codec in codecs:
        pt = STATIC_PAYLOAD_TYPES.get(codec.upper())
        if pt is None:
            raise ValueError(f"no static payload type for codec {codec!r}; known: {sorted(STATIC_PAYLOAD_TYPES)}")
        payload_types.append(pt)
        lines.append(f"a=rtpmap:{pt} {codec.upper()}/8000")
    if dtmf_pt is not None:
        payload_types.append(dtmf_pt)
        lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-16"]
    if ptime is not None:
        lines.append(f"a=ptime:{ptime}")
    if direction is not None:
        lines.append(f"a={direction}")
    head = [
        "v=0",
        f"o=caller 53655765 2353687637 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt in payload_types)}",
    ]
    return "".join(line + "\r\n" for line in head + lines)


def _compact(document: object) -> bytes:
    # cJSON's unformatted output: no spaces, UTF-8 as is, the same escapes as Python for control characters.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _str_param(params: Mapping[str, Any], name: str) -> str:
    # get_mi_string_param accepts numbers too and prints them as integers.
    value = params[name]
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value))
    raise _bad_type(name)


def _int_param(params: Mapping[str, Any], name: str) -> int:
    # get_mi_int_param accepts numbers and strings holding a (signed) integer.
    value = params[name]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        text = value[1:] if value[:1] in "+-" else value
        if text.isdigit() and text.isascii():
            return int(value)
    raise _bad_type(name)


def _opt_str(params: Mapping[str, Any], name: str) -> str | None:
    return _str_param(params, name) if name in params else None


def _parse_event_socket(spec: str) -> tuple[str, int] | str | None:
    """`udp:HOST:PORT` or `unix:PATH` as event_datagram takes them; raises ValueError when malformed.

    Returns the delivery target, or None for a well-formed address that is not on loopback: the double accepts
    such a subscription like the real server but never sends traffic off the machine.
    """
    proto, _, rest = spec.partition(":")
    if proto == "unix" and rest:
        return rest
    if proto != "udp":
        raise ValueError(f"no event transport for {spec!r}")
    host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad udp socket {spec!r}")
    if host in _LOOPBACK_NAMES:
        return ("127.0.0.1", int(port_text))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: OpenSIPS would resolve it; the double refuses to send anywhere unknown
    return (str(address), int(port_text)) if address.is_loopback else None


def _sip_user(uri: str) -> str:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0] if "@" in rest else ""


def _sipp_call(call_id: str, number: int, pid: int) -> tuple[int, int]:
    """(call number, pid) for Via branches: SIPp's Call-IDs read `<number>-<pid>@<ip>` and its branches follow."""
    head = call_id.split("@", 1)[0]
    number_text, _, pid_text = head.partition("-")
    if number_text.isdigit() and pid_text.isdigit():
        return int(number_text), int(pid_text)
    return number, pid


def _caller_contact(from_uri: str) -> str:
    """The Contact a SIPp caller puts in its requests: its user at the address it sends from."""
    user = _sip_user(from_uri)
    hostport = sip_hostport(from_uri)
    return f"sip:{user}@{hostport}" if user else f"sip:{hostport}"


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
class _Dialog:
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


class DoubleCall:
    """One inbound call as the caller (and OpenSIPS) play it; the app drives the other side over MI."""

    def __init__(
        self,
        double: OpenSIPSDouble,
        *,
        key: str,
        local_index: int,
        call_id: str,
        sipp_call: tuple[int, int],
        from_uri: str,
        display_name: str | None,
        from_tag: str,
        to_uri: str,
        sdp: str,
        extra_headers: Mapping[str, str],
        auto_ack: bool,
        dialog: _Dialog,
        leg: CallerLeg | None = None,
    ) -> None:
        self._double = double
        self.leg = leg  # a caller on the SIP socket; None when the test scripts the caller
        self.key = key
        self.call_id = call_id
        self.from_uri = from_uri
        self.display_name = display_name
        self.from_tag = from_tag
        self.to_uri = to_uri
        self.offer_sdp = sdp
        self.extra_headers = dict(extra_headers)
        self.auto_ack = auto_ack
        self.state = CallState.OFFERED
        self.answer_sdp: str | None = None
        self.replies: list[Reply] = []  # every reply the app sent to the initial INVITE
        self.app_requests: list[AppRequest] = []
        # Replies the caller gives to the app's requests, by method; default 200 OK. REFER follows refer_outcome.
        self.app_request_replies: dict[str, tuple[int, str]] = {}
        # REFER: the transferee answers 202, NOTIFYs "100 Trying", then the outcome (200: hangs up the AI leg,
        # 486: stays); None: no final NOTIFY, the transfer never completes.
        self.refer_outcome: int | None = 200
        self.notify_replies: list[Reply] = []
        self.terminated_by_app = False
        self.terminate_extra_headers: str | None = None
        self.events: list[bytes] = []  # every event datagram emitted for this call, in order
        self._local_index = local_index
        self._dialog = dialog
        self._sent_by = sip_hostport(from_uri)
        self._contact = dialog.caller_contact
        self._branch_prefix = f"z9hG4bK-{sipp_call[1]}-{sipp_call[0]}-"
        self._next_branch = 8  # SIPp numbers branches by scenario message; 0, 5 and 7 are INVITE, ACK and BYE
        self._b2b_state = B2B_NEW
        self._caller_cseq = 1
        self._local_cseq = 1
        self._last_invite_cseq = 1
        self._last_method = 0
        self._last_reply_code = 0
        self._invite_tx = _ServerTransaction("INVITE", 1, self._branch(0), double._loop.create_future())
        self._server_tx: dict[str, _ServerTransaction] = {"INVITE": self._invite_tx}
        self._ended = asyncio.Event()
        self._app_request_waiters: list[tuple[str, asyncio.Future[AppRequest]]] = []
        self._consumed: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what a test scripts --------------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    async def wait_final(self, timeout: float = 5.0) -> Reply:
        """The app's final reply to the initial INVITE (provisional ones are in `replies`)."""
        return await self._wait(self._invite_tx.final, timeout)

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Until the call ends: the caller's BYE, the app's `ua_session_terminate`, or an OpenSIPS restart."""
        await asyncio.wait_for(self._ended.wait(), timeout)

    async def wait_app_request(self, method: str, timeout: float = 5.0) -> AppRequest:
        """The app's next `ua_session_update` of `method` not yet returned by this helper (REFER, INFO...)."""
        method = method.upper()
        seen = self._consumed.get(method, 0)
        matching = [request for request in self.app_requests if request.method == method]
        if len(matching) > seen:
            self._consumed[method] = seen + 1
            return matching[seen]
        future: asyncio.Future[AppRequest] = self._double._loop.create_future()
        self._app_request_waiters.append((method, future))
        return await self._wait(future, timeout)

    async def ack(self) -> None:
        """The caller's ACK for the 2xx, when the call was placed with `auto_ack=False`."""
        if self.state is not CallState.ANSWERED:
            raise DoubleUsageError(f"nothing to ACK in state {self.state}")
        self._send_ack_2xx(1, self._branch(5))

    async def bye(self) -> None:
        """The caller hangs up: TERMINATED(BYE); the session is gone afterwards, as on the real server."""
        if self.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            raise DoubleUsageError(f"the caller cannot send BYE in state {self.state} (use cancel() before 2xx)")
        self._caller_bye()

    async def cancel(self) -> None:
        """The caller gives up before the answer: TERMINATED(CANCEL). OpenSIPS sends no 487: the app must."""
        if self.state not in (CallState.OFFERED, CallState.EARLY):
            raise DoubleUsageError(f"the caller cannot CANCEL in state {self.state}")
        headers = self._caller_headers(
            "CANCEL", self._invite_tx.cseq, self._invite_tx.branch, to_tag=False, contact=False
        )
        self._on_cancel(headers)

    def _on_cancel(self, headers: str) -> None:
        self.state = CallState.CANCELLED
        self._b2b_state = B2B_TERMINATED
        self._emit("TERMINATED", "CANCEL", "", headers)

    async def reinvite(self, sdp: str, timeout: float = 5.0) -> Reply:
        """A re-INVITE from the caller: UPDATED(INVITE) with the SDP; returns the app's final reply (then ACKs)."""
        self._require_confirmed("re-INVITE")
        return await self._request("INVITE", sdp, "application/sdp", {}, timeout)

    async def info(self, body: str, content_type: str = "application/dtmf-relay", timeout: float = 5.0) -> Reply:
        """An INFO from the caller: UPDATED(INFO); returns the app's final reply."""
        self._require_confirmed("INFO")
        return await self._request("INFO", body, content_type, {}, timeout)

    async def options(self, timeout: float = 5.0) -> Reply:
        """An in-dialog OPTIONS from the caller: UPDATED(OPTIONS); returns the app's final reply."""
        self._require_confirmed("OPTIONS")
        return await self._request("OPTIONS", "", None, {}, timeout)

    async def request(
        self,
        method: str,
        body: str = "",
        content_type: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Reply:
        """Any other in-dialog request from the caller (UPDATE, MESSAGE, NOTIFY...): UPDATED(method)."""
        method = method.upper()
        if method in ("INVITE", "ACK", "BYE", "CANCEL"):
            raise DoubleUsageError(f"use the dedicated helper for {method}")
        self._require_confirmed(method)
        return await self._request(method, body, content_type, extra_headers or {}, timeout)

    # -- the app's side, reached through MI ----------------------------------------------------------------------

    def _app_reply(self, method: str, reply: Reply) -> None:
        tx = self._server_tx.get(method)
        if tx is None or tx.final.done() or not 100 <= reply.code <= 699:
            raise _MIFault(500, "Failed to send reply")
        tx.replies.append(reply)
        self._last_reply_code = reply.code
        if tx is self._invite_tx:
            self.replies.append(reply)
            self._on_initial_reply(reply)
        elif self.leg is not None:
            self.leg.reply_in_dialog(method, tx.branch, self.key, reply)
        if reply.code < 200:
            return
        del self._server_tx[method]
        tx.final.set_result(reply)
        if method == "INVITE" and tx is not self._invite_tx:
            # A re-INVITE: the caller ACKs whatever the answer, and the session is established again.
            self._b2b_state = B2B_ESTABLISHED
            if self.leg is not None:
                return
            if reply.code < 300:
                self._later(lambda: self._send_ack_2xx(tx.cseq, None))
            else:
                self._later(lambda: self._send_ack_negative(tx))

    def _on_initial_reply(self, reply: Reply) -> None:
        dialog = self._dialog
        if self.leg is not None:
            self.leg.reply_to_invite(self.key, reply)  # a caller on the wire ACKs for itself
        if reply.code < 200:
            if self.state is CallState.OFFERED:
                self.state = CallState.EARLY
                self._b2b_state = B2B_EARLY
            if dialog.state == DLG_UNCONFIRMED:
                dialog.state = DLG_EARLY
            dialog.callee_tag = self.key
            return
        dialog.callee_tag = self.key
        if reply.code < 300:
            self.answer_sdp = reply.body
            dialog.callee_sdp = reply.body
            dialog.state = DLG_CONFIRMED_NA
            dialog.start_ts = int(time.time())
            if self.state is CallState.CANCELLED:
                if self.leg is None:
                    self._later(lambda: self._send_ack_2xx(1, self._branch(5)))
                return
            self.state = CallState.ANSWERED
            self._b2b_state = B2B_CONFIRMED
            if self.auto_ack and self.leg is None:
                self._later(lambda: self._send_ack_2xx(1, self._branch(5)))
            return
        dialog.state = DLG_DELETED
        if self.state is not CallState.CANCELLED:
            self.state = CallState.REJECTED
        self._b2b_state = B2B_TERMINATED
        # The transaction layer ACKs a negative final reply hop by hop; with flag `a` it is reported (captures 08b/09).
        if self.leg is None:
            self._later(lambda: self._send_ack_negative(self._invite_tx))

    def _app_request(self, method: str, body: str | None, content_type: str | None, extra: str | None) -> None:
        if self.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            raise _MIFault(500, "Failed to send sequential request")
        self._local_cseq += 1
        self._last_method = METHOD_BITS.get(method, 16384)
        request = AppRequest(method, self._local_cseq, body, content_type, extra)
        self.app_requests.append(request)
        for waiter in list(self._app_request_waiters):
            if waiter[0] == method and not waiter[1].done():
                waiter[1].set_result(request)
                self._app_request_waiters.remove(waiter)
                self._consumed[method] = self._consumed.get(method, 0) + 1
                break
        if self.leg is not None:
            self._send_on_wire(request)
            return
        if method == "BYE":
            # The caller answers 200 and the session is over; `ua_session_terminate` is the usual way.
            self.terminated_by_app = True
            self._later(lambda: self._answer_app_request(request, 200, "OK"))
            self._later(lambda: self._end(f"the app sent BYE on {self.key}"))
            return
        code, reason = self.app_request_replies.get(method, (202, "Accepted") if method == "REFER" else (200, "OK"))
        # A re-INVITE from the app gets the caller's current SDP back; b2b_entities ACKs it itself, unreported.
        body = self.offer_sdp if method == "INVITE" and 200 <= code < 300 else ""
        self._later(lambda: self._answer_app_request(request, code, reason, body))
        if method == "INVITE" and 200 <= code < 300:
            self._last_method = METHOD_BITS["ACK"]
        if method == "REFER" and 200 <= code < 300:
            self._spawn(self._play_transferee())

    def _app_terminate(self, extra_headers: str | None) -> None:
        # OpenSIPS sends BYE to the caller when the call was answered, and raises no event (captures 03, 07, 08b).
        self.terminated_by_app = True
        self.terminate_extra_headers = extra_headers
        if self.leg is not None and self.state in (CallState.ANSWERED, CallState.CONFIRMED):
            self._local_cseq += 1
            bye = AppRequest("BYE", self._local_cseq, None, None, extra_headers)
            self.leg.send_request(self.key, bye, lambda _reply: None)  # its 200 raises no event either
        self._end(f"the app terminated {self.key}")

    def _send_on_wire(self, request: AppRequest) -> None:
        assert self.leg is not None

        def answered(response: SipMessage) -> None:
            body = response.body if request.method == "INVITE" else ""
            reason = response.first[2]
            self._answer_app_request(request, response.code, reason, body, response.raw_headers())

        self.leg.send_request(self.key, request, answered)
        if request.method == "BYE":
            self.terminated_by_app = True
            self._end(f"the app sent BYE on {self.key}")

    # -- building and emitting ------------------------------------------------------------------------------------

    def _branch(self, index: int) -> str:
        return f"{self._branch_prefix}{index}"

    def _new_branch(self) -> str:
        self._next_branch += 1
        return self._branch(self._next_branch)

    def _from_header(self) -> str:
        name = f'"{self.display_name}" ' if self.display_name else ""
        return f"{name}<{self.from_uri}>;tag={self.from_tag}"

    def _caller_headers(
        self,
        method: str,
        cseq: int,
        branch: str,
        *,
        to_tag: bool = True,
        contact: bool = True,
        max_forwards: int = 70,
        extra: Mapping[str, str] | None = None,
        body: str = "",
        content_type: str | None = None,
    ) -> str:
        """A request from the caller as OpenSIPS relays its headers (the SIPp scenarios' layout)."""
        lines = [
            f"Via: SIP/2.0/UDP {self._sent_by};branch={branch}",
            f"From: {self._from_header()}",
            f"To: <{self.to_uri}>" + (f";tag={self.key}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        if contact:
            lines.append(f"Contact: <{self._contact}>")
        lines.append(f"Max-Forwards: {max_forwards}")
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        if body:
            lines.append(f"Content-Type: {content_type or 'application/sdp'}")
            lines.append(f"Content-Length: {len(body.encode()):5d}")  # SIPp pads [len] to 5 columns
        else:
            lines.append("Content-Length: 0")
        return "".join(line + "\r\n" for line in lines)

    def _reply_headers(self, method: str, cseq: int, body: str, content_type: str | None) -> str:
        """The caller's reply to an app request, as the UAC-side events of capture 13 show replies."""
        rng = self._double._rng
        lines = [
            f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{rng.getrandbits(16):x}.{rng.getrandbits(32):08x}.0",
            f"From: <{self.to_uri}>;tag={self.key}",
            f"To: {self._from_header()}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <{self._contact}>",
        ]
        if body:
            lines.append(f"Content-Type: {content_type or 'application/sdp'}")
            lines.append(f"Content-Length: {len(body.encode()):5d}")
        else:
            lines.append("Content-Length: 0")
        return "".join(line + "\r\n" for line in lines)

    def _emit(
        self, event_type: str, method: str, body: str, headers: str, status: int = 0, reason: str | None = None
    ) -> None:
        datagram = _compact(
            {
                "jsonrpc": "2.0",
                "method": UA_SESSION_EVENT,
                "params": {
                    "key": self.key,
                    "event_type": event_type,
                    "entity_type": "UAS",
                    "status": status,
                    "reason": reason,
                    "method": method,
                    "body": body,
                    "headers": headers,
                },
            }
        )
        self.events.append(datagram)
        self._double.send_raw_event(datagram)

    def _emit_new(self) -> None:
        if self.leg is not None:
            self._emit("NEW", "INVITE", self.offer_sdp, self.leg.relayed_invite_headers())
            return
        headers = self._caller_headers(
            "INVITE",
            1,
            self._invite_tx.branch,
            to_tag=False,
            max_forwards=69,  # the initial INVITE went through OpenSIPS's script, which decremented it
            extra=self.extra_headers,
            body=self.offer_sdp,
            content_type="application/sdp",
        )
        self._emit("NEW", "INVITE", self.offer_sdp, headers)

    def _send_ack_2xx(self, cseq: int, branch: str | None) -> None:
        if self.ended:
            return
        self._on_ack_2xx(self._caller_headers("ACK", cseq, branch or self._new_branch()))

    def _on_ack_2xx(self, headers: str) -> None:
        if self.ended:
            return
        if self.state is CallState.ANSWERED:
            self.state = CallState.CONFIRMED
            self._b2b_state = B2B_ESTABLISHED
            self._dialog.state = DLG_CONFIRMED
        self._emit("UPDATED", "ACK", "", headers)

    def _send_ack_negative(self, tx: _ServerTransaction) -> None:
        self._on_ack_negative(self._caller_headers("ACK", tx.cseq, tx.branch, contact=False))

    def _on_ack_negative(self, headers: str) -> None:
        if self.ended:
            return
        self._emit("UPDATED", "ACK", "", headers)

    def _answer_app_request(
        self, request: AppRequest, code: int, reason: str, body: str = "", headers: str | None = None
    ) -> None:
        if self.ended and request.method != "BYE":
            return
        event_type = "EARLY" if code < 200 else "ANSWERED" if code < 300 else "REJECTED"
        content_type = "application/sdp" if body and request.method == "INVITE" else None
        if headers is None:
            headers = self._reply_headers(request.method, request.cseq, body, content_type)
        self._emit(event_type, request.method, body, headers, status=code, reason=reason)

    async def _play_transferee(self) -> None:
        """The caller's phone after a REFER it accepted: NOTIFY progress, then maybe hang up the AI leg.

        The task's first step runs after the callback that sends the 202 (both were scheduled in that order).
        """
        await self._send_notify("SIP/2.0 100 Trying\r\n", "active;expires=60")
        outcome = self.refer_outcome
        if outcome is None or self.ended:
            return
        final = f"SIP/2.0 {outcome} {_REASONS.get(outcome, 'Unknown')}\r\n"
        await self._send_notify(final, "terminated;reason=noresource")
        if 200 <= outcome < 300 and not self.ended:
            await self.bye()  # the transferee is now talking to the agent and leaves the AI

    async def _send_notify(self, sipfrag: str, subscription_state: str) -> None:
        if self.ended:
            return
        extra = {"Event": "refer", "Subscription-State": subscription_state}
        timeout = self._double.notify_reply_timeout
        try:
            reply = await self._request("NOTIFY", sipfrag, "message/sipfrag", extra, timeout)
        except TimeoutError:
            log.warning("the app did not answer the NOTIFY on %s within %.1f s", self.key, timeout)
            return
        except (CallGone, DoubleUsageError) as exc:  # the call ended, or another REFER's NOTIFY is pending
            log.warning("NOTIFY on %s not sent or not answered: %s", self.key, exc)
            return
        self.notify_replies.append(reply)

    async def _request(
        self, method: str, body: str, content_type: str | None, extra: Mapping[str, str], timeout: float
    ) -> Reply:
        if method in self._server_tx:
            raise DoubleUsageError(f"a {method} is already waiting for the app's reply")
        self._caller_cseq += 1
        branch = self._new_branch()
        headers = self._caller_headers(
            method, self._caller_cseq, branch, extra=extra, body=body, content_type=content_type
        )
        tx = self._on_request(method, self._caller_cseq, branch, body, headers)
        try:
            return await self._wait(tx.final, timeout)
        finally:
            if not tx.final.done():
                self._server_tx.pop(method, None)

    def _on_request(self, method: str, cseq: int, branch: str, body: str, headers: str) -> _ServerTransaction:
        """An in-dialog request from the caller: UPDATED(method); the app's reply finishes the transaction."""
        self._caller_cseq = cseq
        if method == "INVITE":
            self._b2b_state = B2B_MODIFIED
            self._last_invite_cseq = cseq
        tx = _ServerTransaction(method, cseq, branch, self._double._loop.create_future())
        self._server_tx[method] = tx
        self._emit("UPDATED", method, body, headers)
        return tx

    def _caller_bye(self) -> None:
        self._caller_cseq += 1
        branch = self._branch(7) if self._caller_cseq == 2 else self._new_branch()
        self._on_bye(self._caller_headers("BYE", self._caller_cseq, branch))

    def _on_bye(self, headers: str) -> None:
        if self.ended:
            return
        self._emit("TERMINATED", "BYE", "", headers)
        self._end(f"the caller hung up {self.key}")

    # -- bookkeeping -------------------------------------------------------------------------------------------------

    def _refusal(self, method: str) -> tuple[int, str] | None:
        """Why a caller's in-dialog request from the wire cannot be taken now, as the SIP answer to give."""
        if self.state is not CallState.CONFIRMED:
            return 481, "Call/Transaction Does Not Exist"
        if method in self._server_tx:
            return 491, "Request Pending"  # one of its kind still waits for the app (RFC 3261 14.2)
        return None

    def _require_confirmed(self, what: str) -> None:
        if self.state is not CallState.CONFIRMED:
            raise DoubleUsageError(f"the caller cannot send {what} in state {self.state}")

    async def _wait(self, future: asyncio.Future[_T], timeout: float) -> _T:
        ended = asyncio.ensure_future(self._ended.wait())
        waitables: set[asyncio.Future[Any]] = {future, ended}
        try:
            done, _ = await asyncio.wait(waitables, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if future in done:
            return future.result()
        if ended in done:
            raise CallGone(f"call {self.key} ended ({self.state}) while waiting")
        raise TimeoutError(f"nothing from the app on {self.key} within {timeout} s")

    def _later(self, action: Callable[[], None]) -> None:
        # After the MI response is on its way: OpenSIPS answers the MI request before the caller's ACK arrives.
        self._double._loop.call_soon(action)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = self._double._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("the double's script for %s failed", self.key, exc_info=exc)
            self._double.internal_errors.append(f"{self.key}: {exc!r}")

    def _end(self, why: str) -> None:
        if self.ended:
            return
        log.debug("%s", why)
        self.state = CallState.ENDED
        self._dialog.state = DLG_DELETED
        self._double._forget(self)
        if self.leg is not None:
            self.leg.front.forget(self.call_id)
        self._ended.set()
        for _, waiter in self._app_request_waiters:
            if not waiter.done():
                waiter.set_exception(CallGone(f"call {self.key} ended"))
                waiter.exception()  # mark retrieved: nobody may be waiting any more
        self._app_request_waiters.clear()

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    @property
    def _b2b_contact(self) -> str:
        return f"sip:{self.leg.front.hostport}" if self.leg is not None else B2B_CONTACT

    def _session_item(self) -> dict[str, Any]:
        """This session as `ua_session_list` prints it (captures 02, 05, 08a, 09); key order matters."""
        item: dict[str, Any] = {
            "dlg": self._local_index,
            "logic_key": "",
            "mod_name": "b2b_entities",
            "state": self._b2b_state,
            "last_invite_cseq": self._last_invite_cseq,
            "last_method": self._last_method,
        }
        if self._last_reply_code:  # printed only once a reply was sent
            item["last_reply_code"] = self._last_reply_code
        item.update(
            {
                "db_flag": 2,
                "ruri": self.to_uri,
                "callid": self.call_id,
                "from": f'"{self.display_name}"' if self.display_name else "",
                "from_uri": self.from_uri,
                "from_tag": self.from_tag,
                "to": "",
                "to_uri": self.to_uri,
                "to_tag": self.key,
                "cseq": {"caller": self._caller_cseq, "callee": self._local_cseq},
                "contact": {"caller": self._contact, "callee": self._b2b_contact},
                "send_sock": "127.0.0.1",
            }
        )
        if self._server_tx:  # a request from the caller still waits for the app's final reply (capture 08a)
            item["tm_tran"] = "uas"
        return item


class _HttpError(Exception):
    """A request mi_http cannot read; the connection is dropped."""


class OpenSIPSDouble:
    """OpenSIPS 3.5.9 (the B2B node plus the edge's dialogs) on loopback.

        async with OpenSIPSDouble() as osips:
            ...  # point the connector at osips.mi_datagram_uri or osips.mi_http_url
            await osips.wait_subscribed()
            call = await osips.invite(sdp_offer("127.0.0.1", caller_rtp.port))
            reply = await call.wait_final()
            await call.bye()

    Inspect `requests`, `events_sent`, `calls`, `sessions`, `subscribers` and `dialog_values(call_id)`; break it
    with `restart()`, `set_down(True)` and `send_raw_event(bytes)`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        caller_pid: int | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        notify_reply_timeout: float = 5.0,
        initial_dialog_values: Mapping[str, str] | None = None,
        event_senders: int = 4,
    ) -> None:
        """`caller_pid` is the SIPp pid in generated Call-IDs, tags and branches; `clock` times subscriptions."""
        self.host = host
        self._rng = random.Random(seed)
        self.caller_pid = caller_pid if caller_pid is not None else self._rng.randrange(1000, 32768)
        self._clock = clock
        self.notify_reply_timeout = notify_reply_timeout
        self._initial_dialog_values = list(
            (initial_dialog_values if initial_dialog_values is not None else {"created_by": "opensips.cfg"}).items()
        )
        self._event_sender_count = event_senders
        self.requests: list[MIRequest] = []
        self.events_sent: list[bytes] = []
        self.calls: list[DoubleCall] = []
        self.internal_errors: list[str] = []
        self.wire_keys: list[str] = []  # session keys for the next calls that arrive over SIP (tests pin captures')
        self._sessions: dict[str, DoubleCall] = {}
        self._session_order: dict[str, tuple[int, int]] = {}
        self._dialogs: dict[str, _Dialog] = {}
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._subscription_waiters: list[asyncio.Future[str]] = []
        self._down = False
        self._started_at = time.time()
        self._pids = self._new_pids()
        self._call_number = 0
        self._session_counter = 0
        self._next_local_index = self._rng.randrange(1, 500)
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        self._mi_transport: asyncio.DatagramTransport | None = None
        self._mi_address: tuple[str, int] = (host, 0)
        self._http_port = 0
        self._http_server: asyncio.Server | None = None
        self._http_starting: asyncio.Task[None] | None = None
        self._http_writers: set[asyncio.StreamWriter] = set()
        self._http_tasks: set[asyncio.Task[Any]] = set()
        self._event_sockets: list[socket.socket] = []
        self._unix_sender: socket.socket | None = None
        self._sip: SipFront | None = None
        self._commands: dict[str, Callable[[Mapping[str, Any]], Any]] = {
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
        }

    # -- lifecycle --------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> OpenSIPSDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_ref = loop
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Datagrams(self._on_mi_datagram, "MI datagram"), local_addr=(self.host, 0)
        )
        self._mi_transport = transport
        self._mi_address = transport.get_extra_info("sockname")[:2]
        sock = self._listen_socket(0)
        self._http_port = sock.getsockname()[1]
        await self._serve_http(sock)
        for _ in range(self._event_sender_count):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.setblocking(False)
            sender.bind((self.host, 0))
            self._event_sockets.append(sender)

    async def listen_sip(self, port: int = 0) -> tuple[str, int]:
        """Open the B2B node's SIP socket (udp, loopback): callers that speak SIP place calls through it."""
        if self._sip is None:
            self._sip = SipFront(self)
            await self._sip.start(port)
        return self._sip.address

    @property
    def sip(self) -> SipFront:
        if self._sip is None:
            raise DoubleUsageError("no SIP socket: call listen_sip() first")
        return self._sip

    async def close(self) -> None:
        if self._sip is not None:
            self._sip.close()
            self._sip = None
        tasks: list[asyncio.Task[Any]] = []
        for call in self.calls:
            tasks += call._tasks
            call._cancel_tasks()
        self._stop_http()
        for task in list(self._http_tasks):
            task.cancel()
            tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._mi_transport is not None:
            self._mi_transport.close()
            self._mi_transport = None
        for sender in self._event_sockets:
            sender.close()
        self._event_sockets.clear()
        if self._unix_sender is not None:
            self._unix_sender.close()
            self._unix_sender = None
        for waiter in self._subscription_waiters:
            waiter.cancel()

    # -- addresses ----------------------------------------------------------------------------------------------------

    @property
    def mi_datagram_address(self) -> tuple[str, int]:
        return self._mi_address

    @property
    def mi_datagram_uri(self) -> str:
        return f"udp:{self._mi_address[0]}:{self._mi_address[1]}"

    @property
    def mi_http_address(self) -> tuple[str, int]:
        return (self.host, self._http_port)

    @property
    def mi_http_url(self) -> str:
        return f"http://{self.host}:{self._http_port}/mi"

    # -- control --------------------------------------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return self._down

    def set_down(self, down: bool) -> None:
        """Like a dead process (True): MI datagrams go unanswered, HTTP connections are refused, no events."""
        if down == self._down:
            return
        self._down = down
        if down:
            self._stop_http()
        else:
            # Listening again at once (synchronously) so a client that connects right after this call is served.
            sock = self._listen_socket(self._http_port)
            self._http_starting = self._loop.create_task(self._serve_http(sock))

    def restart(self) -> None:
        """Like an OpenSIPS restart: subscribers, sessions and dialogs are forgotten, MI keeps answering.

        Open mi_http connections are dropped, so a client that reuses a pooled connection finds it closed.
        """
        for call in list(self._sessions.values()):
            call._cancel_tasks()
            call._end(f"OpenSIPS restarted under {call.key}")
        self._sessions.clear()
        self._dialogs.clear()
        self._subscribers.clear()
        self._started_at = time.time()
        self._pids = self._new_pids()
        for writer in list(self._http_writers):
            writer.transport.abort()  # a new process has none of the old TCP connections

    async def wait_subscribed(self, timeout: float = 5.0) -> str:
        """The socket of a live E_UA_SESSION subscriber, once there is one."""
        live = self._live_subscribers(UA_SESSION_EVENT)
        if live:
            return live[0].socket
        future: asyncio.Future[str] = self._loop.create_future()
        self._subscription_waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if future in self._subscription_waiters:
                self._subscription_waiters.remove(future)

    @property
    def subscribers(self) -> list[Subscriber]:
        """Live E_UA_SESSION subscribers, newest first (the order `subscribers_list` prints)."""
        return self._live_subscribers(UA_SESSION_EVENT)

    @property
    def sessions(self) -> list[str]:
        """Keys of the live UA sessions, in `ua_session_list` order."""
        return sorted(self._sessions, key=lambda key: self._session_order[key])

    def dialog_values(self, call_id: str) -> dict[str, str]:
        """The values of the edge's dialog for `call_id` (newest first); KeyError when there is no such dialog."""
        return dict(self._dialogs[call_id].values)

    def send_raw_event(self, datagram: bytes) -> int:
        """Send bytes as an event datagram to every live subscriber; returns how many it went to."""
        if self._down:
            return 0
        sent = 0
        for subscriber in self._live_subscribers(UA_SESSION_EVENT):
            target = subscriber.target
            try:
                if isinstance(target, tuple):
                    self._rng.choice(self._event_sockets).sendto(datagram, target)
                elif isinstance(target, str):
                    if self._unix_sender is None:
                        self._unix_sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                        self._unix_sender.setblocking(False)
                    self._unix_sender.sendto(datagram, target)
                else:
                    continue  # not on loopback: never sent anywhere
            except OSError as exc:
                # event_datagram logs and drops; so does the double (a full buffer, a closed unix socket...).
                log.warning("event to %s dropped: %s", subscriber.socket, exc)
                continue
            sent += 1
        if sent:
            self.events_sent.append(datagram)
        return sent

    # -- calls ------------------------------------------------------------------------------------------------------

    async def invite(
        self,
        sdp: str,
        *,
        from_uri: str = "sip:caller@127.0.0.1:5061",
        display_name: str | None = "sipp caller",
        to_uri: str = "sip:ai@127.0.0.1:5060",
        call_id: str | None = None,
        from_tag: str | None = None,
        key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        auto_ack: bool = True,
    ) -> DoubleCall:
        """A caller's INVITE reaches the B2B node: a new UA session and a NEW event (capture 02).

        Events reach live subscribers only: wait for the app with `await osips.wait_subscribed()` first.

        `extra_headers` (P-Asserted-Identity, X-Orig-Call-ID, Subject...) go after Max-Forwards, where SIPp puts
        them. `key`, `call_id` and `from_tag` default to fresh values shaped like the captures'.
        """
        if self._loop_ref is None:
            raise DoubleUsageError("start the double first")
        if self._down:
            raise DoubleUsageError("OpenSIPS is down: nobody takes the call")
        self._call_number += 1
        call_id = call_id or f"{self._call_number}-{self.caller_pid}@127.0.0.1"
        return self._new_call(
            sdp=sdp,
            from_uri=from_uri,
            display_name=display_name,
            to_uri=to_uri,
            call_id=call_id,
            from_tag=from_tag or f"{self.caller_pid}SIPpTag00{self._call_number}",
            key=key,
            extra_headers=extra_headers or {},
            auto_ack=auto_ack,
            caller_contact=_caller_contact(from_uri),
            leg=None,
        )

    def _call_from_wire(self, leg: CallerLeg) -> DoubleCall:
        """A caller's INVITE came over the SIP socket: the same UA session, its headers taken from the wire."""
        invite = leg.invite
        display_name, from_uri = name_addr(invite.get("from") or "")
        _, to_uri = name_addr(invite.get("to") or "")
        self._call_number += 1
        contact = invite.get("contact") or ""
        return self._new_call(
            sdp=invite.body,
            from_uri=from_uri,
            display_name=display_name,
            to_uri=to_uri or invite.first[1],
            call_id=invite.call_id,
            from_tag=invite.from_tag or "",
            key=self.wire_keys.pop(0) if self.wire_keys else None,
            extra_headers={},
            auto_ack=False,
            caller_contact=name_addr(contact)[1] if contact else _caller_contact(from_uri),
            leg=leg,
        )

    def _new_call(
        self,
        *,
        sdp: str,
        from_uri: str,
        display_name: str | None,
        to_uri: str,
        call_id: str,
        from_tag: str,
        key: str | None,
        extra_headers: Mapping[str, str],
        auto_ack: bool,
        caller_contact: str,
        leg: CallerLeg | None,
    ) -> DoubleCall:
        number = self._call_number
        key, hash_index, local_index = self._session_key(key)
        h_entry = self._rng.randrange(4096)
        dialog = _Dialog(
            did=f"{h_entry:x}"[::-1] + f".{self._rng.getrandbits(32):08x}",
            db_id=(h_entry << 32) + self._rng.getrandbits(32),
            callid=call_id,
            from_uri=from_uri,
            to_uri=to_uri,
            caller_tag=from_tag,
            caller_contact=caller_contact,
            caller_sdp=sdp,
            invite_cseq=1,
            values=list(self._initial_dialog_values),
        )
        self._dialogs[call_id] = dialog
        call = DoubleCall(
            self,
            key=key,
            local_index=local_index,
            call_id=call_id,
            sipp_call=_sipp_call(call_id, number, self.caller_pid),
            from_uri=from_uri,
            display_name=display_name,
            from_tag=from_tag,
            to_uri=to_uri,
            sdp=sdp,
            extra_headers=extra_headers,
            auto_ack=auto_ack,
            dialog=dialog,
            leg=leg,
        )
        self._session_counter += 1
        self._sessions[key] = call
        self._session_order[key] = (hash_index, self._session_counter)
        self.calls.append(call)
        call._emit_new()
        return call

    def _session_key(self, key: str | None) -> tuple[str, int, int]:
        if key is not None:
            parts = key.split(".")
            if len(parts) < 3 or parts[0] != "B2B" or not (parts[1].isdigit() and parts[2].isdigit()):
                raise ValueError(f"not a b2b key: {key!r}")
            if key in self._sessions:
                raise DoubleUsageError(f"session {key} exists")
            return key, int(parts[1]), int(parts[2])
        while True:
            # B2B.<hash index>.<local index>.<creation time>.<random>, as in every capture.
            hash_index = self._rng.randrange(512)
            local_index = self._next_local_index
            self._next_local_index += self._rng.randrange(1, 40)
            key = f"B2B.{hash_index}.{local_index}.{int(time.time())}.{self._rng.randrange(2**31)}"
            if key not in self._sessions:
                return key, hash_index, local_index

    def _forget(self, call: DoubleCall) -> None:
        if self._sessions.get(call.key) is call:
            del self._sessions[call.key]
            del self._session_order[call.key]

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._loop_ref is None:
            raise DoubleUsageError("start the double first")
        return self._loop_ref

    # -- MI: transports ----------------------------------------------------------------------------------------

    def _on_mi_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._down or self._mi_transport is None:
            return  # a dead process reads nothing
        response = self._handle_mi(data, "datagram")
        if response is None:
            return
        if len(response) > _MAX_DATAGRAM:
            log.warning("MI reply of %d bytes does not fit a datagram; dropped (use mi_http)", len(response))
            return
        self._mi_transport.sendto(response, addr)

    def _listen_socket(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def _serve_http(self, sock: socket.socket) -> None:
        try:
            self._http_server = await asyncio.start_server(self._http_connection, sock=sock, limit=_HTTP_HEAD_LIMIT)
        except BaseException:
            sock.close()
            raise

    def _stop_http(self) -> None:
        if self._http_starting is not None and not self._http_starting.done():
            self._http_starting.cancel()
        self._http_starting = None
        if self._http_server is not None:
            self._http_server.close()
            self._http_server = None
        for writer in list(self._http_writers):
            writer.transport.abort()

    async def _http_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._http_tasks.add(task)
        self._http_writers.add(writer)
        try:
            while not self._down:
                request = await _read_http_request(reader, writer)
                if request is None:
                    break
                method, target, headers, body = request
                if not _mi_http_accepts(method, target, headers, body):
                    # mi_http logs "empty request" and never answers (capture 10): the client times out.
                    while await reader.read(65536):
                        pass
                    break
                response = self._handle_mi(body, "http")
                if response is None:
                    continue  # a JSON-RPC notification: nothing to send back
                head = (
                    "HTTP/1.1 200 OK\r\n"
                    f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(response)}\r\n\r\n"
                )
                writer.write(head.encode("ascii") + response)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _HttpError) as exc:
            log.debug("mi_http connection dropped: %s", exc)
        finally:
            self._http_writers.discard(writer)
            if task is not None:
                self._http_tasks.discard(task)
            writer.close()

    # -- MI: JSON-RPC -----------------------------------------------------------------------------------------

    def _handle_mi(self, payload: bytes, transport: Literal["datagram", "http"]) -> bytes | None:
        """One JSON-RPC request in, the response bytes out (None: a notification, which gets no reply)."""
        try:
            request = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.requests.append(MIRequest(transport, None, None, None, payload))
            return _compact({"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None})
        if not isinstance(request, dict):
            self.requests.append(MIRequest(transport, None, None, None, payload))
            return _compact({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None})
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params")
        self.requests.append(
            MIRequest(transport, method if isinstance(method, str) else None, params, request_id, payload)
        )
        response: dict[str, Any] = {"jsonrpc": "2.0"}
        try:
            if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
                raise _MIFault(-32600, "Invalid Request")
            response["result"] = self._run_command(method, params)
        except _MIFault as fault:
            error: dict[str, Any] = {"code": fault.code, "message": fault.message}
            if fault.data is not None:
                error["data"] = fault.data
            response["error"] = error
        except Exception as exc:  # a bug in the double: keep serving, but make it visible
            log.exception("the OpenSIPS double failed on %r", method)
            self.internal_errors.append(f"{method}: {exc!r}")
            response["error"] = {"code": -32603, "message": "Internal error"}
        response["id"] = request_id
        if "id" not in request:
            return None
        return _compact(response)

    def _run_command(self, method: str, params: Any) -> Any:
        handler = self._commands.get(method)
        if handler is None:
            raise _MIFault(-32601, "Method not found")
        recipes = RECIPES[method]
        if params is None:
            params = {}
        if isinstance(params, list):
            # Positional parameters (opensips-cli sends them) fill the recipe with as many parameters.
            for recipe in recipes:
                if len(recipe) == len(params):
                    return handler(dict(zip(recipe, params, strict=True)))
        elif isinstance(params, dict) and any(set(recipe) == set(params) for recipe in recipes):
            return handler(params)
        raise _MIFault(-32602, "Invalid params", "Too few or too many parameters")

    # -- MI: core and event interface ------------------------------------------------------------------------

    def _cmd_version(self, params: Mapping[str, Any]) -> Any:
        return {"Server": SERVER}

    def _cmd_uptime(self, params: Mapping[str, Any]) -> Any:
        now = time.time()
        return {
            "Now": time.ctime(now),
            "Up since": time.ctime(self._started_at),
            "Up time": f"{int(now - self._started_at)} [sec]",
        }

    def _new_pids(self) -> list[int]:
        pid = self._rng.randrange(2000, 60000)
        pids = []
        for _ in range(10):
            pids.append(pid)
            pid += self._rng.randrange(1, 4)
        return pids

    def _cmd_ps(self, params: Mapping[str, Any]) -> Any:
        types = [
            "attendant",
            f"HTTPD {self.host}:{self._http_port}",
            "MI Datagram",
            "time_keeper",
            "timer",
            *[f"SIP receiver {SIP_SOCKET}"] * 4,
            "Timer handler",
        ]
        return {
            "Processes": [
                {"ID": index, "PID": pid, "Type": kind}
                for index, (pid, kind) in enumerate(zip(self._pids, types, strict=True))
            ]
        }

    def _cmd_which(self, params: Mapping[str, Any]) -> Any:
        if "command" not in params:
            return list(RECIPES)
        command = _str_param(params, "command")
        if command.endswith(":"):
            matching = [name for name in RECIPES if name.startswith(command)]
            if matching:
                return matching
        elif command in RECIPES:
            return [list(recipe) for recipe in RECIPES[command]]
        raise _MIFault(404, "unknown MI command")

    def _cmd_events_list(self, params: Mapping[str, Any]) -> Any:
        return {"Events": [{"name": name, "id": index} for index, name in enumerate(PUBLISHED_EVENTS)]}

    def _cmd_event_subscribe(self, params: Mapping[str, Any]) -> Any:
        event = _str_param(params, "event")
        spec = _str_param(params, "socket")
        if not event:
            raise _bad_type("event")
        if not spec:
            raise _bad_type("socket")
        expire = _int_param(params, "expire") if "expire" in params else DEFAULT_EXPIRE
        if expire < 0:
            raise _MIFault(-32602, "Invalid params", "Negative expire value")
        if event not in PUBLISHED_EVENTS:
            raise _MIFault(400, "Bad parameter value")
        try:
            target = _parse_event_socket(spec)
        except ValueError as exc:
            raise _MIFault(400, "Bad parameter value") from exc
        subscribers = self._subscribers.setdefault(event, [])
        existing = next((s for s in subscribers if s.socket == spec), None)
        if expire == 0:
            # An expire of 0 ends the subscription at once: the unsubscribe of the event interface.
            if existing is not None:
                subscribers.remove(existing)
            return "OK"
        if existing is not None:
            existing.expire = expire
            existing.subscribed_at = self._clock()
        else:
            if target is None:
                log.warning("subscriber %s is not on loopback: the double will not send it events", spec)
            subscribers.insert(0, Subscriber(spec, expire, self._clock(), target))
        if event == UA_SESSION_EVENT:
            for waiter in self._subscription_waiters:
                if not waiter.done():
                    waiter.set_result(spec)
        return "OK"

    def _live_subscribers(self, event: str) -> list[Subscriber]:
        now = self._clock()
        subscribers = self._subscribers.get(event, [])
        subscribers[:] = [s for s in subscribers if now - s.subscribed_at < s.expire]
        return list(subscribers)

    def _event_item(self, index: int, subscriber: Subscriber | None = None) -> dict[str, Any]:
        name = PUBLISHED_EVENTS[index]
        live = self._live_subscribers(name)
        if subscriber is None and not live:
            return {}  # evi_print_event adds nothing for an event nobody listens to

        def printed(s: Subscriber) -> dict[str, Any]:
            ttl = max(0, s.expire - int(self._clock() - s.subscribed_at))
            return {"socket": s.socket, "expire": s.expire, "ttl": ttl}

        item: dict[str, Any] = {"name": name, "id": index}
        if subscriber is not None:
            item["Subscriber"] = printed(subscriber)
        else:
            item["Subscribers"] = [printed(s) for s in live]
        return item

    def _cmd_subscribers_list(self, params: Mapping[str, Any]) -> Any:
        if "event" not in params:
            return {"Events": [self._event_item(index) for index in range(len(PUBLISHED_EVENTS))]}
        event = _str_param(params, "event")
        if event not in PUBLISHED_EVENTS:
            raise _MIFault(404, "Event not published")
        index = PUBLISHED_EVENTS.index(event)
        if "socket" not in params:
            return {"Event": self._event_item(index)}
        spec = _str_param(params, "socket")
        subscriber = next((s for s in self._live_subscribers(event) if s.socket == spec), None)
        if subscriber is None:
            raise _MIFault(404, "Subscriber does not exist")
        return {"Event": self._event_item(index, subscriber)}

    # -- MI: b2b_entities UA sessions -------------------------------------------------------------------------

    def _cmd_ua_session_reply(self, params: Mapping[str, Any]) -> Any:
        key = _str_param(params, "key")
        method = _str_param(params, "method").upper()
        code = _int_param(params, "code")
        reason = _str_param(params, "reason")
        reply = Reply(
            code,
            reason,
            _opt_str(params, "body"),
            _opt_str(params, "content_type"),
            _opt_str(params, "extra_headers"),
        )
        call = self._sessions.get(key)
        if call is None:
            raise _MIFault(500, "Failed to send reply")
        call._app_reply(method, reply)
        return "OK"

    def _cmd_ua_session_update(self, params: Mapping[str, Any]) -> Any:
        key = _str_param(params, "key")
        method = _str_param(params, "method").upper()
        body = _opt_str(params, "body")
        content_type = _opt_str(params, "content_type")
        extra_headers = _opt_str(params, "extra_headers")
        call = self._sessions.get(key)
        if call is None or not method:
            raise _MIFault(500, "Failed to send sequential request")
        call._app_request(method, body, content_type, extra_headers)
        return "OK"

    def _cmd_ua_session_terminate(self, params: Mapping[str, Any]) -> Any:
        key = _str_param(params, "key")
        extra_headers = _opt_str(params, "extra_headers")
        call = self._sessions.get(key)
        if call is None:
            raise _MIFault(500, "Failed to terminate session")
        call._app_terminate(extra_headers)
        return "OK"

    def _cmd_ua_session_list(self, params: Mapping[str, Any]) -> Any:
        if "key" not in params:
            return [self._sessions[key]._session_item() for key in self.sessions]
        key = _str_param(params, "key")
        parts = key.split(".")
        if len(parts) < 3 or parts[0] != "B2B" or not all(part.isdigit() for part in parts[1:]):
            raise _MIFault(400, "Bad format for b2b key")
        call = self._sessions.get(key)
        if call is None:
            raise _MIFault(404, "Entity not found")
        return call._session_item()

    # -- MI: the edge's dialog module -------------------------------------------------------------------------

    def _find_dialog(self, ident: str) -> _Dialog | None:
        dialog = self._dialogs.get(ident)
        if dialog is None:
            dialog = next((d for d in self._dialogs.values() if ident in (d.did, str(d.db_id))), None)
        return dialog if dialog is not None and dialog.alive else None

    def _cmd_dlg_push_var(self, params: Mapping[str, Any]) -> Any:
        name = _str_param(params, "dlg_val_name")
        value = _str_param(params, "dlg_val_value")
        dids = params["DID"]
        if not isinstance(dids, list) or not dids:
            raise _bad_type("DID")
        idents = []
        for did in dids:
            if isinstance(did, bool) or not isinstance(did, str | int):
                raise _bad_type("DID")
            idents.append(str(did))
        for ident in idents:
            dialog = self._find_dialog(ident)
            if dialog is not None:  # an unknown DID still answers OK (capture 10)
                dialog.push(name, value)
        return "OK"

    def _cmd_dlg_list(self, params: Mapping[str, Any], *, with_context: bool) -> Any:
        if "callid" in params:
            callid = _str_param(params, "callid")
            from_tag = _opt_str(params, "from_tag")
            dialog = self._dialogs.get(callid)
            if dialog is None or not dialog.alive or (from_tag is not None and from_tag != dialog.caller_tag):
                raise _MIFault(404, "No such dialog")
            return {"Dialog": dialog.to_mi(with_context)}
        alive = [dialog for dialog in self._dialogs.values() if dialog.alive]
        if "index" in params:
            index = _int_param(params, "index")
            counter = _int_param(params, "counter")
            chosen = alive[index : index + counter]
            return {"count": len(alive), "Dialogs": [d.to_mi(with_context) for d in chosen]}
        return {"Dialogs": [d.to_mi(with_context) for d in alive]}

    def _cmd_dlg_end_dlg(self, params: Mapping[str, Any]) -> Any:
        ident = _str_param(params, "dialog_id")
        _opt_str(params, "extra_hdrs")
        dialog = self._find_dialog(ident)
        if dialog is None or dialog.state not in (DLG_CONFIRMED_NA, DLG_CONFIRMED):
            raise _MIFault(404, "Requested Dialog not found")
        call = next((c for c in self._sessions.values() if c.call_id == dialog.callid), None)
        if call is not None and call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            # The edge sends BYE both ways; the B2B node sees it as the caller's BYE.
            self._loop.call_soon(call._caller_bye)
        else:
            dialog.state = DLG_DELETED
        return "OK"


def _mi_http_accepts(method: str, target: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether mi_http answers: a POST to /mi with a JSON body. Nothing else gets a response (capture 10)."""
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    path = target.split("?", 1)[0]
    return method == "POST" and path == "/mi" and media_type == "application/json" and bool(body)


async def _read_http_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.x request (None at a clean end of stream); _HttpError when it cannot be read."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _HttpError("truncated request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise _HttpError("request head too large") from exc
    start, *lines = head[:-4].decode("latin-1").split("\r\n")
    parts = start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(f"bad request line {start[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise _HttpError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > _HTTP_BODY_LIMIT:
            raise _HttpError(f"bad Content-Length {length[:20]!r}")
        body = await reader.readexactly(int(length))
    return parts[0], parts[1], headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise _HttpError("bad chunk size") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body)
        if len(body) + size > _HTTP_BODY_LIMIT:
            raise _HttpError("body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise _HttpError("bad chunk end")
