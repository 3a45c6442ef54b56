"""The REST API's operations without HTTP: reads and analyst changes on one alert store.

One :class:`Backend` owns one :class:`~iotwarden.store.AlertStore` connection
and a lock. Every read and write holds the lock, because the web server
calls from a thread pool and SQLite transactions on one connection must not
interleave. Each analyst change is written in one ``BEGIN IMMEDIATE``
transaction together with its ledger entry (the ledger joins the
transaction through a savepoint), so a failed request leaves neither.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from iotwarden.api.history import baseline_bands, ensure_tables, observation_rates, recorded_metrics, recorded_series
from iotwarden.api.timeutil import iso
from iotwarden.api.tokens import TokenTable
from iotwarden.decisions.alerts import Alert, Contribution
from iotwarden.errors import IotwardenError
from iotwarden.feedback.labels import TriageTable
from iotwarden.feedback.ranker import AlertRanker, RankerStatus
from iotwarden.feedback.suppressions import (
    DEFAULT_FALSE_POSITIVE_TTL,
    SuppressionRecord,
    SuppressionTable,
    record_for_false_positive,
)
from iotwarden.response.policy import load_policies
from iotwarden.response.responder import Responder
from iotwarden.response.store import ResponseTables
from iotwarden.store import AlertStore
from iotwarden.store.sqlite import write_transaction

__all__ = ["ApiError", "Backend"]

logger = logging.getLogger(__name__)

RISK_WINDOW = 86400.0
RETRAIN_INTERVAL = 10.0
_ALERT_COLUMNS = (
    "id", "device", "time", "end_time", "category", "severity", "score", "detector", "incident_id",
    "cohort", "baseline", "explanation", "metrics", "details", "source", "line", "close_reason",
)
_SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


class ApiError(IotwardenError):
    """A request that cannot be carried out; ``status`` is the HTTP status, ``field`` the input at fault."""

    def __init__(self, status: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class Backend:
    """Alerts, incidents, devices, actions, suppressions, labels and tokens of one store.

    Args:
        store_path: The SQLite store that ``iotwarden detect`` or ``run`` writes.
        state_path: An engine state file (``detect --state``) for baseline summaries; optional.
        policy_path: The response policy file whose actuators carry out approvals
            and releases; default: the file the responder recorded in the store.
        false_positive_ttl: Seconds of event time that a false-positive label suppresses its pattern.
    """

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        *,
        state_path: str | os.PathLike[str] | None = None,
        policy_path: str | os.PathLike[str] | None = None,
        false_positive_ttl: float = DEFAULT_FALSE_POSITIVE_TTL,
    ) -> None:
        self.store = AlertStore(store_path)
        self.path = Path(store_path)
        self.lock = threading.RLock()
        connection = self.store.connection
        self.tokens = TokenTable(connection)
        self.triage = TriageTable(connection)
        self.suppressions = SuppressionTable(connection)
        self.response_tables = ResponseTables(connection)
        ensure_tables(connection)
        self.false_positive_ttl = false_positive_ttl
        self.responder, self.can_execute = self._build_responder(policy_path)
        self.state_path = Path(state_path) if state_path else None
        self._engine: Any = None
        self._engine_mtime: float | None = None
        self.ranker = AlertRanker()
        self._ranker_fingerprint: tuple[int, float] | None = None
        self._ranker_trained = -math.inf

    def close(self) -> None:
        with self.lock:
            if self.responder is not None:
                self.responder.close()
            self.store.close()

    def _build_responder(self, policy_path: str | os.PathLike[str] | None) -> tuple[Responder, bool]:
        path = policy_path or self.response_tables.meta("policy_file")
        if path:
            try:
                return Responder(self.store, load_policies(path)), True
            except (IotwardenError, OSError) as error:
                if policy_path:
                    raise
                logger.warning("cannot load the policy file %s recorded in the store (%s); actions will only change state", path, error)
        return Responder(self.store), False

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock and run the block in one write transaction."""
        with self.lock, write_transaction(self.store.connection):
            yield

    def ledger(self, kind: str, payload: dict[str, Any], actor: str) -> int:
        """Append one analyst entry to the ledger inside the current transaction."""
        return self.store.ledger.append_many([(kind, payload, actor)])[0]

    # Alerts -------------------------------------------------------------------

    def _alert_rows(self, where: str = "", params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        sql = (
            f"SELECT {', '.join('a.' + name for name in _ALERT_COLUMNS)}, "
            "t.state, t.label, t.note, t.labelled_by, t.labelled_at, t.suppression_id, t.updated_by, t.updated_at "
            "FROM alerts a LEFT JOIN api_alert_triage t ON t.alert_id = a.id"
        )
        if where:
            sql += " WHERE " + where
        rows = []
        for row in self.store.connection.execute(sql, params):
            data = dict(zip(_ALERT_COLUMNS, row[: len(_ALERT_COLUMNS)]))
            data["metrics"] = json.loads(data["metrics"])
            data["details"] = json.loads(data["details"])
            state, label, note, labelled_by, labelled_at, suppression_id, updated_by, updated_at = row[len(_ALERT_COLUMNS) :]
            data["triage"] = {
                "state": state or "new",
                "label": label,
                "note": note or "",
                "labelled_by": labelled_by,
                "labelled_at": iso(labelled_at),
                "suppression_id": suppression_id,
                "updated_by": updated_by,
                "updated_at": iso(updated_at),
            }
            rows.append(data)
        return rows

    def query_alerts(
        self,
        *,
        device: str | None = None,
        category: str | None = None,
        severity: str | None = None,
        state: str | None = None,
        label: str | None = None,
        incident: str | None = None,
        is_open: bool | None = None,
        since: float | None = None,
        until: float | None = None,
        order: str = "time",
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of alerts as API data and the number that match."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("a.device", device), ("a.category", category), ("a.severity", severity), ("a.incident_id", incident)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if state is not None:
            clauses.append("COALESCE(t.state, 'new') = ?")
            params.append(state)
        if label == "unlabelled":
            clauses.append("t.label IS NULL")
        elif label is not None:
            clauses.append("t.label = ?")
            params.append(label)
        if is_open is not None:
            clauses.append("a.end_time IS NULL" if is_open else "a.end_time IS NOT NULL")
        if since is not None:
            clauses.append("COALESCE(a.end_time, a.time) >= ?")
            params.append(since)
        if until is not None:
            clauses.append("a.time < ?")
            params.append(until)
        with self.lock:
            rows = self._alert_rows(" AND ".join(clauses), params)
            ranks = self.rank(rows)
        for row, rank in zip(rows, ranks or [None] * len(rows)):
            row["rank"] = rank
        if order == "rank" and ranks is not None:
            rows.sort(key=lambda row: (-row["rank"], -row["time"]))
        elif order in ("rank", "score"):
            rows.sort(key=lambda row: (-row["score"], -row["time"]))
        else:
            rows.sort(key=lambda row: (-row["time"], row["id"]))
        total = len(rows)
        return [_alert_out(row) for row in rows[offset : offset + limit]], total

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        with self.lock:
            rows = self._alert_rows("a.id = ?", (alert_id,))
            if not rows:
                raise ApiError(404, f"alert {alert_id!r} not found", field="alert_id")
            ranks = self.rank(rows)
            rows[0]["rank"] = ranks[0] if ranks else None
            suppressions = [record.to_dict() for record in self.suppressions.list(alert_id=alert_id, include_deleted=True)]
        data = _alert_out(rows[0])
        data["suppressions"] = [_suppression_out(item) for item in suppressions]
        return data

    def _load_alert(self, alert_id: str) -> Alert:
        rows = self._alert_rows("a.id = ?", (alert_id,))
        if not rows:
            raise ApiError(404, f"alert {alert_id!r} not found", field="alert_id")
        row = rows[0]
        values = {name: row[name] for name in _ALERT_COLUMNS}
        values["metrics"] = [Contribution(**item) for item in row["metrics"]]
        return Alert(**values)

    def set_state(self, alert_id: str, state: str, note: str, actor: str) -> dict[str, Any]:
        """Acknowledge or resolve an alert; the change and the ledger entry are one transaction."""
        with self.write():
            self._load_alert(alert_id)
            triage = self.triage.get(alert_id)
            previous = triage.state
            triage.state = state
            if note:
                triage.note = note
            triage.updated_by = actor
            triage.updated_at = time.time()
            self.triage.save(triage)
            self.ledger("alert_" + ("acknowledged" if state == "acknowledged" else state), {"alert_id": alert_id, "from": previous, "to": state, "note": note}, actor)
        return self.get_alert(alert_id)

    def set_label(self, alert_id: str, label: str, note: str, actor: str, *, suppress: bool = True, ttl: float | None = None) -> dict[str, Any]:
        """Label an alert; a false positive also creates a suppression of its pattern, a true positive undoes it."""
        now = time.time()
        with self.write():
            alert = self._load_alert(alert_id)
            triage = self.triage.get(alert_id)
            triage.label = label
            triage.note = note
            triage.labelled_by = actor
            triage.labelled_at = now
            triage.updated_by = actor
            triage.updated_at = now
            entry: dict[str, Any] = {"alert_id": alert_id, "device": alert.device, "label": label, "note": note}
            if label == "false_positive" and suppress:
                existing = self.suppressions.get(triage.suppression_id) if triage.suppression_id else None
                if existing is None or existing.deleted:
                    record = record_for_false_positive(alert, actor=actor, ttl=ttl or self.false_positive_ttl, note=note, now=now)
                    self.suppressions.insert(record)
                    triage.suppression_id = record.id
                    self.ledger("suppression_created", _suppression_out(record.to_dict()), actor)
                entry["suppression_id"] = triage.suppression_id
            elif label == "true_positive" and triage.suppression_id:
                record = self.suppressions.get(triage.suppression_id)
                if record is not None and not record.deleted:
                    self._delete_suppression(record, actor, now, reason=f"alert {alert_id} relabelled true positive")
                triage.suppression_id = None
            self.triage.save(triage)
            self.ledger("alert_labelled", entry, actor)
        return self.get_alert(alert_id)

    # Ranker -------------------------------------------------------------------

    def ranker_status(self, *, force: bool = False) -> RankerStatus:
        """Return the ranker's status, retraining first when labels changed.

        Without ``force`` it retrains at most every ``RETRAIN_INTERVAL`` seconds,
        so labelling a batch of alerts does not cross-validate after each one.
        """
        with self.lock:
            fingerprint = self.triage.fingerprint()
            due = force or time.monotonic() - self._ranker_trained >= RETRAIN_INTERVAL
            if fingerprint != self._ranker_fingerprint and due:
                self._ranker_trained = time.monotonic()
                labelled = dict(self.triage.labelled())
                rows = self._alert_rows("t.label IS NOT NULL") if labelled else []
                self.ranker.train(rows, [row["triage"]["label"] == "true_positive" for row in rows])
                self._ranker_fingerprint = fingerprint
            return self.ranker.status

    def rank(self, rows: list[dict[str, Any]]) -> list[float] | None:
        """Return true-positive probabilities of alert rows, or None while the ranker is off."""
        self.ranker_status()
        return self.ranker.predict(rows)

    # Incidents ----------------------------------------------------------------

    def query_incidents(
        self,
        *,
        device: str | None = None,
        category: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Return incidents (alerts grouped by incident id), newest first, and the number that match."""
        clauses: list[str] = []
        params: list[Any] = []
        if device is not None:
            clauses.append("a.device = ?")
            params.append(device)
        if since is not None:
            clauses.append("COALESCE(a.end_time, a.time) >= ?")
            params.append(since)
        if until is not None:
            clauses.append("a.time < ?")
            params.append(until)
        with self.lock:
            rows = self._alert_rows(" AND ".join(clauses), params)
        incidents = _group_incidents(rows)
        if category is not None:
            incidents = [item for item in incidents if category in item["categories"]]
        if state is not None:
            incidents = [item for item in incidents if item["state"] == state]
        incidents.sort(key=lambda item: item["_start"], reverse=True)
        total = len(incidents)
        return [_incident_out(item) for item in incidents[offset : offset + limit]], total

    def get_incident(self, incident_id: str) -> dict[str, Any]:
        with self.lock:
            rows = self._alert_rows("a.incident_id = ?", (incident_id,))
            ranks = self.rank(rows) if rows else None
        if not rows:
            raise ApiError(404, f"incident {incident_id!r} not found", field="incident_id")
        for row, rank in zip(rows, ranks or [None] * len(rows)):
            row["rank"] = rank
        incident = _incident_out(_group_incidents(rows)[0])
        incident["alerts"] = [_alert_out(row) for row in sorted(rows, key=lambda row: row["time"])]
        return incident

    def incident_alert_ids(self, incident_id: str) -> list[str]:
        with self.lock:
            ids = [row[0] for row in self.store.connection.execute("SELECT id FROM alerts WHERE incident_id = ? ORDER BY time", (incident_id,))]
        if not ids:
            raise ApiError(404, f"incident {incident_id!r} not found", field="incident_id")
        return ids

    # Devices ------------------------------------------------------------------

    def latest_event_time(self) -> float | None:
        """Return the latest event time in the store (alerts or recorded observations)."""
        with self.lock:
            row = self.store.connection.execute(
                "SELECT MAX(t) FROM (SELECT MAX(COALESCE(end_time, time)) AS t FROM alerts "
                "UNION ALL SELECT MAX(time) FROM api_observation_rows)"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def engine(self) -> Any:
        """Return the engine loaded from the state file, reloading it when the file changed; None without one."""
        if self.state_path is None:
            return None
        try:
            mtime = self.state_path.stat().st_mtime
        except OSError:
            return None
        if self._engine is None or mtime != self._engine_mtime:
            from iotwarden.engine import Engine

            try:
                self._engine = Engine.load(self.state_path)
                self._engine_mtime = mtime
            except IotwardenError as error:
                logger.warning("cannot load engine state %s: %s", self.state_path, error)
                return self._engine
        return self._engine

    def devices(self) -> list[dict[str, Any]]:
        """Return every known device with its risk, open alerts and containment, highest risk first.

        Risk is the highest score among the device's alerts that were active
        in the 24 h of event time before the latest event in the store and are
        neither resolved nor labelled false positive; 0 when there are none.
        """
        latest = self.latest_event_time()
        cutoff = (latest - RISK_WINDOW) if latest is not None else 0.0
        with self.lock:
            connection = self.store.connection
            devices: dict[str, dict[str, Any]] = {}

            def entry(name: str) -> dict[str, Any]:
                return devices.setdefault(name, {"device": name, "risk": 0.0, "cohort": None, "alerts": 0, "open_alerts": 0,
                                                 "open_incidents": 0, "last_alert": None, "active_actions": 0, "awaiting_approval": 0})

            for device, cohort, count, open_count, last in connection.execute(
                "SELECT device, MAX(cohort), COUNT(*), SUM(end_time IS NULL), MAX(time) FROM alerts GROUP BY device"
            ):
                item = entry(device)
                item.update(cohort=cohort, alerts=count, open_alerts=int(open_count or 0), last_alert=iso(last))
            for device, risk, incidents in connection.execute(
                "SELECT a.device, MAX(a.score), COUNT(DISTINCT a.incident_id) FROM alerts a "
                "LEFT JOIN api_alert_triage t ON t.alert_id = a.id "
                "WHERE COALESCE(a.end_time, a.time) >= ? AND COALESCE(t.state, 'new') != 'resolved' "
                "AND COALESCE(t.label, '') != 'false_positive' AND a.severity != 'info' GROUP BY a.device",
                (cutoff,),
            ):
                item = entry(device)
                item["risk"] = round(float(risk), 3)
                item["open_incidents"] = int(incidents)
            for device, state, count in connection.execute(
                "SELECT device, state, COUNT(*) FROM response_actions WHERE state IN ('awaiting_approval', 'pending', 'active', 'releasing') GROUP BY device, state"
            ):
                item = entry(device)
                if state == "awaiting_approval":
                    item["awaiting_approval"] += int(count)
                else:
                    item["active_actions"] += int(count)
            for (device,) in connection.execute("SELECT DISTINCT device FROM api_observation_rows"):
                entry(device)
            engine = self.engine()
            if engine is not None:
                for name, (shard, slot) in engine.device_index.items():
                    item = entry(name)
                    if item["cohort"] is None:
                        item["cohort"] = engine.cohort_names[int(engine.shards[shard]["cohort"][slot])]
        return sorted(devices.values(), key=lambda item: (-item["risk"], item["device"]))

    def device(self, device: str) -> dict[str, Any]:
        found = next((item for item in self.devices() if item["device"] == device), None)
        if found is None:
            raise ApiError(404, f"device {device!r} not found", field="device")
        engine = self.engine()
        baseline: dict[str, Any] | None = None
        if engine is not None and device in engine.device_index:
            baseline = baseline_bands(engine, device)
        with self.lock:
            metrics = recorded_metrics(self.store.connection, device)
        found["baseline"] = baseline
        found["baseline_source"] = (
            f"engine state {self.state_path.name}" if baseline is not None and self.state_path
            else "none: start the server with --state FILE to see learned baselines"
        )
        found["recorded_metrics"] = metrics
        found["actions"] = [action.to_dict() for action in self.responder.list_actions(device=device, limit=20)]
        return found

    def device_series(self, device: str, *, since: float | None, until: float | None, limit: int) -> dict[str, Any]:
        with self.lock:
            series = recorded_series(self.store.connection, device, since=since, until=until, limit=limit)
            alerts = self._alert_rows("a.device = ?" + (" AND COALESCE(a.end_time, a.time) >= ?" if since is not None else ""),
                                      (device, since) if since is not None else (device,))
        if not series and not alerts:
            known = any(item["device"] == device for item in self.devices())
            if not known:
                raise ApiError(404, f"device {device!r} not found", field="device")
        points = {metric: [[p["time"], p["value"], p["mean"], p["low"], p["high"]] for p in items] for metric, items in series.items()}
        markers = [
            {"id": row["id"], "time": row["time"], "end_time": row["end_time"], "category": row["category"],
             "severity": row["severity"], "metric": row["metrics"][0]["metric"] if row["metrics"] else None,
             "explanation": row["explanation"]}
            for row in alerts
        ]
        return {"device": device, "columns": ["time", "value", "mean", "low", "high"], "series": points, "alerts": markers,
                "note": None if series else "no observations recorded for this device: wire ObservationRecorder into the detector"}

    # Overview -----------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        latest = self.latest_event_time()
        start = math.floor(((latest or time.time()) - RISK_WINDOW) / 3600.0) * 3600.0
        devices = self.devices()
        with self.lock:
            connection = self.store.connection
            alert_hours = dict(connection.execute(
                "SELECT CAST(time / 3600 AS INTEGER) * 3600.0, COUNT(*) FROM alerts WHERE time >= ? GROUP BY 1", (start,)
            ).fetchall())
            observations = dict(observation_rates(connection, start))
            open_incidents = connection.execute(
                "SELECT COUNT(DISTINCT a.incident_id) FROM alerts a LEFT JOIN api_alert_triage t ON t.alert_id = a.id "
                "WHERE COALESCE(t.state, 'new') != 'resolved' AND COALESCE(t.label, '') != 'false_positive' AND a.severity != 'info'"
            ).fetchone()[0]
            new_alerts = connection.execute(
                "SELECT COUNT(*) FROM alerts a LEFT JOIN api_alert_triage t ON t.alert_id = a.id WHERE t.state IS NULL OR t.state = 'new'"
            ).fetchone()[0]
            awaiting = [action.to_dict() for action in self.responder.list_actions(state="awaiting_approval", limit=50)]
        hours = [start + 3600.0 * step for step in range(25)]
        return {
            "latest_event_time": iso(latest),
            "devices": len(devices),
            "top_devices": devices[:10],
            "open_incidents": int(open_incidents),
            "new_alerts": int(new_alerts),
            "awaiting_approval": awaiting,
            "rates": {
                "hours": [iso(hour) for hour in hours],
                "alerts": [int(alert_hours.get(hour, 0)) for hour in hours],
                "observations": [int(observations.get(hour, 0)) for hour in hours],
                "observations_recorded": bool(observations),
            },
            "ranker": self.ranker_status(force=True).to_dict(),
        }

    # Suppressions -------------------------------------------------------------

    def list_suppressions(self, *, kind: str | None, device: str | None, include_deleted: bool) -> list[dict[str, Any]]:
        with self.lock:
            return [_suppression_out(record.to_dict()) for record in self.suppressions.list(kind=kind, device=device, include_deleted=include_deleted)]

    def get_suppression(self, suppression_id: str, kind: str | None = None) -> SuppressionRecord:
        record = self.suppressions.get(suppression_id)
        if record is None or (kind is not None and record.kind != kind):
            raise ApiError(404, f"{kind or 'suppression'} {suppression_id!r} not found", field="suppression_id")
        return record

    def create_suppression(self, record: SuppressionRecord, actor: str) -> dict[str, Any]:
        with self.write():
            self.suppressions.insert(record)
            self.ledger("suppression_created", _suppression_out(record.to_dict()), actor)
        return _suppression_out(record.to_dict())

    def update_suppression(self, suppression_id: str, changes: dict[str, Any], actor: str, kind: str | None = None) -> dict[str, Any]:
        with self.write():
            record = self.get_suppression(suppression_id, kind)
            if record.deleted:
                raise ApiError(409, f"suppression {suppression_id} was deleted; create a new one", field="suppression_id")
            for name, value in changes.items():
                setattr(record, name, value)
            if all(getattr(record, name) is None for name in ("device", "cohort", "metric", "category")):
                raise ApiError(422, "scope: give at least one of device, cohort, metric or category", field="scope")
            if record.kind == "maintenance" and (record.start is None or record.end is None):
                raise ApiError(422, "end: a maintenance window needs both start and end", field="end")
            if record.start is not None and record.end is not None and record.end <= record.start:
                raise ApiError(422, "end: must be after start", field="end")
            record.updated_at = time.time()
            self.suppressions.update(record)
            self.ledger("suppression_changed", {"id": record.id, "changes": {key: _json_safe(value) for key, value in changes.items()}}, actor)
        return _suppression_out(record.to_dict())

    def delete_suppression(self, suppression_id: str, actor: str, reason: str = "", kind: str | None = None) -> dict[str, Any]:
        with self.write():
            record = self.get_suppression(suppression_id, kind)
            if not record.deleted:
                self._delete_suppression(record, actor, time.time(), reason=reason)
        return _suppression_out(record.to_dict())

    def _delete_suppression(self, record: SuppressionRecord, actor: str, now: float, *, reason: str) -> None:
        record.deleted_at = now
        record.deleted_by = actor
        record.updated_at = now
        self.suppressions.update(record)
        self.ledger("suppression_deleted", {"id": record.id, "reason": reason}, actor)

    # Actions ------------------------------------------------------------------

    def action_command(self, action_id: str, command: str, actor: str, reason: str) -> dict[str, Any]:
        """Run approve, reject, release or confirm through the responder."""
        from iotwarden.response.responder import ResponseError

        with self.lock:
            if self.response_tables.action(action_id) is None:
                raise ApiError(404, f"action {action_id!r} not found", field="action_id")
            try:
                if command == "approve":
                    action = self.responder.approve(action_id, actor, execute=self.can_execute)
                elif command == "reject":
                    action = self.responder.reject(action_id, actor, reason)
                elif command == "release":
                    action = self.responder.release(action_id, actor, reason, execute=self.can_execute)
                else:
                    action = self.responder.confirm(action_id, actor, execute=self.can_execute)
            except ResponseError as error:
                raise ApiError(409, str(error), field="action_id") from error
            return action.to_dict()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _alert_out(row: dict[str, Any]) -> dict[str, Any]:
    data = {name: row[name] for name in _ALERT_COLUMNS if name not in ("time", "end_time")}
    data["time"] = iso(row["time"])
    data["end_time"] = iso(row["end_time"])
    data["open"] = row["end_time"] is None
    data["triage"] = row["triage"]
    data["rank"] = row.get("rank")
    return data


def _suppression_out(record: dict[str, Any]) -> dict[str, Any]:
    data = dict(record)
    for name in ("start", "end", "created_at", "updated_at", "deleted_at"):
        data[name] = iso(record[name])
    data["active"] = record["deleted_at"] is None and (record["end"] is None or record["end"] > time.time())
    return data


def _group_incidents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row["incident_id"] or row["id"]
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"id": key, "device": row["device"], "_start": row["time"], "_end": row["time"], "alerts": 0,
                                   "open_alerts": 0, "max_score": 0.0, "severity": "info", "categories": [], "states": [], "labels": []}
        group["_start"] = min(group["_start"], row["time"])
        group["_end"] = max(group["_end"], row["end_time"] if row["end_time"] is not None else row["time"])
        group["alerts"] += 1
        group["open_alerts"] += row["end_time"] is None
        group["max_score"] = max(group["max_score"], row["score"])
        if _SEVERITY_RANK.get(row["severity"], 0) > _SEVERITY_RANK.get(group["severity"], 0):
            group["severity"] = row["severity"]
        if row["category"] not in group["categories"]:
            group["categories"].append(row["category"])
        group["states"].append(row["triage"]["state"])
        group["labels"].append(row["triage"]["label"])
    for group in groups.values():
        states = group.pop("states")
        if all(state == "resolved" for state in states):
            group["state"] = "resolved"
        elif all(state in ("acknowledged", "resolved") for state in states):
            group["state"] = "acknowledged"
        else:
            group["state"] = "new"
        labels = group.pop("labels")
        group["labels"] = {"true_positive": labels.count("true_positive"), "false_positive": labels.count("false_positive"),
                           "unlabelled": labels.count(None)}
    return list(groups.values())


def _incident_out(group: dict[str, Any]) -> dict[str, Any]:
    data = {key: value for key, value in group.items() if not key.startswith("_")}
    data["start"] = iso(group["_start"])
    data["end"] = iso(group["_end"])
    return data


def is_sqlite_busy(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
