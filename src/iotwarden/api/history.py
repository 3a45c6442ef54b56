"""Recent observations with the learned baseline band, for the console's device charts.

The engine keeps no history, so a detector that wants device charts in the
console records a thinned copy of what it scores: :class:`ObservationRecorder`
writes table ``api_observation_rows`` and ``api_observation_rate``
(observations per hour of event time). Each row of the first is one kept
observation of one device. Column ``names`` lists metric names separated by
newlines. Column ``data`` contains four little-endian float64 values for
each name in order: the value (NaN where the observation lacks that metric)
and the slow baseline's mean, low and high after that batch (NaN where there
is no baseline yet). Binary rows are far cheaper to write than the same
numbers as JSON text, which cost more than scoring the observation. Call
``recorder.record(batch)`` right after ``engine.process_batch(batch)``, or
``recorder.record_columns(...)`` after ``engine.process_arrays(...)`` with
the same arguments.

The band is the slow baseline's mean plus or minus three of its predictive
standard deviations, the range that alert explanations quote. It is read
after the batch was learned, so it includes the batch's own values.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from iotwarden.detectors.baseline import predictive_scale
from iotwarden.observation import Observation
from iotwarden.store.sqlite import write_transaction

__all__ = ["ObservationRecorder", "baseline_bands", "observation_rates", "recorded_metrics", "recorded_series"]

logger = logging.getLogger(__name__)

BAND_SIGMA = 3.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_observation_rows (
    device TEXT NOT NULL,
    time REAL NOT NULL,
    names TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS api_observation_rows_series ON api_observation_rows (device, time);
CREATE TABLE IF NOT EXISTS api_observation_rate (
    hour REAL PRIMARY KEY,
    observations INTEGER NOT NULL
);
"""

# Earlier stores kept one row per observation and metric in this table.
_LEGACY_TABLE = "api_observations"


def ensure_tables(connection: sqlite3.Connection) -> None:
    connection.executescript(_SCHEMA)


def _drop_legacy_history(connection: sqlite3.Connection) -> None:
    exists = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_LEGACY_TABLE,)).fetchone()
    if exists:
        connection.execute(f"DROP TABLE {_LEGACY_TABLE}")
        logger.info("dropped table %s, the per-metric observation history of an older version; charts start again from this run", _LEGACY_TABLE)


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
        flush_rows: Hold rows in memory until this many are pending, or
            until ``flush_seconds`` of wall-clock time passed since the last
            write, then write them in one transaction; 0 writes every batch
            at once. With more than 0, call :meth:`flush` at the end.
        flush_seconds: See ``flush_rows``; 0 sets no time limit.
    """

    def __init__(
        self, store: Any, engine: Any, *, min_interval: float = 60.0, retention: float = 2 * 86400.0, flush_rows: int = 0,
        flush_seconds: float = 0.0,
    ) -> None:
        self.connection: sqlite3.Connection = store if isinstance(store, sqlite3.Connection) else store.connection
        self.engine = engine
        self.min_interval = min_interval
        self.retention = retention
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._flushed_at = time.monotonic()
        self._last_kept: dict[str, float] = {}
        self._pending: list[tuple[Any, ...]] = []
        self._pending_hours: dict[float, int] = {}
        self._batches = 0
        self._pruned_at = 0
        ensure_tables(self.connection)
        _drop_legacy_history(self.connection)
        # A lower bound on each device's oldest recorded time, rows of earlier runs included.
        self._first_kept: dict[str, float] = dict(
            self.connection.execute("SELECT device, MIN(time) FROM api_observation_rows GROUP BY device").fetchall()
        )

    def record(self, batch: Sequence[Observation]) -> int:
        """Record the observations of a batch that the engine just processed; return rows written."""
        names = list(dict.fromkeys(name for obs in batch for name in obs.metrics))
        column_of = {name: column for column, name in enumerate(names)}
        values = np.full((len(batch), len(names)), np.nan)
        for row, obs in enumerate(batch):
            for name, value in obs.metrics.items():
                values[row, column_of[name]] = value
        times = np.array([obs.time for obs in batch], dtype=np.float64)
        return self.record_columns([obs.device for obs in batch], times, values, names)

    def record_columns(self, devices: Sequence[str], times: np.ndarray, values: np.ndarray, metric_names: Sequence[str]) -> int:
        """Record a batch given as columns, as :meth:`Engine.process_arrays` takes it; return rows written.

        ``values[i, k]`` is metric ``k`` of row ``i``, NaN where missing.
        """
        times = np.asarray(times, dtype=np.float64)
        hours, counts = np.unique(np.floor(times / 3600.0) * 3600.0, return_counts=True)
        for hour, count in zip(hours.tolist(), counts.tolist()):
            self._pending_hours[hour] = self._pending_hours.get(hour, 0) + count
        kept = self._thin(devices, times)
        rows = self._rows(devices, times, values, metric_names, kept) if kept else []
        self._pending.extend(rows)
        self._batches += 1
        overdue = self.flush_seconds > 0 and time.monotonic() - self._flushed_at >= self.flush_seconds
        if len(self._pending) >= self.flush_rows or overdue:
            self.flush()
        return len(rows)

    def flush(self) -> None:
        """Write the rows kept so far to the store, in one transaction."""
        with write_transaction(self.connection):
            self.connection.executemany("INSERT INTO api_observation_rows VALUES (?, ?, ?, ?)", self._pending)
            self.connection.executemany(
                "INSERT INTO api_observation_rate (hour, observations) VALUES (?, ?) "
                "ON CONFLICT(hour) DO UPDATE SET observations = observations + excluded.observations",
                list(self._pending_hours.items()),
            )
            if self._batches - self._pruned_at >= 50:
                self._prune()
                self._pruned_at = self._batches
        self._pending = []
        self._pending_hours = {}
        self._flushed_at = time.monotonic()

    def _thin(self, devices: Sequence[str], times: np.ndarray) -> list[int]:
        """Return the rows to keep: at most one per device every ``min_interval`` seconds."""
        last_kept = self._last_kept
        known = self.engine.device_index
        interval = self.min_interval
        kept = []
        for row, (device, time) in enumerate(zip(devices, times.tolist())):
            last = last_kept.get(device)
            if last is not None and time - last < interval:
                continue
            if device not in known:
                continue
            if last is None and device not in self._first_kept:
                self._first_kept[device] = time
            last_kept[device] = time
            kept.append(row)
        return kept

    def _rows(self, devices: Sequence[str], times: np.ndarray, values: np.ndarray, metric_names: Sequence[str], kept: list[int]) -> list[tuple[Any, ...]]:
        """Build the table row of each kept observation: device, time, metric names and the binary data."""
        kept_devices = [devices[row] for row in kept]
        mean, low, high = self._bands(kept_devices, metric_names)
        data = np.stack([values[kept], mean, low, high], axis=2).astype("<f8")
        names = "\n".join(metric_names)
        return [
            (device, time, names, block.tobytes())
            for device, time, block in zip(kept_devices, times[kept].tolist(), data)
        ]

    def _bands(self, devices: list[str], metric_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the slow baseline's mean and band of each device and metric, NaN where none was learned."""
        engine = self.engine
        config = engine.config
        shape = (len(devices), len(metric_names))
        mean, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
        engine_columns = np.array([engine.metric_index.get(name, -1) for name in metric_names], dtype=np.intp)
        learned = np.flatnonzero(engine_columns >= 0)
        if not learned.size:
            return mean, low, high
        columns = engine_columns[learned]
        located = np.array([engine.device_index[device] for device in devices], dtype=np.intp).reshape(len(devices), 2)
        for number in np.unique(located[:, 0]).tolist():
            rows = np.flatnonzero(located[:, 0] == number)
            shard = engine.shards[number]
            cells = np.ix_(located[rows, 1], columns)
            count = shard["count"][cells].astype(np.float64)
            level = shard["mean_slow"][cells].astype(np.float64)
            resolution = shard["resolution"][cells].astype(np.float64)
            resolution = np.where(np.isinf(resolution) & shard["integral"][cells] & (count > 0), 1.0, resolution)
            spread = BAND_SIGMA * predictive_scale(shard["var_slow"][cells], count, level, resolution, config.slow_halflife, config)
            level = np.where(count > 0, level, np.nan)
            target = np.ix_(rows, learned)
            mean[target] = level
            low[target] = level - spread
            high[target] = level + spread
        return mean, low, high

    def _prune(self) -> None:
        # A device is pruned only once its oldest row may lie a quarter of the
        # retention beyond it, so most calls delete nothing and a short
        # replay runs no DELETE at all.
        slack = self.retention / 4.0
        for device, last in self._last_kept.items():
            oldest = self._first_kept.get(device, -math.inf)
            if last - oldest > self.retention + slack:
                cutoff = last - self.retention
                self.connection.execute("DELETE FROM api_observation_rows WHERE device = ? AND time < ?", (device, cutoff))
                self._first_kept[device] = cutoff


def recorded_series(connection: sqlite3.Connection, device: str, *, since: float | None = None, until: float | None = None, limit: int = 5000) -> dict[str, list[dict[str, Any]]]:
    """Return the recorded observations of one device by metric, oldest first (the newest ``limit`` observations)."""
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
        f"SELECT time, names, data FROM api_observation_rows WHERE {' AND '.join(clauses)} ORDER BY time DESC LIMIT ?",
        params,
    ).fetchall()
    series: dict[str, list[dict[str, Any]]] = {}
    for when, names, data in reversed(rows):
        for metric, (value, mean, low, high) in _decode(names, data):
            series.setdefault(metric, []).append(
                {"time": when, "value": value, "mean": _finite(mean), "low": _finite(low), "high": _finite(high)}
            )
    return series


def recorded_metrics(connection: sqlite3.Connection, device: str, recent: int = 100) -> list[str]:
    """Return the metric names in a device's ``recent`` latest recorded observations, sorted."""
    ensure_tables(connection)
    names: set[str] = set()
    for text, data in connection.execute(
        "SELECT names, data FROM api_observation_rows WHERE device = ? ORDER BY time DESC LIMIT ?", (device, recent)
    ):
        names.update(metric for metric, _ in _decode(text, data))
    return sorted(names)


def _decode(names: str, data: bytes) -> list[tuple[str, list[float]]]:
    """Return (metric, [value, mean, low, high]) of one recorded observation, skipping metrics it lacks."""
    numbers = np.frombuffer(data, dtype="<f8").reshape(-1, 4).tolist()
    return [(metric, row) for metric, row in zip(names.split("\n"), numbers) if row[0] == row[0]]


def observation_rates(connection: sqlite3.Connection, since: float) -> list[tuple[float, int]]:
    """Return (hour start, observations) for hours of event time from ``since`` on."""
    ensure_tables(connection)
    return [(float(hour), int(count)) for hour, count in connection.execute(
        "SELECT hour, observations FROM api_observation_rate WHERE hour >= ? ORDER BY hour", (since,)
    )]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None



