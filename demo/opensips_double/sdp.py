"""The SDP offers the SIPp caller of the captures sends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Static RTP payload types usable in `sdp_offer`.
STATIC_PAYLOAD_TYPES: Mapping[str, int] = {"PCMU": 0, "GSM": 3, "PCMA": 8, "G722": 9, "G729": 18}


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
