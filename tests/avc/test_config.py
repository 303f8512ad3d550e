from pathlib import Path

import pytest

from avc.config import MODES, RESPONDERS, ConfigError, load_settings, parse_dotenv


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# node settings\nAVC_MAX_CALLS=10\nexport AVC_MODE='tone'\nAVC_NAT_LATCHING=yes\n")
    settings = load_settings({"AVC_MAX_CALLS": "42"}, dotenv)
    assert settings.max_calls == 42
    assert settings.mode == "tone"
    assert settings.nat_latching is True


def test_defaults_keep_control_sockets_on_loopback() -> None:
    settings = load_settings({}, None)
    assert settings.event_host == "127.0.0.1"
    assert settings.http_host == "127.0.0.1"
    assert settings.mi_url.startswith("udp:127.0.0.1:")
    assert settings.rtp_bind_ip == "127.0.0.1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AVC_MAX_CALLS": "many"}, "AVC_MAX_CALLS"),
        ({"AVC_MODE": "karaoke"}, "AVC_MODE"),
        ({"AVC_NAT_LATCHING": "perhaps"}, "AVC_NAT_LATCHING"),
        ({"AVC_RTP_PORT_MIN": "50000", "AVC_RTP_PORT_MAX": "40000"}, "AVC_RTP_PORT_MIN"),
        ({"AVC_NO_INPUT_S": "-1"}, "AVC_NO_INPUT_S"),
        ({"AVC_RESPONDER": "oracle"}, "AVC_RESPONDER"),
        ({"AVC_LLM_PROVIDER": "gpt"}, "AVC_LLM_PROVIDER='gpt' is not one of llama, openai"),
        ({"AVC_TTS_PROVIDER": "espeak"}, "AVC_TTS_PROVIDER='espeak' is not one of piper, elevenlabs"),
        ({"AVC_LOG_LEVEL": "LOUD"}, "AVC_LOG_LEVEL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, None)


def test_dotenv_without_equals_sign_is_an_error() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_dotenv("A=1\nnot a setting\n")


def test_advertised_ip_defaults_to_bind_ip() -> None:
    assert load_settings({"AVC_RTP_BIND_IP": "127.0.0.2"}, None).advertised_ip == "127.0.0.2"
    assert load_settings({"AVC_RTP_ADVERTISED_IP": "192.0.2.10"}, None).advertised_ip == "192.0.2.10"


def test_rtp_addresses_must_be_ip_literals() -> None:
    with pytest.raises(ConfigError, match="AVC_RTP_ADVERTISED_IP"):
        load_settings({"AVC_RTP_ADVERTISED_IP": "media.example.net"}, None)


def test_choices_are_the_literal_types_values() -> None:
    assert MODES == ("echo", "tone", "chain") and RESPONDERS == ("repeat", "llm", "banking")
    settings = load_settings({"AVC_MODE": "chain", "AVC_RESPONDER": "banking", "AVC_TTS_PROVIDER": "elevenlabs"}, None)
    assert (settings.mode, settings.responder, settings.tts_provider) == ("chain", "banking", "elevenlabs")


@pytest.mark.parametrize(("raw", "level"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("WARN", "WARNING")])
def test_log_level_is_read_as_logging_reads_it(raw: str, level: str) -> None:
    assert load_settings({"AVC_LOG_LEVEL": raw}, None).log_level == level
