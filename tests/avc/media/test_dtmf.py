"""RFC 4733 telephone-events and SIP INFO DTMF bodies."""

from __future__ import annotations

import re

import pytest

from avc.media.dtmf import (
    DIGITS,
    DtmfError,
    DtmfEvent,
    Rfc4733Receiver,
    Rfc4733Sender,
    decode_event_payload,
    digit_for_event,
    dtmf_relay_body,
    encode_event_payload,
    event_for_digit,
    parse_dtmf_info,
    parse_dtmf_relay,
)
from tests.support.captures import CAPTURE_DIR

FIXTURES = CAPTURE_DIR


def offered_events() -> range:
    """The telephone-event codes the real SIPp caller offered through OpenSIPS (`a=fmtp:101 0-16`)."""
    offer = (FIXTURES / "02_call1_caller_hangs_up.txt").read_text()
    match = re.search(r"a=rtpmap:(\d+) telephone-event/8000\\r\\na=fmtp:\1 (\d+)-(\d+)", offer)
    assert match is not None
    return range(int(match[2]), int(match[3]) + 1)


def play(receiver: Rfc4733Receiver, timestamp: int, packets: list[tuple[bytes, bool]]) -> list[DtmfEvent]:
    events = (receiver.feed(timestamp, payload, marker) for payload, marker in packets)
    return [event for event in events if event is not None]


# -- payload format ---------------------------------------------------------------------------------------


def test_payload_layout_is_event_end_bit_volume_and_big_endian_duration() -> None:
    assert encode_event_payload(5, True, 10, 800) == b"\x05\x8a\x03\x20"
    assert encode_event_payload(11, False, 63, 0xFFFF) == b"\x0b\x3f\xff\xff"
    assert decode_event_payload(b"\x05\x8a\x03\x20") == (5, True, 10, 800)


def test_decoding_ignores_the_reserved_bit_and_trailing_padding() -> None:
    assert decode_event_payload(b"\x01\x4a\x00\xa0\x00\x00") == (1, False, 10, 160)


@pytest.mark.parametrize("payload", [b"", b"\x05", b"\x05\x8a\x03"])
def test_short_payloads_raise_dtmf_error_which_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(DtmfError, match="needs 4"):
        decode_event_payload(payload)
    assert issubclass(DtmfError, ValueError)


def test_encoding_rejects_fields_that_do_not_fit() -> None:
    for event, volume, duration in ((256, 10, 0), (1, 64, 0), (1, 10, 0x10000), (-1, 10, 0)):
        with pytest.raises(ValueError):
            encode_event_payload(event, False, volume, duration)


def test_digits_are_the_rfc4733_event_codes_0_to_15() -> None:
    assert [event_for_digit(d) for d in DIGITS] == list(range(16))
    assert (event_for_digit("*"), event_for_digit("#"), event_for_digit("D")) == (10, 11, 15)
    assert digit_for_event(16) is None
    with pytest.raises(ValueError):
        event_for_digit("E")


# -- sender -------------------------------------------------------------------------------------------------


def test_a_100ms_digit_is_four_updates_then_three_identical_end_packets() -> None:
    plan = Rfc4733Sender().packets("5")
    decoded = [(decode_event_payload(payload), marker) for payload, marker in plan]
    assert decoded == [
        ((5, False, 10, 160), True),
        ((5, False, 10, 320), False),
        ((5, False, 10, 480), False),
        ((5, False, 10, 640), False),
        ((5, True, 10, 800), False),
        ((5, True, 10, 800), False),
        ((5, True, 10, 800), False),
    ]


def test_the_shortest_digit_still_starts_with_a_marked_update() -> None:
    plan = Rfc4733Sender().packets("#", duration_ms=40, volume=0)
    assert [decode_event_payload(p) for p, _ in plan] == [(11, False, 0, 160)] + [(11, True, 0, 320)] * 3
    assert [marker for _, marker in plan] == [True, False, False, False]


def test_durations_that_are_not_a_multiple_of_20ms_end_on_the_exact_duration() -> None:
    plan = Rfc4733Sender().packets("A", duration_ms=90)
    assert [decode_event_payload(p)[3] for p, _ in plan] == [160, 320, 480, 640, 720, 720, 720]


def test_a_16khz_event_clock_scales_the_durations() -> None:
    plan = Rfc4733Sender(clock_rate=16000).packets("1", duration_ms=60)
    assert [decode_event_payload(p)[3] for p, _ in plan] == [320, 640, 960, 960, 960]


def test_a_ptime_longer_than_the_digit_puts_the_marker_on_the_first_end_packet() -> None:
    plan = Rfc4733Sender(ptime_ms=60).packets("2", duration_ms=40)
    assert [marker for _, marker in plan] == [True, False, False]
    assert all(decode_event_payload(p)[1] for p, _ in plan)


@pytest.mark.parametrize(
    ("digit", "duration_ms", "volume"),
    [("E", 100, 10), ("55", 100, 10), ("", 100, 10), ("5", 39, 10), ("5", 8192, 10), ("5", 100, 64)],
)
def test_the_sender_rejects_invalid_digits_durations_and_volumes(digit: str, duration_ms: int, volume: int) -> None:
    with pytest.raises(ValueError):
        Rfc4733Sender().packets(digit, duration_ms, volume)


# -- receiver -------------------------------------------------------------------------------------------------


def test_a_sent_digit_is_received_exactly_once_despite_the_repeated_end_packets() -> None:
    receiver = Rfc4733Receiver()
    events = play(receiver, 4000, Rfc4733Sender().packets("7", 120))
    assert events == [DtmfEvent("7", 120, "rfc4733")]


def test_the_digit_is_reported_on_the_first_end_packet() -> None:
    receiver = Rfc4733Receiver()
    plan = Rfc4733Sender().packets("9")
    reports = [receiver.feed(1600, payload, marker) for payload, marker in plan]
    assert [r is not None for r in reports] == [False, False, False, False, True, False, False]


def test_every_digit_the_real_caller_offered_is_received_and_flash_is_ignored() -> None:
    receiver = Rfc4733Receiver()
    received: list[str] = []
    for index, event in enumerate(offered_events()):
        start = [(encode_event_payload(event, False, 10, 160), True)]
        ends = [(encode_event_payload(event, True, 10, 400), False)] * 3
        received += [e.digit for e in play(receiver, 1000 + index * 1600, start + ends)]
    assert offered_events() == range(17)  # 16 is flash, which SIPp offers and we must survive
    assert "".join(received) == DIGITS


def test_consecutive_presses_of_the_same_digit_are_two_events() -> None:
    receiver = Rfc4733Receiver()
    plan = Rfc4733Sender().packets("1")
    assert len(play(receiver, 8000, plan) + play(receiver, 9600, plan)) == 2


def test_an_open_digit_whose_end_packets_were_lost_is_reported_when_the_next_one_starts() -> None:
    receiver = Rfc4733Receiver()
    first = [packet for packet in Rfc4733Sender().packets("4") if not decode_event_payload(packet[0])[1]]
    assert play(receiver, 100, first) == []
    start_of_next = Rfc4733Sender().packets("2")[0]
    assert receiver.feed(2000, *start_of_next) == DtmfEvent("4", 80, "rfc4733")
    assert play(receiver, 2000, Rfc4733Sender().packets("2")[1:]) == [DtmfEvent("2", 100, "rfc4733")]


def test_a_lost_end_followed_by_a_lone_end_packet_reports_both_digits_in_order() -> None:
    receiver = Rfc4733Receiver()
    assert receiver.feed(100, encode_event_payload(3, False, 10, 160), True) is None
    end_of_next = encode_event_payload(6, True, 10, 400)
    assert receiver.feed(5000, end_of_next, False) == DtmfEvent("3", 20, "rfc4733")
    assert receiver.feed(5000, end_of_next, False) == DtmfEvent("6", 50, "rfc4733")
    assert receiver.feed(5000, end_of_next, False) is None


def test_flash_after_an_unfinished_digit_closes_that_digit_and_is_itself_ignored() -> None:
    receiver = Rfc4733Receiver()
    receiver.feed(100, encode_event_payload(8, False, 10, 320), True)
    assert receiver.feed(900, encode_event_payload(16, False, 10, 160), True) == DtmfEvent("8", 40, "rfc4733")
    assert receiver.feed(900, encode_event_payload(16, True, 10, 800), False) is None


def test_late_updates_after_the_end_are_ignored() -> None:
    receiver = Rfc4733Receiver()
    plan = Rfc4733Sender().packets("0")
    assert len(play(receiver, 300, plan)) == 1
    assert receiver.feed(300, plan[2][0], False) is None


def test_reordered_updates_never_shrink_the_duration() -> None:
    receiver = Rfc4733Receiver()
    receiver.feed(0, encode_event_payload(1, False, 10, 480), False)
    receiver.feed(0, encode_event_payload(1, False, 10, 160), True)
    assert receiver.expire(480 + 8000) == DtmfEvent("1", 60, "rfc4733")


def test_a_sender_reusing_a_timestamp_with_a_new_marker_starts_a_new_digit() -> None:
    receiver = Rfc4733Receiver()
    assert len(play(receiver, 777, Rfc4733Sender().packets("5"))) == 1
    assert play(receiver, 777, Rfc4733Sender().packets("6")) == [DtmfEvent("6", 100, "rfc4733")]


def test_expire_reports_a_digit_only_after_its_updates_stop_for_500ms() -> None:
    receiver = Rfc4733Receiver()
    receiver.feed(1000, encode_event_payload(2, False, 10, 320), True)
    assert receiver.expire(1000 + 320 + 3999) is None
    assert receiver.expire(500) is None  # a "now" before the last update is not a timeout
    assert receiver.expire(1000 + 320 + 4000) == DtmfEvent("2", 40, "rfc4733")
    assert receiver.expire(1000 + 320 + 8000) is None
    assert receiver.feed(1000, encode_event_payload(2, True, 10, 400), False) is None


def test_events_across_the_32_bit_timestamp_wrap_are_tracked() -> None:
    receiver = Rfc4733Receiver()
    start = 0xFFFFFF00
    receiver.feed(start, encode_event_payload(9, False, 10, 160), True)
    assert receiver.expire((start + 160 + 3999) & 0xFFFFFFFF) is None
    assert receiver.expire((start + 160 + 4000) & 0xFFFFFFFF) == DtmfEvent("9", 20, "rfc4733")


def test_a_key_held_past_the_duration_field_limit_is_one_long_digit() -> None:
    receiver = Rfc4733Receiver()
    # RFC 4733 §2.5.1.3: at 0xFFFF the sender starts a new segment at the old timestamp + 0xFFFF.
    assert receiver.feed(50, encode_event_payload(0, False, 10, 0xFF00), True) is None
    assert receiver.feed(50, encode_event_payload(0, False, 10, 0xFFFF), False) is None
    assert receiver.feed(50 + 0xFFFF, encode_event_payload(0, False, 10, 160), False) is None
    assert receiver.feed(50, encode_event_payload(0, False, 10, 0xFFFF), False) is None  # late, old segment
    event = receiver.feed(50 + 0xFFFF, encode_event_payload(0, True, 10, 8000), False)
    assert event == DtmfEvent("0", (0xFFFF + 8000) * 1000 // 8000, "rfc4733")


def test_receiver_memory_stays_bounded_over_many_digits() -> None:
    receiver = Rfc4733Receiver()
    plan = Rfc4733Sender().packets("3", 40)
    total = sum(len(play(receiver, 100 + i * 800, plan)) for i in range(2000))
    assert total == 2000
    assert len(receiver._ended) <= 8


def test_a_short_payload_in_the_stream_raises_dtmf_error_and_the_receiver_goes_on() -> None:
    receiver = Rfc4733Receiver()
    with pytest.raises(DtmfError):
        receiver.feed(0, b"\x01\x02", True)
    assert play(receiver, 0, Rfc4733Sender().packets("1")) == [DtmfEvent("1", 100, "rfc4733")]


def test_a_16khz_telephone_event_clock_reports_milliseconds() -> None:
    receiver = Rfc4733Receiver(clock_rate=16000)
    assert play(receiver, 0, Rfc4733Sender(clock_rate=16000).packets("B", 200)) == [DtmfEvent("B", 200, "rfc4733")]


# -- events -----------------------------------------------------------------------------------------------------


def test_an_event_repr_never_shows_the_digit_because_digits_are_pins() -> None:
    event = DtmfEvent("7", 100, "rfc4733")
    assert "7" not in repr(event).replace("rfc4733", "")
    assert repr(event) == "DtmfEvent(duration_ms=100, source='rfc4733')"


@pytest.mark.parametrize(
    ("digit", "duration", "source"),
    [("E", 100, "rfc4733"), ("", 0, "sip-info"), ("1", -1, "sip-info"), ("1", 0, "inband")],
)
def test_invalid_events_cannot_be_constructed(digit: str, duration: int, source: str) -> None:
    with pytest.raises(ValueError):
        DtmfEvent(digit, duration, source)


# -- SIP INFO -------------------------------------------------------------------------------------------------------


def test_a_dtmf_relay_body_is_parsed() -> None:
    assert parse_dtmf_relay("Signal=5\r\nDuration=160\r\n") == DtmfEvent("5", 160, "sip-info")


@pytest.mark.parametrize(
    ("body", "digit", "duration"),
    [
        ("Signal=5\nDuration=160\n", "5", 160),
        ("signal = 8 \r\n DURATION= 250 \r\n", "8", 250),
        ("Signal=10\r\nDuration=100\r\n", "*", 100),
        ("Signal=11\r\nDuration=100\r\n", "#", 100),
        ("Signal=*\r\nDuration=100\r\n", "*", 100),
        ("Signal=a\r\n", "A", 0),
        ("Signal=15\r\nDuration=0", "D", 0),
        ("\r\nSignal=0\r\nX-Vendor=1\r\n", "0", 0),
    ],
)
def test_dtmf_relay_parsing_tolerates_line_ends_spaces_case_and_numeric_star_and_hash(
    body: str, digit: str, duration: int
) -> None:
    assert parse_dtmf_relay(body) == DtmfEvent(digit, duration, "sip-info")


@pytest.mark.parametrize(
    "body",
    [
        "",
        "Duration=160\r\n",
        "Signal=\r\nDuration=160\r\n",
        "Signal=16\r\n",
        "Signal=55\r\n",
        "Signal=E\r\n",
        "Signal=5\r\nDuration=abc\r\n",
        "Signal=5\r\nDuration=-1\r\n",
        "Signal=5\r\nDuration=99999999\r\n",
        "Signal=5\r\nSignal=6\r\n",
        "Signal=5\r\n" + "X=" * 1000,
    ],
)
def test_invalid_dtmf_relay_bodies_raise_dtmf_error(body: str) -> None:
    with pytest.raises(DtmfError):
        parse_dtmf_relay(body)


def test_error_messages_do_not_echo_what_the_caller_keyed() -> None:
    for body in ("Signal=4321\r\n", "Signal=5\r\nDuration=4321x\r\n"):
        with pytest.raises(DtmfError) as caught:
            parse_dtmf_relay(body)
        assert "4321" not in str(caught.value)


def test_sip_info_accepts_both_dtmf_content_types_with_parameters_and_any_case() -> None:
    assert parse_dtmf_info("application/dtmf-relay", "Signal=3\r\nDuration=100\r\n") == DtmfEvent("3", 100, "sip-info")
    assert parse_dtmf_info("Application/DTMF-Relay; charset=utf-8", "Signal=#\n") == DtmfEvent("#", 0, "sip-info")
    assert parse_dtmf_info("application/dtmf", "5") == DtmfEvent("5", 0, "sip-info")
    assert parse_dtmf_info(" APPLICATION/DTMF ", "11\r\n") == DtmfEvent("#", 0, "sip-info")


@pytest.mark.parametrize(
    ("content_type", "body"), [("application/sdp", "v=0\r\n"), ("text/plain", "5"), ("", "5"), ("application/dtmf", "")]
)
def test_sip_info_without_a_dtmf_body_raises_dtmf_error(content_type: str, body: str) -> None:
    with pytest.raises(DtmfError):
        parse_dtmf_info(content_type, body)


def test_relay_bodies_we_send_parse_back_to_the_same_digit() -> None:
    for digit in DIGITS:
        body = dtmf_relay_body(digit, 160)
        assert body == f"Signal={digit}\r\nDuration=160\r\n"
        assert parse_dtmf_info("application/dtmf-relay", body) == DtmfEvent(digit, 160, "sip-info")
    with pytest.raises(ValueError):
        dtmf_relay_body("X", 160)
    with pytest.raises(ValueError):
        dtmf_relay_body("1", 0)
