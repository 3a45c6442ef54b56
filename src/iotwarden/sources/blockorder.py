"""Per-device ordering of observation blocks, equal to :class:`Reorderer` item by item.

:class:`BlockReorderer` keeps the state of a :class:`Reorderer` as arrays
and applies its policy (see :mod:`iotwarden.sources.ordering`) to a whole
:class:`~iotwarden.sources.blocks.ObservationBlock` at once. For every block
it returns the observations that :meth:`Reorderer.push` would release while
taking the block's items one by one, in the same order, and the same
rejections. An observation leaves the reorderer at the first later observation of its
device whose watermark (time minus the lateness bound) passes it, or when
its device goes quiet: at the first row that moves the stream's latest time
more than the bound past the device's last report in order. The first point
is found by a search within the device's rows, the second by a compiled
pass over the block that keeps the queue of devices as
:class:`Reorderer` does, and no row is handled in Python unless its device
has a row out of order in the block.

The two forms share one state: :meth:`BlockReorderer.activate` takes over
the state of the wrapped :class:`Reorderer`, and
:meth:`BlockReorderer.deactivate` writes it back, so that items that come
one by one, snapshots and restores go through the :class:`Reorderer` as
before.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from iotwarden.observation import Observation, Rejection
from iotwarden.sources.blocks import ObservationBlock
from iotwarden.sources.ordering import Reorderer, _DeviceBuffer

__all__ = ["AttributeRows", "BlockPush", "BlockReorderer", "RowTable"]

logger = logging.getLogger(__name__)

_NO_LINE = -1


@dataclass
class RowTable:
    """Observation rows as columns, with device, source, layout and attribute codes of a :class:`BlockReorderer`.

    ``values`` may have fewer columns than the reorderer has metrics; the
    missing columns are absent metrics. ``layouts`` give the order of each
    row's metrics, as in the file it came from. A line of -1 means none.
    ``attributes`` are codes into the reorderer's attribute sets, 0 for none.
    """

    devices: np.ndarray
    times: np.ndarray
    lines: np.ndarray
    sources: np.ndarray
    layouts: np.ndarray
    values: np.ndarray
    attributes: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def empty(cls, width: int) -> RowTable:
        return cls(
            devices=np.zeros(0, dtype=np.int32),
            times=np.zeros(0, dtype=np.float64),
            lines=np.zeros(0, dtype=np.int64),
            sources=np.zeros(0, dtype=np.int32),
            layouts=np.zeros(0, dtype=np.int32),
            values=np.zeros((0, width), dtype=np.float64),
            attributes=np.zeros(0, dtype=np.int32),
        )

    def take(self, rows: np.ndarray | slice) -> RowTable:
        return RowTable(
            self.devices[rows],
            self.times[rows],
            self.lines[rows],
            self.sources[rows],
            self.layouts[rows],
            self.values[rows],
            self.attributes[rows],
        )

    def widened(self, width: int) -> RowTable:
        """Return the table with ``width`` value columns."""
        if self.values.shape[1] == width:
            return self
        values = np.full((len(self), width), np.nan)
        values[:, : self.values.shape[1]] = self.values
        return RowTable(self.devices, self.times, self.lines, self.sources, self.layouts, values, self.attributes)

    @staticmethod
    def concat(tables: Sequence[RowTable], width: int) -> RowTable:
        """Return the rows of ``tables`` one after the other, with ``width`` value columns."""
        if len(tables) == 1:
            return tables[0].widened(width)
        widened = [table.widened(width) for table in tables]
        return RowTable(
            np.concatenate([table.devices for table in widened]),
            np.concatenate([table.times for table in widened]),
            np.concatenate([table.lines for table in widened]),
            np.concatenate([table.sources for table in widened]),
            np.concatenate([table.layouts for table in widened]),
            np.concatenate([table.values for table in widened]),
            np.concatenate([table.attributes for table in widened]),
        )


@dataclass
class BlockPush:
    """Result of :meth:`BlockReorderer.push` for one block.

    ``released`` are the released observations in release order, and
    ``rejections`` the rows rejected as too late or as duplicates, each with
    its position in the block. ``release_rows`` gives the block row whose
    arrival released each of ``released``.
    """

    released: RowTable
    rejections: list[tuple[int, Rejection]]
    release_rows: np.ndarray
    # Every row kept in the buffer during the block: its arrival row (-1 before the block),
    # the row that released it (the largest int64 while still pending) and its time.
    kept_arrival: np.ndarray
    kept_release: np.ndarray
    kept_times: np.ndarray

    def frontier(self, index: int) -> float:
        """Return the earliest time not yet scored when ``released[index]`` is routed.

        That is the earliest time still in the reorderer right after the
        push that released ``released[index]``, or of the rows that push
        released after it.
        """
        row = self.release_rows[index]
        waiting = (self.kept_arrival <= row) & (self.kept_release > row)
        stop = int(np.searchsorted(self.release_rows, row, side="right"))
        earliest = math.inf
        if waiting.any():
            earliest = float(self.kept_times[waiting].min())
        if index + 1 < stop:
            earliest = min(earliest, float(self.released.times[index + 1 : stop].min()))
        return earliest


class BlockReorderer:
    """The state of ``reorderer`` as arrays, for whole observation blocks; see the module documentation."""

    def __init__(self, reorderer: Reorderer) -> None:
        self.reorderer = reorderer
        self.active = False
        self.metric_names: list[str] = []
        self._metric_index: dict[str, int] = {}
        self.device_names: list[str] = []
        self._device_index: dict[str, int] = {}
        self.sources: list[str] = []
        self._source_index: dict[str, int] = {}
        self.layouts: list[tuple[str, ...]] = []
        self._layout_index: dict[tuple[str, ...], int] = {}
        self._layout_columns: list[list[tuple[str, int]]] = []
        self.attribute_sets: list[dict[str, str]] = [{}]
        self._attribute_index: dict[tuple[tuple[str, str], ...], int] = {(): 0}
        self._clear_devices()

    @property
    def width(self) -> int:
        return len(self.metric_names)

    def _clear_devices(self) -> None:
        """Forget every device. The arrays below have one row per device code, with spare capacity."""
        self.device_names = []
        self._device_index = {}
        self._device_name_array = np.zeros(0, dtype=object)
        self.latest = np.zeros(0, dtype=np.float64)
        # Reorderer's `arrived` (NaN for None) and `sequence` of each device.
        self.arrived = np.zeros(0, dtype=np.float64)
        self.sequence = np.zeros(0, dtype=np.int64)
        self.has_last = np.zeros(0, dtype=bool)
        self.last = _blank_rows(0, self.width)
        self.pending = RowTable.empty(self.width)

    # Switching between the two forms ------------------------------------------------------

    def activate(self) -> None:
        """Take over the state of the wrapped reorderer."""
        if self.active:
            return
        buffers = self.reorderer._devices
        self._clear_devices()
        pending: list[Observation] = []
        last: list[Observation] = []
        last_codes: list[int] = []
        for device, buffer in buffers.items():
            code = self.device_code(device)
            self.latest[code] = buffer.latest
            self.arrived[code] = np.nan if buffer.arrived is None else buffer.arrived
            self.sequence[code] = buffer.sequence
            pending.extend(buffer.pending)
            if buffer.last_released is not None:
                last.append(buffer.last_released)
                last_codes.append(code)
        self.pending = self.table_of(pending)
        if last_codes:
            self._store_last(np.array(last_codes, dtype=np.int64), self.table_of(last))
        # The arrays are now the only copy of the state, until deactivate() writes it back.
        self.reorderer._devices = {}
        self.active = True

    def deactivate(self) -> None:
        """Write the state back into the wrapped reorderer and stop holding it."""
        if not self.active:
            return
        pending = self.observations(self.pending)
        by_device: list[list[Observation]] = [[] for _ in self.device_names]
        for code, observation in zip(self.pending.devices.tolist(), pending):
            by_device[code].append(observation)
        last_rows = np.flatnonzero(self.has_last)
        last = dict(zip(last_rows.tolist(), self.observations(self.last.take(last_rows))))
        arrived = self.arrived.tolist()
        sequence = self.sequence.tolist()
        self.reorderer._set_devices(
            {
                device: _DeviceBuffer(
                    latest=float(self.latest[code]),
                    pending=deque(by_device[code]),
                    last_released=last.get(code),
                    arrived=None if math.isnan(arrived[code]) else arrived[code],
                    sequence=sequence[code],
                )
                for code, device in enumerate(self.device_names)
            }
        )
        self._clear_devices()
        self.active = False

    # Codes and conversions ---------------------------------------------------------------------

    def metric_columns(self, names: Sequence[str]) -> np.ndarray:
        """Return the value columns of ``names``, adding new names at the end."""
        columns = []
        for name in names:
            column = self._metric_index.get(name)
            if column is None:
                column = self._metric_index[name] = len(self.metric_names)
                self.metric_names.append(name)
            columns.append(column)
        return np.array(columns, dtype=np.intp)

    def layout_code(self, names: tuple[str, ...]) -> int:
        code = self._layout_index.get(names)
        if code is None:
            self.metric_columns(names)
            code = self._layout_index[names] = len(self.layouts)
            self.layouts.append(names)
            self._layout_columns.append([(name, self._metric_index[name]) for name in names])
        return code

    def attribute_code(self, attributes: dict[str, str]) -> int:
        """Return the code of an attribute set (0 for none), registering new sets."""
        if not attributes:
            return 0
        key = tuple(attributes.items())
        code = self._attribute_index.get(key)
        if code is None:
            code = self._attribute_index[key] = len(self.attribute_sets)
            self.attribute_sets.append(dict(attributes))
        return code

    def source_code(self, source: str) -> int:
        code = self._source_index.get(source)
        if code is None:
            code = self._source_index[source] = len(self.sources)
            self.sources.append(source)
        return code

    def device_code(self, device: str) -> int:
        """Return the code of ``device``, registering it as a device without observations yet."""
        code = self._device_index.get(device)
        if code is not None:
            return code
        code = self._device_index[device] = len(self.device_names)
        self.device_names.append(device)
        capacity = len(self.latest)
        if code >= capacity:
            extra = max(capacity, 64)
            self.latest = np.concatenate([self.latest, np.full(extra, -math.inf)])
            self.arrived = np.concatenate([self.arrived, np.full(extra, np.nan)])
            self.sequence = np.concatenate([self.sequence, np.zeros(extra, dtype=np.int64)])
            self.has_last = np.concatenate([self.has_last, np.zeros(extra, dtype=bool)])
            self.last = RowTable.concat([self.last, _blank_rows(extra, self.width)], self.width)
        return code

    def _store_last(self, codes: np.ndarray, rows: RowTable) -> None:
        self.last = self.last.widened(self.width)
        rows = rows.widened(self.width)
        self.last.devices[codes] = rows.devices
        self.last.times[codes] = rows.times
        self.last.lines[codes] = rows.lines
        self.last.sources[codes] = rows.sources
        self.last.layouts[codes] = rows.layouts
        self.last.values[codes] = rows.values
        self.last.attributes[codes] = rows.attributes
        self.has_last[codes] = True

    def table_of(self, observations: Sequence[Observation]) -> RowTable:
        """Return observations as rows, registering their devices, metrics, sources and attribute sets."""
        count = len(observations)
        table = RowTable.empty(self.width)
        if not count:
            return table
        layouts = [self.layout_code(tuple(observation.metrics)) for observation in observations]
        values = np.full((count, self.width), np.nan)
        for row, observation in enumerate(observations):
            for name, value in observation.metrics.items():
                values[row, self._metric_index[name]] = value
        return RowTable(
            devices=np.array([self.device_code(observation.device) for observation in observations], dtype=np.int32),
            times=np.array([observation.time for observation in observations], dtype=np.float64),
            lines=np.array(
                [_NO_LINE if observation.line is None else observation.line for observation in observations],
                dtype=np.int64,
            ),
            sources=np.array([self.source_code(observation.source) for observation in observations], dtype=np.int32),
            layouts=np.array(layouts, dtype=np.int32),
            values=values,
            attributes=np.array([self.attribute_code(observation.attributes) for observation in observations], dtype=np.int32),
        )

    def observations(self, rows: RowTable) -> list[Observation]:
        """Build the :class:`Observation` of each row, equal to the one the row-by-row path has."""
        result = []
        names = self.device_names
        sources = self.sources
        columns_of = self._layout_columns
        attribute_sets = self.attribute_sets
        width = rows.values.shape[1]
        for device, time, line, source, layout, values, attributes in zip(
            rows.devices.tolist(),
            rows.times.tolist(),
            rows.lines.tolist(),
            rows.sources.tolist(),
            rows.layouts.tolist(),
            rows.values.tolist(),
            rows.attributes.tolist(),
        ):
            metrics = {}
            for name, column in columns_of[layout]:
                if column < width:
                    value = values[column]
                    if value == value:
                        metrics[name] = value
            result.append(
                Observation(
                    names[device],
                    time,
                    metrics,
                    dict(attribute_sets[attributes]) if attributes else {},
                    sources[source],
                    None if line == _NO_LINE else line,
                )
            )
        return result

    def attributes_of(self, rows: RowTable) -> AttributeRows:
        """Return the attributes of each row, built only for the rows that are read."""
        return AttributeRows(rows.attributes, self.attribute_sets)

    def device_names_of(self, rows: RowTable) -> list[str]:
        """Return the device id of each row."""
        if len(self._device_name_array) != len(self.device_names):
            self._device_name_array = np.array(self.device_names, dtype=object)
        return self._device_name_array[rows.devices].tolist()

    def origin(self, rows: RowTable, row: int) -> tuple[str, int | None]:
        """Return the source and the line of one row."""
        line = int(rows.lines[row])
        return self.sources[int(rows.sources[row])], None if line == _NO_LINE else line

    def block_rows(self, block: ObservationBlock) -> tuple[RowTable, np.ndarray]:
        """Return the rows of ``block`` and their device codes, registering new devices in row order."""
        columns = self.metric_columns(block.metric_names)
        layout = self.layout_code(tuple(block.metric_names))
        width = self.width
        if len(columns) == width and np.array_equal(columns, np.arange(width)):
            values = block.values
        else:
            values = np.full((block.row_count, width), np.nan)
            values[:, columns] = block.values
        distinct, first_rows = np.unique(block.devices, return_index=True)
        mapping = np.zeros(len(block.device_names), dtype=np.int32)
        for local in distinct[np.argsort(first_rows)].tolist():
            mapping[local] = self.device_code(block.device_names[local])
        codes = mapping[block.devices]
        count = block.row_count
        if block.attributes is None:
            attributes = np.zeros(count, dtype=np.int32)
        else:
            attribute_codes = np.array([self.attribute_code(entry) for entry in block.attribute_sets], dtype=np.int32)
            attributes = attribute_codes[block.attributes]
        table = RowTable(
            devices=codes,
            times=block.times,
            lines=block.lines,
            sources=np.full(count, self.source_code(block.source), dtype=np.int32),
            layouts=np.full(count, layout, dtype=np.int32),
            values=values,
            attributes=attributes,
        )
        return table, codes

    # Ordering ---------------------------------------------------------------------------

    def push(self, block: ObservationBlock) -> BlockPush:
        """Apply the ordering policy to the rows of ``block`` (the reorderer must be active)."""
        if not self.active:
            raise RuntimeError("the block reorderer is not active")
        lateness = self.reorderer.lateness
        rows, codes = self.block_rows(block)
        self.pending = self.pending.widened(self.width)
        self.last = self.last.widened(self.width)
        times = rows.times
        count = len(rows)

        # Rows of a device in arrival order: each must be later than the one before.
        by_device = _stable_order(codes)
        sorted_codes = codes[by_device]
        sorted_times = times[by_device]
        first_of_device = np.ones(count, dtype=bool)
        first_of_device[1:] = sorted_codes[1:] != sorted_codes[:-1]
        before = np.empty(count, dtype=np.float64)
        before[1:] = sorted_times[:-1]
        before[first_of_device] = self.latest[sorted_codes[first_of_device]]
        in_order = sorted_times > before

        accepted = np.ones(count, dtype=bool)
        triggers = np.ones(count, dtype=bool)
        rejections: list[tuple[int, Rejection]] = []
        late_rows = False
        disordered = np.unique(sorted_codes[~in_order]) if not in_order.all() else None
        if disordered is not None:
            self._mark_triggers(rows, by_device, sorted_codes, disordered, triggers)

        # Where each device's quiet rows are released: the queue of Reorderer, row by row.
        reorderer = self.reorderer
        stream = np.maximum.accumulate(np.concatenate(([reorderer.stream_latest], times)))
        quiet_at, quiet_order, quiet_at_start, quiet_order_start = _quiet_releases(
            codes, triggers, stream[1:], stream[1:] - lateness, stream[:-1], self.arrived, self.sequence, reorderer.sequence
        )
        reorderer.stream_latest = float(stream[-1])
        reorderer.sequence += int(triggers.sum())

        if disordered is not None:
            late_rows = self._place_disordered(
                block, rows, by_device, sorted_codes, disordered, accepted, triggers, rejections, quiet_at, quiet_at_start
            )
            rejections.sort(key=lambda entry: entry[0])

        pushed = self._release(
            rows, accepted, triggers, lateness, late_rows, quiet_at, quiet_order, quiet_at_start, quiet_order_start
        )
        pushed.rejections = rejections
        return pushed

    def flush(self) -> RowTable:
        """Release every pending row, in time order across devices, as :meth:`Reorderer.flush` does."""
        pending = self.pending
        order = np.lexsort((pending.devices, pending.times))
        released = pending.take(order)
        self._remember_last(released)
        self.pending = RowTable.empty(self.width)
        self.arrived[:] = np.nan
        return released

    def _mark_triggers(
        self, rows: RowTable, by_device: np.ndarray, sorted_codes: np.ndarray, disordered: np.ndarray, triggers: np.ndarray
    ) -> None:
        """Clear ``triggers`` for the rows of ``disordered`` devices that are not later than their device's latest time."""
        starts = np.searchsorted(sorted_codes, disordered, side="left")
        stops = np.searchsorted(sorted_codes, disordered, side="right")
        for code, start, stop in zip(disordered.tolist(), starts.tolist(), stops.tolist()):
            latest = float(self.latest[code])
            for row in by_device[start:stop].tolist():
                event_time = float(rows.times[row])
                if event_time > latest:
                    latest = event_time
                else:
                    triggers[row] = False

    def _place_disordered(
        self,
        block: ObservationBlock,
        rows: RowTable,
        by_device: np.ndarray,
        sorted_codes: np.ndarray,
        disordered: np.ndarray,
        accepted: np.ndarray,
        triggers: np.ndarray,
        rejections: list[tuple[int, Rejection]],
        quiet_at: np.ndarray,
        quiet_at_start: np.ndarray,
    ) -> bool:
        """Apply :meth:`Reorderer.push` row by row to the devices with rows out of order.

        Marks rejected rows in ``accepted`` (``triggers`` already marks the
        rows that advance their device's clock) and returns True when a row
        was put back in order. ``quiet_at`` and ``quiet_at_start`` give where
        the device's rows were released as quiet (see :func:`_quiet_releases`).
        """
        reorderer = self.reorderer
        lateness = reorderer.lateness
        pending = self.pending
        late_rows = False
        starts = np.searchsorted(sorted_codes, disordered, side="left")
        stops = np.searchsorted(sorted_codes, disordered, side="right")
        pending_starts = np.searchsorted(pending.devices, disordered, side="left")
        pending_stops = np.searchsorted(pending.devices, disordered, side="right")
        for code, start, stop, pending_start, pending_stop in zip(
            disordered.tolist(), starts.tolist(), stops.tolist(), pending_starts.tolist(), pending_stops.tolist()
        ):
            latest = float(self.latest[code])
            # Times of the device's accepted observations, sorted, and where each came from.
            accepted_times = pending.times[pending_start:pending_stop].tolist()
            origins = [("pending", index) for index in range(pending_start, pending_stop)]
            last = self.observations(self.last.take(np.array([code])))[0] if self.has_last[code] else None
            device_rows = by_device[start:stop].tolist()
            quiet_rows = sorted({int(quiet_at_start[code]), *quiet_at[device_rows].tolist()} - {-1})
            for row in device_rows:
                while quiet_rows and quiet_rows[0] < row:
                    # Everything accepted so far left as quiet: the latest of it is the last released.
                    quiet_rows.pop(0)
                    if origins:
                        origin, index = origins[-1]
                        last = self.observations(pending.take(np.array([index])))[0] if origin == "pending" else block.observation(index)
                        accepted_times, origins = [], []
                event_time = float(rows.times[row])
                if event_time > latest:
                    latest = event_time
                    accepted_times.append(event_time)
                    origins.append(("block", row))
                    continue
                accepted[row] = False  # _mark_triggers already cleared its trigger
                item = block.observation(row)
                behind = latest - event_time
                if behind > lateness:
                    rejections.append((int(block.positions[row]), reorderer.too_late(item, reorderer.too_late_detail(behind, latest))))
                    continue
                if last is not None and event_time <= last.time:
                    # Only after a flush or a quiet release: see Reorderer._place_late.
                    rejection = (
                        reorderer.duplicate(last, item)
                        if event_time == last.time
                        else reorderer.too_late(item, reorderer.released_detail(last))
                    )
                    rejections.append((int(block.positions[row]), rejection))
                    continue
                # Released rows are older than event_time, so an equal time is still pending.
                position = bisect.bisect_right(accepted_times, event_time)
                if position > 0 and accepted_times[position - 1] == event_time:
                    origin, index = origins[position - 1]
                    first = self.observations(pending.take(np.array([index])))[0] if origin == "pending" else block.observation(index)
                    rejections.append((int(block.positions[row]), reorderer.duplicate(first, item)))
                    continue
                accepted_times.insert(position, event_time)
                origins.insert(position, ("block", row))
                accepted[row] = True
                reorderer.counters.reordered += 1
                late_rows = True
        return late_rows

    def _release(
        self,
        rows: RowTable,
        accepted: np.ndarray,
        triggers: np.ndarray,
        lateness: float,
        late_rows: bool,
        quiet_at: np.ndarray,
        quiet_order: np.ndarray,
        quiet_at_start: np.ndarray,
        quiet_order_start: np.ndarray,
    ) -> BlockPush:
        """Release rows and keep the rest, sorted by device and time, as the new pending rows."""
        accepted_rows = np.flatnonzero(accepted)
        pending_count = len(self.pending)
        candidates = RowTable.concat([self.pending, rows.take(accepted_rows)], self.width)
        arrival = np.concatenate([np.full(pending_count, -1, dtype=np.int64), accepted_rows])
        advances = np.concatenate([np.zeros(pending_count, dtype=bool), triggers[accepted_rows]])
        # Where each candidate leaves as quiet (-1: not in this block) and its device's place in the queue then.
        pending_codes = self.pending.devices
        quiet_row = np.concatenate([quiet_at_start[pending_codes], quiet_at[accepted_rows]])
        quiet_rank = np.concatenate([quiet_order_start[pending_codes], quiet_order[accepted_rows]])

        order = _stable_order(candidates.devices)
        codes = candidates.devices[order]
        times = candidates.times[order]
        arrival = arrival[order]
        advances = advances[order]
        quiet_row = quiet_row[order]
        quiet_rank = quiet_rank[order]
        total = len(order)
        nothing = np.zeros(0, dtype=np.int64)
        if total == 0:
            self.pending = RowTable.empty(self.width)
            return BlockPush(RowTable.empty(self.width), [], nothing, nothing, nothing, np.zeros(0))

        # Group bounds of each element, in the order by device.
        boundary = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        group_starts = np.concatenate(([0], boundary))
        group_stops = np.concatenate((boundary, [total]))
        sizes = group_stops - group_starts
        start_of = np.repeat(group_starts, sizes)
        stop_of = np.repeat(group_stops, sizes)

        # The watermark in force at each element: that of the latest advancing row up to it.
        index = np.arange(total)
        last_advance = np.maximum.accumulate(np.where(advances, index, -1))
        watermark = np.where(last_advance >= start_of, times[np.maximum(last_advance, 0)] - lateness, -math.inf)

        # The first later element of the same device whose watermark passes the element's time
        # is the row that releases it; the watermark only grows within a device.
        low = index + 1
        high = stop_of.copy()
        active = low < high
        while active.any():
            middle = np.minimum((low + high) // 2, total - 1)
            passes = watermark[middle] > times
            low = np.where(active & ~passes, middle + 1, low)
            high = np.where(active & passes, middle, high)
            active = low < high
        own = low < stop_of
        own_row = np.where(own, arrival[np.minimum(low, total - 1)], np.iinfo(np.int64).max)

        # A row leaves at the first of the two. At one block row the pushing
        # device's own rows come first, then quiet devices in queue order.
        by_quiet = (quiet_row >= 0) & (quiet_row < own_row)
        released = own | by_quiet
        self.reorderer.counters.quiet += int(by_quiet.sum())
        released_rows = np.flatnonzero(released)
        release_at = np.where(by_quiet, quiet_row, own_row)[released_rows]
        rank = np.where(by_quiet, quiet_rank, -1)[released_rows]
        release_order = np.lexsort((times[released_rows], rank, release_at))
        out = candidates.take(order[released_rows[release_order]])
        self._remember_last(out)
        leave = np.full(total, np.iinfo(np.int64).max, dtype=np.int64)
        leave[released_rows] = release_at

        # The device's latest time: that of its last row that advanced it.
        last_in_group = last_advance[group_stops - 1]
        advanced = last_in_group >= group_starts
        self.latest[codes[group_starts[advanced]]] = times[last_in_group[advanced]]

        still_pending = candidates.take(order[~released])
        if late_rows:
            still_pending = still_pending.take(np.lexsort((still_pending.times, still_pending.devices)))
        self.pending = still_pending
        return BlockPush(out, [], release_at[release_order], arrival, leave, times)

    def _remember_last(self, released: RowTable) -> None:
        """Record the last released row of each device, as ``last_released``."""
        if not len(released):
            return
        reversed_codes = released.devices[::-1]
        codes, first_from_end = np.unique(reversed_codes, return_index=True)
        last_rows = len(released) - 1 - first_from_end
        self._store_last(codes.astype(np.int64), released.take(last_rows))


@numba.njit(cache=True, nogil=True)
def _quiet_releases(codes, triggers, stream_after, watermark, stream_before, arrived, sequence, counter):
    """Follow the queue of :class:`Reorderer` over a block: where does each device go quiet?

    ``triggers`` marks the rows that advance their device's latest time.
    ``stream_after`` and ``stream_before`` are the stream's latest time after
    and before each row. ``watermark`` is ``stream_after`` minus the
    lateness bound. ``arrived`` and ``sequence`` (per device code, NaN for
    None) are updated in place, as ``counter`` would be.

    Returns four arrays. For each block row: the block row at which its
    device's rows are released as quiet (-1: not in this block), and the
    device's place in the queue at that moment. Per device code: the same two
    for rows that were pending before the block.
    """
    count = codes.shape[0]
    n_codes = arrived.shape[0]
    queued = np.flatnonzero(~np.isnan(arrived))
    first = queued[np.argsort(sequence[queued], kind="mergesort")]
    queue_code = np.empty(first.shape[0] + count, dtype=np.int64)
    queue_sequence = np.empty(first.shape[0] + count, dtype=np.int64)
    tail = 0
    for code in first:
        queue_code[tail] = code
        queue_sequence[tail] = sequence[code]
        tail += 1
    head = 0
    start_sequence = sequence.copy()
    window = np.full(n_codes, -1, dtype=np.int64)  # the in-order row that queued the device last; -1: before the block
    window_of_row = np.empty(count, dtype=np.int64)
    row_sequence = np.zeros(count, dtype=np.int64)
    released_at = np.full(count, -1, dtype=np.int64)  # per in-order row: where its window ended quiet
    released_at_start = np.full(n_codes, -1, dtype=np.int64)

    for row in range(count):
        code = codes[row]
        if triggers[row]:
            counter += 1
            sequence[code] = counter
            row_sequence[row] = counter
            arrived[code] = stream_after[row]
            window[code] = row
            queue_code[tail] = code
            queue_sequence[tail] = counter
            tail += 1
        window_of_row[row] = window[code]
        if stream_after[row] > stream_before[row]:
            while head < tail:
                quiet = queue_code[head]
                if queue_sequence[head] != sequence[quiet] or np.isnan(arrived[quiet]):
                    head += 1  # the device reported again, or already left
                    continue
                if not arrived[quiet] < watermark[row]:
                    break
                if window[quiet] < 0:
                    released_at_start[quiet] = row
                else:
                    released_at[window[quiet]] = row
                arrived[quiet] = np.nan
                head += 1

    # A row stays until the first window of its device, from its own on, that ends quiet.
    next_at = np.full(n_codes, -1, dtype=np.int64)
    next_rank = np.full(n_codes, -1, dtype=np.int64)
    window_at = np.full(count, -1, dtype=np.int64)
    window_rank = np.full(count, -1, dtype=np.int64)
    for row in range(count - 1, -1, -1):
        if triggers[row]:
            code = codes[row]
            if released_at[row] >= 0:
                next_at[code] = released_at[row]
                next_rank[code] = row_sequence[row]
            window_at[row] = next_at[code]
            window_rank[row] = next_rank[code]
    at_start = np.where(released_at_start >= 0, released_at_start, next_at)
    rank_start = np.where(released_at_start >= 0, start_sequence, next_rank)
    at = np.empty(count, dtype=np.int64)
    rank = np.empty(count, dtype=np.int64)
    for row in range(count):
        own_window = window_of_row[row]
        if own_window < 0:
            at[row] = at_start[codes[row]]
            rank[row] = rank_start[codes[row]]
        else:
            at[row] = window_at[own_window]
            rank[row] = window_rank[own_window]
    return at, rank, at_start, rank_start


def _blank_rows(count: int, width: int) -> RowTable:
    return RowTable(
        devices=np.zeros(count, dtype=np.int32),
        times=np.zeros(count, dtype=np.float64),
        lines=np.full(count, _NO_LINE, dtype=np.int64),
        sources=np.zeros(count, dtype=np.int32),
        layouts=np.zeros(count, dtype=np.int32),
        values=np.full((count, width), np.nan),
        attributes=np.zeros(count, dtype=np.int32),
    )


class AttributeRows(Sequence[dict[str, str]]):
    """The attributes of each row of a :class:`RowTable`, as the row-by-row path has them."""

    def __init__(self, codes: np.ndarray, sets: list[dict[str, str]]) -> None:
        self.codes = codes
        self.sets = sets

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, row: int) -> dict[str, str]:  # type: ignore[override]
        return dict(self.sets[int(self.codes[row])])


def _stable_order(codes: np.ndarray) -> np.ndarray:
    """Return the stable sort order of device codes (a radix sort when they fit in 16 bits)."""
    if len(codes) and int(codes.max()) < 2**15:
        return np.argsort(codes.astype(np.int16), kind="stable")
    return np.argsort(codes, kind="stable")
