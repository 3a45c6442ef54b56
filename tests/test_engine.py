"""Engine behaviour on hand-made streams: detectors, decisions and state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iotwarden.engine import Engine, EngineConfig
from iotwarden.errors import InvalidConfigError
from iotwarden.observation import Observation

T0 = 1_714_557_600.0  # 2024-05-01T10:00:00Z
MINUTE = 60.0


def stream(device: str, values: dict[str, list[float | None]], *, start: float = T0, step: float = MINUTE, kind: str | None = None) -> list[Observation]:
    """Observations of one device, one per step; None leaves a metric out."""
    length = len(next(iter(values.values())))
    attributes = {"device_type": kind} if kind else {}
    result = []
    for i in range(length):
        metrics = {name: float(series[i]) for name, series in values.items() if series[i] is not None}
        result.append(Observation(device, start + i * step, metrics, dict(attributes), source="test", line=i + 2))
    return result


def interleave(*streams: list[Observation]) -> list[Observation]:
    merged = [obs for one in streams for obs in one]
    return sorted(merged, key=lambda obs: (obs.time, obs.device))


def run(engine: Engine, observations: list[Observation], batch: int = 256) -> tuple[list, list]:
    """Process in batches; return (alerts opened, per-observation results)."""
    alerts, rows = [], []
    for start in range(0, len(observations), batch):
        chunk = observations[start : start + batch]
        result = engine.process_batch(chunk)
        alerts.extend(result.alerts)
        rows.extend(zip(chunk, result.score, result.ready, result.flagged))
    return alerts, rows


def normal(seed: int, n: int, mean: float, sd: float) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, sd, n).round(3))


def value_alerts(alerts: list) -> list:
    return [alert for alert in alerts if alert.severity != "info"]


# Readiness and calibration ---------------------------------------------------


def test_new_device_not_ready_and_score_zero():
    engine = Engine()
    result = engine.process_batch(stream("d1", {"t": [20.0]}))
    assert not result.ready[0]
    assert result.score[0] == 0.0
    assert result.alerts == []


def test_cold_start_no_alerts_and_warmup_not_ready():
    # A new device whose first values are close together must not alert when a
    # slightly lower value follows (a naive z after three points says -5.7).
    values = [21.04, 20.99, 20.98, 20.82, *normal(1, 26, 21.0, 0.3)]
    for warmup in (8, 20):
        engine = Engine(EngineConfig(warmup=warmup))
        alerts, rows = run(engine, stream("dev-151", {"temperature_c": values}, step=300.0))
        assert alerts == []
        assert not any(ready for _, _, ready, _ in rows[:warmup])
        assert all(math.isfinite(score) for _, score, _, _ in rows)


def test_constant_signal_scores_finite_then_alerts():
    pressure = [14.62] * 41 + [14.63, 35.00]
    temperature = normal(3, 43, 20.5, 0.25)
    status = [0.0] * 43
    engine = Engine()
    alerts, rows = run(engine, stream("dev-021", {"pressure_kpa": pressure, "status_code": status, "temperature_c": temperature}))
    scores = [score for _, score, _, _ in rows]
    assert all(math.isfinite(score) for score in scores)
    assert max(scores[:42]) < engine.config.open_threshold
    assert [(a.category, a.metrics[0].metric) for a in value_alerts(alerts)] == [("spike", "pressure_kpa")]
    assert value_alerts(alerts)[0].time == T0 + 42 * MINUTE


def test_spike_does_not_poison_baseline():
    values = normal(5, 60, 20.0, 0.3)
    values[10] = 5000.0
    values[40] = 24.0
    engine = Engine()
    alerts, _ = run(engine, stream("dev-161", {"value": values}))
    times = [alert.time for alert in value_alerts(alerts)]
    assert times == [T0 + 10 * MINUTE, T0 + 40 * MINUTE]


def test_jump_after_constant_history_alerts():
    engine = Engine()
    alerts, rows = run(engine, stream("dev-162", {"value": [10.0] * 9 + [100.0]}))
    assert len(value_alerts(alerts)) == 1
    assert math.isfinite(value_alerts(alerts)[0].score)
    assert math.isfinite(rows[-1][1])


def test_extreme_magnitudes_keep_state_finite():
    vibration = [20.1, 20.3, 1e308, 20.2, -1e308, 1.7976931348623157e308, 5e-324, None, None, None, 1e20, 20.2, 20.1]
    temperature = [50.0, 51, 52, 50, 51, 52, 50, 51, 52, 50, 51, 52, 50]
    engine = Engine(EngineConfig(limits={"vibration_rms": (1e-6, 1000.0)}))
    alerts, rows = run(engine, stream("dev-231", {"vibration_rms": vibration, "temperature_c": temperature}))
    assert all(math.isfinite(score) for _, score, _, _ in rows)
    assert [alert.line for alert in alerts if alert.category == "out_of_range"] == [4]
    flagged_lines = [obs.line for obs, _, _, flagged in rows if flagged]
    assert {4, 6, 7, 8, 12} <= set(flagged_lines)
    shard = engine.shards[0]
    for name in ("mean_fast", "var_fast", "mean_slow", "var_slow"):
        assert np.isfinite(shard[name][: shard.n_devices]).all(), name
    assert all(math.isfinite(alert.score) for alert in alerts)


def test_missing_metric_stays_missing():
    humidity: list[float | None] = normal(7, 40, 45.0, 1.0)
    for i in range(10, 13):
        humidity[i] = None
    co2: list[float | None] = [None] * 15 + normal(8, 25, 600.0, 10.0)
    engine = Engine()
    alerts, _ = run(engine, stream("dev-241", {"temperature": normal(6, 40, 21.0, 0.2), "humidity": humidity, "co2": co2}))
    assert value_alerts(alerts) == []
    shard, slot = engine.shards[0], engine.device_index["dev-241"][1]
    assert shard["count"][slot, engine.metric_index["humidity"]] == 37
    assert shard["count"][slot, engine.metric_index["co2"]] == 25
    assert abs(shard["mean_slow"][slot, engine.metric_index["humidity"]] - 45.0) < 1.0


# Detectors -------------------------------------------------------------------


def test_level_shift_adopted_and_alert_closes():
    values = normal(9, 200, 50.0, 1.0) + normal(10, 600, 80.0, 1.0)
    engine = Engine(EngineConfig(adopt_after=3600.0))
    alerts, rows = run(engine, stream("pump", {"pressure": values}))
    spikes = [alert for alert in alerts if alert.category == "spike"]
    assert len(spikes) == 1
    assert spikes[0].time == T0 + 200 * MINUTE
    assert spikes[0].end_time is not None
    assert spikes[0].close_reason.startswith("new level adopted")
    assert not any(flagged for _, _, _, flagged in rows[-100:])


def test_slow_ramp_raises_drift():
    rng = np.random.default_rng(11)
    n = 3000
    values = 230.0 + rng.normal(0, 1.0, n)
    values[2400:] -= np.linspace(0, 12, 600)  # -12 V over ten hours
    engine = Engine()
    alerts, _ = run(engine, stream("meter", {"voltage_v": list(values)}))
    drifts = [alert for alert in alerts if alert.category == "drift"]
    assert len(drifts) >= 1
    assert drifts[0].time > T0 + 2400 * MINUTE
    assert [alert for alert in value_alerts(alerts) if alert.time < T0 + 2400 * MINUTE] == []


def test_drift_spread_through_daily_swings():
    # An hourly room temperature with a daily swing of varying size and
    # autocorrelated noise: its level wanders far from the slow mean every day.
    rng = np.random.default_rng(5)
    n = 4000
    hours = np.arange(n)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.9 * noise[i - 1] + rng.normal(0, 0.5)
    amplitude = 3.0 * (0.5 + rng.random(n // 24 + 1))[hours // 24]
    values = list(20.0 + amplitude * np.sin(2 * np.pi * hours / 24) + noise)

    def drift_alerts(config: EngineConfig) -> int:
        alerts, _ = run(Engine(config), stream("room", {"temperature_c": values}, step=3600.0))
        return sum(alert.category == "drift" for alert in alerts)

    # By default the drift spread learns only where no drift is suspected, so
    # it misses the far half of each swing and some swings alert as drift.
    calm_only = drift_alerts(EngineConfig())
    through_swings = drift_alerts(EngineConfig(drift_learn_below=4.5))
    assert calm_only >= 3
    assert through_swings < calm_only


def test_stuck_sensor_alerts():
    values = normal(12, 300, 21.0, 0.2)
    values[200:260] = [21.37] * 60
    engine = Engine()
    alerts, _ = run(engine, stream("thermo", {"temperature_c": values}))
    stuck = [alert for alert in alerts if alert.category == "stuck"]
    assert len(stuck) == 1
    assert T0 + 200 * MINUTE < stuck[0].time < T0 + 230 * MINUTE
    assert stuck[0].end_time == T0 + 262 * MINUTE


def test_idle_state_is_not_stuck():
    rng = np.random.default_rng(13)
    power = np.where(np.arange(600) % 200 < 120, 0.0, rng.normal(800, 20, 600).round(1))
    engine = Engine()
    alerts, _ = run(engine, stream("heater", {"power_w": list(power)}))
    assert [alert for alert in alerts if alert.category == "stuck"] == []


def test_correlation_break_raises_multivariate():
    rng = np.random.default_rng(14)
    n = 1500
    flow = 100 + 20 * np.sin(np.arange(n) / 200) + rng.normal(0, 0.5, n)
    current = 0.2 * flow + rng.normal(0, 0.1, n)
    flow[1200:1230] -= 10.0  # flow falls while the motor current does not
    engine = Engine()
    alerts, _ = run(engine, stream("pump", {"flow_lpm": list(flow), "current_a": list(current)}))
    multivariate = [alert for alert in alerts if alert.category == "multivariate"]
    assert len(multivariate) >= 1
    assert T0 + 1200 * MINUTE <= multivariate[0].time < T0 + 1230 * MINUTE
    assert {c.metric for c in multivariate[0].metrics} == {"flow_lpm", "current_a"}
    assert [alert for alert in alerts if alert.time < T0 + 1200 * MINUTE] == []


def test_message_rate_burst_raises_spike():
    times = [T0 + i * 10.0 for i in range(1000)]
    times += [times[-1] + 1.0 + i * 1.0 for i in range(300)]  # ten times the rate
    engine = Engine()
    observations = [Observation("fridge", t, {"temp": 5.0 + (i % 7) * 0.01}) for i, t in enumerate(times)]
    alerts, _ = run(engine, observations)
    rate_alerts = [alert for alert in alerts if alert.metrics[0].metric == "msg_rate"]
    assert len(rate_alerts) == 1
    assert rate_alerts[0].category == "spike"
    assert rate_alerts[0].time > times[999]


def test_silence_live_and_gap_in_replay():
    regular = stream("dev-142", {"t": normal(15, 20, 20.0, 0.2)})
    resumed = stream("dev-142", {"t": normal(16, 10, 20.0, 0.2)}, start=T0 + 50 * MINUTE)
    engine = Engine()
    run(engine, regular)
    silent = engine.check_silence(T0 + 23 * MINUTE)
    assert [alert.category for alert in silent] == ["silence"]
    assert silent[0].time == T0 + 19 * MINUTE
    alerts, _ = run(engine, resumed)
    assert value_alerts(alerts) == []
    assert silent[0].end_time == T0 + 50 * MINUTE

    replay = Engine()
    gap_alerts, _ = run(replay, regular + resumed, batch=10_000)
    gaps = [alert for alert in gap_alerts if alert.category == "silence"]
    assert len(gaps) == 1
    assert (gaps[0].time, gaps[0].end_time) == (T0 + 19 * MINUTE, T0 + 50 * MINUTE)
    assert [alert for alert in gap_alerts if alert.category != "silence"] == []


def test_cohort_scores_new_device_at_once():
    fleet = [stream(f"m{k}", {"power": normal(20 + k, 100, 50.0, 2.0)}, kind="meter") for k in range(5)]
    engine = Engine()
    run(engine, interleave(*fleet))
    newcomer = stream("m-new", {"power": [51.0, 400.0]}, start=T0 + 200 * MINUTE, kind="meter")
    result = engine.process_batch(newcomer[:1])
    assert result.ready[0]
    assert [alert for alert in result.alerts if alert.device == "m-new"] == []
    result = engine.process_batch(newcomer[1:])
    assert [alert.baseline for alert in result.alerts if alert.device == "m-new"] == ["cohort"]


def test_counter_wrap_reset_and_glitch():
    def counter(device, totals, uptimes, bits=32):
        rows = []
        for i, (total, uptime) in enumerate(zip(totals, uptimes)):
            metrics = {"counter_bits": float(bits), "bytes_out_total": float(total), "uptime_s": float(uptime)}
            rows.append(Observation(device, T0 + i * MINUTE, metrics))
        return rows

    wrap = counter("dev-041", [4294800000, 4294850000, 4294901000, 4294953000, 35704, 86704, 138704], range(0, 420, 60))
    reboot = counter("dev-042", [1200000, 1248000, 1296000, 1344000, 3000, 51000, 99000], [90000, 90060, 90120, 90180, 45, 105, 165])
    glitch = counter("dev-043", [2000000000, 2000050000, 2000101000, 2000153000, 0, 2000255000, 2000306000], range(0, 420, 60))
    engine = Engine()
    alerts, _ = run(engine, interleave(wrap, reboot, glitch))
    shard = engine.shards[0]
    column = engine.metric_index["bytes_out_rate"]

    assert shard["count"][engine.device_index["dev-041"][1], column] == 6
    assert shard["mean_slow"][engine.device_index["dev-041"][1], column] * 60 == pytest.approx(51000, rel=0.05)
    assert [(a.device, a.category) for a in alerts] == [("dev-042", "counter_reset"), ("dev-043", "invalid_value")]
    assert shard["count"][engine.device_index["dev-043"][1], column] == 5
    assert shard["last_value"][engine.device_index["dev-043"][1], column] * 60 == pytest.approx(51000)


# Decisions -------------------------------------------------------------------


def test_hysteresis_one_alert_per_episode():
    values = normal(17, 300, 10.0, 0.5)
    values[200:220] = [30.0, 31.0, 30.5, 10.2, 30.8] * 4  # flickers within one episode
    engine = Engine()
    alerts, _ = run(engine, stream("d", {"x": values}))
    assert len([alert for alert in alerts if alert.category == "spike"]) == 1


def test_related_alerts_share_incident():
    values_a = normal(18, 200, 10.0, 0.5)
    values_b = normal(19, 200, 100.0, 1.0)
    values_a[150] = 40.0
    values_b[155] = 200.0
    engine = Engine()
    alerts, _ = run(engine, stream("d", {"a": values_a, "b": values_b}))
    assert len(alerts) == 2
    assert alerts[0].incident_id == alerts[1].incident_id


def test_alert_explains_itself():
    values = normal(21, 100, 20.0, 0.3)
    values[80] = 35.0
    engine = Engine()
    alerts, _ = run(engine, stream("room-7", {"temperature_c": values}))
    alert = value_alerts(alerts)[0]
    main = alert.metrics[0]
    assert (alert.device, alert.category, alert.detector) == ("room-7", "spike", "baseline")
    assert main.metric == "temperature_c"
    assert main.value == 35.0
    assert main.low < 20.0 < main.high
    assert "temperature_c rose to 35" in alert.explanation
    assert alert.line == 82


def test_sensitivity_orders_alert_counts():
    rng = np.random.default_rng(22)
    values = list(rng.standard_t(3, 3000) + 50.0)
    counts = {}
    for level in ("low", "medium", "high"):
        alerts, _ = run(Engine(EngineConfig(sensitivity=level)), stream("noisy", {"x": values}))
        counts[level] = len(alerts)
    assert counts["low"] <= counts["medium"] <= counts["high"]


# State -----------------------------------------------------------------------


def test_save_load_resume_equals_uninterrupted(tmp_path):
    fleet = interleave(*[stream(f"d{k}", {"a": normal(30 + k, 300, 10.0, 1.0), "b": normal(40 + k, 300, 5.0, 0.5)}) for k in range(6)])
    spiked = fleet[900]
    spiked.metrics["a"] = 90.0

    whole = Engine(EngineConfig(shards=3))
    expected, expected_rows = run(whole, fleet)

    first = Engine(EngineConfig(shards=3))
    head, head_rows = run(first, fleet[:768])
    first.save(tmp_path / "state.npz")
    second = Engine.load(tmp_path / "state.npz")
    tail, tail_rows = run(second, fleet[768:])

    assert [a.to_dict() for a in head + tail] == [a.to_dict() for a in expected]
    assert [row[1] for row in head_rows + tail_rows] == [row[1] for row in expected_rows]
    assert len(expected) >= 1


def test_state_under_two_kilobytes_per_device():
    engine = Engine()
    assert engine.state_bytes_per_device(10 + 1) < 2048


def test_invalid_config_names_setting():
    with pytest.raises(InvalidConfigError, match=r"sensitivity must be one of \['high', 'low', 'medium'\], got 'extreme'"):
        EngineConfig(sensitivity="extreme")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="drift_learn_below must be a surprise > 0, got 0"):
        EngineConfig(drift_learn_below=0)
    with pytest.raises(InvalidConfigError, match="drift_learn_below must be a number, got '4.5'"):
        EngineConfig.from_dict({"drift_learn_below": "4.5"})
    with pytest.raises(InvalidConfigError, match="warmup must be a number, got None"):
        EngineConfig(warmup=None)
    with pytest.raises(InvalidConfigError, match="rate_features must be true or false, got 'no'"):
        EngineConfig(rate_features="no")
    with pytest.raises(InvalidConfigError, match="unknown engine setting"):
        EngineConfig.from_dict({"warmup": 5, "colour": "red"})


def test_silence_outside_active_hours_is_quiet():
    # Reports every minute from 08:00 to 18:00 UTC for four days: the nightly
    # gaps are the device's routine and raise no silence after the first day.
    day = 86400.0
    start = 1_714_550_400.0  # 2024-05-01T08:00:00Z
    observations = []
    for d in range(4):
        for i in range(600):
            observations.append(Observation("sim-1", start + d * day + i * MINUTE, {"bytes": 1000.0 + (i % 13)}))
    engine = Engine()
    alerts, _ = run(engine, observations)
    silences = [alert for alert in alerts if alert.category == "silence"]
    assert all(alert.time < start + day for alert in silences)
    # Still nothing at 10:00 on the fifth day would be a real silence.
    daytime = engine.check_silence(start + 4 * day + 2 * 3600.0)
    assert [alert.category for alert in daytime] == ["silence"]


def test_suppression_hides_matching_alerts():
    from iotwarden.decisions.suppression import Suppression

    values = normal(23, 200, 20.0, 0.3)
    values[100] = 40.0
    other = normal(24, 200, 5.0, 0.1)
    other[150] = 15.0
    engine = Engine()
    engine.set_suppressions([Suppression("s-1", device="room-1", metric="temperature_c", category="spike")])
    alerts, _ = run(engine, stream("room-1", {"temperature_c": values, "co2_pct": other}))
    assert [(a.metrics[0].metric, a.time) for a in value_alerts(alerts)] == [("co2_pct", T0 + 150 * MINUTE)]
    assert engine.book.suppressed == 1


def test_maintenance_window_ends():
    from iotwarden.decisions.suppression import Suppression

    values = normal(25, 300, 20.0, 0.3)
    values[100] = 40.0
    values[250] = 40.0
    engine = Engine()
    window = Suppression("mw-1", device="room-2", start=T0 + 90 * MINUTE, end=T0 + 200 * MINUTE, reason="maintenance")
    engine.set_suppressions([window])
    alerts, _ = run(engine, stream("room-2", {"temperature_c": values}))
    assert [a.time for a in value_alerts(alerts)] == [T0 + 250 * MINUTE]
