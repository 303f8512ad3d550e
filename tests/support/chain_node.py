"""A connector in chain mode behind the OpenSIPS double, for tests that talk to it over RTP."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from avc.config import Settings
from avc.connector import Connector
from avc.conversation.chain import ChainDeps, chain_factory
from avc.conversation.prompts import PromptCache
from avc.conversation.responder import ResponderFactory
from avc.metrics import Metrics
from demo.opensips_double import OpenSIPSDouble
from demo.rtp_peer import RtpPeerGroup
from engines.registry import Engines


def settings_behind(osips: OpenSIPSDouble, rtp_ports: int = 100, **overrides: Any) -> Settings:
    """A connector's settings behind the double: its MI and edge, an ephemeral event port, an RTP range of its own."""
    base = random.randrange(20000, 60000, 200)
    values: dict[str, Any] = {
        "mi_url": osips.mi_datagram_uri,
        "edge_mi_url": osips.mi_http_url,  # the double plays the edge's dialog module too
        "event_port": 0,
        "rtp_port_min": base,
        "rtp_port_max": base + rtp_ports - 1,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class ChainNode:
    osips: OpenSIPSDouble
    connector: Connector
    group: RtpPeerGroup
    metrics: Metrics


@asynccontextmanager
async def chain_node(
    engines: Engines,
    responders: ResponderFactory,
    prompts: list[str],
    metrics: Metrics | None = None,
    no_input_s: float = 8.0,
) -> AsyncIterator[ChainNode]:
    """A connector in chain mode behind the OpenSIPS double, with RTP peers to call it from."""
    metrics = metrics or Metrics()
    cache = PromptCache(engines.tts)
    await cache.warm(prompts)
    deps = ChainDeps(
        engines=engines, prompts=cache, responder_factory=responders, metrics=metrics, no_input_s=no_input_s
    )
    async with OpenSIPSDouble() as osips:
        settings = settings_behind(osips, rtp_ports=10, mode="chain")
        connector = Connector(settings, app_factory=chain_factory(deps), metrics=metrics)
        await connector.start()
        await osips.wait_subscribed(3.0)
        group = RtpPeerGroup()
        try:
            yield ChainNode(osips, connector, group, metrics)
        finally:
            await connector.stop()
            await group.close()
