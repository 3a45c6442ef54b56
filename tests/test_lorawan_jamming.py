"""The gateway jamming rule on seeded synthetic ChirpStack v4 streams.

Each device transmits every 10 minutes (5 % jitter) and is heard by one or
two gateways, each at the device's own RSSI and SNR level. Every reception
gets a fade shared by RSSI and SNR (path changes) plus independent noise on
each, and about 3 % of receptions are lost at random. ``Effect`` functions
change a reception (RSSI and SNR offsets, loss) to stage a jam, a failing
device, a fade or a gateway outage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from iotwarden.decisions.alerts import Alert
from iotwarden.errors import InvalidConfigError
from iotwarden.observation import format_time
from iotwarden.sources.lorawan import LorawanMonitor, MonitorConfig, parse_event

T0 = 1714557600.0  # 2024-05-01T10:00:00Z
HOUR = 3600.0
PERIOD = 600.0
GW_A = "00000000000000aa"
GW_B = "00000000000000bb"


@dataclass(frozen=True)
class Link:
    """A device's usual reception at one gateway: RSSI in dBm, SNR in dB."""

    gateway: str
    rssi: float
    snr: float


@dataclass(frozen=True)
class Radio:
    device: str
    links: tuple[Link, ...]


@dataclass(frozen=True)
class Change:
    """What an effect does to one reception."""

    rssi: float = 0.0
    snr: float = 0.0
    lost: bool = False


# An effect takes (device, gateway, time, random generator) and returns the change to that reception.
Effect = Callable[[str, str, float, np.random.Generator], Change]


def no_effect(device: str, gateway: str, time: float, rng: np.random.Generator) -> Change:
    return Change()


def fleet(rng: np.random.Generator, *, only_a: int = 8, both: int = 0, only_b: int = 6) -> list[Radio]:
    """Return devices heard by gateway A only, by A and B, and by B only, with their own levels."""
    radios = []
    layout = [(GW_A,)] * only_a + [(GW_A, GW_B)] * both + [(GW_B,)] * only_b
    for index, gateways in enumerate(layout):
        links = tuple(
            Link(gateway, float(rng.uniform(-118.0, -90.0)), float(rng.uniform(-9.0, 7.0))) for gateway in gateways
        )
        radios.append(Radio(f"{index + 1:016x}", links))
    return radios


def stream(radios: list[Radio], hours: float, effect: Effect = no_effect, *, seed: int = 1) -> list[dict[str, Any]]:
    """Return ChirpStack v4 uplink events of all devices in time order, without the frames no gateway heard."""
    rng = np.random.default_rng(seed)
    events: list[tuple[float, dict[str, Any]]] = []
    for radio in radios:
        time = T0 + float(rng.uniform(0.0, PERIOD))
        fcnt = 0
        while time < T0 + hours * HOUR:
            fade = float(rng.normal(0.0, 2.0))
            receptions = []
            for link in radio.links:
                change = effect(radio.device, link.gateway, time, rng)
                if change.lost or rng.random() < 0.03:
                    continue
                rssi = link.rssi + fade + change.rssi + float(rng.normal(0.0, 1.5))
                snr = min(link.snr + fade + change.snr + float(rng.normal(0.0, 1.5)), 10.0)
                receptions.append((link.gateway, round(rssi), round(snr, 1)))
            if receptions:
                events.append((time, uplink(radio.device, fcnt, time, receptions)))
            fcnt += 1
            time += PERIOD * float(rng.normal(1.0, 0.05))
    events.sort(key=lambda pair: pair[0])
    return [event for _, event in events]


def uplink(device: str, fcnt: int, time: float, receptions: list[tuple[str, float, float]]) -> dict[str, Any]:
    return {
        "time": format_time(time),
        "deviceInfo": {"deviceName": f"sensor-{device[-2:]}", "devEui": device},
        "devAddr": device[-8:],
        "dr": 5,
        "fCnt": fcnt,
        "fPort": 2,
        "data": "AQID",
        "rxInfo": [{"gatewayId": gateway, "rssi": rssi, "snr": snr} for gateway, rssi, snr in receptions],
    }


def jamming_alerts(events: list[dict[str, Any]], config: MonitorConfig | None = None) -> list[Alert]:
    monitor = LorawanMonitor(config)
    items: list[Any] = []
    for line, event in enumerate(events, start=1):
        items.extend(parse_event(None, event, source="test", line=line, monitor=monitor))
    items.extend(monitor.finish())
    return [item for item in items if isinstance(item, Alert) and item.category == "jamming"]


def during(start_hour: float, end_hour: float, change: Change, *, gateway: str | None = None, devices: set[str] | None = None) -> Effect:
    """Return an effect that applies ``change`` between the two hours, at one gateway or to some devices."""

    def effect(device: str, at_gateway: str, time: float, rng: np.random.Generator) -> Change:
        if not T0 + start_hour * HOUR <= time < T0 + end_hour * HOUR:
            return Change()
        if gateway is not None and at_gateway != gateway:
            return Change()
        if devices is not None and device not in devices:
            return Change()
        return change

    return effect


def jam(start_hour: float, end_hour: float, gateway: str, *, snr: float = -12.0, rssi: float = 2.0, loss: float = 0.3) -> Effect:
    """Return a jam at ``gateway``: SNR down, RSSI slightly up, a share of the frames lost."""

    def effect(device: str, at_gateway: str, time: float, rng: np.random.Generator) -> Change:
        if at_gateway != gateway or not T0 + start_hour * HOUR <= time < T0 + end_hour * HOUR:
            return Change()
        return Change(rssi=rssi, snr=snr, lost=bool(rng.random() < loss))

    return effect


# Detection -------------------------------------------------------------------------------


def test_jam_at_gateway_found() -> None:
    radios = fleet(np.random.default_rng(7))
    [alert] = jamming_alerts(stream(radios, 30, jam(24, 26, GW_A)))
    assert alert.device == GW_A
    assert alert.severity == "high"
    assert alert.detector == "lorawan"
    assert T0 + 24 * HOUR <= alert.time <= T0 + 25 * HOUR
    assert alert.end_time is not None
    assert T0 + 25.5 * HOUR <= alert.end_time <= T0 + 27 * HOUR
    assert alert.details["devices_judged"] == 8
    assert alert.details["devices_degraded"] >= 6
    assert 8.0 <= alert.details["median_snr_drop_db"] <= 16.0
    assert alert.details["median_rssi_change_db"] > -3.0
    assert alert.details["loss_rate"] > 0.1
    assert GW_A in alert.explanation
    assert f"of the {alert.details['devices_judged']} devices" in alert.explanation
    assert "median SNR drop" in alert.explanation


def test_jam_names_only_jammed_gateway() -> None:
    radios = fleet(np.random.default_rng(8), only_a=6, both=2, only_b=6)
    alerts = jamming_alerts(stream(radios, 30, jam(24, 26, GW_B), seed=2))
    assert [alert.device for alert in alerts] == [GW_B]


def test_loss_without_snr_drop_found() -> None:
    # Every device is heard by both gateways. Gateway A misses most frames while B still forwards them.
    radios = fleet(np.random.default_rng(9), only_a=0, both=8, only_b=0)
    [alert] = jamming_alerts(stream(radios, 30, jam(24, 27, GW_A, snr=0.0, rssi=0.0, loss=0.8), seed=3))
    assert alert.device == GW_A
    assert alert.details["median_snr_drop_db"] is None
    assert alert.details["loss_rate"] > 0.6
    assert alert.details["usual_loss_rate"] < 0.1
    assert "kept forwarding other frames" in alert.explanation


def test_long_jam_is_one_alert() -> None:
    # Six hours of jamming: the usual levels must not absorb the jam and end the alert early.
    radios = fleet(np.random.default_rng(10))
    [alert] = jamming_alerts(stream(radios, 36, jam(24, 30, GW_A), seed=4))
    assert alert.end_time is not None
    assert alert.end_time >= T0 + 29 * HOUR


# No alert --------------------------------------------------------------------------------


def test_single_degraded_device_ignored() -> None:
    radios = fleet(np.random.default_rng(7))
    failing = {radios[0].device}
    effect = during(24, 28, Change(snr=-14.0, rssi=2.0), devices=failing)
    assert jamming_alerts(stream(radios, 30, effect)) == []


def test_two_degraded_devices_ignored() -> None:
    # Two of eight devices is a local problem: below jamming_min_share of the gateway's devices.
    radios = fleet(np.random.default_rng(7))
    effect = during(24, 28, Change(snr=-14.0, rssi=2.0), devices={radios[0].device, radios[1].device})
    assert jamming_alerts(stream(radios, 30, effect)) == []


def test_normal_snr_noise_ignored() -> None:
    radios = fleet(np.random.default_rng(11), only_a=8, both=2, only_b=6)
    assert jamming_alerts(stream(radios, 7 * 24, seed=5)) == []


def test_shared_fade_ignored() -> None:
    # Rain, foliage or a truck parked by the antenna: RSSI and SNR fall together at every device.
    radios = fleet(np.random.default_rng(12))
    effect = during(24, 27, Change(rssi=-10.0, snr=-10.0), gateway=GW_A)
    assert jamming_alerts(stream(radios, 30, effect, seed=6)) == []


def test_gateway_outage_ignored() -> None:
    # Gateway A forwards nothing for three hours: its devices' counters show gaps afterwards.
    radios = fleet(np.random.default_rng(13))
    effect = during(24, 27, Change(lost=True), gateway=GW_A)
    assert jamming_alerts(stream(radios, 30, effect, seed=7)) == []


def test_gateway_with_few_devices_ignored() -> None:
    # Two devices, both jammed: jamming_min_devices (3) is not reached.
    radios = fleet(np.random.default_rng(14), only_a=2, only_b=0)
    assert jamming_alerts(stream(radios, 30, jam(24, 26, GW_A), seed=8)) == []


def test_mobile_devices_not_judged() -> None:
    radios = fleet(np.random.default_rng(7))
    events = stream(radios, 30, jam(24, 26, GW_A))
    for event in events:
        event["object"] = {"latitude": 45.19, "longitude": 5.77, "temperature": 20.0}
    assert jamming_alerts(events) == []


# Configuration ---------------------------------------------------------------------------


def test_jam_found_with_lower_thresholds() -> None:
    radios = fleet(np.random.default_rng(14), only_a=2, only_b=0)
    config = MonitorConfig(jamming_min_devices=2)
    [alert] = jamming_alerts(stream(radios, 30, jam(24, 26, GW_A), seed=8), config)
    assert alert.details["devices_degraded"] == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jamming_window", 0.0),
        ("jamming_min_devices", 0),
        ("jamming_min_share", 0.0),
        ("jamming_min_share", 1.5),
        ("jamming_snr_drop_db", -1.0),
        ("jamming_loss_increase", math.nan),
        ("jamming_loss_probability", 0.0),
        ("jamming_baseline_receptions", 0),
        ("jamming_gateway_silence", -5.0),
    ],
)
def test_invalid_jamming_config_rejected(field: str, value: float) -> None:
    with pytest.raises(InvalidConfigError, match=field):
        MonitorConfig(**{field: value})
