"""The registry builds engines from configuration and refuses what it cannot build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.base import Llm, StreamingAsr, Tts, Vad
from engines.errors import EngineConfigError, ModelMissingError
from engines.manifest import MANIFEST_NAME, Manifest
from engines.registry import PROVIDERS, build_engines, load_engine

LOCAL = {"vad": "silero", "asr": "whisper", "llm": "llama", "tts": "piper"}


@pytest.fixture
def empty_manifest(tmp_path: Path) -> Manifest:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({}), encoding="utf-8")
    return Manifest.load(tmp_path)


def test_unknown_provider_is_refused_with_the_known_ones(empty_manifest: Manifest) -> None:
    with pytest.raises(EngineConfigError, match="unknown asr provider 'kaldi'; known: vosk, whisper"):
        build_engines({**LOCAL, "asr": "kaldi"}, empty_manifest)


def test_missing_and_unknown_kinds_are_refused(empty_manifest: Manifest) -> None:
    with pytest.raises(EngineConfigError, match=r"unknown kinds \['stt'\], missing kinds \['asr'\]"):
        build_engines({"vad": "silero", "stt": "whisper", "llm": "llama", "tts": "piper"}, empty_manifest)


@pytest.mark.parametrize("spec", [42, {"model": "whisper-base"}, {"provider": 1}])
def test_spec_without_a_provider_name_is_refused(spec: object, empty_manifest: Manifest) -> None:
    with pytest.raises(EngineConfigError, match="expected a provider name"):
        load_engine("asr", spec, empty_manifest)


def test_missing_model_names_make_models(empty_manifest: Manifest) -> None:
    with pytest.raises(ModelMissingError, match=r"'silero-vad'.*make models"):
        load_engine("vad", "silero", empty_manifest)


def test_unknown_provider_option_is_refused_before_loading(empty_manifest: Manifest) -> None:
    with pytest.raises(EngineConfigError, match="vad silero: unknown option"):
        load_engine("vad", {"provider": "silero", "treshold": 0.5}, empty_manifest)


def test_every_provider_target_names_an_importable_module_path() -> None:
    for providers in PROVIDERS.values():
        for target in providers.values():
            module, _, factory = target.partition(":")
            assert module.startswith("engines.") and factory == "load"


@pytest.mark.models
@pytest.mark.slow
def test_local_configuration_builds_all_four_engines(manifest: Manifest) -> None:
    engines = build_engines(
        {**LOCAL, "asr": {"provider": "whisper", "cpu_threads": 1}, "llm": {"provider": "llama", "n_ctx": 512}},
        manifest,
    )
    try:
        assert isinstance(engines.vad, Vad) and isinstance(engines.asr, StreamingAsr)
        assert isinstance(engines.llm, Llm) and isinstance(engines.tts, Tts)
        assert engines.vad.frame_size == 512 and engines.tts.sample_rate == 22_050
    finally:
        engines.close()
