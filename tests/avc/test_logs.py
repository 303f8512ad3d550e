import json
import logging

from avc.logs import CALL_ID, CALL_KEY, JsonFormatter


def _format(record: logging.LogRecord) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def test_json_lines_carry_the_call_key_and_call_id_of_the_task() -> None:
    record = logging.LogRecord("avc.call", logging.INFO, __file__, 1, "call ended: %s", ("caller_hangup",), None)
    key_token, id_token = CALL_KEY.set("B2B.1.2.3"), CALL_ID.set("1-5251@127.0.0.1")
    try:
        entry = _format(record)
    finally:
        CALL_KEY.reset(key_token)
        CALL_ID.reset(id_token)
    assert entry["msg"] == "call ended: caller_hangup"
    assert entry["call_key"] == "B2B.1.2.3" and entry["call_id"] == "1-5251@127.0.0.1"
    assert entry["level"] == "INFO" and entry["logger"] == "avc.call"


def test_json_lines_include_extra_fields_and_omit_absent_call_ids() -> None:
    record = logging.LogRecord("avc", logging.WARNING, __file__, 1, "x", (), None)
    record.port = 40000
    entry = _format(record)
    assert entry["port"] == 40000
    assert "call_key" not in entry
