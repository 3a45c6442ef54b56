"""The bad and tricky input cases, replayed end to end through reader and engine.

Each case file comes from the shared cases folder and is skipped when that is
absent; the engine-level behaviour of each kind of fault is also tested on
inline data in test_engine.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iotwarden.engine import Engine, EngineConfig
from iotwarden.observation import Observation, parse_time
from iotwarden.pipeline import Replay
from iotwarden.sources.files import read_records


def replay(path: Path, config: EngineConfig | None = None, **options):
    """Replay one file; return the engine, its alerts and the replay summary."""
    alerts = []
    engine = Engine(config or EngineConfig())
    runner = Replay(engine, on_alert=alerts.append)
    summary = runner.run(read_records(path, **options))
    return engine, alerts, summary


def at(text: str) -> float:
    return parse_time(text.replace("Z", "+00:00"))


def value_alerts(alerts):
    return [alert for alert in alerts if alert.severity != "info"]


def test_case03_constant_signal(cases_dir):
    engine, alerts, _ = replay(cases_dir / "case-03.csv")
    found = value_alerts(alerts)
    assert [(a.metrics[0].metric, a.line) for a in found] == [("pressure_kpa", 44)]
    assert np.isfinite(found[0].score)


def test_case05_counters(cases_dir):
    engine, alerts, _ = replay(cases_dir / "case-05.csv")
    column = engine.metric_index["bytes_out_rate"]
    shard = engine.shards[0]

    def slot(device: str) -> int:
        return engine.device_index[device][1]

    assert [(a.device, a.category) for a in alerts] == [("dev-042", "counter_reset"), ("dev-043", "invalid_value")]
    assert shard["count"][slot("dev-041"), column] == 7
    assert shard["count"][slot("dev-042"), column] == 6
    assert shard["last_value"][slot("dev-043"), column] * 60 == pytest.approx(51000)
    assert shard["mean_slow"][slot("dev-044"), column] * 60 == pytest.approx(49000)
    assert shard["var_slow"][slot("dev-044"), column] == pytest.approx(0.0, abs=1e-6)


def test_case14_gaps(cases_dir):
    _, alerts, _ = replay(cases_dir / "case-14.csv")
    gaps = [(a.device, a.time, a.end_time) for a in alerts if a.category == "silence"]
    assert gaps == [
        ("dev-142", at("2024-05-01T10:19:00Z"), at("2024-05-01T10:50:00Z")),
        ("dev-141", at("2024-05-01T10:20:00Z"), at("2024-05-05T10:20:00Z")),
        # dev-142 stops at 10:59 while dev-141 reports until May 5: still silent at the end.
        ("dev-142", at("2024-05-01T10:59:00Z"), None),
    ]
    assert [a for a in alerts if a.category != "silence"] == []


def test_case15_cold_start_and_restart(cases_dir, tmp_path):
    path = cases_dir / "case-15.csv"
    _, alerts, _ = replay(path, EngineConfig(warmup=20))
    assert alerts == []

    observations = [item for item in read_records(path) if isinstance(item, Observation)]
    first = Engine(EngineConfig(warmup=20))
    first.process_batch(observations[:15])
    first.save(tmp_path / "state.npz")
    resumed = Engine.load(tmp_path / "state.npz")
    result = resumed.process_batch(observations[15:25])
    assert result.ready[5:].all()
    assert not result.ready[:5].any()


def test_case16_spike_and_constant_history(cases_dir):
    _, alerts, _ = replay(cases_dir / "case-16.csv")
    found = sorted((a.device, a.time) for a in value_alerts(alerts) if a.category == "spike")
    assert found == [
        ("dev-161", at("2024-05-01T10:10:00Z")),
        ("dev-161", at("2024-05-01T10:40:00Z")),
        ("dev-162", at("2024-05-01T10:09:00Z")),
    ]


def test_case23_extreme_values(cases_dir):
    engine, alerts, _ = replay(cases_dir / "case-23.csv", EngineConfig(limits={"vibration_rms": (0.0, 1000.0)}))
    assert all(np.isfinite(a.score) for a in alerts)
    assert [a.line for a in alerts if a.category == "out_of_range"] == [4]
    shard = engine.shards[0]
    for name in ("mean_fast", "var_fast", "mean_slow", "var_slow", "drift_var"):
        assert np.isfinite(shard[name][: shard.n_devices]).all(), name
    column = engine.metric_index["vibration_rms"]
    # Learned: lines 2, 3, 5 and 8 (5e-324 is inside the range), 13 and 14.
    assert shard["count"][0, column] == 6


def test_case13_ordering(cases_dir):
    engine, alerts, summary = replay(cases_dir / "case-13.csv")
    assert summary.rejected["duplicate"] == 1
    assert summary.rejected["rejected"] == 2  # the conflicting duplicate and the row 2 h late
    assert [a for a in alerts if a.category == "silence"] == []
    assert engine.shards[0]["last_time"][0] == at("2024-05-01T10:07:00Z")
