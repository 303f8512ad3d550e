"""The double itself: one OpenSIPS 3.5.9 process (the B2B node plus the edge's dialogs) on loopback.

It owns what a process owns (its MI server, event sockets, SIP socket, UA sessions and dialogs, its PIDs and start
time) and what a test does to it: place calls, restart it, take it down. The protocol lives in the modules it
composes: `mi_server.py` and `mi_commands.py`, `event_interface.py`, `session.py`, `edge_dialog.py` and
`sip_socket.py`.
"""

# The helpers take a `timeout` argument because a test states how long it is willing to wait for the app.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from demo.opensips_double.edge_dialog import EdgeDialog
from demo.opensips_double.errors import DoubleInternalError, DoubleUsageError, ScriptRefused
from demo.opensips_double.event_interface import UA_SESSION_EVENT, EventInterface, Subscriber
from demo.opensips_double.mi_commands import MICommands
from demo.opensips_double.mi_server import MIRequest, MIServer
from demo.opensips_double.node_cache import LIVENESS_KEY, NodeCache
from demo.opensips_double.session import DoubleCall
from demo.opensips_double.sip_socket import SipFront
from demo.opensips_double.wire import caller_contact, name_addr, sipp_call

if TYPE_CHECKING:
    from demo.opensips_double.caller_leg import CallerLeg


class OpenSIPSDouble:
    """OpenSIPS 3.5.9 (the B2B node plus the edge's dialogs) on loopback.

        async with OpenSIPSDouble() as osips:
            ...  # point the connector at osips.mi_datagram_uri or osips.mi_http_url
            await osips.wait_subscribed()
            call = await osips.invite(sdp_offer("127.0.0.1", caller_rtp.port))
            reply = await call.wait_final()
            await call.bye()

    Inspect `requests`, `events_sent`, `calls`, `sessions`, `subscribers` and `dialog_values(call_id)`; break it
    with `restart()`, `set_down(True)` and `send_raw_event(bytes)`. Closing it raises `DoubleInternalError` when
    the double itself crashed while serving (`internal_errors`), so no test passes over a broken double.
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
        liveness_gate: bool = False,
    ) -> None:
        """`caller_pid` is the SIPp pid in generated Call-IDs, tags and branches; `clock` times subscriptions."""
        self.host = host
        self._rng = random.Random(seed)
        self.caller_pid = caller_pid if caller_pid is not None else self._rng.randrange(1000, 32768)
        self.notify_reply_timeout = notify_reply_timeout
        self._initial_dialog_values = list(
            (initial_dialog_values if initial_dialog_values is not None else {"created_by": "opensips.cfg"}).items()
        )
        self.requests: list[MIRequest] = []
        self.events_sent: list[bytes] = []
        self.calls: list[DoubleCall] = []
        self.internal_errors: list[str] = []  # the double's own crashes; closing it with any raises
        self.wire_keys: list[str] = []  # session keys for the next calls that arrive over SIP (tests pin captures')
        self._sessions: dict[str, DoubleCall] = {}
        self._session_order: dict[str, tuple[int, int]] = {}
        self._dialogs: dict[str, EdgeDialog] = {}
        self._down = False
        self._started_at = time.time()
        self._pids = self._new_pids()
        self._call_number = 0
        self._session_counter = 0
        self._next_local_index = self._rng.randrange(1, 500)
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        self._events = EventInterface(host, self._rng, clock, event_senders)
        # opensips/ai-node.cfg's liveness check: with the gate on, OPTIONS and new INVITEs get 503 while the
        # connector's key is missing from the node's cache.
        self.cache = NodeCache(clock)
        self.liveness_gate = liveness_gate
        self._mi = MIServer(self, MICommands(self).table)
        self._sip: SipFront | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> OpenSIPSDouble:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.close()
            return
        try:
            await self.close()
        except DoubleInternalError as crash:
            # The block failed already: its exception stays the one reported, with the double's crashes on it.
            exc.add_note(str(crash))

    async def start(self) -> None:
        self._loop_ref = asyncio.get_running_loop()
        await self._mi.start()
        self._events.open()

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
        """Stop serving; then raise `DoubleInternalError` if the double crashed while serving.

        A test that provokes a crash of the double on purpose inspects and clears `internal_errors` first.
        """
        if self._sip is not None:
            self._sip.close()
            self._sip = None
        tasks: list[asyncio.Task[Any]] = []
        for call in self.calls:
            tasks += call._tasks
            call._cancel_tasks()
        self._mi.stop_http()
        tasks += self._mi.cancel_connections()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._mi.close_datagram()
        self._events.close()
        if self.internal_errors:
            raise DoubleInternalError(self.internal_errors)

    # -- addresses ----------------------------------------------------------------------------------------------------

    @property
    def mi_datagram_address(self) -> tuple[str, int]:
        return self._mi.datagram_address

    @property
    def mi_datagram_uri(self) -> str:
        host, port = self._mi.datagram_address
        return f"udp:{host}:{port}"

    @property
    def mi_http_address(self) -> tuple[str, int]:
        return (self.host, self._mi.http_port)

    @property
    def mi_http_url(self) -> str:
        return f"http://{self.host}:{self._mi.http_port}/mi"

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
            self._mi.stop_http()
        else:
            self._mi.listen_http_again()

    def restart(self) -> None:
        """Like an OpenSIPS restart: subscribers, sessions and dialogs are forgotten, MI keeps answering.

        Open mi_http connections are dropped, so a client that reuses a pooled connection finds it closed.
        """
        for call in list(self._sessions.values()):
            call._cancel_tasks()
            call._end(f"OpenSIPS restarted under {call.key}")
        self._sessions.clear()
        self._dialogs.clear()
        self._events.forget()
        self.cache.clear()
        self._started_at = time.time()
        self._pids = self._new_pids()
        self._mi.drop_connections()

    async def wait_subscribed(self, timeout: float = 5.0) -> str:
        """The socket of a live E_UA_SESSION subscriber, once there is one."""
        live = self._events.live(UA_SESSION_EVENT)
        if live:
            return live[0].socket
        future: asyncio.Future[str] = self._loop.create_future()
        waiters = self._events.waiters
        waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if future in waiters:
                waiters.remove(future)

    @property
    def subscribers(self) -> list[Subscriber]:
        """Live E_UA_SESSION subscribers, newest first (the order `subscribers_list` prints)."""
        return self._events.live(UA_SESSION_EVENT)

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
        sent = self._events.send(datagram)
        if sent:
            self.events_sent.append(datagram)
        return sent

    # -- the node's script -------------------------------------------------------------------------------------------

    @property
    def takes_calls(self) -> bool:
        """What the node's script decides before any session: False while the liveness gate finds no key."""
        return not self.liveness_gate or self.cache.fetch("local", LIVENESS_KEY) is not None

    def options_probe(self) -> int:
        """The status the node answers the edge dispatcher's OPTIONS probe with (opensips/ai-node.cfg)."""
        if self._down:
            raise DoubleUsageError("OpenSIPS is down: the probe gets no answer")
        return 200 if self.takes_calls else 503

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
        if not self.takes_calls:
            raise ScriptRefused(503, "the node's connector is not alive (no liveness key): 503 before any session")
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
            caller_contact=caller_contact(from_uri),
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
            caller_contact=name_addr(contact)[1] if contact else caller_contact(from_uri),
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
        dialog = EdgeDialog(
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
            sipp_call=sipp_call(call_id, number, self.caller_pid),
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

    def _new_pids(self) -> list[int]:
        pid = self._rng.randrange(2000, 60000)
        pids = []
        for _ in range(10):
            pids.append(pid)
            pid += self._rng.randrange(1, 4)
        return pids
