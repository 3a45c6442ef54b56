"""Tests of the fleet simulator: determinism, physics, incidents and the CSV output."""

from __future__ import annotations

import csv
import gzip
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from iotwarden.errors import InvalidConfigError
from iotwarden.simulate import (
    ATTACKS,
    DEFAULT_START,
    DEVICE_TYPES,
    LABEL_COLUMNS,
    METRIC_NAMES,
    Simulation,
    default_labels_path,
    simulate_fleet,
    write_csv,
)

DEVICES = 40
HOURS = 30.0
SEED = 11


@pytest.fixture(scope="module")
def attacked() -> Simulation:
    return simulate_fleet(DEVICES, HOURS, seed=SEED)


@pytest.fixture(scope="module")
def clean() -> Simulation:
    """The same fleet without incidents; device data comes from the same random streams."""
    return simulate_fleet(DEVICES, HOURS, seed=SEED, attacks=[])


def _window(times: np.ndarray, incident) -> np.ndarray:
    return (times >= incident.start) & (times < incident.end)


def _outside_incidents(simulation: Simulation, device_id: str, times: np.ndarray) -> np.ndarray:
    """Return a mask of the rows outside every incident window of the device."""
    outside = np.ones(times.size, bool)
    for incident in simulation.incidents:
        if incident.device_id == device_id:
            outside &= ~_window(times, incident)
    return outside


def _clean_values(clean: Simulation, device_id: str, name: str, times: np.ndarray) -> np.ndarray:
    """Return the metric of the incident-free run at ``times``, which must all exist there."""
    clean_times, clean_metrics = clean.device_series(device_id)
    rows = np.searchsorted(clean_times, times)
    assert np.array_equal(clean_times[rows], times), f"{device_id}: report times differ from the clean run"
    return clean_metrics[name][rows]


def _incidents(simulation: Simulation, kind: str):
    found = [incident for incident in simulation.incidents if incident.kind == kind]
    assert found, f"no {kind} incident in the simulation"
    return found


def test_same_seed_same_output(tmp_path):
    first = simulate_fleet(12, 10, seed=5)
    second = simulate_fleet(12, 10, seed=5)
    assert first.incidents == second.incidents
    for first_block, second_block in zip(first.blocks, second.blocks):
        assert np.array_equal(first_block.time, second_block.time)
        assert np.array_equal(first_block.values, second_block.values)
    write_csv(first, tmp_path / "a.csv")
    write_csv(second, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.labels.csv").read_bytes() == (tmp_path / "b.labels.csv").read_bytes()


def test_other_seed_other_output():
    first = simulate_fleet(12, 10, seed=5)
    second = simulate_fleet(12, 10, seed=6)
    assert not np.array_equal(first.blocks[0].values[:100], second.blocks[0].values[:100])


def test_fleet_has_every_type(attacked):
    assert set(attacked.device_types) == set(DEVICE_TYPES)
    assert len(attacked.device_ids) == DEVICES
    assert len(set(attacked.device_ids)) == DEVICES
    for block in attacked.blocks:
        assert block.metrics == DEVICE_TYPES[block.device_type].metrics


def test_required_metrics_per_type():
    expected = {
        "thermostat": {"temperature_c", "humidity_pct", "setpoint_c", "power_w"},
        "camera": {"bytes_out", "packets_out", "distinct_dst", "conn_failed", "cpu_pct"},
        "smart_meter": {"energy_kwh_total", "voltage_v", "current_a", "power_kw"},
        "industrial_pump": {"flow_lpm", "pressure_kpa", "vibration_rms", "motor_temp_c", "current_a"},
        "vehicle_tracker": {"speed_kmh", "lat", "lon", "battery_v", "rssi_dbm"},
    }
    for name, metrics in expected.items():
        assert set(DEVICE_TYPES[name].metrics) == metrics
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))


def test_small_fleet_takes_first_types():
    simulation = simulate_fleet(2, 1, attacks=[])
    assert simulation.device_types == ("thermostat", "camera")


def test_rows_in_time_order(attacked):
    times = [row[0] for row in attacked.rows()]
    assert len(times) == len(attacked)
    assert all(earlier <= later for earlier, later in zip(times, times[1:]))
    assert times[0] >= attacked.start
    assert times[-1] < attacked.end


def test_all_values_finite(attacked):
    for block in attacked.blocks:
        assert np.isfinite(block.values).all(), block.device_type


def test_reporting_intervals_per_type(clean):
    expected = {"thermostat": 60, "camera": 30, "smart_meter": 60, "industrial_pump": 60}
    for device_id, device_type in zip(clean.device_ids, clean.device_types):
        times, metrics = clean.device_series(device_id)
        gaps = np.diff(times)
        if device_type in expected:
            assert abs(np.median(gaps) - expected[device_type]) <= 2, device_id
        else:
            moving_gaps = gaps[metrics["speed_kmh"][1:] > 0]
            assert moving_gaps.size > 0, f"{device_id} never moves"
            assert 14 <= np.median(moving_gaps) <= 31, device_id


def test_cross_metric_correlation(clean):
    for device_id, device_type in zip(clean.device_ids, clean.device_types):
        _, metrics = clean.device_series(device_id)
        if device_type == "camera":
            assert np.corrcoef(metrics["bytes_out"], metrics["packets_out"])[0, 1] > 0.9, device_id
        elif device_type == "industrial_pump":
            assert np.corrcoef(metrics["flow_lpm"], metrics["current_a"])[0, 1] > 0.8, device_id
        elif device_type == "smart_meter":
            product_kw = metrics["voltage_v"] * metrics["current_a"] / 1000.0
            assert np.abs(product_kw - metrics["power_kw"]).max() < 0.01, device_id


def test_office_hours_rhythm(clean):
    block = next(block for block in clean.blocks if block.device_type == "camera")
    hours = (block.time % 86400) // 3600
    bytes_out = block.values[:, block.metrics.index("bytes_out")]
    assert bytes_out[(hours >= 11) & (hours < 15)].mean() > 1.2 * bytes_out[hours < 4].mean()


def test_weekend_differs_from_weekday():
    simulation = simulate_fleet(20, 7 * 24, seed=2, attacks=[])
    block = next(block for block in simulation.blocks if block.device_type == "thermostat")
    day = ((block.time - simulation.start) // 86400).astype(int)  # DEFAULT_START is a Monday
    hours = (block.time % 86400) // 3600
    setpoint = block.values[:, block.metrics.index("setpoint_c")]
    midday = (hours >= 11) & (hours < 14)
    assert setpoint[midday & (day < 5)].mean() > setpoint[midday & (day >= 5)].mean() + 1.0


def test_every_attack_labelled(attacked):
    kinds = {incident.kind for incident in attacked.incidents}
    assert kinds == set(ATTACKS)


def test_incidents_on_distinct_devices(attacked):
    for kind in ATTACKS:
        devices = [incident.device_id for incident in attacked.incidents if incident.kind == kind]
        assert len(devices) >= 2, kind
        assert len(devices) == len(set(devices)), kind


def test_incidents_after_warmup_within_span(attacked):
    for incident in attacked.incidents:
        assert incident.start >= attacked.start + 6 * 3600, incident
        assert incident.end <= attacked.end, incident
        assert incident.end > incident.start, incident


def test_incidents_not_overlapping_per_device(attacked):
    by_device: dict[str, list] = {}
    for incident in attacked.incidents:
        by_device.setdefault(incident.device_id, []).append(incident)
    for device_id, incidents in by_device.items():
        incidents.sort(key=lambda incident: incident.start)
        for earlier, later in zip(incidents, incidents[1:]):
            assert earlier.end <= later.start, device_id


def test_incident_metrics_belong_to_type(attacked):
    for incident in attacked.incidents:
        assert set(incident.metrics) <= set(DEVICE_TYPES[incident.device_type].metrics), incident


def test_data_unchanged_outside_windows(attacked, clean):
    windows: dict[str, list] = {}
    for incident in attacked.incidents:
        windows.setdefault(incident.device_id, []).append(incident)
    for device_id in attacked.device_ids:
        times, metrics = attacked.device_series(device_id)
        clean_times, clean_metrics = clean.device_series(device_id)
        outside = np.ones(times.size, bool)
        clean_outside = np.ones(clean_times.size, bool)
        for incident in windows.get(device_id, []):
            outside &= ~_window(times, incident)
            clean_outside &= ~_window(clean_times, incident)
        assert np.array_equal(times[outside], clean_times[clean_outside]), device_id
        for name in metrics:
            assert np.array_equal(metrics[name][outside], clean_metrics[name][clean_outside]), (device_id, name)


def test_exfiltration_spikes_bytes(attacked):
    for incident in _incidents(attacked, "exfiltration"):
        times, metrics = attacked.device_series(incident.device_id)
        inside = _window(times, incident)
        normal = _outside_incidents(attacked, incident.device_id, times)
        assert inside.sum() >= 5
        for name in ("bytes_out", "packets_out"):
            assert metrics[name][inside].min() > 5 * np.median(metrics[name][normal]), (incident, name)


def test_ddos_bursts_packets_and_connections(attacked):
    for incident in _incidents(attacked, "ddos"):
        times, metrics = attacked.device_series(incident.device_id)
        inside = _window(times, incident)
        normal = _outside_incidents(attacked, incident.device_id, times)
        assert inside.sum() >= 5
        assert np.median(metrics["packets_out"][inside]) > 10 * np.median(metrics["packets_out"][normal])
        assert np.median(metrics["bytes_out"][inside]) > 2 * np.median(metrics["bytes_out"][normal])
        assert metrics["conn_failed"][inside].min() > metrics["conn_failed"][normal].max()
        assert np.median(metrics["cpu_pct"][inside]) > np.median(metrics["cpu_pct"][normal]) + 20


def test_scanning_fans_out(attacked):
    for incident in _incidents(attacked, "scanning"):
        times, metrics = attacked.device_series(incident.device_id)
        inside = _window(times, incident)
        normal = _outside_incidents(attacked, incident.device_id, times)
        assert inside.sum() >= 5
        assert metrics["distinct_dst"][inside].min() > 10 * metrics["distinct_dst"][normal].max()
        assert metrics["conn_failed"][inside].min() > 10 * max(metrics["conn_failed"][normal].max(), 1)


def test_drift_ramps_slowly(attacked, clean):
    # The ramp ends at 3 degC, 150 % of the median vibration or 10 V at least. The last
    # rows fall just short of the window end, so the bounds below leave a margin.
    for incident in _incidents(attacked, "drift"):
        (name,) = incident.metrics
        assert incident.end - incident.start >= 3 * 3600 * 0.99
        times, metrics = attacked.device_series(incident.device_id)
        inside = _window(times, incident)
        offset = metrics[name][inside] - _clean_values(clean, incident.device_id, name, times[inside])
        final = np.abs(offset[-5:]).mean()
        smallest = {"temperature_c": 2.8, "vibration_rms": 0.5 * np.median(metrics[name]), "voltage_v": 9.5}[name]
        assert final > smallest, incident
        assert np.abs(offset[:5]).mean() < 0.2 * final, incident
        steps = np.abs(np.diff(offset))
        assert steps.max() < 0.05 * final, incident



def test_stuck_repeats_one_value(attacked, clean):
    for incident in _incidents(attacked, "stuck"):
        (name,) = incident.metrics
        times, metrics = attacked.device_series(incident.device_id)
        inside = _window(times, incident)
        assert inside.sum() >= 60
        assert np.unique(metrics[name][inside]).size == 1, incident
        original = _clean_values(clean, incident.device_id, name, times[inside])
        assert np.unique(original).size > 10, incident



def test_silence_leaves_gap(attacked, clean):
    for incident in _incidents(attacked, "silence"):
        times, _ = attacked.device_series(incident.device_id)
        assert not _window(times, incident).any(), incident
        clean_times, _ = clean.device_series(incident.device_id)
        assert _window(clean_times, incident).sum() >= 5, incident


def test_unit_change_converts(attacked, clean):
    for incident in _incidents(attacked, "unit_change"):
        (name,) = incident.metrics
        times, metrics = attacked.device_series(incident.device_id)
        inside = _window(times, incident)
        assert inside.sum() >= 60
        reported = metrics[name][inside]
        original = _clean_values(clean, incident.device_id, name, times[inside])
        if name == "temperature_c":
            np.testing.assert_allclose(reported, original * 9 / 5 + 32, atol=0.02)
        else:
            np.testing.assert_allclose(reported, original * 0.1450377, atol=0.1)



def test_energy_counter_monotone(attacked):
    meters = [device for device, kind in zip(attacked.device_ids, attacked.device_types) if kind == "smart_meter"]
    assert meters
    for device_id in meters:
        _, metrics = attacked.device_series(device_id)
        assert (np.diff(metrics["energy_kwh_total"]) >= 0).all(), device_id


def test_energy_counter_jumps_over_silence():
    simulation = simulate_fleet(40, 30, seed=4, attacks=["silence"])
    meter_silences = [incident for incident in simulation.incidents if incident.device_type == "smart_meter"]
    if not meter_silences:
        pytest.skip("seed 4 put no silence on a smart meter")
    for incident in meter_silences:
        times, metrics = simulation.device_series(incident.device_id)
        after = np.searchsorted(times, incident.end)
        assert metrics["energy_kwh_total"][after] > metrics["energy_kwh_total"][after - 1]


def test_selected_attacks_only():
    simulation = simulate_fleet(30, 24, seed=1, attacks=["stuck", "scanning"])
    assert {incident.kind for incident in simulation.incidents} == {"stuck", "scanning"}


def test_no_attacks_no_incidents():
    assert simulate_fleet(10, 12, attacks=[]).incidents == ()


def test_unknown_attack_lists_allowed():
    with pytest.raises(InvalidConfigError) as error:
        simulate_fleet(10, 12, attacks=["exfiltration", "meteor"])
    assert "'meteor'" in str(error.value)
    for name in ATTACKS:
        assert name in str(error.value)


def test_attack_without_suitable_device():
    with pytest.raises(InvalidConfigError, match="camera"):
        simulate_fleet(1, 24, attacks=["exfiltration"])


def test_default_attacks_skip_unsuitable():
    simulation = simulate_fleet(1, 24)
    assert {incident.kind for incident in simulation.incidents} <= {"drift", "stuck", "silence", "unit_change"}


def test_short_span_without_room():
    assert simulate_fleet(10, 0.02).incidents == ()
    with pytest.raises(InvalidConfigError, match="no room"):
        simulate_fleet(10, 0.02, attacks=["stuck"])


@pytest.mark.parametrize(
    ("devices", "hours", "seed"),
    [(0, 1, 0), (1.5, 1, 0), (5, 0, 0), (5, float("nan"), 0), (5, 1, -1)],
)
def test_invalid_arguments(devices, hours, seed):
    with pytest.raises(InvalidConfigError):
        simulate_fleet(devices, hours, seed=seed)


def test_start_naive_is_utc():
    naive = simulate_fleet(3, 1, attacks=[], start=datetime(2024, 6, 1, 12, 0))
    aware = simulate_fleet(3, 1, attacks=[], start=datetime(2024, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert naive.start == aware.start == datetime(2024, 6, 1, 12, tzinfo=timezone.utc).timestamp()
    assert naive.blocks[0].time[0] >= naive.start


def test_default_start():
    assert simulate_fleet(3, 1, attacks=[]).start == DEFAULT_START.timestamp()


def test_observations_match_rows(attacked):
    observation = next(attacked.observations())
    when, device_id, device_type, metrics = next(attacked.rows())
    assert observation.time == when
    assert observation.device == device_id
    assert observation.attributes == {"device_type": device_type}
    assert observation.metrics == metrics
    assert set(metrics) == set(DEVICE_TYPES[device_type].metrics)


def _read_csv(path) -> list[dict[str, str]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def test_csv_layout(attacked, tmp_path):
    data_path, labels_path = write_csv(attacked, tmp_path / "fleet.csv")
    assert labels_path == tmp_path / "fleet.labels.csv"
    with open(data_path, encoding="utf-8") as stream:
        header = stream.readline().rstrip("\n").split(",")
    assert header == ["time", "device_id", "device_type", *METRIC_NAMES]

    rows = _read_csv(data_path)
    assert len(rows) == len(attacked)
    assert all(row["time"].endswith("Z") for row in rows)
    times = [datetime.fromisoformat(row["time"]) for row in rows]
    assert times == sorted(times)
    for row in rows[:2000]:
        own = set(DEVICE_TYPES[row["device_type"]].metrics)
        for name in METRIC_NAMES:
            if name in own:
                assert row[name] != "", (row["device_id"], name)
                float(row[name])
            else:
                assert row[name] == "", (row["device_id"], name)


def test_csv_values_match_simulation(attacked, tmp_path):
    data_path, _ = write_csv(attacked, tmp_path / "fleet.csv")
    rows = _read_csv(data_path)
    for row, (when, device_id, _, metrics) in zip(rows, attacked.rows()):
        assert datetime.fromisoformat(row["time"]).timestamp() == when
        assert row["device_id"] == device_id
        for name, value in metrics.items():
            assert float(row[name]) == value, (device_id, name)


def test_csv_has_no_labels(attacked, tmp_path):
    data_path, _ = write_csv(attacked, tmp_path / "fleet.csv")
    text = data_path.read_text(encoding="utf-8")
    header = text.split("\n", 1)[0]
    for column in ("incident", "kind", "label", "attack", "anomaly"):
        assert column not in header
    for kind in ATTACKS:
        assert kind not in text


def test_labels_file(attacked, tmp_path):
    _, labels_path = write_csv(attacked, tmp_path / "fleet.csv")
    with open(labels_path, encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames) == LABEL_COLUMNS
        labels = list(reader)
    assert len(labels) == len(attacked.incidents)
    for label, incident in zip(labels, attacked.incidents):
        assert label["incident_id"] == incident.incident_id
        assert label["kind"] == incident.kind
        assert label["metrics"].split(";") == list(incident.metrics)
        assert label["start"].endswith("Z")
        assert datetime.fromisoformat(label["start"]).timestamp() == incident.start
        assert datetime.fromisoformat(label["end"]).timestamp() == incident.end


def test_gzip_matches_plain(tmp_path):
    simulation = simulate_fleet(8, 6, seed=3)
    plain, _ = write_csv(simulation, tmp_path / "fleet.csv")
    packed, labels = write_csv(simulation, tmp_path / "fleet.csv.gz")
    assert labels == tmp_path / "fleet.labels.csv"
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()


def test_labels_path_given(tmp_path):
    simulation = simulate_fleet(8, 6, seed=3)
    _, labels = write_csv(simulation, tmp_path / "fleet.csv", labels=tmp_path / "truth" / "x.csv")
    assert labels == tmp_path / "truth" / "x.csv"
    assert labels.is_file()


def test_default_labels_path():
    assert default_labels_path("out/fleet.csv.gz").as_posix() == "out/fleet.labels.csv"
    assert default_labels_path("fleet.csv").as_posix() == "fleet.labels.csv"
    assert default_labels_path("fleet").as_posix() == "fleet.labels.csv"


def test_thousand_devices_one_day_size():
    simulation = simulate_fleet(1000, 24, seed=0)
    assert len(simulation) > 1_000_000
