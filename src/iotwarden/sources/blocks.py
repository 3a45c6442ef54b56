"""Observation blocks: runs of input items whose observations are held as columns.

A reader that can parse a file column-wise (see
:func:`iotwarden.sources.csvblocks.read_csv_blocks`) yields
:class:`ObservationBlock` values in place of its :class:`Observation` items.
A block stands for a fixed run of consecutive items of one file: its
observations as arrays, and its field issues and rejections as objects, each
with its position in the run. :meth:`ObservationBlock.items` gives back the
exact items the row-by-row reader yields for the same run, so a consumer may
take either form.

:func:`~iotwarden.sources.files.read_records` returns a :class:`RecordStream`,
an iterator of items that also offers the block form through
:meth:`RecordStream.blocks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from iotwarden.observation import FieldIssue, Observation, Rejection

__all__ = ["ObservationBlock", "RecordStream", "block_from_items"]

Item = Observation | FieldIssue | Rejection


@dataclass(eq=False)
class ObservationBlock:
    """Consecutive items of one file, with the observations as columns.

    The block covers ``size`` items. Observation row ``i`` is item
    ``positions[i]``: device ``device_names[devices[i]]``, event time
    ``times[i]`` (epoch seconds), physical line ``lines[i]`` and metric
    ``metric_names[k]`` in ``values[i, k]``, where NaN means the metric is
    absent. Each other item (a field issue or a rejection) is in
    ``other_items`` with its position. Rows and other items are in position
    order, and every position below ``size`` is taken by exactly one of them.
    Row ``i`` has the attributes ``attribute_sets[attributes[i]]``; with
    ``attributes`` None, no row has any.
    """

    source: str
    metric_names: tuple[str, ...]
    device_names: list[str]
    devices: np.ndarray
    times: np.ndarray
    values: np.ndarray
    lines: np.ndarray
    positions: np.ndarray
    other_items: list[tuple[int, FieldIssue | Rejection]]
    size: int
    attributes: np.ndarray | None = None
    attribute_sets: list[dict[str, str]] = field(default_factory=lambda: [{}])

    @property
    def row_count(self) -> int:
        """Number of observations in the block."""
        return len(self.times)

    def observation(self, row: int) -> Observation:
        """Build the :class:`Observation` of row ``row``, as the row-by-row reader yields it."""
        metrics = {}
        for name, value in zip(self.metric_names, self.values[row].tolist()):
            if not math.isnan(value):
                metrics[name] = value
        attributes = {} if self.attributes is None else dict(self.attribute_sets[int(self.attributes[row])])
        return Observation(
            self.device_names[int(self.devices[row])],
            float(self.times[row]),
            metrics,
            attributes,
            self.source,
            int(self.lines[row]),
        )

    def items(self) -> Iterator[Item]:
        """Yield the block's items in their original order."""
        others = iter(self.other_items)
        pending = next(others, None)
        for row, position in enumerate(self.positions.tolist()):
            while pending is not None and pending[0] < position:
                yield pending[1]
                pending = next(others, None)
            yield self.observation(row)
        while pending is not None:
            yield pending[1]
            pending = next(others, None)

    def head(self, count: int) -> ObservationBlock:
        """Return the block of the first ``count`` items."""
        if count >= self.size:
            return self
        rows = int(np.searchsorted(self.positions, count))
        return self._select(slice(0, rows), [entry for entry in self.other_items if entry[0] < count], 0, count)

    def tail(self, start: int) -> ObservationBlock:
        """Return the block of the items from position ``start`` on, renumbered from 0."""
        if start <= 0:
            return self
        rows = int(np.searchsorted(self.positions, start))
        others = [(position - start, item) for position, item in self.other_items if position >= start]
        return self._select(slice(rows, None), others, start, max(self.size - start, 0))

    def _select(
        self, rows: slice, others: list[tuple[int, FieldIssue | Rejection]], shift: int, size: int
    ) -> ObservationBlock:
        return ObservationBlock(
            source=self.source,
            metric_names=self.metric_names,
            device_names=self.device_names,
            devices=self.devices[rows],
            times=self.times[rows],
            values=self.values[rows],
            lines=self.lines[rows],
            positions=self.positions[rows] - shift,
            other_items=others,
            size=size,
            attributes=None if self.attributes is None else self.attributes[rows],
            attribute_sets=self.attribute_sets,
        )


def block_from_items(source: str, metric_names: Sequence[str], items: Sequence[Item]) -> ObservationBlock:
    """Build the block of ``items``, read from ``source`` with columns ``metric_names``.

    Raises:
        ValueError: an observation has a metric outside ``metric_names``,
            another source or no line number, which a block cannot hold.
    """
    names = tuple(metric_names)
    column_of = {name: column for column, name in enumerate(names)}
    device_index: dict[str, int] = {}
    devices: list[int] = []
    times: list[float] = []
    lines: list[int] = []
    positions: list[int] = []
    rows: list[list[float]] = []
    attribute_codes: list[int] = []
    attribute_index: dict[tuple[tuple[str, str], ...], int] = {(): 0}
    others: list[tuple[int, FieldIssue | Rejection]] = []
    for position, item in enumerate(items):
        if type(item) is not Observation:
            others.append((position, item))  # type: ignore[arg-type]
            continue
        if item.source != source or item.line is None:
            raise ValueError(f"{item.where}: an observation of another source or without a line cannot be held in a block")
        row = [math.nan] * len(names)
        for name, value in item.metrics.items():
            column = column_of.get(name)
            if column is None:
                raise ValueError(f"{item.where}: metric {name!r} is not one of the block's columns")
            row[column] = value
        devices.append(device_index.setdefault(item.device, len(device_index)))
        times.append(item.time)
        lines.append(item.line)
        positions.append(position)
        rows.append(row)
        attribute_codes.append(attribute_index.setdefault(tuple(item.attributes.items()), len(attribute_index)))
    return ObservationBlock(
        source=source,
        metric_names=names,
        device_names=list(device_index),
        devices=np.array(devices, dtype=np.int32),
        times=np.array(times, dtype=np.float64),
        values=np.array(rows, dtype=np.float64).reshape(len(rows), len(names)),
        lines=np.array(lines, dtype=np.int64),
        positions=np.array(positions, dtype=np.int64),
        other_items=others,
        size=len(items),
        attributes=np.array(attribute_codes, dtype=np.int32) if len(attribute_index) > 1 else None,
        attribute_sets=[dict(pairs) for pairs in attribute_index],
    )


class RecordStream:
    """The items of :func:`~iotwarden.sources.files.read_records`, row by row or in blocks.

    Iterating yields :class:`Observation`, :class:`FieldIssue` and
    :class:`Rejection` items. :meth:`blocks` yields the same items, except that
    runs of a file that a reader can parse column-wise come as
    :class:`ObservationBlock` values. A stream is read once, in one of the two
    forms.
    """

    def __init__(self, open_items: Callable[[bool], Iterator[Item | ObservationBlock]]) -> None:
        self._open_items = open_items
        self._rows: Iterator[Item] | None = None
        self._opened = False

    def __iter__(self) -> RecordStream:
        return self

    def __next__(self) -> Item:
        if self._rows is None:
            self._claim()
            self._rows = self._open_items(False)  # type: ignore[assignment]
        return next(self._rows)  # type: ignore[arg-type]

    def blocks(self) -> Iterator[Item | ObservationBlock]:
        """Return an iterator of the items, with column-wise runs as blocks.

        Raises:
            RuntimeError: the stream was already read.
        """
        self._claim()
        return self._open_items(True)

    def close(self) -> None:
        """Close the files of an iteration that was started."""
        close = getattr(self._rows, "close", None)
        if close is not None:
            close()

    def _claim(self) -> None:
        if self._opened:
            raise RuntimeError("a record stream can be read only once")
        self._opened = True
