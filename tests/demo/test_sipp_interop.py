"""The SIP pieces of the test kit against SIPp, an independent SIP implementation (Debian's `sip-tester`).

The double's SIP socket and the demo's caller were both written from the captures; here each meets the tool the
captures were recorded with. SIPp runs the captures' own scenarios (`uac_ai_*.xml`) against the double, with the
connector answering over MI as it would behind a real OpenSIPS, and SIPp's built-in UAS answers the demo caller.
SIPp exits 0 only when every call followed its scenario.

`make test` installs SIPp (`make sipp`); without it these tests fail and say how to install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from avc.connector import Connector
from demo.opensips_double import CallState, OpenSIPSDouble, sdp_offer
from demo.sip_caller import SipCaller
from tests.support.captures import CAPTURE_DIR
from tests.support.chain_node import settings_behind

pytestmark = pytest.mark.slow


def sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail(
            "SIPp is not installed: run `make sipp` (Debian package sip-tester) or `apt-get install sip-tester`"
        )
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_sipp(*args: str, local_port: int = 0, timeout_s: float = 40.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sipp(),
        *args,
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port or free_udp_port()),
        "-mp",
        str(free_udp_port()),
        "-nostdin",
        "-timeout",
        f"{int(timeout_s)}s",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout_s + 10)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")[-3000:]


@contextlib.asynccontextmanager
async def double_with_connector(max_duration: float = 3600.0) -> AsyncIterator[OpenSIPSDouble]:
    """The double's SIP socket with the connector (echo mode) answering behind it over MI."""
    async with OpenSIPSDouble() as osips:
        await osips.listen_sip()
        settings = settings_behind(osips, subscription_check_interval=0.2, max_duration=max_duration)
        connector = Connector(settings)
        await connector.start()
        try:
            await osips.wait_subscribed(3.0)
            yield osips
        finally:
            await connector.stop()
        assert osips.internal_errors == []


def scenario(name: str) -> str:
    path: Path = CAPTURE_DIR / name
    return str(path)


async def test_sipp_callers_hang_up_through_the_double_and_the_connector() -> None:
    async with double_with_connector() as osips:
        host, port = osips.sip.address
        # uac_ai_bye.xml: INVITE, 200 from the connector, ACK, 3 s, the caller's BYE. Five callers at once.
        args = ("-sf", scenario("uac_ai_bye.xml"), "-s", "ai", "-m", "5", "-l", "5")
        code, output = await run_sipp(f"{host}:{port}", *args)
    assert code == 0, output
    assert len(osips.calls) == 5
    assert all(call.state is CallState.ENDED and not call.terminated_by_app for call in osips.calls)
    assert osips.sessions == []


async def test_sipp_gets_the_connectors_bye_when_the_app_hangs_up() -> None:
    # The connector ends the call after 1.5 s (max_duration): ua_session_terminate, and OpenSIPS's BYE on the wire,
    # which uac_ai_remote_bye.xml waits for and answers 200.
    async with double_with_connector(max_duration=1.5) as osips:
        host, port = osips.sip.address
        args = ("-sf", scenario("uac_ai_remote_bye.xml"), "-s", "ai", "-m", "1")
        code, output = await run_sipp(f"{host}:{port}", *args)
    assert code == 0, output
    [call] = osips.calls
    assert call.terminated_by_app and call.state is CallState.ENDED


async def test_the_demo_caller_completes_a_call_with_sipps_uas() -> None:
    port = free_udp_port()
    process = asyncio.create_task(run_sipp("-sn", "uas", "-m", "1", local_port=port, timeout_s=20.0))
    caller = await SipCaller.start()
    try:
        for _ in range(50):  # until SIPp listens: its first answer is a 100 or 180 to our INVITE
            call = await caller.invite(f"sip:service@127.0.0.1:{port}", sdp_offer("127.0.0.1", 6000))
            try:
                answer = await call.wait_answered(1.0)
                break
            except TimeoutError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("SIPp's UAS never answered")
        assert answer.code == 200 and "m=audio" in answer.body
        await asyncio.sleep(0.2)
        assert (await call.bye()).code == 200
    finally:
        await caller.close()
    code, output = await process
    assert code == 0, output
