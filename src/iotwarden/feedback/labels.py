"""Triage state and analyst labels of alerts, in table ``api_alert_triage``.

An alert without a row is ``new`` and unlabelled. The table sits in the
alert store's SQLite file. Callers open the transaction and append the
ledger entry, so the row and its ledger entry are written together.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

__all__ = ["LABELS", "TRIAGE_STATES", "Triage", "TriageTable"]

TRIAGE_STATES = ("new", "acknowledged", "resolved")
LABELS = ("true_positive", "false_positive")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_alert_triage (
    alert_id TEXT PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'new',
    label TEXT,
    note TEXT NOT NULL DEFAULT '',
    labelled_by TEXT,
    labelled_at REAL,
    suppression_id TEXT,
    updated_by TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS api_alert_triage_label ON api_alert_triage (label);
CREATE INDEX IF NOT EXISTS api_alert_triage_state ON api_alert_triage (state);
"""

_COLUMNS = ("alert_id", "state", "label", "note", "labelled_by", "labelled_at", "suppression_id", "updated_by", "updated_at")


@dataclass(slots=True)
class Triage:
    """One alert's triage row: workflow state, label, note and who changed it last."""

    alert_id: str
    state: str = "new"
    label: str | None = None
    note: str = ""
    labelled_by: str | None = None
    labelled_at: float | None = None
    suppression_id: str | None = None
    updated_by: str | None = None
    updated_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


class TriageTable:
    """Reads and writes ``api_alert_triage`` on a store's connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        connection.executescript(_SCHEMA)

    def get(self, alert_id: str) -> Triage:
        """Return the alert's triage row, or a ``new`` one when none is stored."""
        row = self.connection.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM api_alert_triage WHERE alert_id = ?", (alert_id,)
        ).fetchone()
        return Triage(alert_id) if row is None else Triage(*row)

    def many(self, alert_ids: list[str]) -> dict[str, Triage]:
        """Return the stored triage rows of these alerts, by alert id."""
        found: dict[str, Triage] = {}
        for start in range(0, len(alert_ids), 500):
            chunk = alert_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self.connection.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM api_alert_triage WHERE alert_id IN ({marks})", chunk
            ):
                found[row[0]] = Triage(*row)
        return found

    def save(self, triage: Triage) -> None:
        """Insert or replace the row; call inside the caller's transaction."""
        marks = ", ".join("?" for _ in _COLUMNS)
        self.connection.execute(
            f"INSERT OR REPLACE INTO api_alert_triage ({', '.join(_COLUMNS)}) VALUES ({marks})",
            tuple(getattr(triage, name) for name in _COLUMNS),
        )

    def labelled(self) -> list[tuple[str, str]]:
        """Return ``(alert_id, label)`` of every labelled alert."""
        return [(row[0], row[1]) for row in self.connection.execute(
            "SELECT alert_id, label FROM api_alert_triage WHERE label IS NOT NULL ORDER BY alert_id"
        )]

    def fingerprint(self) -> tuple[int, float]:
        """Return (labelled count, latest change time): changes whenever a label changes."""
        row = self.connection.execute(
            "SELECT COUNT(label), COALESCE(MAX(labelled_at), 0) FROM api_alert_triage"
        ).fetchone()
        return int(row[0]), float(row[1])
