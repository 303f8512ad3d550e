"""`make demo`: one complete call through the connector, on this machine, with nothing to configure.

OpenSIPS is not installable here, so the demo plays OpenSIPS with the protocol double from the tests (the real
3.5.9 event and MI bytes) and says so. A scripted caller sends real RTP over loopback: a short tune, then the
DTMF digits 1 2 3 #, then hangs up. The connector answers in the mode given by AVC_MODE (default `echo`, the
only mode that needs no models until the engine chain lands). Written to `out/`: a stereo WAV of the call
(caller left, connector right) and the call's JSON record.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from avc.config import load_settings
from avc.connector import Connector
from avc.g711 import ulaw_decode, ulaw_encode
from avc.tone import ToneGenerator

TUNE_HZ = (523.25, 659.25, 783.99, 1046.5)  # C E G C, half a second each
OUT = Path("out")


def _tune() -> list[bytes]:
    frames: list[bytes] = []
    for hz in TUNE_HZ:
        tone = ToneGenerator([hz], 8000, 0.3)
        frames += [ulaw_encode(tone.next(160)) for _ in range(25)]
    return frames + [b"\xff" * 160] * 25


async def demo() -> dict[str, Any]:
    try:
        from tests.support.opensips_double import OpenSIPSDouble, sdp_offer
        from tests.support.rtp_peer import RtpPeerGroup, parse_dtmf
    except ImportError:
        sys.exit("run `make demo` from the repository root: the demo uses the OpenSIPS double in tests/support")

    print("OpenSIPS 3.5 is not installable on this machine: this demo drives the connector through the OpenSIPS")
    print("protocol double (tests/support/opensips_double.py), which speaks the exact event/MI bytes of 3.5.9.")
    async with OpenSIPSDouble() as osips:
        env = {"AVC_MI_URL": osips.mi_datagram_uri, "AVC_EDGE_MI_URL": osips.mi_http_url, "AVC_EVENT_PORT": "0"}
        settings = load_settings({**os.environ, **env})
        connector = Connector(settings)
        await connector.start()
        await osips.wait_subscribed(5.0)
        group = RtpPeerGroup()
        peer = await group.create_peer()
        started = time.monotonic()
        call = await osips.invite(
            sdp_offer("127.0.0.1", peer.port), extra_headers={"P-Asserted-Identity": "<tel:+15550100>"}
        )
        reply = await call.wait_final(5.0)
        answered_ms = (time.monotonic() - started) * 1000
        match = re.search(r"^m=audio (\d+) ", reply.body or "", re.MULTILINE)
        if reply.code != 200 or match is None:
            raise SystemExit(f"the connector answered {reply.code} {reply.reason}")
        print(f"call {call.call_id}: answered {reply.code} {reply.reason} in {answered_ms:.1f} ms")
        peer.set_remote("127.0.0.1", int(match.group(1)))
        tune = _tune()
        peer.start_sending(lambda n: tune[n] if n < len(tune) else b"\xff" * 160)
        await asyncio.sleep(len(tune) * 0.02 + 0.3)
        for digit in "123#":
            await peer.send_dtmf(digit)
            await asyncio.sleep(0.15)
        await asyncio.sleep(0.5)
        record = next(iter(connector.calls.values())).snapshot()
        await call.bye()
        await asyncio.sleep(0.2)
        peer.stop_sending()
        await group.close()
        await connector.stop()

    received = [p for p in peer.received if p.payload_type == 0]
    digits = sorted({p.timestamp: parse_dtmf(p.payload).digit for p in peer.received if p.payload_type == 101}.items())
    summary = {
        "mode": settings.mode,
        "answer_ms": round(answered_ms, 1),
        "packets_from_connector": len(received),
        "digits_echoed": "".join(d for _, d in digits),
        "record": record,
    }
    heard = ulaw_decode(b"".join(p.payload for p in received)) if received else np.zeros(0, np.int16)
    write_outputs(np.concatenate([ulaw_decode(f) for f in tune]), heard, summary)
    return summary


def write_outputs(caller: np.ndarray, connector: np.ndarray, summary: dict[str, Any]) -> None:
    """out/demo-call.wav (caller left, connector right, 8 kHz) and out/demo-call.json."""
    OUT.mkdir(exist_ok=True)
    wav_path = OUT / "demo-call.wav"
    stereo = np.zeros((max(caller.size, connector.size), 2), dtype=np.int16)
    stereo[: caller.size, 0] = caller
    stereo[: connector.size, 1] = connector
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(stereo.tobytes())
    summary["wav"] = str(wav_path)
    (OUT / "demo-call.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    summary = asyncio.run(demo())
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
