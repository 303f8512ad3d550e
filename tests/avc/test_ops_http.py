"""Operations endpoints and `avc calls`, against a live connector with a call through the OpenSIPS double."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from avc.cli import calls as print_calls
from avc.config import Settings
from avc.connector import Connector
from avc.ops_http import start_http
from demo.opensips_double import OpenSIPSDouble, sdp_offer


@pytest.fixture
async def live() -> AsyncIterator[tuple[OpenSIPSDouble, Connector, str]]:
    async with OpenSIPSDouble() as osips:
        base = random.randrange(20000, 60000, 200)
        settings = Settings(
            mi_url=osips.mi_datagram_uri,
            event_port=0,
            rtp_port_min=base,
            rtp_port_max=base + 9,
            subscription_check_interval=0.2,
        )
        connector = Connector(settings)
        await connector.start()
        await osips.wait_subscribed(3.0)
        runner: web.AppRunner = await start_http(connector, "127.0.0.1", 0)
        host, port = runner.addresses[0][:2]
        yield osips, connector, f"http://{host}:{port}"
        await runner.cleanup()
        await connector.stop()


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_metrics_endpoint_serves_prometheus_text(live: tuple[OpenSIPSDouble, Connector, str]) -> None:
    _, _, url = live
    status, body = await asyncio.to_thread(fetch, f"{url}/metrics")
    assert status == 200
    for name in (b"avc_calls_active", b"avc_rtp_packets_sent_total", b"avc_event_subscription_up 1.0"):
        assert name in body


async def test_readiness_follows_subscription_and_drain(live: tuple[OpenSIPSDouble, Connector, str]) -> None:
    _, connector, url = live
    status, body = await asyncio.to_thread(fetch, f"{url}/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    await connector.drain(grace=0)
    status, body = await asyncio.to_thread(fetch, f"{url}/readyz")
    assert status == 503 and json.loads(body)["draining"] is True
    assert (await asyncio.to_thread(fetch, f"{url}/healthz"))[0] == 200


async def test_avc_calls_lists_the_live_call(
    live: tuple[OpenSIPSDouble, Connector, str], capsys: pytest.CaptureFixture[str]
) -> None:
    osips, _, url = live
    call = await osips.invite(sdp_offer("127.0.0.1", 6000), extra_headers={"P-Asserted-Identity": "<tel:+15550123>"})
    assert (await call.wait_final(3.0)).code == 200
    status, body = await asyncio.to_thread(fetch, f"{url}/calls")
    listed = json.loads(body)["calls"]
    assert status == 200 and [c["key"] for c in listed] == [call.key]
    assert listed[0]["ani_last4"] == "0123" and "+15550123" not in body.decode()
    assert await asyncio.to_thread(print_calls, url) == 0
    out = capsys.readouterr().out
    assert call.key in out and "active" in out and "PCMU" in out


def test_avc_calls_says_when_the_node_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_calls("http://127.0.0.1:9") == 1
    assert "cannot reach the connector" in capsys.readouterr().err
