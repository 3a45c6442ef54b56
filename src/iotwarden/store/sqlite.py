"""The alert store: SQLite in WAL mode.

One file contains alerts (inserted when they open, updated when they close),
one row per replay or service run, and the tamper-evident ledger: every
alert that opens or closes is appended to the ledger in the same
transaction as its row, so the two cannot disagree. WAL mode lets readers
such as ``iotwarden alerts`` run while a detector writes. Writes are
batched: one transaction per engine micro-batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from iotwarden.decisions.alerts import Alert, Contribution
from iotwarden.errors import StoreError
from iotwarden.ledger import Ledger, ledger_key_path

__all__ = ["AlertStore", "write_transaction"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    time REAL NOT NULL,
    end_time REAL,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    score REAL NOT NULL,
    detector TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    cohort TEXT NOT NULL,
    baseline TEXT NOT NULL,
    explanation TEXT NOT NULL,
    metrics TEXT NOT NULL,
    details TEXT NOT NULL,
    source TEXT NOT NULL,
    line INTEGER,
    close_reason TEXT,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_device_time ON alerts (device, time);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts (time);
CREATE INDEX IF NOT EXISTS alerts_incident ON alerts (incident_id);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    finished_at REAL,
    command TEXT NOT NULL,
    summary TEXT
);
"""

_COLUMNS = (
    "id", "device", "time", "end_time", "category", "severity", "score", "detector", "incident_id",
    "cohort", "baseline", "explanation", "metrics", "details", "source", "line", "close_reason",
)


class AlertStore:
    """Alerts and runs in one SQLite file.

    Args:
        path: The database file; its folder is created if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.execute("PRAGMA foreign_keys=ON")
            self.connection.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the store {self.path}: {error}") from error
        self.ledger = Ledger(self.connection, ledger_key_path(self.path))

    def _check_version(self) -> None:
        row = self.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self.connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"the store {self.path} has schema version {row[0]}; this iotwarden reads version {SCHEMA_VERSION}")

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Alerts -----------------------------------------------------------------

    def record_alerts(self, opened: Iterable[Alert], closed: Iterable[Alert] = ()) -> int:
        """Store alerts that opened or closed, and append both to the ledger.

        Returns the number of alert rows written. An alert that opened and
        closed in the same batch gives one row and two ledger entries.
        """
        opened, closed = list(opened), list(closed)
        entries: list[tuple[str, dict[str, Any], str]] = []
        for alert in opened:
            entries.append(("alert", alert_record(alert), alert.detector))
        for alert in closed:
            closing = {"id": alert.id, "device": alert.device, "end_time": alert.end_time, "reason": alert.close_reason}
            entries.append(("alert_closed", closing, alert.detector))
        return self.save_alerts({alert.id: alert for alert in [*opened, *closed]}.values(), ledger_entries=entries)

    def save_alerts(self, alerts: Iterable[Alert], *, ledger_entries: list[tuple[str, dict[str, Any], str]] | None = None) -> int:
        """Insert new alerts and update ones already stored; return the count."""
        rows = [_alert_row(alert) for alert in alerts]
        if not rows:
            return 0
        placeholders = ", ".join("?" for _ in range(len(_COLUMNS) + 1))
        updates = ", ".join(f"{name} = excluded.{name}" for name in _COLUMNS[1:])
        sql = f"INSERT INTO alerts ({', '.join(_COLUMNS)}, stored_at) VALUES ({placeholders}) ON CONFLICT(id) DO UPDATE SET {updates}"
        try:
            with self.transaction():
                self.connection.executemany(sql, rows)
                if ledger_entries:
                    self.ledger.append_many(ledger_entries)
        except sqlite3.Error as error:
            raise StoreError(f"cannot write {len(rows)} alerts to {self.path}: {error}") from error
        return len(rows)

    def alerts(
        self,
        *,
        device: str | None = None,
        since: float | None = None,
        until: float | None = None,
        category: str | None = None,
        limit: int | None = None,
    ) -> list[Alert]:
        """Return stored alerts, oldest first, filtered by the given fields."""
        clauses, params = [], []
        if device is not None:
            clauses.append("device = ?")
            params.append(device)
        if since is not None:
            clauses.append("COALESCE(end_time, time) >= ?")
            params.append(since)
        if until is not None:
            clauses.append("time < ?")
            params.append(until)
        if category is not None:
            clauses.append("category = ?")
            params.append(category)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM alerts"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY time, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        try:
            return [_row_alert(row) for row in self.connection.execute(sql, params)]
        except sqlite3.Error as error:
            raise StoreError(f"cannot read alerts from {self.path}: {error}") from error

    def count_alerts(self) -> int:
        return int(self.connection.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    # Runs -------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        cursor = self.connection.execute("INSERT INTO runs (started_at, command) VALUES (?, ?)", (time.time(), command))
        return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        self.connection.execute(
            "UPDATE runs SET finished_at = ?, summary = ? WHERE id = ?", (time.time(), json.dumps(summary), run_id)
        )

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Run the block in one write transaction on the store's connection."""
        return write_transaction(self.connection)


@contextlib.contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction.

    A block inside an open transaction joins it, so helpers that write can
    be called alone or from a caller's larger transaction.
    """
    if connection.in_transaction:
        yield
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def alert_record(alert: Alert) -> dict[str, Any]:
    """Return an alert as JSON-compatible data with finite numbers only."""
    record = alert.to_dict()
    record["metrics"] = [
        {key: (_json_number(value) if key in ("value", "expected", "low", "high") else value) for key, value in item.items()}
        for item in record["metrics"]
    ]
    return record


def _alert_row(alert: Alert) -> tuple[Any, ...]:
    metrics = [
        {
            "metric": c.metric,
            "value": _json_number(c.value),
            "expected": _json_number(c.expected),
            "low": _json_number(c.low),
            "high": _json_number(c.high),
            "surprise": c.surprise,
        }
        for c in alert.metrics
    ]
    return (
        alert.id, alert.device, alert.time, alert.end_time, alert.category, alert.severity, alert.score,
        alert.detector, alert.incident_id, alert.cohort, alert.baseline, alert.explanation,
        json.dumps(metrics, allow_nan=False, default=_finite), json.dumps(alert.details), alert.source, alert.line,
        alert.close_reason, time.time(),
    )


def _finite(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {value!r}")


def _json_number(value: float | None) -> float | None:
    """JSON has no infinity: an unbounded side of a range is stored as null."""
    if value is None or not math.isfinite(value):
        return None
    return value


def _row_alert(row: tuple[Any, ...]) -> Alert:
    values = dict(zip(_COLUMNS, row))
    values["metrics"] = [Contribution(**c) for c in json.loads(values["metrics"])]
    values["details"] = json.loads(values["details"])
    return Alert(**values)
