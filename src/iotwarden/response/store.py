"""Response tables in the alert store: actions, decisions and policy hits.

They live in the same SQLite file as the alerts and the ledger, created with
``CREATE TABLE IF NOT EXISTS`` on the store's connection. Every change of an
action's state is written in one transaction with its ledger entry.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from iotwarden.errors import StoreError
from iotwarden.store.sqlite import write_transaction

__all__ = ["Action", "Decision", "ResponseTables", "STATES", "OPEN_STATES", "FINAL_STATES"]

# dry_run            recorded only, nothing was done
# awaiting_approval  queued for an analyst (approval mode, or blast-radius cap reached)
# pending            to be applied; attempts/next_attempt_at/last_error describe retries
# active             in force; expires_at is None once an analyst confirmed it
# releasing          to be reverted (analyst release or expiry); retried like pending
# released, expired  reverted; rejected: an analyst declined it; done: notification sent
# failed             apply failed with an error that a retry cannot fix
STATES = ("dry_run", "awaiting_approval", "pending", "active", "releasing", "released", "expired", "rejected", "done", "failed")
OPEN_STATES = ("awaiting_approval", "pending", "active")
FINAL_STATES = ("released", "expired", "rejected", "done")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS response_actions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    actuator TEXT NOT NULL,
    policy TEXT NOT NULL,
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    trigger_alerts TEXT NOT NULL,
    target TEXT NOT NULL,
    params TEXT NOT NULL,
    handle TEXT,
    ttl REAL,
    activated_at REAL,
    expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_error TEXT,
    approved_by TEXT,
    confirmed_by TEXT,
    released_by TEXT,
    release_reason TEXT
);
CREATE INDEX IF NOT EXISTS response_actions_state ON response_actions (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS response_actions_device ON response_actions (device, kind, actuator);
CREATE TABLE IF NOT EXISTS response_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    policy TEXT NOT NULL,
    device TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    action_ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS response_hits (
    policy TEXT NOT NULL,
    device TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    alert_time REAL NOT NULL,
    PRIMARY KEY (policy, alert_id)
);
CREATE INDEX IF NOT EXISTS response_hits_device ON response_hits (policy, device, alert_time);
CREATE TABLE IF NOT EXISTS response_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_ACTION_COLUMNS = (
    "id", "created_at", "updated_at", "device", "kind", "actuator", "policy", "mode", "state", "reason", "alert_id",
    "trigger_alerts", "target", "params", "handle", "ttl", "activated_at", "expires_at", "attempts", "next_attempt_at",
    "last_error", "approved_by", "confirmed_by", "released_by", "release_reason",
)
_JSON_COLUMNS = {"trigger_alerts", "target", "params", "handle"}


@dataclass
class Action:
    """One row of ``response_actions``: an action on one device through one actuator."""

    id: str
    created_at: float
    updated_at: float
    device: str
    kind: str
    actuator: str
    policy: str
    mode: str
    state: str
    reason: str
    alert_id: str
    trigger_alerts: list[str] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    handle: dict[str, Any] | None = None
    ttl: float | None = None
    activated_at: float | None = None
    expires_at: float | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    last_error: str | None = None
    approved_by: str | None = None
    confirmed_by: str | None = None
    released_by: str | None = None
    release_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ACTION_COLUMNS}


@dataclass
class Decision:
    """One row of ``response_decisions``: what a policy decided for one alert, and why."""

    id: int
    time: float
    policy: str
    device: str
    alert_id: str
    outcome: str
    reason: str
    action_ids: list[str]


class ResponseTables:
    """Reads and writes the response tables on an open store connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        try:
            connection.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise StoreError(f"cannot create the response tables: {error}") from error

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one write transaction (nested blocks join the outer one)."""
        with write_transaction(self.connection):
            yield

    # Actions ------------------------------------------------------------------

    def insert_action(self, action: Action) -> None:
        row = _action_row(action)
        placeholders = ", ".join("?" for _ in _ACTION_COLUMNS)
        self.connection.execute(f"INSERT INTO response_actions ({', '.join(_ACTION_COLUMNS)}) VALUES ({placeholders})", row)

    def update_action(self, action: Action, *, expected_state: str | None = None) -> bool:
        """Write every column of ``action``; with ``expected_state``, only if the row is still in that state."""
        row = _action_row(action)
        assignments = ", ".join(f"{name} = ?" for name in _ACTION_COLUMNS[1:])
        sql = f"UPDATE response_actions SET {assignments} WHERE id = ?"
        params = [*row[1:], action.id]
        if expected_state is not None:
            sql += " AND state = ?"
            params.append(expected_state)
        return self.connection.execute(sql, params).rowcount == 1

    def action(self, action_id: str) -> Action | None:
        row = self.connection.execute(f"SELECT {', '.join(_ACTION_COLUMNS)} FROM response_actions WHERE id = ?", (action_id,)).fetchone()
        return None if row is None else _row_action(row)

    def actions(
        self,
        *,
        states: tuple[str, ...] | list[str] | None = None,
        device: str | None = None,
        kind: str | None = None,
        actuator: str | None = None,
        due_before: float | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Action]:
        clauses: list[str] = []
        params: list[Any] = []
        if states:
            clauses.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(states)
        for column, value in (("device", device), ("kind", kind), ("actuator", actuator)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if due_before is not None:
            clauses.append("next_attempt_at <= ?")
            params.append(due_before)
        sql = f"SELECT {', '.join(_ACTION_COLUMNS)} FROM response_actions"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at DESC, id DESC" if newest_first else " ORDER BY created_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row_action(row) for row in self.connection.execute(sql, params)]

    def expired(self, now: float) -> list[Action]:
        sql = f"SELECT {', '.join(_ACTION_COLUMNS)} FROM response_actions WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at"
        return [_row_action(row) for row in self.connection.execute(sql, (now,))]

    def contained_devices_since(self, since: float) -> set[str]:
        """Return devices with containment started automatically (not by an analyst) since ``since``."""
        sql = (
            "SELECT DISTINCT device FROM response_actions WHERE kind != 'notify' AND approved_by IS NULL "
            "AND state IN ('pending', 'active', 'releasing', 'released', 'expired', 'failed') AND created_at >= ?"
        )
        return {row[0] for row in self.connection.execute(sql, (since,))}

    # Decisions and hits -----------------------------------------------------------

    def insert_decision(self, time: float, policy: str, device: str, alert_id: str, outcome: str, reason: str, action_ids: list[str]) -> int:
        cursor = self.connection.execute(
            "INSERT INTO response_decisions (time, policy, device, alert_id, outcome, reason, action_ids) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time, policy, device, alert_id, outcome, reason, json.dumps(action_ids)),
        )
        return int(cursor.lastrowid or 0)

    def decisions(self, *, device: str | None = None, policy: str | None = None, limit: int | None = None) -> list[Decision]:
        clauses, params = [], []
        if device is not None:
            clauses.append("device = ?")
            params.append(device)
        if policy is not None:
            clauses.append("policy = ?")
            params.append(policy)
        sql = "SELECT id, time, policy, device, alert_id, outcome, reason, action_ids FROM response_decisions"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [Decision(*row[:7], json.loads(row[7])) for row in self.connection.execute(sql, params)]

    def record_hit(self, policy: str, device: str, alert_id: str, alert_time: float) -> None:
        self.connection.execute("INSERT OR IGNORE INTO response_hits VALUES (?, ?, ?, ?)", (policy, device, alert_id, alert_time))

    def count_hits(self, policy: str, device: str, since: float, until: float) -> int:
        sql = "SELECT COUNT(*) FROM response_hits WHERE policy = ? AND device = ? AND alert_time >= ? AND alert_time <= ?"
        return int(self.connection.execute(sql, (policy, device, since, until)).fetchone()[0])

    # Meta ---------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self.connection.execute("INSERT INTO response_meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM response_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])


def _action_row(action: Action) -> tuple[Any, ...]:
    values = []
    for name in _ACTION_COLUMNS:
        value = getattr(action, name)
        if name in _JSON_COLUMNS:
            value = None if value is None else json.dumps(value, sort_keys=True)
        values.append(value)
    return tuple(values)


def _row_action(row: tuple[Any, ...]) -> Action:
    values = dict(zip(_ACTION_COLUMNS, row))
    for name in _JSON_COLUMNS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    return Action(**values)
