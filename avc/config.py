"""Connector settings from environment variables (prefix AVC_), optionally seeded from a `.env` file.

The environment always wins over `.env`, so an operator can override one value without editing files.
Defaults keep every control socket on loopback.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args

Mode = Literal["echo", "tone", "chain"]
ResponderName = Literal["repeat", "llm", "banking"]
LlmProvider = Literal["llama", "openai"]
TtsProvider = Literal["piper", "elevenlabs"]
UnderstandingName = Literal["semantic", "rules"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

MODES: Final[tuple[Mode, ...]] = get_args(Mode)
RESPONDERS: Final[tuple[ResponderName, ...]] = get_args(ResponderName)

# Settings with a fixed set of values: the environment is text, so each is checked when the settings are made.
_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {
    "mode": MODES,
    "responder": RESPONDERS,
    "llm_provider": get_args(LlmProvider),
    "tts_provider": get_args(TtsProvider),
    "understanding": get_args(UnderstandingName),
    "log_level": get_args(LogLevel),
}
# Names Python's logging also accepts, kept working: a level is read in any case, and WARN/FATAL are aliases.
_LOG_LEVEL_ALIASES: Final[Mapping[str, str]] = {"WARN": "WARNING", "FATAL": "CRITICAL"}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    # OpenSIPS B2B node beside us: MI to drive sessions, events to learn about them.
    mi_url: str = "udp:127.0.0.1:8080"
    mi_timeout: float = 2.0
    event_host: str = "127.0.0.1"
    event_port: int = 9999
    event_expire: int = 600
    subscription_check_interval: float = 2.0
    # The dialog-tracked edge proxy, where call state is mirrored with dlg_push_var; empty disables mirroring.
    edge_mi_url: str = ""
    # Media.
    rtp_bind_ip: str = "127.0.0.1"
    rtp_advertised_ip: str = ""
    rtp_port_min: int = 40000
    rtp_port_max: int = 41999
    rtp_timeout: float = 30.0
    nat_latching: bool = False
    jitter_prefetch: int = 2
    # Calls.
    max_calls: int = 200
    max_duration: float = 3600.0
    mode: Mode = "echo"
    # Engine chain (mode "chain"): models from the manifest `make models` writes.
    models_dir: str = ".models"
    responder: ResponderName = "repeat"
    vad_model: str = "silero-vad"
    asr_model: str = "whisper-tiny.en"
    asr_threads: int = 2
    # Qwen2.5 0.5B: 96 % task success in the dialogue evaluation; SmolLM2 (90 %) loads faster, for plumbing.
    llm_model: str = "qwen2.5-0.5b"
    llm_threads: int = 2
    tts_model: str = "piper-joe-medium"
    # Cloud engines in front of the local ones (keys from OPENAI_API_KEY / ELEVENLABS_API_KEY); the local engine
    # takes over, unheard by the caller, when the cloud one fails before its first word.
    llm_provider: LlmProvider = "llama"
    openai_model: str = "gpt-4o-mini"
    tts_provider: TtsProvider = "piper"
    elevenlabs_voice: str = ""
    # The banking responder: reference bank and call records in PostgreSQL, per-call context in Redis.
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/test"
    redis_url: str = "redis://127.0.0.1:6379/0"
    banking_llm: bool = True  # let the LLM understand what the rules and the semantic understander do not
    # "semantic": sentence embeddings against banking/content/*.yaml in a Qdrant index; "rules": the fast path only.
    understanding: UnderstandingName = "semantic"
    embed_model: str = "minilm-l6"
    vectors_path: str = ".vectors"  # the embedded Qdrant's folder (one process at a time)
    vectors_url: str = ""  # a Qdrant server instead ("http://127.0.0.1:6333"), shared by every node
    # Seconds of silence (no speech, no key) after the bot finished a turn before it asks again; 0 disables.
    no_input_s: float = 8.0
    journal_spool_dir: str = ".spool/journal"  # call records wait here while PostgreSQL is unreachable
    echo_delay_ms: int = 200
    # >0: send 180 Ringing and answer this much later (lets a caller's CANCEL be answered with 487).
    answer_delay_ms: int = 0
    transfer_uri: str = "sip:agents@127.0.0.1"
    node_id: str = "avc-1"
    # Take back (re-INVITE, then the app resumes) calls a lost connector left answered on the node; off: BYE them.
    recover_stranded: bool = True
    # Operations.
    http_host: str = "127.0.0.1"
    http_port: int = 9090
    log_level: LogLevel = "INFO"
    log_json: bool = True
    drain_timeout: float = 300.0
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def advertised_ip(self) -> str:
        return self.rtp_advertised_ip or self.rtp_bind_ip

    def __post_init__(self) -> None:
        level = str(self.log_level).upper()
        object.__setattr__(self, "log_level", _LOG_LEVEL_ALIASES.get(level, level))
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"AVC_{name.upper()}={value!r} is not one of {', '.join(allowed)}")
        if self.rtp_port_min > self.rtp_port_max:
            raise ConfigError("AVC_RTP_PORT_MIN is above AVC_RTP_PORT_MAX")
        for name in ("rtp_bind_ip", "rtp_advertised_ip"):
            value = getattr(self, name)
            if value:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    raise ConfigError(
                        f"AVC_{name.upper()}={value!r} must be an IP address (SDP carries no names)"
                    ) from None
        if self.max_calls < 1:
            raise ConfigError("AVC_MAX_CALLS must be at least 1")
        if self.no_input_s < 0:
            raise ConfigError("AVC_NO_INPUT_S must be 0 (never ask again) or a number of seconds")


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments, `export ` prefixes and matching quotes are accepted."""
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f".env line {lineno}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _convert(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind in (bool, "bool"):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"AVC_{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw


def load_settings(environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> Settings:
    env: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        env.update(parse_dotenv(dotenv.read_text()))
    env.update(os.environ if environ is None else environ)
    kwargs: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "extra":
            continue
        raw = env.get(f"AVC_{f.name.upper()}")
        if raw is not None:
            kwargs[f.name] = _convert(f.name, raw, f.type)
    kwargs["extra"] = {k: v for k, v in env.items() if k.startswith("AVC_")}
    return Settings(**kwargs)
