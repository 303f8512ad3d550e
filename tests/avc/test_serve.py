"""`avc serve` as operations run it: a real process, configured by environment, drained by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest

from demo.opensips_double import OpenSIPSDouble, sdp_offer


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "avc.cli", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def serve_env(osips: OpenSIPSDouble, http: int) -> dict[str, str]:
    return {
        **os.environ,
        "AVC_MI_URL": osips.mi_datagram_uri,
        "AVC_EVENT_PORT": str(free_port(socket.SOCK_DGRAM)),
        "AVC_HTTP_PORT": str(http),
        "AVC_MODE": "echo",
        "AVC_DRAIN_TIMEOUT": "10",
        "AVC_SUBSCRIPTION_CHECK_INTERVAL": "0.2",
        "AVC_RTP_PORT_MIN": "45000",
        "AVC_RTP_PORT_MAX": "45099",
    }


@pytest.fixture
async def served() -> AsyncIterator[tuple[OpenSIPSDouble, subprocess.Popen[bytes], str]]:
    async with OpenSIPSDouble() as osips:
        http = free_port(socket.SOCK_STREAM)
        proc = start_serve(serve_env(osips, http))
        try:
            await osips.wait_subscribed(20.0)
            yield osips, proc, f"http://127.0.0.1:{http}"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


async def wait_status(url: str, status: int) -> None:
    async with asyncio.timeout(10):
        while (await asyncio.to_thread(get, url))[0] != status:  # noqa: ASYNC110 - polling another process
            await asyncio.sleep(0.1)


async def test_sigterm_drains_new_calls_get_503_active_calls_finish_then_exit(
    served: tuple[OpenSIPSDouble, subprocess.Popen[bytes], str],
) -> None:
    osips, proc, url = served
    await wait_status(f"{url}/readyz", 200)
    active = await osips.invite(sdp_offer("127.0.0.1", 6000))
    assert (await active.wait_final(5.0)).code == 200

    proc.send_signal(signal.SIGTERM)
    await wait_status(f"{url}/readyz", 503)
    body = json.loads((await asyncio.to_thread(get, f"{url}/readyz"))[1])
    assert body["draining"] is True and body["calls"] == 1
    refused = await osips.invite(sdp_offer("127.0.0.1", 6002))
    assert (await refused.wait_final(5.0)).code == 503
    assert proc.poll() is None, "the node must wait for its active call"

    await active.bye()
    exit_code = await asyncio.to_thread(proc.wait, 10)
    assert exit_code == 0
    log = proc.stdout.read().decode() if proc.stdout else ""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any("draining" in entry["msg"] for entry in lines)
    assert all("level" in entry and "ts" in entry for entry in lines)
    assert osips.subscribers == [] or all(s.expire == 0 for s in osips.subscribers)


async def test_a_bad_setting_stops_start_up_with_a_clear_message() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "avc.cli",
        "serve",
        env={**os.environ, "AVC_MODE": "karaoke"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"AVC_MODE='karaoke'" in err


def rtp_packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x5EED) + b"\xff" * 160


def echoed(caller_port: int, avc_port: int, packets: int = 25) -> int:
    """RTP sent from the caller's SDP port to the connector's new port; how many came back (echo mode)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", caller_port))
        sock.settimeout(0.02)
        got = 0
        for seq in range(packets * 3):
            if seq < packets:
                sock.sendto(rtp_packet(seq), ("127.0.0.1", avc_port))
            try:
                while True:
                    sock.recv(2048)
                    got += 1
            except TimeoutError:
                pass
        return got


@pytest.mark.slow
async def test_the_callers_of_a_killed_connector_are_taken_back_by_the_next_one_within_5_s() -> None:
    async with OpenSIPSDouble() as osips:
        env = serve_env(osips, free_port(socket.SOCK_STREAM))
        first = start_serve(env)
        try:
            await osips.wait_subscribed(20.0)
            calls = [await osips.invite(sdp_offer("127.0.0.1", 6100 + 2 * n)) for n in range(3)]
            for call in calls:
                assert (await call.wait_final(5.0)).code == 200
        finally:
            first.kill()  # SIGKILL: no drain, no hang-up, its sessions stay on the node
            first.wait(5)
        loop = asyncio.get_running_loop()
        restarted = loop.time()
        second = start_serve(env)
        try:
            reinvites = [await call.wait_app_request("INVITE", 10.0) for call in calls]
            assert loop.time() - restarted < 5.0  # each caller's media moved to the new connector within 5 s
            assert sorted(osips.sessions) == sorted(call.key for call in calls)  # nobody was hung up
            for n, reinvite in enumerate(reinvites):
                port = int(re.search(r"^m=audio (\d+) ", reinvite.body or "", re.MULTILINE)[1])  # type: ignore[index]
                assert await asyncio.to_thread(echoed, 6100 + 2 * n, port) > 0  # and the caller is heard again
            status, body = get(env_metrics_url(env))
            assert status == 200 and b'avc_stranded_sessions_total{action="recovered"} 3.0' in body
        finally:
            second.kill()
            second.wait(5)


def env_metrics_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['AVC_HTTP_PORT']}/metrics"


@pytest.mark.slow
async def test_with_recovery_off_the_callers_of_a_killed_connector_are_hung_up_within_5_s() -> None:
    async with OpenSIPSDouble() as osips:
        env = {**serve_env(osips, free_port(socket.SOCK_STREAM)), "AVC_RECOVER_STRANDED": "false"}
        first = start_serve(env)
        try:
            await osips.wait_subscribed(20.0)
            calls = [await osips.invite(sdp_offer("127.0.0.1", 6000 + 2 * n)) for n in range(3)]
            for call in calls:
                assert (await call.wait_final(5.0)).code == 200
        finally:
            first.kill()  # SIGKILL: no drain, no hang-up, its sessions stay on the node
            first.wait(5)
        assert sorted(osips.sessions) == sorted(call.key for call in calls)
        loop = asyncio.get_running_loop()
        restarted = loop.time()
        second = start_serve(env)
        try:
            for call in calls:
                await call.wait_ended(10.0)
                assert call.terminated_by_app  # the node sent them BYE: nobody is left in silence
            assert loop.time() - restarted < 5.0
            assert osips.sessions == []
            fresh = await osips.invite(sdp_offer("127.0.0.1", 6010))  # and the new connector serves
            assert (await fresh.wait_final(5.0)).code == 200
        finally:
            second.kill()
            second.wait(5)
