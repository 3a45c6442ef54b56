"""LoRaWAN sources on small inline events: parsing, frame counters, duplicates and rules."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from iotwarden.decisions.alerts import Alert
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.formats import format_names, get_reader
from iotwarden.sources.lorawan import (
    DataFrame,
    JoinRequest,
    LorawanMonitor,
    decode_event,
    normalise_eui,
    parse_event,
    parse_phy_payload,
    parse_push_data,
)

T0 = 1714557600.0  # 2024-05-01T10:00:00Z


def v4_up(fcnt: int, time: float, *, dev_eui: str = "00000000000000a1", data: str = "AQID", gateways: list[tuple[str, float, float]] | None = None, obj: dict[str, Any] | None = None, dev_addr: str = "01020304") -> dict[str, Any]:
    receptions = gateways or [("00000000000000f1", -85.0, 7.5)]
    event: dict[str, Any] = {
        "time": _iso(time),
        "deviceInfo": {"deviceName": "th-1", "devEui": dev_eui},
        "devAddr": dev_addr,
        "dr": 5,
        "fCnt": fcnt,
        "fPort": 2,
        "data": data,
        "rxInfo": [{"gatewayId": gateway, "rssi": rssi, "snr": snr} for gateway, rssi, snr in receptions],
        "txInfo": {"frequency": 868100000, "modulation": {"lora": {"spreadingFactor": 7}}},
    }
    if obj is not None:
        event["object"] = obj
    return event


def run(events: list[dict[str, Any]]) -> list[Any]:
    monitor = LorawanMonitor()
    items: list[Any] = []
    for line, event in enumerate(events, start=1):
        items.extend(parse_event(None, event, source="test", line=line, monitor=monitor))
    return items + monitor.finish()


def observations(items: list[Any]) -> list[Observation]:
    return [item for item in items if isinstance(item, Observation)]


def alerts(items: list[Any], category: str | None = None) -> list[Alert]:
    return [item for item in items if isinstance(item, Alert) and (category is None or item.category == category)]


def _iso(time: float) -> str:
    from iotwarden.observation import format_time

    return format_time(time)


# Identifiers and shapes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0102030405060708", "0102030405060708"),
        ("A81758FFFE04B1C1", "a81758fffe04b1c1"),
        ("AQIDBAUGBwg=", "0102030405060708"),
        ("01-02-03-04-05-06-07-08", "0102030405060708"),
        ("0102", None),
        (1234, None),
    ],
)
def test_normalise_eui(value: Any, expected: str | None) -> None:
    assert normalise_eui(value) == expected


def test_decode_tts_uplink() -> None:
    message = {
        "end_device_ids": {"device_id": "eui-70b3", "dev_eui": "70B3D57ED0000001", "dev_addr": "260B1234"},
        "received_at": "2024-05-01T10:00:00.123456789Z",
        "uplink_message": {
            "f_port": 1,
            "f_cnt": 42,
            "frm_payload": "AQID",
            "decoded_payload": {"temperature": 21.5},
            "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-1", "eui": "B827EBFFFE000001"}, "rssi": -97, "snr": 6.2}],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 9}}, "frequency": "868300000"},
        },
    }
    event = decode_event("v3/app@ttn/devices/eui-70b3/up", message)
    assert event is not None
    assert event.device == "70b3d57ed0000001"
    assert event.fcnt == 42
    assert event.spreading_factor == 9
    assert event.receptions[0].gateway == "b827ebfffe000001"
    assert event.time == pytest.approx(T0 + 0.123456, abs=1e-6)
    assert event.decoded == {"temperature": 21.5}


def test_decode_helium_uplink() -> None:
    message = {
        "dev_eui": "A81758FFFE04B1C1",
        "devaddr": "07000048",
        "fcnt": 71,
        "port": 5,
        "payload_size": 23,
        "reported_at": 1672867882173,
        "hotspots": [{"id": "11xHRM", "reported_at": 1672867882100, "rssi": -111, "snr": -3.8, "spreading": "SF12BW125", "frequency": 868.3}],
        "decoded": {"payload": {"temperature": 7, "_geohash_precision": 6}},
    }
    event = decode_event(None, message)
    assert event is not None
    assert event.dialect == "helium"
    assert event.time == pytest.approx(1672867882.100)
    assert event.spreading_factor == 12
    assert event.payload_size == 23


def test_decode_v3_hex_data_and_logger_time() -> None:
    message = {"devEUI": "d1d1e80000000032", "fCnt": 5, "fPort": 3, "data": "50140f04", "rxInfo": [], "_date": "2023-09-28T06:29:49.274Z"}
    event = decode_event(None, message)
    assert event is not None
    assert event.payload_size == 4
    assert event.time == pytest.approx(1695882589.274)


def test_gateway_with_wrong_clock_ignored() -> None:
    message = v4_up(1, T0)
    message["rxInfo"][0]["time"] = "2021-01-01T00:00:00Z"
    event = decode_event(None, message)
    assert event is not None
    assert event.time == T0


def test_unknown_shape_rejected_with_topic() -> None:
    items = parse_event("lns/unknown/uplink", {"dev": "0102030405060708", "cnt": 14}, source="in.jsonl", line=5)
    assert len(items) == 1
    rejection = items[0]
    assert isinstance(rejection, Rejection)
    assert "lns/unknown/uplink" in rejection.reason
    assert "devEUI" in rejection.reason
    assert rejection.line == 5


def test_parse_event_bytes_without_monitor() -> None:
    payload = json.dumps(v4_up(7, T0, obj={"temperature": 20.5, "ok": True, "version": "1.2.3"})).encode()
    items = parse_event("application/x/device/00000000000000a1/event/up", payload)
    [observation] = observations(items)
    assert observation.metrics["temperature"] == 20.5
    assert observation.metrics["lora.rssi"] == -85.0
    assert "ok" not in observation.metrics
    assert "version" not in observation.metrics


def test_non_finite_decoded_field_reported() -> None:
    items = run([v4_up(1, T0, obj={"temperature": "nan", "humidity": 40})])
    issues = [item for item in items if isinstance(item, FieldIssue)]
    assert [issue.field for issue in issues] == ["temperature"]
    assert observations(items)[0].metrics["humidity"] == 40.0


def test_ignored_event_types_give_nothing() -> None:
    assert parse_event("application/1/device/00000000000000a1/event/ack", {"deviceInfo": {"devEui": "00000000000000a1"}, "time": _iso(T0)}) == []


# Frame counters -------------------------------------------------------------------------


def test_gap_counts_lost_frames() -> None:
    items = run([v4_up(fcnt, T0 + 600 * index) for index, fcnt in enumerate([500, 501, 505, 506])])
    lost = [obs.metrics.get("lora.frames_lost") for obs in observations(items)]
    assert lost == [None, 0.0, 3.0, 0.0]
    assert observations(items)[2].metrics["lora.loss_rate"] > 0
    assert alerts(items) == []


def test_interval_is_per_counter_step() -> None:
    items = run([v4_up(fcnt, T0 + 600 * index) for index, fcnt in enumerate([1, 2, 4])])
    assert observations(items)[2].metrics["lora.interval"] == pytest.approx(300.0)


def test_rollover_in_16_bit_view() -> None:
    items = run([v4_up(fcnt, T0 + 600 * index) for index, fcnt in enumerate([65534, 65535, 0, 1])])
    assert [alert.severity for alert in alerts(items, "fcnt_rollover")] == ["info"]
    assert sum(obs.metrics.get("lora.frames_lost", 0.0) for obs in observations(items)) == 0.0
    assert [obs.attributes["fcnt"] for obs in observations(items)] == ["65534", "65535", "65536", "65537"]


def test_32_bit_counter_crosses_65535() -> None:
    items = run([v4_up(fcnt, T0 + 600 * index) for index, fcnt in enumerate([65534, 65535, 65536, 65537])])
    assert alerts(items) == []


def test_reset_is_info_event() -> None:
    items = run([v4_up(fcnt, T0 + 600 * index, data=f"AQ{index}=") for index, fcnt in enumerate([1202, 1203, 0, 1])])
    [reset] = alerts(items)
    assert reset.category == "fcnt_reset"
    assert reset.severity == "info"
    assert reset.time == T0 + 1200


def test_new_dev_addr_starts_session() -> None:
    events = [v4_up(300, T0), v4_up(301, T0 + 600), v4_up(0, T0 + 1200, dev_addr="0a0b0c0d"), v4_up(1, T0 + 1800, dev_addr="0a0b0c0d")]
    assert alerts(run(events)) == []


def test_copies_collapse_into_one_uplink() -> None:
    events = [
        v4_up(10, T0, gateways=[("00000000000000f1", -90.0, 5.0)]),
        v4_up(10, T0 + 2, gateways=[("00000000000000f2", -110.0, -3.0)]),
        v4_up(11, T0 + 600),
    ]
    first = observations(run(events))[0]
    assert first.metrics["lora.gateways"] == 2.0
    assert first.metrics["lora.rssi"] == -90.0
    assert first.metrics["lora.rssi_mean"] == -100.0
    assert first.metrics["lora.snr"] == 5.0


def test_retransmission_is_not_replay() -> None:
    items = run([v4_up(10, T0), v4_up(10, T0 + 200), v4_up(10, T0 + 400), v4_up(11, T0 + 1800)])
    assert alerts(items) == []
    assert len(observations(items)) == 2


def test_old_frame_resent_is_replay() -> None:
    events = [v4_up(fcnt, T0 + 600 * index, data=base64.b64encode(bytes([fcnt])).decode()) for index, fcnt in enumerate(range(100, 110))]
    events.append(v4_up(103, T0 + 86400, data=base64.b64encode(bytes([103])).decode()))
    [replay] = alerts(run(events))
    assert replay.category == "lorawan_replay"
    assert replay.severity == "high"
    assert replay.end_time is not None


def test_same_counter_new_payload_is_reuse() -> None:
    items = run([v4_up(100, T0, data="AQID"), v4_up(101, T0 + 600, data="AQIE"), v4_up(101, T0 + 700, data="BQYH")])
    assert [alert.category for alert in alerts(items)] == ["fcnt_reuse"]


def test_huge_jump_raises_fcnt_jump() -> None:
    items = run([v4_up(10, T0), v4_up(11, T0 + 600), v4_up(50000, T0 + 1200)])
    assert [alert.category for alert in alerts(items)] == ["fcnt_jump"]
    assert "lora.frames_lost" not in observations(items)[2].metrics


def test_mac_only_frame_is_sign_of_life() -> None:
    event = v4_up(5, T0, data="")
    event["fPort"] = 0
    [observation] = observations(run([event]))
    assert observation.metrics == {}
    assert observation.attributes["frame"] == "mac-only"


def test_status_event_metrics() -> None:
    status = {"deviceInfo": {"devEui": "00000000000000a1"}, "time": _iso(T0), "margin": 12, "batteryLevel": 87.5, "batteryLevelUnavailable": False, "externalPowerSource": False}
    [observation] = observations(parse_event("application/x/device/00000000000000a1/event/status", status))
    assert observation.metrics == {"lora.battery": 87.5, "lora.margin": 12.0}


# Gateways and joins ---------------------------------------------------------------------


def test_gateway_change_on_stronger_signal_elsewhere() -> None:
    usual = ("00000000000000f1", -118.0, -5.0)
    events = [v4_up(fcnt, T0 + 600 * fcnt, gateways=[usual], data=base64.b64encode(bytes([fcnt])).decode()) for fcnt in range(40)]
    events.append(v4_up(40, T0 + 600 * 40, gateways=[("00000000000000f9", -70.0, 9.0)], data="KA=="))
    events.append(v4_up(41, T0 + 600 * 40 + 60, dev_eui="00000000000000b2", gateways=[usual]))
    [change] = alerts(run(events))
    assert change.category == "gateway_change"
    assert "00000000000000f9" in change.explanation


def test_weaker_signal_once_elsewhere_is_not_alerted() -> None:
    usual = ("00000000000000f1", -80.0, 5.0)
    events = [v4_up(fcnt, T0 + 600 * fcnt, gateways=[usual], data=base64.b64encode(bytes([fcnt])).decode()) for fcnt in range(40)]
    events.append(v4_up(40, T0 + 600 * 40, gateways=[("00000000000000f9", -125.0, -12.0)], data="KA=="))
    events.append(v4_up(41, T0 + 600 * 41, gateways=[usual], data="KQ=="))
    assert alerts(run(events)) == []


def test_join_events_flood() -> None:
    joins = [{"deviceInfo": {"devEui": "00000000000000a1"}, "time": _iso(T0 + 3 * index), "devAddr": f"0102{index:04x}"} for index in range(15)]
    monitor = LorawanMonitor()
    items: list[Any] = []
    for join in joins:
        items.extend(parse_event("application/x/device/00000000000000a1/event/join", join, monitor=monitor))
    items.extend(monitor.finish())
    [flood] = alerts(items)
    assert flood.category == "join_flood"
    assert flood.details["occurrences"] == 5


# On-air frames ------------------------------------------------------------------------------


def _join_request(dev_nonce: int, mic: bytes = b"\x01\x02\x03\x04") -> bytes:
    return bytes([0x00]) + bytes(8) + bytes.fromhex("0807060504030201") + dev_nonce.to_bytes(2, "little") + mic


def _push_data(frames: list[bytes], *, time: str = "2024-05-01T10:00:00Z") -> bytes:
    rxpk = [{"time": time, "rssi": -60, "lsnr": 7.0, "datr": "SF7BW125", "freq": 868.1, "stat": 1, "data": base64.b64encode(frame).decode()} for frame in frames]
    return bytes([2, 0x12, 0x34, 0x00]) + bytes.fromhex("b4562d94afcda48d") + json.dumps({"rxpk": rxpk}).encode()


def test_parse_join_request() -> None:
    frame = parse_phy_payload(_join_request(0x6809))
    assert isinstance(frame, JoinRequest)
    assert frame.dev_eui == "0102030405060708"
    assert frame.dev_nonce == 0x6809


def test_parse_data_frame_with_fopts() -> None:
    raw = bytes([0x40]) + bytes.fromhex("a587d600") + bytes([0x02]) + (300).to_bytes(2, "little") + b"\x02\x03" + bytes([5]) + b"\xaa\xbb" + b"MIC!"
    frame = parse_phy_payload(raw)
    assert isinstance(frame, DataFrame)
    assert frame.dev_addr == "00d687a5"
    assert frame.fcnt16 == 300
    assert frame.fopts == b"\x02\x03"
    assert frame.fport == 5
    assert frame.frm_payload == b"\xaa\xbb"


def test_push_data_skips_bad_crc() -> None:
    datagram = _push_data([_join_request(1)])
    message = json.loads(datagram[12:])
    message["rxpk"][0]["stat"] = -1
    events, rejections, bad_crc = parse_push_data(datagram[:12] + json.dumps(message).encode(), T0)
    assert events == []
    assert rejections == []
    assert bad_crc == 1


def test_replayed_join_request_found() -> None:
    monitor = LorawanMonitor()
    items: list[Any] = []
    for index in range(3):
        events, _, _ = parse_push_data(_push_data([_join_request(26633)], time="2024-05-01T05:00:00Z"), T0 + 13 * index)
        for event in events:
            items.extend(monitor.push(event))
    items.extend(monitor.finish())
    [reuse] = alerts(items)
    assert reuse.category == "devnonce_reuse"
    assert reuse.details["identical_frame"] is True
    assert "injected" in reuse.explanation


def test_formats_registered() -> None:
    names = format_names()
    for name in ("chirpstack", "tts", "helium", "semtech-pcap"):
        assert name in names


def test_reader_rejects_other_dialect(tmp_path: Any) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(v4_up(1, T0)) + "\n")
    items = list(get_reader("helium")([str(path)], device=None))
    [rejection] = items
    assert isinstance(rejection, Rejection)
    assert "--format chirpstack" in rejection.reason
