"""Engine set-up from settings: the cloud LLM in front of the local one, and the fallback when it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from avc.config import Settings
from avc.conversation.engine_setup import engine_config, with_cloud_engines
from avc.metrics import Metrics
from engines.base import ChatMessage
from engines.fallback import FallbackLlm
from engines.manifest import Manifest
from engines.registry import build_engines
from tests.support.cloud.openai_server import OpenAiDouble, Reply, server_error

pytestmark = pytest.mark.models


async def test_openai_answers_and_a_failing_openai_falls_back_to_llama(monkeypatch: pytest.MonkeyPatch) -> None:
    async with OpenAiDouble("sk-test-local") as cloud:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-local")
        monkeypatch.setenv("OPENAI_BASE_URL", cloud.base_url)
        settings = Settings(llm_provider="openai", llm_model="smollm2-135m")
        manifest = Manifest.load(Path(".models"))
        metrics = Metrics()
        engines = with_cloud_engines(settings, build_engines(engine_config(settings), manifest), manifest, metrics)
        try:
            assert isinstance(engines.llm, FallbackLlm)
            prompt = [ChatMessage("user", "Say hello.")]
            cloud.replies.append(Reply(text=("Hello", " from the cloud.")))
            answer = "".join([piece async for piece in engines.llm.stream_chat(prompt, max_tokens=16)])
            assert answer == "Hello from the cloud."
            cloud.replies.extend([server_error()] * 5)
            local = "".join([piece async for piece in engines.llm.stream_chat(prompt, max_tokens=16)])
            assert local.strip()  # SmolLM2 answered instead
            fallbacks = metrics.registry.get_sample_value(
                "avc_engine_fallbacks_total", {"engine": "llm", "primary": "openai", "fallback": "llama"}
            )
            assert fallbacks == 1.0
        finally:
            engines.close()
