"""Replay of recorded input through the engine: the work behind ``iotwarden detect``.

Items from a reader (observations, field issues, rejections) pass a
reorderer, are cut into micro-batches of ``EngineConfig.batch_size``
observations counted from the start of the stream, and go through the
engine. Alerts go to the store as each batch finishes; rejected records and
field issues go to the dead-letter file.

A replay can stop part-way (``stop_after`` or an interrupt) and save its
state: the engine, the partial batch, the reorderer and how many input items
were consumed. Resuming re-reads the input, skips what was consumed and
continues with identical batches, so the alerts equal those of one
uninterrupted run.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iotwarden.decisions.alerts import Alert
from iotwarden.engine import Engine
from iotwarden.errors import IotwardenError
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.deadletter import DeadLetterWriter
from iotwarden.sources.ordering import Reorderer
from iotwarden.store import AlertStore

__all__ = ["ReplaySummary", "Replay"]

logger = logging.getLogger(__name__)

Item = Observation | FieldIssue | Rejection | Alert


@dataclass
class ReplaySummary:
    """Counts of one replay, printed by the CLI and stored with the run."""

    records: int = 0
    observations: int = 0
    devices: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    field_issues: int = 0
    alerts_by_category: Counter[str] = field(default_factory=Counter)
    alerts_by_severity: Counter[str] = field(default_factory=Counter)
    completed: bool = False

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_category.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "observations": self.observations,
            "devices": self.devices,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "field_issues": self.field_issues,
            "alerts": self.alerts,
            "alerts_by_category": dict(self.alerts_by_category),
            "alerts_by_severity": dict(self.alerts_by_severity),
            "completed": self.completed,
        }


class Replay:
    """Run items through a reorderer and the engine, storing what comes out.

    Args:
        engine: The engine (new or loaded from a state file).
        store: Where alerts go; None keeps them only in ``on_alert``.
        dead_letters: Where rejected records and field issues go.
        lateness: Seconds a device's record may arrive behind its latest
            time and still be re-ordered; later ones are rejected.
        on_alert: Called with each alert as it opens.
        after_batch: Called with each micro-batch once the engine has
            processed it (to record observations, refresh suppressions).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        store: AlertStore | None = None,
        dead_letters: DeadLetterWriter | None = None,
        lateness: float = 300.0,
        on_alert: Callable[[Alert], None] | None = None,
        after_batch: Callable[[list[Observation]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.after_batch = after_batch
        self.store = store
        self.dead_letters = dead_letters
        self.reorderer = Reorderer(lateness=lateness)
        self.on_alert = on_alert
        self.summary = ReplaySummary()
        self.consumed = 0
        self.pending: list[Observation] = []

    def run(self, items: Iterable[Item], *, stop_after: int | None = None, progress: Callable[[int], None] | None = None) -> ReplaySummary:
        """Consume ``items``; stop after ``stop_after`` records if given.

        Returns the summary; ``summary.completed`` is False when the replay
        stopped early (then :meth:`save_state` keeps what is needed to resume).
        """
        # A replay keeps many small objects alive (held and pending records),
        # so the default collector thresholds make it scan them over and over.
        previous_thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 20, 100)
        try:
            return self._run(items, stop_after, progress)
        finally:
            gc.set_threshold(*previous_thresholds)

    def _run(self, items: Iterable[Item], stop_after: int | None, progress: Callable[[int], None] | None) -> ReplaySummary:
        iterator = iter(items)
        skipped = 0
        while skipped < self.consumed:
            if next(iterator, None) is None:
                raise IotwardenError(
                    f"the input has only {skipped} records but the saved state had consumed {self.consumed}: "
                    "resume with the same input files"
                )
            skipped += 1

        read_here = 0
        for item in iterator:
            self.consumed += 1
            read_here += 1
            self._take(item)
            if progress is not None and read_here % 1024 == 0:
                progress(read_here)
            if stop_after is not None and read_here >= stop_after:
                return self._refresh()

        for released in self.reorderer.flush():
            self._route(released)
        self._flush_batch()
        self._emit(self.engine.finish())
        self.summary.completed = True
        return self._refresh()

    def _refresh(self) -> ReplaySummary:
        self.summary.devices = self.engine.n_devices
        return self.summary

    def _take(self, item: Item) -> None:
        if isinstance(item, Alert):
            # A source's own rule decided (a replayed frame, say): store it as is.
            self._emit([item], [item] if item.end_time is not None else [])
            return
        if isinstance(item, Observation):
            self.summary.records += 1
            for released in self.reorderer.push(item):
                self._route(released)
        else:
            if isinstance(item, Rejection):
                self.summary.records += 1
            self._route(item)

    def _route(self, item: Item) -> None:
        if isinstance(item, Observation):
            self.pending.append(item)
            if len(self.pending) >= self.engine.config.batch_size:
                self._flush_batch()
        elif isinstance(item, Rejection):
            self.summary.rejected[item.kind] += 1
            if self.dead_letters is not None:
                self.dead_letters.write(item)
        else:
            self.summary.field_issues += 1
            if self.dead_letters is not None:
                self.dead_letters.write(item)

    def _flush_batch(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        result = self.engine.process_batch(batch)
        self.summary.observations += len(batch)
        self._emit(result.alerts, result.closed)
        if self.after_batch is not None:
            self.after_batch(batch)

    def _emit(self, opened: list[Alert], closed: list[Alert] | None = None) -> None:
        # A batch is scored in rounds across devices, so sort by event time.
        opened = sorted(opened, key=lambda alert: alert.time)
        for alert in opened:
            self.summary.alerts_by_category[alert.category] += 1
            self.summary.alerts_by_severity[alert.severity] += 1
            if self.on_alert is not None:
                self.on_alert(alert)
        if self.store is not None:
            self.store.record_alerts(opened, closed or [])

    # State ------------------------------------------------------------------

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Save everything needed to resume this replay at ``path``."""
        target = Path(path)
        self.engine.save(target)
        extra = {
            "consumed": self.consumed,
            "pending": [_observation_to_dict(obs) for obs in self.pending],
            "reorderer": self.reorderer.snapshot(),
            "summary": self.summary.to_dict(),
        }
        sidecar = _sidecar(target)
        temporary = sidecar.with_name(sidecar.name + ".tmp")
        temporary.write_text(json.dumps(extra))
        os.replace(temporary, sidecar)
        logger.info("saved replay state after %d records to %s", self.consumed, target)

    @classmethod
    def resume(cls, path: str | os.PathLike[str], **options: Any) -> Replay:
        """Rebuild a replay saved with :meth:`save_state`."""
        target = Path(path)
        engine = Engine.load(target)
        replay = cls(engine, **options)
        sidecar = _sidecar(target)
        if sidecar.exists():
            extra = json.loads(sidecar.read_text())
            replay.consumed = int(extra["consumed"])
            replay.pending = [_observation_from_dict(item) for item in extra["pending"]]
            replay.reorderer.restore(extra["reorderer"])
            saved = extra["summary"]
            summary = replay.summary
            summary.records = saved["records"]
            summary.observations = saved["observations"]
            summary.rejected.update(saved["rejected"])
            summary.field_issues = saved["field_issues"]
            summary.alerts_by_category.update(saved["alerts_by_category"])
            summary.alerts_by_severity.update(saved["alerts_by_severity"])
        return replay


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".replay.json")


def _observation_to_dict(obs: Observation) -> dict[str, Any]:
    return {
        "device": obs.device,
        "time": obs.time,
        "metrics": obs.metrics,
        "attributes": obs.attributes,
        "source": obs.source,
        "line": obs.line,
    }


def _observation_from_dict(data: dict[str, Any]) -> Observation:
    return Observation(**data)
