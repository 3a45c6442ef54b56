"""Tests for the file readers: CSV, JSON lines and MQTT recordings."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from iotwarden.errors import InvalidConfigError, IotwardenError
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.files import read_records

MAY_1_10H_UTC = 1714557600.0
HEADER = "ts,device_id,device_type,temperature_c,humidity\n"


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def _read(path: Path | str, **options: Any) -> list[Observation | FieldIssue | Rejection]:
    return list(read_records(path, **options))


def _observations(items: list[Any]) -> list[Observation]:
    return [item for item in items if isinstance(item, Observation)]


def _rejections(items: list[Any]) -> list[Rejection]:
    return [item for item in items if isinstance(item, Rejection)]


def _issues(items: list[Any]) -> list[FieldIssue]:
    return [item for item in items if isinstance(item, FieldIssue)]


# CSV basics.


def test_csv_roles_guessed(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", HEADER + "2024-05-01T10:00:00Z,dev-1,thermostat,21.5,40\n")
    [observation] = _read(path)
    assert observation == Observation(
        "dev-1", MAY_1_10H_UTC, {"temperature_c": 21.5, "humidity": 40.0}, {"device_type": "thermostat"}, str(path), 2
    )


def test_csv_lines_are_physical(tmp_path: Path) -> None:
    text = HEADER + "2024-05-01T10:00:00Z,dev-1,t,1,2\n\n2024-05-01T10:01:00Z,dev-1,t,1,2\n"
    path = _write(tmp_path, "a.csv", text)
    assert [item.line for item in _read(path)] == [2, 4]


def test_csv_gzip_detected_by_magic_bytes(tmp_path: Path) -> None:
    data = gzip.compress((HEADER + "2024-05-01T10:00:00Z,dev-1,t,21.5,40\n").encode())
    path = _write(tmp_path, "data.csv", data)
    assert _observations(_read(path))[0].metrics == {"temperature_c": 21.5, "humidity": 40.0}


def test_csv_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (HEADER + "2024-05-01T10:00:00Z,dev-1,t,21.5,40\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    [observation] = _read("-")
    assert observation.source == "<stdin>"
    assert observation.device == "dev-1"


def test_csv_byte_order_mark_stripped(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "\ufefftimestamp,device_id,t\n2024-05-01T10:00:00Z,d,1\n")
    assert _observations(_read(path))[0].time == MAY_1_10H_UTC


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_csv_delimiter_sniffed(tmp_path: Path, delimiter: str) -> None:
    text = delimiter.join(["ts", "device_id", "t"]) + "\n" + delimiter.join(["2024-05-01T10:00:00Z", "d", "1.5"]) + "\n"
    path = _write(tmp_path, "a.csv", text)
    assert _observations(_read(path))[0].metrics == {"t": 1.5}


def test_csv_field_count_mismatch_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,t\n2024-05-01T10:00:00Z,d,21,5\n2024-05-01T10:01:00Z,d,2\n")
    items = _read(path)
    assert str(items[0]) == f"{path}:2: expected 3 fields as in the header, found 4"
    assert _observations(items)[0].line == 3


def test_csv_quoted_fields_keep_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", 'ts,device_id,t,note\n2024-05-01T10:00:00Z,d,1,"a, b"\n')
    assert _observations(_read(path))[0].attributes == {"note": "a, b"}


def test_csv_invalid_time_rejected_with_field_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,t\n2024-05-01T10:00:00Z,d,1\nlater,d,2\n")
    rejection = _rejections(_read(path))[0]
    assert (rejection.line, rejection.field) == (3, "ts")
    assert rejection.reason.startswith("invalid time: time 'later' is not ISO 8601")


def test_csv_missing_time_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,t\n,d,1\n")
    assert str(_read(path)[0]) == f"{path}:2: field 'ts': missing time"


def test_csv_missing_device_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,t\n2024-05-01T10:00:00Z, ,1\n")
    assert str(_read(path)[0]) == f"{path}:2: field 'device_id': missing device id"


def test_csv_invalid_utf8_row_rejected(tmp_path: Path) -> None:
    data = b"ts,device_id,t\n2024-05-01T10:00:00Z,d\xff,1\n2024-05-01T10:01:00Z,d,2\n"
    items = _read(_write(tmp_path, "a.csv", data))
    assert _rejections(items)[0].reason == "line is not valid UTF-8: invalid start byte (byte 0xff at offset 22)"
    assert [obs.line for obs in _observations(items)] == [3]


def test_csv_oversized_field_rejected(tmp_path: Path) -> None:
    huge = "x" * (csv.field_size_limit() + 10)
    path = _write(tmp_path, "a.csv", f'ts,device_id,t\n2024-05-01T10:00:00Z,d,"{huge}"\n2024-05-01T10:01:00Z,d,2\n')
    items = _read(path)
    assert _rejections(items)[0].reason.startswith("invalid CSV: field larger than field limit")
    assert _observations(items)[0].metrics == {"t": 2.0}


# CSV value policy.


def test_csv_non_finite_dropped_per_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,v,t\n2024-05-01T10:00:00Z,d,1,50\n2024-05-01T10:01:00Z,d,inf,51\n")
    items = _read(path)
    assert str(items[1]) == f"{path}:3: field 'v': non-finite value inf; the field is treated as missing"
    assert items[2].metrics == {"t": 51.0}  # type: ignore[union-attr]


def test_csv_empty_and_null_missing_silently(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,v,t\n2024-05-01T10:00:00Z,d,1,2\n2024-05-01T10:01:00Z,d,,null\n")
    items = _read(path)
    assert len(items) == 2
    assert items[1].metrics == {}  # type: ignore[union-attr]


def test_csv_sentinel_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,v,t\n2024-05-01T10:00:00Z,d,1,2\n2024-05-01T10:01:00Z,d,n/a,3\n")
    items = _read(path)
    assert items[1] == FieldIssue(
        str(path), 3, "v", "sentinel value 'n/a'; the field is treated as missing", raw="2024-05-01T10:01:00Z,d,n/a,3"
    )


def test_csv_boolean_only_metric_rejects_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,v\n2024-05-01T10:00:00Z,d,1\n2024-05-01T10:01:00Z,d,true\n")
    rejection = _rejections(_read(path))[0]
    assert str(rejection) == f"{path}:3: field 'v': no valid metric in the record: boolean 'true' is not a number"


def test_csv_sentinel_code_configured(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,e\n2024-05-01T10:00:00Z,d,1520.4\n2024-05-01T10:01:00Z,d,32768\n")
    items = _read(path, sentinel_values={"e": [32768]})
    assert [type(item).__name__ for item in items] == ["Observation", "FieldIssue", "Observation"]


def test_csv_text_columns_become_attributes(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,state,t\n2024-05-01T10:00:00Z,d,open,1\n")
    assert _observations(_read(path))[0].attributes == {"state": "open"}


def test_csv_explicit_metrics_and_ignored_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,t,rssi,label,kind\n2024-05-01T10:00:00Z,d,1,-70,1,x\n")
    [observation] = _read(path, metrics=["t"], ignore_columns=["label"])
    assert observation.metrics == {"t": 1.0}
    assert observation.attributes == {"kind": "x"}


def test_csv_fixed_device(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "timestamp,value\n2024-05-01 10:00:00,3.5\n")
    assert _observations(_read(path, device="machine-1"))[0].device == "machine-1"


def test_csv_timezone_applies_to_naive_times(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "timestamp,value\n2024-05-01 12:00:00,3.5\n")
    assert _observations(_read(path, device="m", timezone="Europe/Paris"))[0].time == MAY_1_10H_UTC


def test_csv_epoch_milliseconds(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,t\n1714557600000,d,1\n")
    assert _observations(_read(path))[0].time == MAY_1_10H_UTC


def test_csv_date_and_time_columns(tmp_path: Path) -> None:
    text = "\ufeffdate,time,fridge_temperature,temp_condition\r\n25-Apr-19, 19:19:40 ,9.25,high\r\n"
    [observation] = _read(_write(tmp_path, "fridge.csv", text), device="fridge")
    assert observation.time == 1556219980.0
    assert observation.metrics == {"fridge_temperature": 9.25}
    assert observation.attributes == {"temp_condition": "high"}


# CSV locale options.

LOCALE_CSV = (
    "\ufefftimestamp;device_id;temperature_c;energy_wh\n"
    "01.05.2024 10:00:00;dev-251;21,5;1.234,5\n"
    "01.05.2024 10:01:00;dev-251;21,6;1.240,0\n"
)


def test_csv_locale_options_exact_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", LOCALE_CSV)
    items = _read(path, delimiter=";", decimal=",", thousands=".", day_first=True)
    assert [obs.metrics for obs in _observations(items)] == [
        {"temperature_c": 21.5, "energy_wh": 1234.5},
        {"temperature_c": 21.6, "energy_wh": 1240.0},
    ]
    assert items[0].time == MAY_1_10H_UTC  # type: ignore[union-attr]


def test_csv_decimal_comma_without_options_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", LOCALE_CSV)
    with pytest.raises(
        InvalidConfigError,
        match=r"a\.csv:2: field 'temperature_c': '21,5' is not a number: it contains a comma .* set decimal=','",
    ):
        _read(path)


def test_csv_single_decimal_comma_value_named(tmp_path: Path) -> None:
    text = 'timestamp,device_id,t,e\n2024-05-01T10:00:00Z,d,21.5,1\n2024-05-01T10:01:00Z,d,"21,6",2\n'
    issue = _issues(_read(_write(tmp_path, "a.csv", text)))[0]
    assert (issue.line, issue.field) == (3, "t")
    assert "set decimal=','" in issue.reason


# CSV configuration errors.


def test_csv_without_device_column_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "timestamp,value\n2024-05-01 10:00:00,3.5\n")
    with pytest.raises(InvalidConfigError, match=r"no device column: .* set the device column \(--device-column\), or the device id \(--device\)"):
        _read(path)


def test_csv_unknown_column_option_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ts,device_id,t\n2024-05-01T10:00:00Z,d,1\n")
    with pytest.raises(InvalidConfigError, match="column 'temp' given in metrics is not in the header"):
        _read(path, metrics=["temp"])


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="input file not found: .*nothing.csv"):
        _read(tmp_path / "nothing.csv")


def test_truncated_gzip_is_an_error(tmp_path: Path) -> None:
    data = gzip.compress((HEADER + "2024-05-01T10:00:00Z,dev-1,t,21.5,40\n" * 1000).encode())
    path = _write(tmp_path, "a.csv", data[: len(data) // 2])
    with pytest.raises(IotwardenError, match="failed to read the file"):
        _read(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "xml"}, "invalid format 'xml'"),
        ({"device": "a", "device_column": "b"}, "device and device_column are both set"),
        ({"delimiter": ";;"}, "invalid delimiter ';;'"),
        ({"timezone": "Nowhere/City"}, "invalid timezone 'Nowhere/City'"),
        ({"decimal": "_"}, "invalid decimal '_'"),
        ({"max_payload_bytes": 0}, "invalid max_payload_bytes 0"),
    ],
)
def test_invalid_options_raise_at_call(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        read_records("unused.csv", **options)


def test_counters_collect_counts(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "a.csv", "ts,device_id,v,t\n2024-05-01T10:00:00Z,d,1,2\nbad,d,1,2\n2024-05-01T10:01:00Z,d,nan,2\n"
    )
    counters = SourceCounters()
    _read(path, counters=counters)
    assert (counters.records, counters.observations) == (3, 2)
    assert counters.rejections == {"invalid_time": 1}
    assert counters.field_issues == {"v": 1}


# JSON lines.


def test_jsonl_nested_objects_flattened(tmp_path: Path) -> None:
    line = {"device_id": "d", "ts": "2024-05-01T10:00:00Z", "sensors": {"s1": 1.5, "s2": {"t": 2}}}
    [observation] = _read(_write(tmp_path, "a.jsonl", json.dumps(line) + "\n"))
    assert observation.metrics == {"sensors.s1": 1.5, "sensors.s2.t": 2.0}


def test_jsonl_envelope_with_object_payload(tmp_path: Path) -> None:
    line = {"topic": "fleet/d/up", "payload": {"device_id": "d", "ts": "2024-05-01T10:00:00Z", "t": 1}, "qos": 1}
    [observation] = _read(_write(tmp_path, "a.jsonl", json.dumps(line) + "\n"))
    assert observation.source == f"{tmp_path / 'a.jsonl'}#fleet/d/up"
    assert observation.metrics == {"t": 1.0}


def test_jsonl_envelope_receive_time_fallback(tmp_path: Path) -> None:
    payload = base64.b64encode(b'{"device_id":"d","t":1}').decode()
    line = {"topic": "fleet/d/up", "payload_b64": payload, "recv_at": "2024-05-01T10:00:00Z"}
    [observation] = _read(_write(tmp_path, "a.jsonl", json.dumps(line) + "\n"))
    assert observation.time == MAY_1_10H_UTC


def test_jsonl_device_from_topic_segment(tmp_path: Path) -> None:
    line = {"topic": "fleet/dev-9/up", "payload": {"ts": "2024-05-01T10:00:00Z", "t": 1}}
    path = _write(tmp_path, "a.jsonl", json.dumps(line) + "\n")
    assert _observations(_read(path, topic_device_segment=1))[0].device == "dev-9"


def test_jsonl_poison_messages_rejected_one_by_one(tmp_path: Path) -> None:
    def wrap(payload: bytes) -> str:
        return json.dumps({"topic": "fleet/dev-1/t", "payload_b64": base64.b64encode(payload).decode()})

    good = b'{"device_id":"dev-1","ts":"2024-05-01T10:00:00Z","t":21.0}'
    lines = [
        wrap(b"\xff\xfe\x00{"),
        wrap(b"[1,2,3]"),
        wrap(b'{"t":21.0}'),
        wrap(b'{"device_id":"dev-1","ts":"2024-05-01T10:0'),
        wrap(b'{"device_id":"dev-2","ts":"2024-05-01T10:00:00Z","blob":"' + b"x" * 300_000 + b'"}'),
        wrap(good),
    ]
    items = _read(_write(tmp_path, "a.jsonl", "\n".join(lines) + "\n"))
    reasons = [item.reason.split(":")[0] for item in _rejections(items)]
    assert reasons == [
        "payload is not valid UTF-8",
        "payload is a JSON array, expected an object",
        "missing device id",
        "truncated JSON",
        "payload too large",
    ]
    assert [obs.line for obs in _observations(items)] == [6]


def test_jsonl_oversize_line_skipped_with_bounded_read(tmp_path: Path) -> None:
    huge = json.dumps({"device_id": "d", "ts": "2024-05-01T10:00:00Z", "blob": "x" * 600_000})
    good = json.dumps({"device_id": "d", "ts": "2024-05-01T10:01:00Z", "t": 1})
    items = _read(_write(tmp_path, "a.jsonl", huge + "\n" + good + "\n"))
    assert _rejections(items)[0].reason.startswith("line too large: 600")
    assert _observations(items)[0].line == 2


def test_jsonl_bare_payload_over_limit_rejected(tmp_path: Path) -> None:
    line = json.dumps({"device_id": "d", "ts": "2024-05-01T10:00:00Z", "blob": "x" * 2000})
    items = _read(_write(tmp_path, "a.jsonl", line + "\n"), max_payload_bytes=1024)
    assert _rejections(items)[0].reason.startswith("payload too large: ")


def test_jsonl_invalid_line_names_line(tmp_path: Path) -> None:
    good = json.dumps({"device_id": "d", "ts": "2024-05-01T10:00:00Z", "t": 1})
    path = _write(tmp_path, "a.jsonl", good + "\n{oops}\n")
    assert str(_read(path)[1]) == f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes (char 1)"


def test_mqtt_lines_format(tmp_path: Path) -> None:
    text = 'fleet/dev-1/telemetry {"ts":"2024-05-01T10:00:00Z","t":1.5}\nbroken-line\n'
    items = _read(_write(tmp_path, "rec.mqtt.txt", text), topic_device_segment=1)
    assert items[0].device == "dev-1"  # type: ignore[union-attr]
    assert items[1].reason == "line is not '<topic> <payload>': no space after the topic"  # type: ignore[union-attr]


# Shared bad-input cases.


def test_case13_rows_read_in_file_order(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-13.csv")
    assert [obs.line for obs in _observations(items)] == list(range(2, 13))


def test_case20_valid_messages_survive_poison(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-20.jsonl")
    temperatures = [obs.metrics["temperature"] for obs in _observations(items)]
    assert temperatures == [21.0, 21.1, 21.2]


def test_case20_each_bad_message_rejected_once(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-20.jsonl")
    assert [rejection.line for rejection in _rejections(items)] == [2, 3, 4, 5, 6, 8]


def test_case20_rejections_name_topic(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-20.jsonl")
    assert _rejections(items)[0].source.endswith("case-20.jsonl#fleet/dev-201/telemetry")


def test_case23_non_finite_rejected_per_field(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-23.csv")
    issues = [(issue.line, issue.field) for issue in _issues(items)]
    assert issues == [(9, "vibration_rms"), (10, "vibration_rms"), (11, "vibration_rms")]


def test_case23_temperature_kept_on_bad_lines(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-23.csv")
    bad_lines = [obs.metrics for obs in _observations(items) if obs.line in (9, 10, 11)]
    assert bad_lines == [{"temperature_c": 51.0}, {"temperature_c": 52.0}, {"temperature_c": 50.0}]


def test_case23_extreme_finite_values_pass_the_reader(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-23.csv")
    values = {obs.line: obs.metrics["vibration_rms"] for obs in _observations(items) if "vibration_rms" in obs.metrics}
    assert (values[4], values[6], values[7], values[8]) == (1e308, -1e308, 1.7976931348623157e308, 5e-324)


def test_case24_missing_fields_stay_missing(cases_dir: Path) -> None:
    observations = _observations(_read(cases_dir / "case-24.jsonl"))
    assert [("humidity" in obs.metrics) for obs in observations[10:13]] == [False, False, False]


def test_case24_battery_only_message(cases_dir: Path) -> None:
    observations = _observations(_read(cases_dir / "case-24.jsonl"))
    assert observations[14].metrics == {"battery_v": 3.61}


def test_case24_new_field_appears(cases_dir: Path) -> None:
    observations = _observations(_read(cases_dir / "case-24.jsonl"))
    assert [obs.line for obs in observations if "co2" in obs.metrics] == [17, 18, 19, 20, 21]


def test_case25a_with_locale_options(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-25a.csv", delimiter=";", decimal=",", thousands=".", day_first=True)
    assert [(obs.metrics["temperature_c"], obs.metrics["energy_wh"]) for obs in _observations(items)] == [
        (21.5, 1234.5),
        (21.6, 1240.0),
        (21.4, 1245.5),
    ]


def test_case25a_finds_timestamp_after_bom(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-25a.csv", decimal=",", thousands=".")
    assert _observations(items)[0].time == MAY_1_10H_UTC


def test_case25a_without_options_names_line_and_field(cases_dir: Path) -> None:
    with pytest.raises(InvalidConfigError, match=r"case-25a\.csv:2: field 'temperature_c': '21,5' .*decimal=','"):
        _read(cases_dir / "case-25a.csv")


def test_case25b_field_count_rejected(cases_dir: Path) -> None:
    items = _read(cases_dir / "case-25b.csv")
    assert str(items[0]).endswith("case-25b.csv:2: expected 4 fields as in the header, found 5")


def test_case25b_quoted_decimal_comma_named(cases_dir: Path) -> None:
    issue = _issues(_read(cases_dir / "case-25b.csv"))[0]
    assert (issue.line, issue.field) == (3, "temperature_c")


def test_case25b_no_column_shift(cases_dir: Path) -> None:
    observations = _observations(_read(cases_dir / "case-25b.csv"))
    assert [obs.metrics for obs in observations] == [
        {"energy_wh": 1240.0},
        {"temperature_c": 21.4, "energy_wh": 1245.0},
    ]
