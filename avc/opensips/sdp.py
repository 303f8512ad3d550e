"""SDP parsing and RFC 3264 offer/answer for the connector's one audio stream (RFC 4566, RFC 3264).

The connector is always the answerer: OpenSIPS hands it the caller's offer in the `E_UA_SESSION`
event's `body`, and it replies with an answer through MI. It speaks G.711 (PCMU/PCMA, 8000 Hz, mono)
over plain RTP/AVP, plus RFC 4733 telephone-events for DTMF, on the first usable audio stream.

A re-INVITE (hold, resume, a new address or port, a codec change) needs nothing special: negotiate
the new offer again and build an answer with a higher o= version.

Errors are typed: `SdpError` for an SDP that cannot be parsed or used, and its subclass
`NoCommonCodec` for a valid offer that this connector cannot accept (answered with 488).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from avc.media.audio_format import LINE_RATE as G711_CLOCK_RATE

MAX_SDP_BYTES: Final = 16 * 1024

SENDRECV: Final = "sendrecv"
SENDONLY: Final = "sendonly"
RECVONLY: Final = "recvonly"
INACTIVE: Final = "inactive"
DIRECTIONS: Final = frozenset({SENDRECV, SENDONLY, RECVONLY, INACTIVE})

SUPPORTED_CODECS: Final = ("PCMU", "PCMA")
TELEPHONE_EVENT: Final = "telephone-event"
# RFC 4733 section 2.5.1: events 0-15 (digits, *, #, A-D) are what every DTMF sender supports.
DEFAULT_DTMF_EVENTS: Final = "0-15"
ANSWER_PROTO: Final = "RTP/AVP"
# The RTP sender always packs 20 ms of G.711 (RFC 3551 section 4.5's default), whatever the offer asks.
SEND_PTIME_MS: Final = 20
DEFAULT_PTIME_MS: Final = 20
OFFER_DTMF_PAYLOAD_TYPE: Final = 101  # the dynamic payload type most phones use for telephone-event

_LINE: Final = re.compile(r"([a-z])=(.*)")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_PAYLOAD_TYPE: Final = re.compile(r"[0-9]{1,3}")
_CLOCK_RATE: Final = re.compile(r"[0-9]{1,6}")
_CHANNELS: Final = re.compile(r"[0-9]{1,2}")
# A decimal ptime such as "20.0" is seen in the wild and means the same as "20".
_PTIME: Final = re.compile(r"([0-9]{1,4})(?:\.0*)?")
_ENCODING_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.]*")
# RFC 4733 section 7.1.1: a comma-separated list of events and event ranges.
_DTMF_EVENTS: Final = re.compile(r"[0-9]{1,3}(?:-[0-9]{1,3})?(?:,[0-9]{1,3}(?:-[0-9]{1,3})?)*")


class SdpError(ValueError):
    """An SDP body that cannot be parsed or used; the message says what was wrong."""


class NoCommonCodec(SdpError):
    """A well-formed offer with no stream this connector can accept (answered with 488)."""


@dataclass(frozen=True, slots=True)
class RtpMap:
    """One `a=rtpmap` entry: encoding name as offered, clock rate in Hz, channel count."""

    encoding: str
    clock_rate: int
    channels: int = 1


# RFC 3551 section 6: payload types the offerer may list without an rtpmap line.
STATIC_PAYLOAD_TYPES: Final[Mapping[int, RtpMap]] = MappingProxyType(
    {0: RtpMap("PCMU", G711_CLOCK_RATE), 8: RtpMap("PCMA", G711_CLOCK_RATE)}
)


@dataclass(frozen=True, slots=True)
class Origin:
    """The o= line. Session id and version stay strings: RFC 4566 only asks for digits, and some
    user agents exceed 64 bits, so they are compared, never computed with."""

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str


@dataclass(slots=True)
class MediaDescription:
    """One m= section. `formats` holds the RTP payload types (empty for non-RTP transports such as
    `udptl t38`); `format_tokens` keeps the m= line's formats verbatim so a rejected stream can be
    echoed in the answer. `connection` is the media-level c= address, None when only session-level."""

    kind: str
    port: int
    proto: str
    formats: list[int]
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    direction: str | None = None
    connection: str | None = None
    format_tokens: list[str] = field(default_factory=list)

    def codec(self, payload_type: int) -> RtpMap | None:
        """The codec a payload type stands for: its rtpmap, else the static RFC 3551 assignment."""
        return self.rtpmap.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)


@dataclass(slots=True)
class SessionDescription:
    """A parsed SDP: origin, session-level c= address and direction, and the m= sections in order."""

    origin: Origin
    connection: str | None
    direction: str | None
    media: list[MediaDescription]


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


def _lines(text: str) -> list[tuple[int, str, str]]:
    """Split SDP into (line number, type letter, value), accepting CRLF, LF and stray blanks."""
    result: list[tuple[int, str, str]] = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if not line:
            continue
        # Rejecting control characters here keeps anything echoed into the answer free of CR/LF.
        if any(unicodedata.category(char) == "Cc" and char != "\t" for char in line):
            raise SdpError(f"SDP line {number} contains control characters")
        match = _LINE.fullmatch(line)
        if match is None:
            raise SdpError(f"SDP line {number} is not '<letter>=<value>': {_excerpt(line)}")
        result.append((number, match.group(1), match.group(2).strip()))
    return result


def _parse_origin(value: str, number: int) -> Origin:
    tokens = value.split()
    if len(tokens) != 6:
        raise SdpError(f"SDP line {number}: o= needs 6 fields, got {len(tokens)}: {_excerpt(value)}")
    return Origin(*tokens)


def _parse_connection(value: str, number: int) -> str:
    tokens = value.split()
    if len(tokens) != 3 or tokens[0].upper() != "IN":
        raise SdpError(f"SDP line {number}: c= must be 'IN <IP4|IP6> <address>': {_excerpt(value)}")
    addrtype = tokens[1].upper()
    # Multicast addresses carry "/ttl" or "/count" suffixes (RFC 4566 section 5.7).
    address_text = tokens[2].partition("/")[0]
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        # A host name would need DNS in the media path; no SBC in front of us sends one.
        raise SdpError(f"SDP line {number}: c= address {_excerpt(address_text)} is not an IP address") from None
    if (addrtype, address.version) not in (("IP4", 4), ("IP6", 6)):
        raise SdpError(f"SDP line {number}: c= address type {addrtype} does not match {_excerpt(address_text)}")
    return str(address)


def _payload_type(text: str, number: int, where: str) -> int:
    if _PAYLOAD_TYPE.fullmatch(text) is None or int(text) > 127:
        raise SdpError(f"SDP line {number}: {where} payload type {_excerpt(text)} is not a number 0-127")
    return int(text)


def _parse_media(value: str, number: int) -> MediaDescription:
    tokens = value.split()
    if len(tokens) < 4:
        raise SdpError(f"SDP line {number}: m= needs media, port, transport and formats: {_excerpt(value)}")
    kind, port_text, proto, *format_tokens = tokens
    # "<port>/<number of ports>" (RFC 4566 section 5.14): only the first port matters to us.
    port_text = port_text.partition("/")[0]
    if _PORT.fullmatch(port_text) is None:
        raise SdpError(f"SDP line {number}: m= port {_excerpt(port_text)} is not a number")
    port = int(port_text)
    if port > 65535:
        raise SdpError(f"SDP line {number}: m= port {port} is above 65535")
    formats: list[int] = []
    if "RTP/" in proto.upper():
        formats = [_payload_type(token, number, "m=") for token in format_tokens]
    return MediaDescription(kind=kind, port=port, proto=proto, formats=formats, format_tokens=format_tokens)


def _parse_rtpmap(value: str, number: int) -> tuple[int, RtpMap]:
    pt_text, _, encoding_text = value.partition(" ")
    payload_type = _payload_type(pt_text, number, "rtpmap")
    parts = encoding_text.strip().split("/")
    if len(parts) not in (2, 3) or _ENCODING_NAME.fullmatch(parts[0]) is None:
        raise SdpError(f"SDP line {number}: rtpmap must be '<pt> <encoding>/<clock>[/<channels>]': {_excerpt(value)}")
    clock_text, channels_text = parts[1], parts[2] if len(parts) == 3 else "1"
    if _CLOCK_RATE.fullmatch(clock_text) is None or int(clock_text) == 0:
        raise SdpError(f"SDP line {number}: rtpmap clock rate {_excerpt(clock_text)} is not a positive number")
    if _CHANNELS.fullmatch(channels_text) is None or int(channels_text) == 0:
        raise SdpError(f"SDP line {number}: rtpmap channel count {_excerpt(channels_text)} is not a positive number")
    return payload_type, RtpMap(parts[0], int(clock_text), int(channels_text))


def _apply_media_attribute(media: MediaDescription, value: str, number: int) -> None:
    name, _, argument = value.partition(":")
    name = name.strip().lower()
    argument = argument.strip()
    if name in DIRECTIONS:
        media.direction = name
    elif name == "rtpmap":
        payload_type, rtpmap = _parse_rtpmap(argument, number)
        media.rtpmap[payload_type] = rtpmap
    elif name == "fmtp":
        pt_text, _, parameters = argument.partition(" ")
        media.fmtp[_payload_type(pt_text, number, "fmtp")] = parameters.strip()
    elif name == "ptime":
        # Only a packetization hint (RFC 4566 section 6): an odd value is ignored, not fatal.
        match = _PTIME.fullmatch(argument)
        media.ptime = int(match.group(1)) if match is not None else None
    # Every other attribute (rtcp, crypto, maxptime, ...) does not change what we answer.


def parse_sdp(text: str) -> SessionDescription:
    """Parse an SDP body. Raises SdpError, saying what was wrong, for anything that is not a usable
    SDP: over MAX_SDP_BYTES, no leading v=0, no o= line, a malformed c=/m=/rtpmap line, or no
    audio m= line at all."""
    if len(text) > MAX_SDP_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise SdpError(f"SDP is larger than {MAX_SDP_BYTES} bytes")
    lines = _lines(text)
    if not lines or lines[0][1:] != ("v", "0"):
        raise SdpError("SDP does not start with a v=0 line")
    origin: Origin | None = None
    connection: str | None = None
    direction: str | None = None
    media: list[MediaDescription] = []
    for number, letter, value in lines[1:]:
        current = media[-1] if media else None
        if letter == "v":
            raise SdpError(f"SDP line {number}: a second v= line")
        if letter == "o":
            if origin is not None or current is not None:
                raise SdpError(f"SDP line {number}: o= line out of place")
            origin = _parse_origin(value, number)
        elif letter == "c":
            if current is None:
                connection = _parse_connection(value, number)
            else:
                current.connection = _parse_connection(value, number)
        elif letter == "m":
            media.append(_parse_media(value, number))
        elif letter == "a":
            if current is not None:
                _apply_media_attribute(current, value, number)
            elif value.strip().lower() in DIRECTIONS:
                direction = value.strip().lower()
        # s=, t=, b=, i= and the other session lines carry nothing the answer depends on.
    if origin is None:
        raise SdpError("SDP has no o= line")
    if not any(m.kind.lower() == "audio" for m in media):
        raise SdpError("SDP has no audio m= line")
    return SessionDescription(origin=origin, connection=connection, direction=direction, media=media)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of one offer/answer round for the audio stream.

    `ptime` is the packetization the remote asked to receive (10-60 ms in steps of 10, else 20);
    it is informational, since the connector always sends SEND_PTIME_MS and says so in its answer.
    `remote_direction` is the direction the offer states (sendrecv when absent); `local_direction`
    is the one the answer states, and decides whether the connector may send and receive.
    `media_index` is the position of the accepted m= line in the offer.
    """

    remote_addr: str
    remote_port: int
    codec: str
    payload_type: int
    dtmf_payload_type: int | None
    dtmf_fmtp: str | None
    ptime: int
    local_direction: str
    remote_direction: str
    media_index: int

    @property
    def may_send(self) -> bool:
        """False while the caller holds the call: RTP must not be sent then."""
        return self.local_direction in (SENDRECV, SENDONLY)

    @property
    def may_receive(self) -> bool:
        return self.local_direction in (SENDRECV, RECVONLY)


def _first_active_audio(offer: SessionDescription) -> tuple[int, MediaDescription]:
    for index, media in enumerate(offer.media):
        # Port 0 in an offer disables a stream (RFC 3264 section 8.2); it is answered with port 0 too.
        if media.kind.lower() == "audio" and media.port != 0:
            return index, media
    raise NoCommonCodec("offer has no active audio stream (every audio m= line has port 0)")


def _describe_formats(media: MediaDescription) -> str:
    names: list[str] = []
    for payload_type in media.formats:
        codec = media.codec(payload_type)
        names.append(f"{payload_type} {codec.encoding}/{codec.clock_rate}" if codec else str(payload_type))
    return ", ".join(names) or "none"


def _answer_direction(remote_direction: str, remote_has_address: bool) -> str:
    """RFC 3264 section 6.1: we send what the offerer will receive and receive what it will send.

    An unspecified address (RFC 2543 hold, c=0.0.0.0 or ::) gives us nowhere to send to, so it
    counts as the offerer not receiving; it may still send (music on hold), so we keep receiving.
    """
    we_send = remote_direction in (SENDRECV, RECVONLY) and remote_has_address
    we_receive = remote_direction in (SENDRECV, SENDONLY)
    if we_send and we_receive:
        return SENDRECV
    if we_send:
        return SENDONLY
    if we_receive:
        return RECVONLY
    return INACTIVE


def negotiate(offer: SessionDescription, supported: Sequence[str] = SUPPORTED_CODECS) -> Negotiated:
    """Answer the offer's first active audio stream, per RFC 3264.

    The codec is the first payload type, in the offer's order, whose encoding is in `supported` at
    8000 Hz mono; telephone-event/8000 is kept with its offered payload type and events. Raises
    NoCommonCodec when there is no such codec, no active audio stream or a transport other than
    RTP/AVP (SRTP, WebRTC), and SdpError when the audio stream has no c= address.
    """
    index, audio = _first_active_audio(offer)
    if audio.proto.upper() != ANSWER_PROTO:
        raise NoCommonCodec(f"audio stream uses transport {audio.proto}; only {ANSWER_PROTO} is supported")
    remote_addr = audio.connection or offer.connection
    if remote_addr is None:
        raise SdpError("audio stream has no c= address at media or session level")
    wanted = {name.upper() for name in supported}
    chosen: tuple[int, str] | None = None
    dtmf_payload_type: int | None = None
    for payload_type in audio.formats:
        codec = audio.codec(payload_type)
        if codec is None or codec.clock_rate != G711_CLOCK_RATE:
            continue
        encoding = codec.encoding.upper()
        if chosen is None and encoding in wanted and codec.channels == 1:
            chosen = (payload_type, encoding)
        elif dtmf_payload_type is None and encoding == TELEPHONE_EVENT.upper():
            dtmf_payload_type = payload_type
    if chosen is None:
        wanted_text = ", ".join(supported) or "no codecs"
        raise NoCommonCodec(f"offer has none of {wanted_text} at 8000 Hz mono; offered: {_describe_formats(audio)}")
    dtmf_fmtp: str | None = None
    if dtmf_payload_type is not None:
        offered_events = audio.fmtp.get(dtmf_payload_type, "").replace(" ", "")
        dtmf_fmtp = offered_events if _DTMF_EVENTS.fullmatch(offered_events) else DEFAULT_DTMF_EVENTS
    remote_direction = audio.direction or offer.direction or SENDRECV
    offered_ptime = audio.ptime
    ptime = (
        offered_ptime
        if offered_ptime is not None and 10 <= offered_ptime <= 60 and offered_ptime % 10 == 0
        else DEFAULT_PTIME_MS
    )
    return Negotiated(
        remote_addr=remote_addr,
        remote_port=audio.port,
        codec=chosen[1],
        payload_type=chosen[0],
        dtmf_payload_type=dtmf_payload_type,
        dtmf_fmtp=dtmf_fmtp,
        ptime=ptime,
        local_direction=_answer_direction(remote_direction, not ipaddress.ip_address(remote_addr).is_unspecified),
        remote_direction=remote_direction,
        media_index=index,
    )


def _check_answer_inputs(
    offer: SessionDescription, negotiated: Negotiated, local_port: int, session_id: int, session_version: int
) -> None:
    """Reject arguments that would produce an SDP the caller's phone cannot use (programming errors)."""
    if not 1 <= local_port <= 65535:
        raise ValueError(f"local_port {local_port} is not 1-65535")
    if session_id < 0 or session_version < 0:
        raise ValueError("session_id and session_version must not be negative")
    if not 0 <= negotiated.media_index < len(offer.media):
        raise ValueError(f"media_index {negotiated.media_index} is not an m= line of this offer")
    if negotiated.local_direction not in DIRECTIONS:
        raise ValueError(f"local_direction {negotiated.local_direction!r} is not an SDP direction")
    if _ENCODING_NAME.fullmatch(negotiated.codec) is None:
        raise ValueError(f"codec {negotiated.codec!r} is not an encoding name")
    for payload_type in (negotiated.payload_type, negotiated.dtmf_payload_type):
        if payload_type is not None and not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} is not 0-127")
    if negotiated.dtmf_fmtp is not None and _DTMF_EVENTS.fullmatch(negotiated.dtmf_fmtp) is None:
        raise ValueError(f"dtmf_fmtp {negotiated.dtmf_fmtp!r} is not an RFC 4733 event list")


def _session_lines(local_addr: str, session_id: int, session_version: int) -> list[str]:
    """The session-level lines every SDP of ours starts with; ValueError when `local_addr` is no IP address."""
    try:
        address = ipaddress.ip_address(local_addr)
    except ValueError:
        raise ValueError(f"local_addr {local_addr!r} is not an IP address") from None
    addrtype = "IP4" if address.version == 4 else "IP6"
    return [
        "v=0",
        f"o=avc {session_id} {session_version} IN {addrtype} {address}",
        "s=avc",
        f"c=IN {addrtype} {address}",
        "t=0 0",
    ]


def build_answer(
    offer: SessionDescription,
    negotiated: Negotiated,
    local_addr: str,
    local_port: int,
    session_id: int,
    session_version: int,
) -> str:
    """A complete SDP answer (CRLF line endings) with as many m= lines as the offer (RFC 3264 section 6).

    The accepted stream gets `local_port`, every other m= line port 0 with its formats echoed.
    `session_version` must grow with each new answer in a dialog (RFC 3264 section 8), so the
    caller, which owns the dialog, passes it in. Raises ValueError for arguments that cannot make
    a valid answer.
    """
    lines = _session_lines(local_addr, session_id, session_version)
    _check_answer_inputs(offer, negotiated, local_port, session_id, session_version)
    for index, media in enumerate(offer.media):
        if index != negotiated.media_index:
            # RFC 4566 wants at least one format even on a rejected line; a hand-built offer may lack tokens.
            formats = media.format_tokens or [str(pt) for pt in media.formats] or ["0"]
            lines.append(f"m={media.kind} 0 {media.proto} {' '.join(formats)}")
            continue
        payload_types = [negotiated.payload_type]
        if negotiated.dtmf_payload_type is not None:
            payload_types.append(negotiated.dtmf_payload_type)
        lines.append(f"m=audio {local_port} {ANSWER_PROTO} {' '.join(str(pt) for pt in payload_types)}")
        lines.append(f"a=rtpmap:{negotiated.payload_type} {negotiated.codec}/{G711_CLOCK_RATE}")
        if negotiated.dtmf_payload_type is not None:
            lines.append(f"a=rtpmap:{negotiated.dtmf_payload_type} {TELEPHONE_EVENT}/{G711_CLOCK_RATE}")
            lines.append(f"a=fmtp:{negotiated.dtmf_payload_type} {negotiated.dtmf_fmtp or DEFAULT_DTMF_EVENTS}")
        lines.append(f"a=ptime:{SEND_PTIME_MS}")
        lines.append(f"a={negotiated.local_direction}")
    return "\r\n".join(lines) + "\r\n"


def build_offer(local_addr: str, local_port: int, session_id: int, session_version: int) -> str:
    """A complete SDP offer (CRLF line endings) of every codec we support, then telephone-event, sendrecv.

    Used where we must offer without knowing the other side's SDP: the re-INVITE that takes back a call a
    lost connector left on the node. The answer is read with `negotiate`, as an offer would be.
    """
    lines = _session_lines(local_addr, session_id, session_version)
    if not 1 <= local_port <= 65535:
        raise ValueError(f"local_port {local_port} is not 1-65535")
    by_name = {rtpmap.encoding: pt for pt, rtpmap in STATIC_PAYLOAD_TYPES.items()}
    payload_types = [by_name[name] for name in SUPPORTED_CODECS]
    lines += [
        f"m=audio {local_port} {ANSWER_PROTO} {' '.join(str(pt) for pt in [*payload_types, OFFER_DTMF_PAYLOAD_TYPE])}",
        *(f"a=rtpmap:{pt} {name}/{G711_CLOCK_RATE}" for pt, name in zip(payload_types, SUPPORTED_CODECS, strict=True)),
        f"a=rtpmap:{OFFER_DTMF_PAYLOAD_TYPE} {TELEPHONE_EVENT}/{G711_CLOCK_RATE}",
        f"a=fmtp:{OFFER_DTMF_PAYLOAD_TYPE} {DEFAULT_DTMF_EVENTS}",
        f"a=ptime:{SEND_PTIME_MS}",
        f"a={SENDRECV}",
    ]
    return "\r\n".join(lines) + "\r\n"
