"""The ``iotwarden demo`` command: simulate, detect, and score against the truth."""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from iotwarden.decisions.alerts import Alert
from iotwarden.engine import Engine, EngineConfig
from iotwarden.observation import format_time, parse_time
from iotwarden.paths import dead_letter_path
from iotwarden.pipeline import Replay
from iotwarden.simulate import simulate_fleet, write_csv
from iotwarden.sources.deadletter import DeadLetterWriter
from iotwarden.sources.files import read_records
from iotwarden.store import AlertStore

__all__ = ["IncidentMatch", "match_incidents", "run_demo"]

logger = logging.getLogger(__name__)

# An alert counts for an injected incident when it opens on the same device
# between a little before the incident starts and this long after it ends:
# a silence can only be noticed once the device is overdue.
_MATCH_BEFORE = 600.0
_MATCH_AFTER = 3600.0

_CATEGORY_STYLE = {"info": "dim", "low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red"}


@dataclass(slots=True)
class IncidentMatch:
    """One labelled incident and the first alert that caught it, if any."""

    incident_id: str
    device: str
    kind: str
    start: float
    end: float
    alert: Alert | None

    @property
    def delay(self) -> float | None:
        """Seconds from the incident's start until its first alert could be raised.

        A silence alert is dated to the last report; it can only be raised
        once the device is overdue, at ``details["detected_at"]``.
        """
        if self.alert is None:
            return None
        raised = self.alert.time
        detected = self.alert.details.get("detected_at")
        if isinstance(detected, str):
            raised = max(raised, parse_time(detected.replace("Z", "+00:00")))
        return max(raised - self.start, 0.0)


def match_incidents(labels_path: Path, alerts: list[Alert]) -> tuple[list[IncidentMatch], list[Alert]]:
    """Pair labelled incidents with alerts; return matches and unmatched alerts."""
    matches: list[IncidentMatch] = []
    used: set[str] = set()
    with labels_path.open(newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            start = parse_time(row["start"].replace("Z", "+00:00"))
            end = parse_time(row["end"].replace("Z", "+00:00"))
            candidates = [
                alert
                for alert in alerts
                if alert.device == row["device_id"]
                and start - _MATCH_BEFORE <= alert.time <= end + _MATCH_AFTER
                and alert.severity != "info"
            ]
            for alert in candidates:
                used.add(alert.id)
            first = min(candidates, key=lambda alert: alert.time) if candidates else None
            matches.append(IncidentMatch(row["incident_id"], row["device_id"], row["kind"], start, end, first))
    unmatched = [alert for alert in alerts if alert.id not in used and alert.severity != "info"]
    return matches, unmatched


def run_demo(*, devices: int, hours: float, seed: int, folder: Path, store_path: Path, console: Console) -> None:
    """Simulate a fleet, replay it through the detector and print what was caught."""
    started = time.perf_counter()
    console.print(f"Simulating {devices} devices for {hours:g} h with injected incidents (seed {seed}) ...")
    simulation = simulate_fleet(devices, hours, seed=seed)
    data_path, labels_path = write_csv(simulation, folder / "fleet.csv.gz")
    console.print(f"  {len(simulation):,} readings simulated; the detector sees them without the incident labels")

    alerts: list[Alert] = []

    def on_alert(alert: Alert) -> None:
        alerts.append(alert)
        if alert.severity == "info":
            return
        style = _CATEGORY_STYLE.get(alert.severity, "")
        console.print(
            f"  [{style}]{format_time(alert.time)} {alert.severity:<8} {alert.category:<12}[/{style}] {alert.device}: {alert.explanation}",
            soft_wrap=True,
        )

    console.print("Detecting (alerts print as they open):")
    with AlertStore(store_path) as store, DeadLetterWriter(dead_letter_path(store_path)) as dead_letters:
        replay = Replay(Engine(EngineConfig()), store=store, dead_letters=dead_letters, on_alert=on_alert)
        summary = replay.run(read_records(data_path))

    matches, unmatched = match_incidents(labels_path, alerts)
    # Without vertical rules the table fits an 80-column terminal, so no cell is cut.
    table = Table(title="Injected incidents", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("incident", "device", "kind", "start (UTC)", "caught by", "delay"):
        table.add_column(column, no_wrap=True)
    for match in matches:
        caught = match.alert is not None
        table.add_row(
            match.incident_id,
            match.device,
            match.kind,
            format_time(match.start)[5:16].replace("T", " "),
            f"[green]{match.alert.category}[/green]" if caught and match.alert else "[red]missed[/red]",
            f"{(match.delay or 0.0) / 60:.0f} min" if caught else "",
        )
    console.print(table)

    caught = sum(match.alert is not None for match in matches)
    elapsed = time.perf_counter() - started
    console.print(
        f"Caught {caught} of {len(matches)} injected incidents; {len(unmatched)} other alerts over "
        f"{summary.devices} devices and {hours:g} h; {summary.observations:,} observations in {elapsed:.1f} s."
    )
    console.print(f"Alerts are in {store_path}; list them with: iotwarden alerts --store {store_path}")
