"""Operations HTTP endpoint: /metrics (Prometheus), /healthz, /readyz and /calls (JSON for `avc calls`).

Binds to loopback by default: call details and metrics are for the node's operators, not the world.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from avc.connector import Connector


def build_app(connector: Connector) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=connector.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        sub = connector.subscription
        body = {
            "ready": connector.ready,
            "draining": connector.draining,
            "subscribed": bool(sub and sub.subscribed),
            "subscription_error": sub.last_error if sub else None,
            "ports_free": connector.ports.free,
            "calls": len(connector.calls),
        }
        return web.json_response(body, status=200 if connector.ready else 503)

    async def calls(_: web.Request) -> web.Response:
        return web.json_response({"calls": [call.snapshot() for call in connector.calls.values()]})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/calls", calls)
    return app


async def start_http(connector: Connector, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(connector), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
