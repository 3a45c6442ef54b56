"""Hysteresis and incidents: when an alert opens, stays open and closes.

An alert opens when a detector's corrected surprise reaches the sensitivity
threshold. It stays open while the surprise stays at or above
``learn_threshold`` (the same level that keeps a point out of the baseline)
and closes after ``close_after`` consecutive normal observations of that
metric, so a score hovering around the threshold does not flap. Alerts of
one device that follow each other within ``incident_gap`` seconds, or
overlap, share one incident id.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field

from iotwarden.decisions.alerts import Alert, Contribution, severity_for
from iotwarden.decisions.suppression import SuppressionSet
from iotwarden.engine.config import EngineConfig

__all__ = ["AlertBook", "AlertKey"]

logger = logging.getLogger(__name__)

AlertKey = tuple[int, int, str, int]  # (shard, slot, channel, metric column or -1)


@dataclass(slots=True)
class _Incident:
    id: str
    last_activity: float
    open_alerts: int = 0


@dataclass
class AlertBook:
    """Open alerts by key, incidents by device, and what changed this batch."""

    config: EngineConfig
    open: dict[AlertKey, Alert] = field(default_factory=dict)
    incidents: dict[str, _Incident] = field(default_factory=dict)
    opened: list[Alert] = field(default_factory=list)
    closed: list[Alert] = field(default_factory=list)
    suppressions: SuppressionSet = field(default_factory=SuppressionSet)
    suppressed: int = 0

    def start_batch(self) -> None:
        self.opened = []
        self.closed = []

    def raise_alert(self, key: AlertKey | None, alert: Alert) -> Alert:
        """Record a new alert; ``key`` None means it is closed at once.

        An alert that a suppression covers is tracked (so its episode does
        not reopen at every point) but not reported in ``opened`` or
        ``closed``; ``details["suppressed_by"]`` names the suppression.
        """
        suppression = self.suppressions.match(alert) if len(self.suppressions) else None
        if suppression is not None:
            alert.details["suppressed_by"] = suppression.id
            self.suppressed += 1
            if key is not None:
                self.open[key] = alert
            elif alert.end_time is None:
                alert.end_time = alert.time
            logger.debug("alert on %s suppressed by %s", alert.device, suppression.id)
            return alert
        incident = self.incidents.get(alert.device)
        if incident is None or (incident.open_alerts == 0 and alert.time - incident.last_activity > self.config.incident_gap):
            digest = hashlib.sha256(f"{alert.device}\x1f{alert.time!r}".encode()).hexdigest()[:12]
            incident = _Incident(id=f"inc-{digest}", last_activity=alert.time)
            self.incidents[alert.device] = incident
        alert.incident_id = incident.id
        incident.last_activity = max(incident.last_activity, alert.time)
        self.opened.append(alert)
        if key is None:
            if alert.end_time is None:
                alert.end_time = alert.time
            self.closed.append(alert)
        else:
            incident.open_alerts += 1
            self.open[key] = alert
        logger.info(
            "alert %s device=%s category=%s severity=%s score=%.1f: %s",
            alert.id, alert.device, alert.category, alert.severity, alert.score, alert.explanation,
        )
        return alert

    def get(self, key: AlertKey) -> Alert | None:
        return self.open.get(key)

    def raise_peak(self, key: AlertKey, score: float, contribution: Contribution | None) -> None:
        """Raise an open alert's peak score and severity if ``score`` is higher.

        ``metrics`` and ``explanation`` keep the evidence at the opening; the
        most extreme evidence so far goes to ``details["peak"]``.
        """
        alert = self.open.get(key)
        if alert is None or score <= alert.score:
            return
        alert.score = score
        alert.severity = severity_for(score, self.config.open_threshold)
        if contribution is not None:
            alert.details["peak"] = {"metric": contribution.metric, "value": contribution.value, "surprise": score}

    def close(self, key: AlertKey, time: float, reason: str) -> Alert | None:
        """Close the open alert under ``key`` at ``time``."""
        alert = self.open.pop(key, None)
        if alert is None:
            return None
        alert.end_time = max(time, alert.time)
        alert.close_reason = reason
        if "suppressed_by" in alert.details:
            return alert
        incident = self.incidents.get(alert.device)
        if incident is not None and incident.id == alert.incident_id:
            incident.open_alerts = max(incident.open_alerts - 1, 0)
            incident.last_activity = max(incident.last_activity, alert.end_time)
        self.closed.append(alert)
        logger.debug("alert %s device=%s closed: %s", alert.id, alert.device, reason)
        return alert

    def snapshot(self) -> dict:
        """Return open alerts and incidents as JSON-compatible data."""
        return {
            "open": [[list(key), asdict(alert)] for key, alert in self.open.items()],
            "incidents": {d: [i.id, i.last_activity, i.open_alerts] for d, i in self.incidents.items()},
        }

    def restore(self, data: dict) -> None:
        self.open = {}
        for key, raw in data["open"]:
            values = dict(raw)
            values["metrics"] = [Contribution(**c) for c in values["metrics"]]
            self.open[(int(key[0]), int(key[1]), str(key[2]), int(key[3]))] = Alert(**values)
        self.incidents = {d: _Incident(i, t, n) for d, (i, t, n) in data["incidents"].items()}
