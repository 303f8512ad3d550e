"""deploy/healthcheck.py, the image's HEALTHCHECK, run as Docker runs it against the real ops endpoint."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from avc.config import Settings
from avc.connector import Connector
from avc.ops_http import start_http
from tests.deploy.support import DEPLOY, load_script

SCRIPT = DEPLOY / "healthcheck.py"
healthcheck = load_script(SCRIPT)


async def _run_check(host: str, port: int) -> tuple[int, str]:
    """Exit status and stderr of `python deploy/healthcheck.py`, the container's HEALTHCHECK command."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        env={"AVC_HTTP_HOST": host, "AVC_HTTP_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.fixture
async def avc_ops() -> AsyncIterator[int]:
    """The connector's real ops HTTP app on an ephemeral loopback port (the connector itself not started)."""
    connector = Connector(Settings(rtp_port_min=40000, rtp_port_max=40009))
    runner = await start_http(connector, "127.0.0.1", 0)
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def test_healthy_connector_exits_zero(avc_ops: int) -> None:
    status, stderr = await _run_check("127.0.0.1", avc_ops)
    assert (status, stderr) == (0, "")


async def test_wildcard_bind_is_checked_over_loopback(avc_ops: int) -> None:
    status, _ = await _run_check("0.0.0.0", avc_ops)
    assert status == 0


async def test_nothing_listening_exits_one_with_the_reason() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    status, stderr = await _run_check("127.0.0.1", free_port)
    assert status == 1
    assert stderr.startswith("unhealthy: ") and "unreachable" in stderr


async def test_an_error_status_exits_one() -> None:
    async def failing(_: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/healthz", failing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        status, stderr = await _run_check("127.0.0.1", int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()
    assert status == 1
    assert "HTTP 503" in stderr


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:9090/healthz"),
        ({"AVC_HTTP_HOST": "10.20.0.21", "AVC_HTTP_PORT": "9191"}, "http://10.20.0.21:9191/healthz"),
        ({"AVC_HTTP_HOST": "::"}, "http://127.0.0.1:9090/healthz"),
        ({"AVC_HTTP_HOST": "fd00::21"}, "http://[fd00::21]:9090/healthz"),
    ],
)
def test_healthz_url_follows_the_connector_settings(environ: dict[str, str], url: str) -> None:
    assert healthcheck.healthz_url(environ) == url
