"""Replay of recorded input through the engine: the work behind ``iotwarden detect``.

Items from a reader (observations, field issues, rejections) pass a
reorderer, are cut into micro-batches of ``EngineConfig.batch_size``
observations counted from the start of the stream, and go through the
engine. Alerts go to the store as each batch finishes; rejected records and
field issues go to the dead-letter file.

A :class:`~iotwarden.sources.blocks.RecordStream` (what
:func:`~iotwarden.sources.files.read_records` returns) is read in its block
form: runs of CSV rows arrive as column blocks, go through a
:class:`~iotwarden.sources.blockorder.BlockReorderer` and reach the engine
through :meth:`Engine.process_arrays`, with the same batches, alerts,
rejections and counts as item by item. Every other input goes item by item.

A replay can stop part-way (``stop_after`` or an interrupt) and save its
state: the engine, the partial batch, the reorderer and how many input items
were consumed. Resuming re-reads the input, skips what was consumed and
continues with identical batches, so the alerts equal those of one
uninterrupted run. SIGINT and SIGTERM handlers set by the caller run
between two input items or blocks, where that state is whole; a second
signal runs them at once.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import math
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from iotwarden.decisions.alerts import Alert
from iotwarden.engine import Engine
from iotwarden.errors import IotwardenError
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.blockorder import BlockPush, BlockReorderer, RowTable
from iotwarden.sources.blocks import ObservationBlock, RecordStream
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
        after_columns: Called instead of ``after_batch`` for a batch scored
            as columns (CSV blocks), with the arguments of
            :meth:`Engine.process_arrays`, so no observations are built.
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
        after_columns: Callable[[list[str], np.ndarray, np.ndarray, list[str]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.after_batch = after_batch
        self.after_columns = after_columns
        self.store = store
        self.dead_letters = dead_letters
        self.reorderer = Reorderer(lateness=lateness)
        self.on_alert = on_alert
        self.summary = ReplaySummary()
        self.consumed = 0
        self.pending: list[Observation] = []
        # While blocks are being read, the reorderer's state and the partial
        # batch are kept as arrays, until run() or save_state() puts them back.
        self._blocks = BlockReorderer(self.reorderer)
        self._batch_rows: list[RowTable] = []
        self._batch_row_count = 0

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
            with _HeldSignals() as signals:
                return self._run(items, stop_after, progress, signals)
        finally:
            self._use_items()
            gc.set_threshold(*previous_thresholds)

    def _run(
        self,
        items: Iterable[Item],
        stop_after: int | None,
        progress: Callable[[int], None] | None,
        signals: _HeldSignals,
    ) -> ReplaySummary:
        entries: Iterator[Item | ObservationBlock] = items.blocks() if isinstance(items, RecordStream) else iter(items)
        rest_of_block = self._skip_consumed(entries)

        read_here = 0
        for entry in itertools.chain(rest_of_block, entries):
            if isinstance(entry, ObservationBlock):
                if stop_after is not None and read_here + entry.size > stop_after:
                    entry = entry.head(stop_after - read_here)
                self._take_block(entry)
                self.consumed += entry.size
                read_here += entry.size
                if progress is not None:
                    progress(read_here)
            else:
                self.consumed += 1
                read_here += 1
                self._take(entry)
                if progress is not None and read_here % 1024 == 0:
                    progress(read_here)
            signals.run_held()
            if stop_after is not None and read_here >= stop_after:
                return self._refresh()

        self._finish_stream()
        self.summary.completed = True
        return self._refresh()

    def _skip_consumed(self, entries: Iterator[Item | ObservationBlock]) -> list[ObservationBlock]:
        """Skip the items that a resumed replay consumed before, and return the rest of a block cut in two."""
        skipped = 0
        while skipped < self.consumed:
            entry = next(entries, None)
            if entry is None:
                raise IotwardenError(
                    f"the input has only {skipped} records but the saved state had consumed {self.consumed}: "
                    "resume with the same input files"
                )
            if not isinstance(entry, ObservationBlock):
                skipped += 1
            elif skipped + entry.size <= self.consumed:
                skipped += entry.size
            else:
                return [entry.tail(self.consumed - skipped)]
        return []

    def _finish_stream(self) -> None:
        if self._blocks.active:
            self._add_rows(self._blocks.flush())
            if self._batch_rows:
                rows = RowTable.concat(self._batch_rows, self._blocks.width)
                self._batch_rows, self._batch_row_count = [], 0
                self._score_rows(rows, math.inf)
        else:
            self._route_released(self.reorderer.flush())
            self._flush_batch()
        self._emit(self.engine.finish())

    def _refresh(self) -> ReplaySummary:
        self.summary.devices = self.engine.n_devices
        return self.summary

    def _take(self, item: Item) -> None:
        self._use_items()
        if isinstance(item, Alert):
            # A source's own rule decided (a replayed frame, say): store it as is.
            self._emit([item], [item] if item.end_time is not None else [])
            return
        if isinstance(item, Observation):
            self.summary.records += 1
            self._route_released(self.reorderer.push(item))
        else:
            if isinstance(item, Rejection):
                self.summary.records += 1
            self._route(item)

    def _route_released(self, items: list[Item]) -> None:
        """Route what the reorderer released; a batch that fills up is scored at once.

        Devices with readings not scored yet (still held by the reorderer,
        or later in ``items``) must not look silent, so the batch's silence
        check stops at the earliest of those readings.
        """
        size = self.engine.config.batch_size
        for position, item in enumerate(items):
            if not isinstance(item, Observation):
                self._route(item)
                continue
            self.pending.append(item)
            if len(self.pending) >= size:
                waiting = min((later.time for later in items[position + 1 :] if isinstance(later, Observation)), default=math.inf)
                self._flush_batch(min(waiting, self.reorderer.frontier()))

    def _route(self, item: FieldIssue | Rejection) -> None:
        """Count a rejection or a field issue and write it to the dead-letter file."""
        if isinstance(item, Rejection):
            self.summary.rejected[item.kind] += 1
            if self.dead_letters is not None:
                self.dead_letters.write(item)
        else:
            self.summary.field_issues += 1
            if self.dead_letters is not None:
                self.dead_letters.write(item)

    def _flush_batch(self, silence_clock: float = math.inf) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        result = self.engine.process_batch(batch, silence_clock=silence_clock)
        self.summary.observations += len(batch)
        self._emit(result.alerts, result.closed)
        if self.after_batch is not None:
            self.after_batch(batch)

    # Blocks -----------------------------------------------------------------

    def _use_blocks(self) -> None:
        """Keep the reorderer's state and the partial batch as arrays."""
        if self._blocks.active:
            return
        self._blocks.activate()
        if self.pending:
            self._batch_rows = [self._blocks.table_of(self.pending)]
            self._batch_row_count = len(self.pending)
            self.pending = []

    def _use_items(self) -> None:
        """Put the reorderer's state and the partial batch back in their item form."""
        if not self._blocks.active:
            return
        if self._batch_rows:
            rows = RowTable.concat(self._batch_rows, self._blocks.width)
            self.pending.extend(self._blocks.observations(rows))
            self._batch_rows, self._batch_row_count = [], 0
        self._blocks.deactivate()

    def _take_block(self, block: ObservationBlock) -> None:
        self._use_blocks()
        pushed = self._blocks.push(block)
        source_rejections = sum(1 for _, item in block.other_items if isinstance(item, Rejection))
        self.summary.records += block.row_count + source_rejections
        routed: list[tuple[int, FieldIssue | Rejection]] = block.other_items
        if pushed.rejections:
            routed = sorted([*block.other_items, *pushed.rejections], key=lambda entry: entry[0])
        for _, item in routed:
            self._route(item)
        self._add_rows(pushed.released, pushed)

    def _add_rows(self, rows: RowTable, pushed: BlockPush | None = None) -> None:
        """Add released rows to the partial batch and score every batch that fills up.

        ``pushed`` is the block push that released ``rows``, None for a flush.
        """
        if not len(rows):
            return
        self._batch_rows.append(rows)
        self._batch_row_count += len(rows)
        size = self.engine.config.batch_size
        if self._batch_row_count < size:
            return
        table = RowTable.concat(self._batch_rows, self._blocks.width)
        first_new = len(table) - len(rows)
        start = 0
        while len(table) - start >= size:
            # The earliest reading not scored yet when the batch's last row left the reorderer, as on the item path.
            last = start + size - 1 - first_new
            if pushed is None:
                clock = float(rows.times[last + 1 :].min()) if last + 1 < len(rows) else math.inf
            else:
                clock = pushed.frontier(last)
            self._score_rows(table.take(slice(start, start + size)), clock)
            start += size
        rest = table.take(slice(start, None))
        self._batch_rows = [rest] if len(rest) else []
        self._batch_row_count = len(rest)

    def _score_rows(self, batch: RowTable, silence_clock: float) -> None:
        """Score one batch of rows, as :meth:`_flush_batch` scores the same observations."""
        observations: list[Observation] | None = None
        devices: list[str] = []
        if self._arrays_match_items(batch):
            devices = self._blocks.device_names_of(batch)
            result = self.engine.process_arrays(
                devices,
                batch.times,
                batch.values,
                self._blocks.metric_names,
                attributes=self._blocks.attributes_of(batch),
                silence_clock=silence_clock,
            )
            self._attach_sources(result.alerts, batch)
        else:
            observations = self._blocks.observations(batch)
            result = self.engine.process_batch(observations, silence_clock=silence_clock)
        self.summary.observations += len(batch)
        self._emit(result.alerts, result.closed)
        if observations is None and self.after_columns is not None:
            self.after_columns(devices, batch.times, batch.values, self._blocks.metric_names)
        elif self.after_batch is not None:
            self.after_batch(observations if observations is not None else self._blocks.observations(batch))

    def _arrays_match_items(self, batch: RowTable) -> bool:
        """Return True when ``Engine.process_arrays`` on ``batch`` equals ``process_batch`` on its observations.

        ``process_arrays`` converts no counters, attaches no source line to
        alerts (see :meth:`_attach_sources`, which cannot reach suppressed
        ones) and registers new metrics in column order, where
        ``process_batch`` registers them as they first appear.
        """
        engine = self.engine
        names = self._blocks.metric_names
        if len(engine.book.suppressions) or engine.counters.needs_conversion(dict.fromkeys(names, 0.0)):
            return False
        if all(name in engine.metric_index for name in names):
            return True
        first_layout = self._blocks.layouts[int(batch.layouts[0])]
        return first_layout == tuple(names) and not np.isnan(batch.values[0]).any()

    def _attach_sources(self, alerts: list[Alert], batch: RowTable) -> None:
        """Set the source and line of alerts raised on a row, as ``process_batch`` sets them.

        NOTE: the rows are found by device and time, which are unique in a
        batch. Every alert except the liveness detector's comes from one row.
        """
        for alert in alerts:
            if alert.detector == "liveness":
                continue
            for row in np.flatnonzero(batch.times == alert.time).tolist():
                if self._blocks.device_names[int(batch.devices[row])] == alert.device:
                    alert.source, alert.line = self._blocks.origin(batch, row)
                    break

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
        self._use_items()
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


class _HeldSignals:
    """Delay SIGINT and SIGTERM handlers until :meth:`run_held`, called where no block is half done.

    Only handlers written in Python are held (the default SIGINT handler
    raises KeyboardInterrupt), and only in the main thread. A second signal
    runs its handler at once.
    """

    def __init__(self) -> None:
        self.previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self.held: tuple[int, FrameType | None] | None = None  # the delayed signal and its frame

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for number in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(number)
            if callable(handler):
                self.previous[number] = handler
                signal.signal(number, self._hold)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.run_held()

    def _hold(self, number: int, frame: FrameType | None) -> None:
        if self.held is not None:
            self.held = None
            self.previous[number](number, frame)
            return
        logger.debug("signal %d held until the current input block is done", number)
        self.held = (number, frame)

    def run_held(self) -> None:
        """Run the handler of a held signal, if one arrived."""
        if self.held is not None:
            number, frame = self.held
            self.held = None
            self.previous[number](number, frame)


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
