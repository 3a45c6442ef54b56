"""The console's observation history: thinning, bands, storage and pruning."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np

from iotwarden.api.history import BAND_SIGMA, ObservationRecorder, baseline_bands, recorded_metrics, recorded_series
from iotwarden.engine import Engine, EngineConfig
from iotwarden.observation import Observation


def scored_engine(minutes: int = 120) -> tuple[Engine, list[Observation]]:
    engine = Engine(EngineConfig(rate_features=False))
    observations = []
    for i in range(minutes):
        observations.append(Observation("pump-1", 60.0 * i, {"flow": 10.0 + (i % 7) * 0.1, "current": 2.0 + (i % 3) * 0.05}))
        observations.append(Observation("pump-2", 60.0 * i + 1.0, {"flow": 12.0 + (i % 5) * 0.1}))
    engine.process_batch(observations)
    return engine, observations


def test_record_keeps_one_per_interval(tmp_path: Path) -> None:
    engine, observations = scored_engine()
    connection = sqlite3.connect(tmp_path / "history.db")
    recorder = ObservationRecorder(connection, engine, min_interval=600.0)
    written = recorder.record(observations)

    series = recorded_series(connection, "pump-1")
    assert [point["time"] for point in series["flow"]] == [600.0 * k for k in range(12)]
    assert len(series["current"]) == 12
    assert "current" not in recorded_series(connection, "pump-2")
    assert written == 12 + 12
    assert recorded_metrics(connection, "pump-1") == ["current", "flow"]
    rate = connection.execute("SELECT SUM(observations) FROM api_observation_rate").fetchone()[0]
    assert rate == len(observations)


def test_recorded_band_matches_baseline(tmp_path: Path) -> None:
    engine, observations = scored_engine()
    connection = sqlite3.connect(tmp_path / "history.db")
    ObservationRecorder(connection, engine, min_interval=600.0).record(observations)

    bands = baseline_bands(engine, "pump-1")
    point = recorded_series(connection, "pump-1")["flow"][-1]
    assert point["time"] == 6600.0
    assert math.isclose(point["value"], 10.0 + (110 % 7) * 0.1)
    assert math.isclose(point["mean"], bands["flow"]["mean"])
    assert math.isclose(point["high"] - point["mean"], BAND_SIGMA * bands["flow"]["scale"])
    assert math.isclose(point["mean"] - point["low"], BAND_SIGMA * bands["flow"]["scale"])


def test_columns_equal_observations(tmp_path: Path) -> None:
    engine, observations = scored_engine()
    first = sqlite3.connect(tmp_path / "first.db")
    second = sqlite3.connect(tmp_path / "second.db")
    ObservationRecorder(first, engine, min_interval=300.0).record(observations)

    names = ["flow", "current"]
    values = np.array([[obs.metrics.get(name, np.nan) for name in names] for obs in observations])
    times = np.array([obs.time for obs in observations])
    ObservationRecorder(second, engine, min_interval=300.0).record_columns([obs.device for obs in observations], times, values, names)

    for device in ("pump-1", "pump-2"):
        assert recorded_series(first, device) == recorded_series(second, device)


def test_buffered_rows_wait_for_flush(tmp_path: Path) -> None:
    engine, observations = scored_engine()
    connection = sqlite3.connect(tmp_path / "history.db")
    recorder = ObservationRecorder(connection, engine, min_interval=600.0, flush_rows=1000)
    recorder.record(observations)
    assert recorded_series(connection, "pump-1") == {}
    recorder.flush()
    assert len(recorded_series(connection, "pump-1")["flow"]) == 12


def test_prune_drops_rows_past_retention(tmp_path: Path) -> None:
    engine, observations = scored_engine(minutes=600)
    connection = sqlite3.connect(tmp_path / "history.db")
    recorder = ObservationRecorder(connection, engine, min_interval=60.0, retention=3600.0)
    for start in range(0, len(observations), 20):
        recorder.record(observations[start : start + 20])
    times = [point["time"] for point in recorded_series(connection, "pump-1")["flow"]]
    # The only pruning ran after batch 50, whose latest pump-1 row was at
    # 29,940 s, so it cut everything older than an hour before that.
    assert min(times) == 29940.0 - 3600.0
    assert max(times) == 35940.0


def test_legacy_table_dropped(tmp_path: Path) -> None:
    engine, _ = scored_engine(minutes=10)
    connection = sqlite3.connect(tmp_path / "history.db")
    connection.execute("CREATE TABLE api_observations (device TEXT, metric TEXT, time REAL, value REAL, mean REAL, low REAL, high REAL)")
    ObservationRecorder(connection, engine)
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "api_observations" not in tables
    assert "api_observation_rows" in tables
