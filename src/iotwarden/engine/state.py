"""Per-shard detector state as compact arrays indexed by device slot.

Every array has one row per device slot. Per-metric arrays have one column
per metric column of the engine's metric registry, per-pair arrays one
column per unordered pair of metric columns. Arrays grow in steps (a quarter
more device slots, a few more metric columns), and growing never moves
existing rows or columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ArraySpec", "ShardState", "pair_count", "pair_index"]

_METRIC_HEADROOM = 4


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """Shape kind, dtype and initial value of one state array."""

    kind: str  # "device", "metric", "pair" or "hour" (24 columns, one per hour of the day)
    dtype: str
    fill: float | int | bool


def pair_count(n_metrics: int) -> int:
    """Number of unordered pairs of ``n_metrics`` columns."""
    return n_metrics * (n_metrics - 1) // 2


def pair_index(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Column of the pair (i, j), i < j; new metrics append pairs at the end."""
    return j * (j - 1) // 2 + i


class ShardState:
    """The state arrays of one shard.

    ``arrays`` maps a name to an array of shape ``(capacity,)``,
    ``(capacity, metric_capacity)`` or ``(capacity, pair_capacity)``.
    """

    def __init__(self, specs: dict[str, ArraySpec], capacity: int = 64, metric_capacity: int = 8, pair_skip: int = 0) -> None:
        self.specs = dict(specs)
        # The first ``pair_skip`` metric columns (derived metrics) take part in
        # no pair, so pair arrays cover the columns after them only.
        self.pair_skip = pair_skip
        self.capacity = capacity
        self.metric_capacity = metric_capacity
        self.n_devices = 0
        self.arrays: dict[str, np.ndarray] = {name: self._new(spec) for name, spec in self.specs.items()}

    def _columns(self, kind: str) -> int:
        if kind == "metric":
            return self.metric_capacity
        if kind == "pair":
            return pair_count(max(self.metric_capacity - self.pair_skip, 0))
        if kind == "hour":
            return 24
        return 0

    def _new(self, spec: ArraySpec) -> np.ndarray:
        columns = self._columns(spec.kind)
        shape = (self.capacity,) if spec.kind == "device" else (self.capacity, columns)
        return np.full(shape, spec.fill, dtype=spec.dtype)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self.arrays[name] = value

    def add_device(self) -> int:
        """Allocate a slot for a new device and return it."""
        if self.n_devices == self.capacity:
            # Grow by a quarter, not double, so a large fleet wastes little.
            self._grow(max(self.capacity + 64, self.capacity * 5 // 4), self.metric_capacity)
        slot = self.n_devices
        self.n_devices += 1
        return slot

    def ensure_metrics(self, n_metrics: int) -> None:
        """Make room for at least ``n_metrics`` metric columns."""
        if n_metrics > self.metric_capacity:
            self._grow(self.capacity, n_metrics + _METRIC_HEADROOM)

    def _grow(self, capacity: int, metric_capacity: int) -> None:
        old_rows, old_metrics = self.capacity, self.metric_capacity
        self.capacity, self.metric_capacity = capacity, metric_capacity
        for name, spec in self.specs.items():
            old = self.arrays[name]
            new = self._new(spec)
            if spec.kind == "device":
                new[:old_rows] = old
            elif spec.kind == "metric":
                new[:old_rows, :old_metrics] = old
            elif spec.kind == "hour":
                new[:old_rows] = old
            else:
                new[:old_rows, : pair_count(max(old_metrics - self.pair_skip, 0))] = old
            self.arrays[name] = new

    def allocated_bytes(self) -> int:
        """Bytes of every state array as allocated, spare capacity included."""
        return sum(array.nbytes for array in self.arrays.values())

    def nbytes_per_device(self, n_metrics: int) -> int:
        """Bytes of state one device uses with ``n_metrics`` metric columns."""
        total = 0
        for spec in self.specs.values():
            width = np.dtype(spec.dtype).itemsize
            if spec.kind == "device":
                total += width
            elif spec.kind == "metric":
                total += width * n_metrics
            elif spec.kind == "hour":
                total += width * 24
            else:
                total += width * pair_count(max(n_metrics - self.pair_skip, 0))
        return total

    def snapshot(self) -> dict[str, np.ndarray]:
        """Return the used part of every array (copies), for checkpoints."""
        return {name: array[: self.n_devices].copy() for name, array in self.arrays.items()}

    def restore(self, n_devices: int, n_metrics: int, arrays: dict[str, np.ndarray]) -> None:
        """Load arrays saved by :meth:`snapshot`."""
        self.capacity = max(64, n_devices + n_devices // 4)
        self.metric_capacity = max(8, n_metrics + _METRIC_HEADROOM)
        self.n_devices = n_devices
        for name, spec in self.specs.items():
            array = self._new(spec)
            saved = arrays[name]
            if spec.kind == "device":
                array[:n_devices] = saved
            else:
                array[:n_devices, : saved.shape[1]] = saved
            self.arrays[name] = array
