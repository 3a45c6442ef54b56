"""Suppressions and maintenance windows kept in the store (table ``api_suppressions``).

Every row becomes a :class:`~iotwarden.decisions.suppression.Suppression`
for the engine. Its ``start`` and ``end`` are epoch seconds of event time,
the clock that the engine compares with an alert's ``time``. Deleting a row
only marks it deleted, so analysts can see every suppression that ever
existed and who undid it.

A false-positive label creates a row scoped to the alert's device, lead
metric and category, from the alert's time for ``DEFAULT_FALSE_POSITIVE_TTL``
(7 days) of event time.

Wiring into a detector::

    sync = SuppressionSync(store, engine)
    sync.refresh()          # at start
    ...
    sync.refresh()          # after each batch; cheap when nothing changed
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from iotwarden.decisions.alerts import Alert
from iotwarden.decisions.suppression import Suppression

__all__ = [
    "DEFAULT_FALSE_POSITIVE_TTL",
    "KINDS",
    "SuppressionRecord",
    "SuppressionSync",
    "SuppressionTable",
    "load_suppressions",
]

logger = logging.getLogger(__name__)

DEFAULT_FALSE_POSITIVE_TTL = 7 * 86400.0
KINDS = ("suppression", "maintenance")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_suppressions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    device TEXT,
    cohort TEXT,
    metric TEXT,
    category TEXT,
    start REAL,
    end REAL,
    reason TEXT NOT NULL DEFAULT '',
    alert_id TEXT,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    deleted_by TEXT,
    deleted_at REAL
);
CREATE INDEX IF NOT EXISTS api_suppressions_alert ON api_suppressions (alert_id);
"""

_COLUMNS = (
    "id", "kind", "device", "cohort", "metric", "category", "start", "end", "reason", "alert_id",
    "created_by", "created_at", "updated_at", "deleted_by", "deleted_at",
)
SCOPE_FIELDS = ("device", "cohort", "metric", "category")


@dataclass(slots=True)
class SuppressionRecord:
    """One row of ``api_suppressions``.

    ``start`` None means from the beginning of time, ``end`` None means it
    never expires. ``alert_id`` is set when a false-positive label created it.
    """

    id: str
    kind: str
    device: str | None
    cohort: str | None
    metric: str | None
    category: str | None
    start: float | None
    end: float | None
    reason: str
    alert_id: str | None
    created_by: str
    created_at: float
    updated_at: float
    deleted_by: str | None = None
    deleted_at: float | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def to_suppression(self) -> Suppression:
        """Return the engine's form of this row."""
        return Suppression(
            id=self.id,
            device=self.device,
            cohort=self.cohort,
            metric=self.metric,
            category=self.category,
            start=-math.inf if self.start is None else self.start,
            end=self.end,
            reason=self.reason,
        )

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


class SuppressionTable:
    """Reads and writes ``api_suppressions`` on a store's connection.

    Writes do not open a transaction: the caller wraps each one together with
    its ledger entry.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        connection.executescript(_SCHEMA)

    def insert(self, record: SuppressionRecord) -> None:
        marks = ", ".join("?" for _ in _COLUMNS)
        self.connection.execute(
            f"INSERT INTO api_suppressions ({', '.join(_COLUMNS)}) VALUES ({marks})",
            tuple(getattr(record, name) for name in _COLUMNS),
        )

    def update(self, record: SuppressionRecord) -> None:
        assignments = ", ".join(f"{name} = ?" for name in _COLUMNS[1:])
        self.connection.execute(
            f"UPDATE api_suppressions SET {assignments} WHERE id = ?",
            (*(getattr(record, name) for name in _COLUMNS[1:]), record.id),
        )

    def get(self, suppression_id: str) -> SuppressionRecord | None:
        row = self.connection.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM api_suppressions WHERE id = ?", (suppression_id,)
        ).fetchone()
        return None if row is None else SuppressionRecord(*row)

    def list(
        self,
        *,
        kind: str | None = None,
        device: str | None = None,
        include_deleted: bool = False,
        alert_id: str | None = None,
    ) -> list[SuppressionRecord]:
        """Return rows, newest first."""
        clauses: list[str] = []
        params: list[Any] = []
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if device is not None:
            clauses.append("device = ?")
            params.append(device)
        if alert_id is not None:
            clauses.append("alert_id = ?")
            params.append(alert_id)
        if not include_deleted:
            clauses.append("deleted_at IS NULL")
        sql = f"SELECT {', '.join(_COLUMNS)} FROM api_suppressions"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at DESC, id"
        return [SuppressionRecord(*row) for row in self.connection.execute(sql, params)]

    def fingerprint(self) -> tuple[int, float]:
        """Return (row count, latest change): it changes whenever a row is added, edited or deleted."""
        row = self.connection.execute("SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM api_suppressions").fetchone()
        return int(row[0]), float(row[1])


def new_record(
    *,
    kind: str,
    actor: str,
    device: str | None = None,
    cohort: str | None = None,
    metric: str | None = None,
    category: str | None = None,
    start: float | None = None,
    end: float | None = None,
    reason: str = "",
    alert_id: str | None = None,
    now: float | None = None,
) -> SuppressionRecord:
    """Build a new row with a fresh id; raises ValueError naming the field for an invalid one."""
    if kind not in KINDS:
        raise ValueError(f"kind: invalid value {kind!r}; choose from {', '.join(KINDS)}")
    if all(value is None for value in (device, cohort, metric, category)):
        raise ValueError("scope: give at least one of device, cohort, metric or category; an empty scope would hide every alert")
    if kind == "maintenance" and (start is None or end is None):
        raise ValueError("end: a maintenance window needs both start and end")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end: must be after start ({end} <= {start})")
    stamp = time.time() if now is None else now
    return SuppressionRecord(
        id="sup-" + uuid.uuid4().hex[:12],
        kind=kind,
        device=device,
        cohort=cohort,
        metric=metric,
        category=category,
        start=start,
        end=end,
        reason=reason,
        alert_id=alert_id,
        created_by=actor,
        created_at=stamp,
        updated_at=stamp,
    )


def record_for_false_positive(alert: Alert, *, actor: str, ttl: float = DEFAULT_FALSE_POSITIVE_TTL, note: str = "", now: float | None = None) -> SuppressionRecord:
    """Build the suppression that a false-positive label on ``alert`` creates.

    It covers the alert's device, lead metric (the first contribution, the one
    :meth:`Suppression.matches` compares) and category, from the alert's event
    time for ``ttl`` seconds.
    """
    lead_metric = alert.metrics[0].metric if alert.metrics else None
    reason = f"false positive: alert {alert.id}" + (f" ({note})" if note else "")
    return new_record(
        kind="suppression",
        actor=actor,
        device=alert.device,
        metric=lead_metric,
        category=alert.category,
        start=alert.time,
        end=alert.time + ttl,
        reason=reason,
        alert_id=alert.id,
        now=now,
    )


def load_suppressions(store: Any) -> list[Suppression]:
    """Return every suppression and maintenance window that is not deleted, in the engine's form.

    ``store`` is an :class:`~iotwarden.store.AlertStore` or a sqlite3
    connection. Expired rows are included: their window is in event time, and
    the engine compares it with each alert's time, so a replay of old data
    is suppressed as it was when the label was given.
    """
    connection = store if isinstance(store, sqlite3.Connection) else store.connection
    return [record.to_suppression() for record in SuppressionTable(connection).list()]


class SuppressionSync:
    """Keep an engine's suppressions equal to the store's.

    ``refresh`` compares a cheap fingerprint of the table (row count and last
    change) and reloads only when it changed, so calling it after every
    micro-batch costs one small query.
    """

    def __init__(self, store: Any, engine: Any) -> None:
        self.connection = store if isinstance(store, sqlite3.Connection) else store.connection
        self.engine = engine
        self.table = SuppressionTable(self.connection)
        self._fingerprint: tuple[int, float] | None = None

    def refresh(self) -> bool:
        """Reload the suppressions into the engine if they changed; return whether they did."""
        fingerprint = self.table.fingerprint()
        if fingerprint == self._fingerprint:
            return False
        suppressions = [record.to_suppression() for record in self.table.list()]
        self.engine.set_suppressions(suppressions)
        self._fingerprint = fingerprint
        logger.info("loaded %d suppressions and maintenance windows into the engine", len(suppressions))
        return True
