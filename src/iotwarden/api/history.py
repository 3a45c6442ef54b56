"""Recent observations with the learned baseline band, for the console's device charts.

The engine keeps no history, so a detector that wants device charts in the
console records a thinned copy of what it scores: :class:`ObservationRecorder`
writes table ``api_observations`` (one row per device, metric and kept
observation, with the slow baseline's mean and band after that batch) and
``api_observation_rate`` (observations per hour of event time). Call
``recorder.record(batch)`` right after ``engine.process_batch(batch)``.

The band is the slow baseline's mean plus or minus three of its predictive
standard deviations, the range that alert explanations quote. It is read
after the batch was learned, so it includes the batch's own values.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

from iotwarden.detectors.baseline import predictive_scale
from iotwarden.observation import Observation
from iotwarden.store.sqlite import write_transaction

__all__ = ["ObservationRecorder", "baseline_bands", "observation_rates", "recorded_series"]

logger = logging.getLogger(__name__)

BAND_SIGMA = 3.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_observations (
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    time REAL NOT NULL,
    value REAL NOT NULL,
    mean REAL,
    low REAL,
    high REAL
);
CREATE INDEX IF NOT EXISTS api_observations_series ON api_observations (device, metric, time);
CREATE TABLE IF NOT EXISTS api_observation_rate (
    hour REAL PRIMARY KEY,
    observations INTEGER NOT NULL
);
"""


def ensure_tables(connection: sqlite3.Connection) -> None:
    connection.executescript(_SCHEMA)


def baseline_bands(engine: Any, device: str) -> dict[str, dict[str, Any]]:
    """Return each metric's learned baseline for one device of an engine, by metric name.

    Each entry has ``count`` (observations learned), ``ready`` (the device's
    own baseline scores, else its cohort's does), ``mean``, ``scale`` and the
    band ``low``/``high``. Metrics the device never reported are left out.
    Raises KeyError for an unknown device.
    """
    shard_number, slot = engine.device_index[device]
    shard = engine.shards[shard_number]
    config = engine.config
    m = engine.n_metrics
    count = shard["count"][slot, :m].astype(np.float64)
    mean = shard["mean_slow"][slot, :m].astype(np.float64)
    resolution = shard["resolution"][slot, :m].astype(np.float64)
    resolution = np.where(np.isinf(resolution) & shard["integral"][slot, :m] & (count > 0), 1.0, resolution)
    scale = predictive_scale(shard["var_slow"][slot, :m], count, mean, resolution, config.slow_halflife, config)
    bands: dict[str, dict[str, Any]] = {}
    for column, name in enumerate(engine.metric_names):
        if count[column] <= 0:
            continue
        spread = BAND_SIGMA * float(scale[column])
        bands[name] = {
            "count": int(count[column]),
            "ready": bool(count[column] >= config.warmup),
            "mean": _finite(float(mean[column])),
            "scale": _finite(float(scale[column])),
            "low": _finite(float(mean[column]) - spread),
            "high": _finite(float(mean[column]) + spread),
        }
    return bands


class ObservationRecorder:
    """Write a thinned history of observations and baseline bands to the store.

    Args:
        store: An :class:`~iotwarden.store.AlertStore` (or its connection).
        engine: The engine that scores the observations.
        min_interval: Keep at most one observation per device every this
            many seconds of event time.
        retention: Delete a device's rows older than this many seconds of
            event time behind its latest kept observation.
    """

    def __init__(self, store: Any, engine: Any, *, min_interval: float = 60.0, retention: float = 2 * 86400.0) -> None:
        self.connection: sqlite3.Connection = store if isinstance(store, sqlite3.Connection) else store.connection
        self.engine = engine
        self.min_interval = min_interval
        self.retention = retention
        self._last_kept: dict[str, float] = {}
        self._batches = 0
        ensure_tables(self.connection)

    def record(self, batch: Sequence[Observation]) -> int:
        """Record the observations of a batch that the engine just processed; return rows written."""
        rows: list[tuple[Any, ...]] = []
        hours: dict[float, int] = {}
        bands_cache: dict[str, dict[str, dict[str, Any]]] = {}
        for obs in batch:
            hour = math.floor(obs.time / 3600.0) * 3600.0
            hours[hour] = hours.get(hour, 0) + 1
            last = self._last_kept.get(obs.device)
            if last is not None and obs.time - last < self.min_interval:
                continue
            if obs.device not in self.engine.device_index:
                continue
            self._last_kept[obs.device] = obs.time
            bands = bands_cache.get(obs.device)
            if bands is None:
                bands = bands_cache[obs.device] = baseline_bands(self.engine, obs.device)
            for metric, value in obs.metrics.items():
                band = bands.get(metric, {})
                rows.append((obs.device, metric, obs.time, float(value), band.get("mean"), band.get("low"), band.get("high")))
        self._batches += 1
        with write_transaction(self.connection):
            self.connection.executemany("INSERT INTO api_observations VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self.connection.executemany(
                "INSERT INTO api_observation_rate (hour, observations) VALUES (?, ?) "
                "ON CONFLICT(hour) DO UPDATE SET observations = observations + excluded.observations",
                list(hours.items()),
            )
            if self._batches % 50 == 0:
                self._prune()
        return len(rows)

    def _prune(self) -> None:
        for device, last in self._last_kept.items():
            self.connection.execute("DELETE FROM api_observations WHERE device = ? AND time < ?", (device, last - self.retention))


def recorded_series(connection: sqlite3.Connection, device: str, *, since: float | None = None, until: float | None = None, limit: int = 5000) -> dict[str, list[dict[str, Any]]]:
    """Return the recorded observations of one device by metric, oldest first (the newest ``limit`` rows)."""
    ensure_tables(connection)
    clauses = ["device = ?"]
    params: list[Any] = [device]
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    if until is not None:
        clauses.append("time < ?")
        params.append(until)
    params.append(limit)
    rows = connection.execute(
        f"SELECT metric, time, value, mean, low, high FROM api_observations WHERE {' AND '.join(clauses)} "
        "ORDER BY time DESC LIMIT ?",
        params,
    ).fetchall()
    series: dict[str, list[dict[str, Any]]] = {}
    for metric, when, value, mean, low, high in reversed(rows):
        series.setdefault(metric, []).append({"time": when, "value": value, "mean": mean, "low": low, "high": high})
    return series


def observation_rates(connection: sqlite3.Connection, since: float) -> list[tuple[float, int]]:
    """Return (hour start, observations) for hours of event time from ``since`` on."""
    ensure_tables(connection)
    return [(float(hour), int(count)) for hour, count in connection.execute(
        "SELECT hour, observations FROM api_observation_rate WHERE hour >= ? ORDER BY hour", (since,)
    )]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None

