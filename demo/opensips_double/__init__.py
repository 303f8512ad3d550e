"""A protocol double of OpenSIPS 3.5.9 as the connector sees it: MI, E_UA_SESSION events, and the caller's side.

OpenSIPS cannot run on the test machines, so integration tests and benchmarks talk to this double instead. It is
"the outside world": it never imports `avc` (a double that reused our code would share our bugs) and it was built
from the real wire captures in `tests/fixtures/opensips-3.5.9/`, not from memory. One concept per module:

- `double.py`: `OpenSIPSDouble`, the process: lifecycle, addresses, restart and down, placing calls;
- `mi_server.py`: MI over datagram and over HTTP, JSON-RPC dispatch; `http.py`: mi_http's HTTP framing;
- `mi_commands.py`: the commands' handlers; `mi_params.py`: their parameter recipes and how they fail;
- `event_interface.py`: event_datagram subscriptions and the sockets events leave from;
- `session.py`: `DoubleCall`, one UA session as the caller scripts it (or as the SIP socket relays it);
- `edge_dialog.py`: the edge proxy's dialog per call (`dlg_push_var`, `dlg_list_ctx`);
- `sip_socket.py`, `caller_leg.py`, `sip_message.py`: the B2B node's SIP socket for callers that speak SIP;
- `sdp.py`: the SIPp caller's SDP offers; `wire.py`: helpers they all share; `errors.py`: what a test may catch.

Where the captures are silent the double follows the OpenSIPS 3.5 sources (b2b_entities ua_api.c, evi, dialog)
and says so in comments. Everything listens on 127.0.0.1 with ephemeral ports and sends only to loopback.
"""

from demo.opensips_double.caller_leg import CallerLeg
from demo.opensips_double.double import OpenSIPSDouble
from demo.opensips_double.edge_dialog import (
    DIALOG_LIFETIME,
    DLG_CONFIRMED,
    DLG_CONFIRMED_NA,
    DLG_DELETED,
    DLG_EARLY,
    DLG_UNCONFIRMED,
)
from demo.opensips_double.errors import CallGone, DoubleInternalError, DoubleUsageError, ScriptRefused
from demo.opensips_double.event_interface import DEFAULT_EXPIRE, PUBLISHED_EVENTS, UA_SESSION_EVENT, Subscriber
from demo.opensips_double.mi_params import RECIPES
from demo.opensips_double.mi_server import MIRequest
from demo.opensips_double.sdp import STATIC_PAYLOAD_TYPES, sdp_offer
from demo.opensips_double.session import (
    B2B_CONFIRMED,
    B2B_EARLY,
    B2B_ESTABLISHED,
    B2B_MODIFIED,
    B2B_NEW,
    B2B_TERMINATED,
    METHOD_BITS,
    AppRequest,
    CallState,
    DoubleCall,
    Reply,
)
from demo.opensips_double.sip_message import SipMessage, SipParseError, parse_sip
from demo.opensips_double.sip_socket import SipFront
from demo.opensips_double.wire import B2B_CONTACT, SERVER, SIP_SOCKET, Datagrams, name_addr, sip_hostport

__all__ = [
    "B2B_CONFIRMED",
    "B2B_CONTACT",
    "B2B_EARLY",
    "B2B_ESTABLISHED",
    "B2B_MODIFIED",
    "B2B_NEW",
    "B2B_TERMINATED",
    "DEFAULT_EXPIRE",
    "DIALOG_LIFETIME",
    "DLG_CONFIRMED",
    "DLG_CONFIRMED_NA",
    "DLG_DELETED",
    "DLG_EARLY",
    "DLG_UNCONFIRMED",
    "METHOD_BITS",
    "PUBLISHED_EVENTS",
    "RECIPES",
    "SERVER",
    "SIP_SOCKET",
    "STATIC_PAYLOAD_TYPES",
    "UA_SESSION_EVENT",
    "AppRequest",
    "CallGone",
    "CallState",
    "CallerLeg",
    "Datagrams",
    "DoubleCall",
    "DoubleInternalError",
    "DoubleUsageError",
    "MIRequest",
    "OpenSIPSDouble",
    "Reply",
    "ScriptRefused",
    "SipFront",
    "SipMessage",
    "SipParseError",
    "Subscriber",
    "name_addr",
    "parse_sip",
    "sdp_offer",
    "sip_hostport",
]
