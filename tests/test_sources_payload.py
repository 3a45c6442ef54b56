"""Tests for the value policy and JSON payload parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iotwarden.errors import InvalidConfigError
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.payload import (
    MetricValueError,
    PayloadParser,
    RecordError,
    ValuePolicy,
    decode_json_object,
    device_from_topic,
    flatten,
    split_topic_line,
    unwrap_envelope,
)

TS = "2024-05-01T10:00:00Z"
MAY_1_10H_UTC = 1714557600.0


# Value policy.


@pytest.mark.parametrize(
    ("text", "expected"),
    [("21.5", 21.5), (" 618 ", 618.0), ("-3", -3.0), ("1e3", 1000.0), ("", None), ("null", None), ("None", None)],
)
def test_policy_text_values(text: str, expected: float | None) -> None:
    assert ValuePolicy().from_text("t", text) == expected


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_policy_non_finite_text_is_missing(text: str) -> None:
    with pytest.raises(MetricValueError, match="non-finite value") as caught:
        ValuePolicy().from_text("t", text)
    assert caught.value.invalid is False


@pytest.mark.parametrize("text", ["not available", "Unavailable", "n/a", "off", "-", "ERROR"])
def test_policy_sentinel_text_is_missing(text: str) -> None:
    with pytest.raises(MetricValueError, match="sentinel value") as caught:
        ValuePolicy().from_text("t", text)
    assert caught.value.invalid is False


def test_policy_boolean_text_invalid() -> None:
    with pytest.raises(MetricValueError, match="boolean 'true' is not a number") as caught:
        ValuePolicy().from_text("t", "true")
    assert caught.value.invalid is True


def test_policy_decimal_comma_hint() -> None:
    with pytest.raises(MetricValueError) as caught:
        ValuePolicy().from_text("co2", "6,20e2")
    assert str(caught.value) == (
        "'6,20e2' is not a number: it contains a comma but the decimal separator is '.'; "
        "if the source writes decimal commas, set decimal=','"
    )


def test_policy_plain_text_invalid() -> None:
    with pytest.raises(MetricValueError, match="^'abc' is not a number$"):
        ValuePolicy().from_text("t", "abc")


@pytest.mark.parametrize(
    ("text", "expected"), [("21,5", 21.5), ("1.234,5", 1234.5), ("1.240,0", 1240.0), ("-0,5", -0.5)]
)
def test_policy_decimal_comma_with_thousands(text: str, expected: float) -> None:
    policy = ValuePolicy(decimal=",", thousands=".")
    assert policy.from_text("t", text) == expected


def test_policy_thousands_grouping_checked() -> None:
    with pytest.raises(MetricValueError, match="does not group digits in threes"):
        ValuePolicy(decimal=",", thousands=".").from_text("t", "1.2345")


def test_policy_point_rejected_under_decimal_comma() -> None:
    with pytest.raises(MetricValueError, match="contains '.' but the decimal separator is ','"):
        ValuePolicy(decimal=",").from_text("t", "21.4")


def test_policy_sentinel_code_per_field() -> None:
    policy = ValuePolicy(sentinel_values={"energy_kwh": [32768]})
    with pytest.raises(MetricValueError, match="sentinel code configured for this field"):
        policy.from_json("energy_kwh", 32768.0)
    assert policy.from_json("other", 32768.0) == 32768.0


def test_policy_json_true_is_not_one() -> None:
    with pytest.raises(MetricValueError, match="boolean true is not a number"):
        ValuePolicy().from_json("co2", True)


def test_policy_json_quoted_number_accepted() -> None:
    assert ValuePolicy().from_json("co2", "618") == 618.0


def test_policy_json_null_is_missing() -> None:
    assert ValuePolicy().from_json("t", None) is None


def test_policy_json_huge_integer_invalid() -> None:
    with pytest.raises(MetricValueError, match="too large for a float"):
        ValuePolicy().from_json("t", 10**400)


def test_policy_json_list_invalid() -> None:
    with pytest.raises(MetricValueError, match="a JSON array is not a number"):
        ValuePolicy().from_json("t", [1, 2])


def test_policy_invalid_decimal_option() -> None:
    with pytest.raises(InvalidConfigError, match="invalid decimal ';'"):
        ValuePolicy(decimal=";")


def test_policy_same_separators_rejected() -> None:
    with pytest.raises(InvalidConfigError, match="thousands and decimal are both ','"):
        ValuePolicy(decimal=",", thousands=",")


# JSON decoding.


def test_decode_rejects_oversize_before_parsing() -> None:
    payload = b"{" + b" " * 300 + b"}"
    with pytest.raises(RecordError, match="payload too large: 302 bytes, over the limit of 100 bytes"):
        decode_json_object(payload, max_bytes=100)


def test_decode_rejects_invalid_utf8() -> None:
    with pytest.raises(RecordError, match=r"payload is not valid UTF-8: invalid start byte \(byte 0xff at offset 0\)"):
        decode_json_object(b"\xff\xfe\x00{")


@pytest.mark.parametrize(("payload", "kind"), [(b"[1,2,3]", "array"), (b'"hello"', "string"), (b"42", "number")])
def test_decode_rejects_non_objects(payload: bytes, kind: str) -> None:
    with pytest.raises(RecordError, match=f"payload is a JSON {kind}, expected an object"):
        decode_json_object(payload)


def test_decode_reports_truncated_json() -> None:
    with pytest.raises(RecordError, match="^truncated JSON") as caught:
        decode_json_object(b'{"device_id":"dev-201","ts":"2024-05-01T10:0')
    assert caught.value.code == "truncated_json"


def test_decode_reports_position_of_invalid_json() -> None:
    with pytest.raises(RecordError, match=r"invalid JSON: Expecting value \(char 6\)"):
        decode_json_object(b'{"a": nan, "b": 1}', tolerant=False)


def test_decode_tolerant_maps_bare_nan() -> None:
    obj = decode_json_object(b'{"a": nan, "b": 1, "c": -inf}')
    assert obj["b"] == 1


def test_decode_tolerant_leaves_strings_alone() -> None:
    obj = decode_json_object(b'{"status": "nan inf", "a": nan}')
    assert obj["status"] == "nan inf"


def test_decode_skips_byte_order_mark() -> None:
    assert decode_json_object(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_flatten_nested_objects() -> None:
    nested = {"sensors": {"s1": {"temperature": 17.1}, "s2": 3}, "x": 1}
    assert flatten(nested) == {"sensors.s1.temperature": 17.1, "sensors.s2": 3, "x": 1}


def test_split_topic_line() -> None:
    assert split_topic_line('fleet/dev-1/telemetry {"a": 1}\n') == ("fleet/dev-1/telemetry", '{"a": 1}')


def test_split_topic_line_without_payload() -> None:
    with pytest.raises(RecordError, match="no space after the topic"):
        split_topic_line("fleet/dev-1/telemetry")


def test_device_from_topic_segment() -> None:
    assert device_from_topic("fleet/dev-1/telemetry", 1) == "dev-1"


def test_device_from_topic_missing_segment() -> None:
    assert device_from_topic("fleet", 1) is None


def test_unwrap_envelope_base64() -> None:
    envelope = unwrap_envelope({"topic": "a/b", "payload_b64": "eyJhIjoxfQ==", "recv_at": TS})
    assert envelope is not None
    assert envelope.payload == b'{"a":1}'
    assert envelope.received == TS


def test_unwrap_envelope_ignores_plain_records() -> None:
    assert unwrap_envelope({"device_id": "d", "topic": "x"}) is None


def test_unwrap_envelope_oversize_checked_before_decoding() -> None:
    with pytest.raises(RecordError, match="payload too large: 1500 bytes, over the limit of 1024 bytes"):
        unwrap_envelope({"topic": "a/b", "payload_b64": "A" * 2000}, max_bytes=1024)


# PayloadParser.


def _parse(parser: PayloadParser, payload: object, **kwargs: object) -> tuple[Observation, list[FieldIssue]]:
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return parser.parse(data, source="test", line=1, **kwargs)  # type: ignore[arg-type]


def test_parser_builds_observation() -> None:
    observation, issues = _parse(PayloadParser(), {"device_id": "d1", "ts": TS, "t": 21.5, "kind": "thermo"})
    assert observation.device == "d1"
    assert observation.time == MAY_1_10H_UTC
    assert observation.metrics == {"t": 21.5}
    assert observation.attributes == {"kind": "thermo"}
    assert issues == []


def test_parser_nan_field_dropped_rest_kept() -> None:
    payload = b'{"device_id":"d1","ts":"2024-05-01T10:00:00Z","temperature":NaN,"humidity":45.1}'
    observation, issues = _parse(PayloadParser(), payload)
    assert observation.metrics == {"humidity": 45.1}
    assert [issue.field for issue in issues] == ["temperature"]
    assert issues[0].reason == "non-finite value NaN; the field is treated as missing"


def test_parser_nested_bare_nan_keeps_healthy_sensors() -> None:
    payload = (
        b'{"device_id":"d5","ts":"2024-05-01T10:01:00Z","sensors":{"s1":{"temperature":17.1},'
        b'"s2":{"temperature":nan},"s3":{"temperature":10.0}}}'
    )
    observation, issues = _parse(PayloadParser(), payload)
    assert observation.metrics == {"sensors.s1.temperature": 17.1, "sensors.s3.temperature": 10.0}
    assert [issue.field for issue in issues] == ["sensors.s2.temperature"]


def test_parser_all_non_finite_still_sign_of_life() -> None:
    observation, issues = _parse(PayloadParser(), b'{"device_id":"d1","ts":"2024-05-01T10:00:00Z","t":nan,"h":nan}')
    assert observation.metrics == {}
    assert len(issues) == 2


def test_parser_known_metric_sentinel_reported() -> None:
    parser = PayloadParser()
    _parse(parser, {"device_id": "d", "ts": TS, "rh": 55.0})
    observation, issues = _parse(parser, {"device_id": "d", "ts": TS, "rh": "off", "co2": 615})
    assert observation.metrics == {"co2": 615.0}
    assert issues[0].reason == "sentinel value 'off'; the field is treated as missing"


def test_parser_boolean_in_metric_field_reported() -> None:
    parser = PayloadParser()
    _parse(parser, {"device_id": "d", "ts": TS, "co2": 612, "e": 1.0})
    observation, issues = _parse(parser, {"device_id": "d", "ts": TS, "co2": True, "e": 1.1})
    assert "co2" not in observation.metrics
    assert issues[0].reason == "boolean true is not a number"


def test_parser_boolean_in_new_field_is_attribute() -> None:
    observation, _ = _parse(PayloadParser(), {"device_id": "d", "ts": TS, "online": True, "t": 1.0})
    assert observation.attributes == {"online": "true"}


def test_parser_only_metric_invalid_rejects_record() -> None:
    parser = PayloadParser()
    _parse(parser, {"device_id": "d", "ts": TS, "co2": 612})
    with pytest.raises(RecordError) as caught:
        _parse(parser, {"device_id": "d", "ts": TS, "co2": "6,20e2"})
    assert caught.value.field == "co2"
    assert caught.value.reason.startswith("no valid metric in the record: '6,20e2' is not a number")


def test_parser_missing_device_rejected() -> None:
    with pytest.raises(RecordError, match="^missing device id: no field device_id, deviceid, device"):
        _parse(PayloadParser(), {"ts": TS, "t": 1.0})


def test_parser_missing_time_rejected() -> None:
    with pytest.raises(RecordError, match="^missing time: no field ts, timestamp"):
        _parse(PayloadParser(), {"device_id": "d", "t": 1.0})


def test_parser_invalid_time_names_field_and_value() -> None:
    with pytest.raises(RecordError, match=r"^invalid time: time 'soon' is not ISO 8601") as caught:
        _parse(PayloadParser(), {"device_id": "d", "ts": "soon", "t": 1.0})
    assert caught.value.field == "ts"


def test_parser_receive_time_fallback() -> None:
    observation, _ = _parse(PayloadParser(), {"device_id": "d", "t": 1.0}, fallback_time=TS)
    assert observation.time == MAY_1_10H_UTC


def test_parser_epoch_milliseconds_time() -> None:
    observation, _ = _parse(PayloadParser(), {"device_id": "d", "ts": 1714557600000, "t": 1.0})
    assert observation.time == MAY_1_10H_UTC


def test_parser_topic_device_wins_and_is_reported() -> None:
    observation, issues = _parse(PayloadParser(), {"device_id": "other", "ts": TS, "t": 1.0}, device="dev-1")
    assert observation.device == "dev-1"
    assert issues[0].reason == "payload names device 'other' but the topic names 'dev-1'; the topic is used"


def test_parser_explicit_metrics_only() -> None:
    parser = PayloadParser(metrics=["t"])
    observation, _ = _parse(parser, {"device_id": "d", "ts": TS, "t": 1.0, "rssi": -70, "kind": "x"})
    assert observation.metrics == {"t": 1.0}
    assert observation.attributes == {"kind": "x"}


def test_parse_items_turns_errors_into_rejections() -> None:
    counters = SourceCounters()
    items = PayloadParser().parse_items(b"[1]", source="mqtt://localhost/a", line=7, counters=counters)
    assert items == [Rejection("mqtt://localhost/a", 7, None, "payload is a JSON array, expected an object", raw="[1]")]
    assert counters.rejections == {"not_object": 1}


# Shared bad-input cases: MQTT recordings as "<topic> <payload>" lines.


def _parse_topic_file(path: Path) -> list[Observation | FieldIssue | Rejection]:
    parser = PayloadParser()
    items: list[Observation | FieldIssue | Rejection] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        topic, payload = split_topic_line(text)
        device = device_from_topic(topic, 1)
        items += parser.parse_items(payload.encode(), source=f"{path.name}#{topic}", line=number, device=device)
    return items


def _observations(items: list[Observation | FieldIssue | Rejection], device: str) -> list[Observation]:
    return [item for item in items if isinstance(item, Observation) and item.device == device]


def test_case01_baselines_hold_only_finite_values(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-01.mqtt.txt")
    dev1 = [obs.metrics.get("temperature") for obs in _observations(items, "dev-001")]
    dev2 = [obs.metrics.get("temperature") for obs in _observations(items, "dev-002")]
    assert [value for value in dev1 if value is not None] == [21.4, 21.5]
    assert [value for value in dev2 if value is not None] == [19.8, 19.9]


def test_case01_non_finite_fields_reported(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-01.mqtt.txt")
    issues = {(issue.line, issue.field) for issue in items if isinstance(issue, FieldIssue)}
    assert issues == {
        (3, "temperature"),
        (3, "humidity"),
        (4, "temperature"),
        (5, "temperature"),
        (6, "temperature"),
        (7, "sensors.s2.temperature"),
    }


def test_case01_healthy_fields_survive(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-01.mqtt.txt")
    assert _observations(items, "dev-002")[1].metrics == {"humidity": 45.1}
    assert _observations(items, "dev-005")[0].metrics == {
        "sensors.s1.temperature": 17.1,
        "sensors.s3.temperature": 10.0,
    }
    assert _observations(items, "dev-006")[0].metrics == {"humidity": 41.0}


def test_case01_bare_nan_line_counts_as_sign_of_life(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-01.mqtt.txt")
    assert [obs.line for obs in _observations(items, "dev-001")] == [1, 3, 9]


def test_case01_no_rejections(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-01.mqtt.txt")
    assert [item for item in items if isinstance(item, Rejection)] == []


def test_case01_strict_mode_rejects_bare_nan_with_position(cases_dir: Path) -> None:
    line = (cases_dir / "case-01.mqtt.txt").read_text(encoding="utf-8").splitlines()[2]
    _, payload = split_topic_line(line)
    with pytest.raises(RecordError, match=r"invalid JSON: Expecting value \(char 65\)"):
        PayloadParser(tolerant=False).parse(payload.encode(), source="case-01", line=3)


def test_case02_sentinels_missing_per_field(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-02.mqtt.txt")
    observations = _observations(items, "dev-011")
    assert [obs.metrics.get("rh") for obs in observations] == [55.0, None, None, None, None, 55.4, 55.3]
    assert observations[1].metrics == {"co2": 615.0, "energy_kwh": 1520.5}


def test_case02_quoted_number_accepted(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-02.mqtt.txt")
    assert _observations(items, "dev-011")[2].metrics["co2"] == 618.0


def test_case02_decimal_comma_names_line_and_field(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-02.mqtt.txt")
    issues = [item for item in items if isinstance(item, FieldIssue) and item.field == "co2"]
    assert (issues[0].line, issues[0].reason.split(":")[0]) == (4, "'6,20e2' is not a number")


def test_case02_true_is_not_a_number(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-02.mqtt.txt")
    issues = [item for item in items if isinstance(item, FieldIssue) and item.line == 5 and item.field == "co2"]
    assert issues[0].reason == "boolean true is not a number"
    assert "co2" not in _observations(items, "dev-011")[4].metrics


def test_case02_rh_sentinels_reported(cases_dir: Path) -> None:
    items = _parse_topic_file(cases_dir / "case-02.mqtt.txt")
    lines = [item.line for item in items if isinstance(item, FieldIssue) and item.field == "rh"]
    # Line 4 has "rh": "" which is missing without a report.
    assert lines == [2, 3, 5]


def test_case02_sentinel_code_configured(cases_dir: Path) -> None:
    parser = PayloadParser(policy=ValuePolicy(sentinel_values={"energy_kwh": [32768.0]}))
    line = (cases_dir / "case-02.mqtt.txt").read_text(encoding="utf-8").splitlines()[5]
    topic, payload = split_topic_line(line)
    observation, issues = parser.parse(payload, source="case-02", line=6, device=device_from_topic(topic, 1))
    assert "energy_kwh" not in observation.metrics
    assert issues[0].field == "energy_kwh"
