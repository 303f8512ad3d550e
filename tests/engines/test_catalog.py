"""The pinned model catalogue agrees with the architecture's table and with itself."""

from __future__ import annotations

import pytest

from engines.catalog import CATALOGUE, SPECS
from engines.manifest import listing_sha256

# Checksums published in /work/shared/ARCHITECTURE.md ("Local models that install from PyPI").
DOCUMENTED_SHA256 = {
    "whisper-base": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "smollm2-135m": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "qwen2.5-0.5b": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED_SHA256))
def test_weights_are_pinned_to_the_documented_checksum(name: str) -> None:
    weights = max(SPECS[name].files, key=lambda file: file.size)
    assert weights.sha256 == DOCUMENTED_SHA256[name]


def test_default_set_is_vad_embeddings_asr_tts_llm_and_test_speech() -> None:
    defaults = {spec.name for spec in CATALOGUE if spec.default}
    assert defaults == {
        "silero-vad",
        "minilm-l6",
        "whisper-tiny.en",
        "piper-joe-medium",
        "smollm2-135m",
        "pocketsphinx-testdata",
    }


def test_split_models_concatenate_parts_in_order() -> None:
    (qwen,) = SPECS["qwen2.5-0.5b"].files
    assert [source.rsplit("/", 1)[-1] for source in qwen.sources] == [f"part0{i}.bin" for i in range(1, 7)]
    whisper_bin = next(file for file in SPECS["whisper-base"].files if file.dest == "model.bin")
    assert whisper_bin.sources[0].endswith(".part1") and whisper_bin.sources[1].endswith(".part2")


def test_every_pin_is_a_sha256_and_every_destination_is_unique() -> None:
    for spec in CATALOGUE:
        dests = [file.dest for file in spec.files]
        assert len(dests) == len(set(dests)), spec.name
        for file in spec.files:
            assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0 and file.size > 0


def test_manifest_digest_is_the_file_sha_or_the_folder_listing() -> None:
    assert SPECS["silero-vad"].digest == SPECS["silero-vad"].files[0].sha256
    assert SPECS["silero-vad"].relative_path == "silero-vad/silero_vad.onnx"
    tiny = SPECS["whisper-tiny.en"]
    assert tiny.relative_path == "whisper-tiny.en"
    assert tiny.digest == listing_sha256((file.dest, file.sha256) for file in tiny.files)
