"""Fleet simulation: build the devices, generate their reports, inject incidents.

The result keeps one columnar block per device type (only that type's
metrics) plus a global order that interleaves all rows by event time, so a
fleet of 1,000 devices over a day (about 1.7 million rows) stays compact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from iotwarden.errors import InvalidConfigError
from iotwarden.observation import Observation
from iotwarden.simulate._signals import SECONDS_PER_HOUR
from iotwarden.simulate.devices import DEVICE_TYPES, METRIC_NAMES
from iotwarden.simulate.incidents import Incident, apply_incident, plan_incidents, validate_attacks

__all__ = ["DEFAULT_START", "Simulation", "TypeBlock", "simulate_fleet"]

logger = logging.getLogger(__name__)

DEFAULT_START = datetime(2024, 3, 4, tzinfo=timezone.utc)
"""Start used when none is given: Monday 2024-03-04 00:00 UTC, so output depends only on the seed."""

_CHUNK_ROWS = 100_000


@dataclass(frozen=True, eq=False)
class TypeBlock:
    """All rows of one device type, sorted by time and then device.

    Attributes:
        device_type: Type name.
        metrics: The type's metric names, one per column of ``values``.
        decimals: Decimal places to which each column is rounded.
        time: Event times, epoch seconds UTC, shape ``(rows,)``.
        device: Index into :attr:`Simulation.device_ids`, shape ``(rows,)``.
        values: Metric values, shape ``(rows, len(metrics))``.
    """

    device_type: str
    metrics: tuple[str, ...]
    decimals: tuple[int, ...]
    time: np.ndarray
    device: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, eq=False)
class Simulation:
    """A simulated fleet: the rows of every device in time order and the incident labels.

    Rows are ordered by event time, ties by device index. ``len(simulation)``
    is the number of rows.

    Attributes:
        seed: Seed the simulation was generated from.
        start: First possible event time, epoch seconds UTC.
        end: End of the simulated span (exclusive), epoch seconds UTC.
        attacks: Incident kinds that were requested.
        device_ids: Device ids, in device-index order.
        device_types: Type of each device, parallel to ``device_ids``.
        incidents: Injected incidents, ordered by start time.
        blocks: One :class:`TypeBlock` per device type present.
        metric_names: Every metric name, in the CSV column order.
    """

    seed: int
    start: float
    end: float
    attacks: tuple[str, ...]
    device_ids: tuple[str, ...]
    device_types: tuple[str, ...]
    incidents: tuple[Incident, ...]
    blocks: tuple[TypeBlock, ...]
    order_block: np.ndarray = field(repr=False)
    order_row: np.ndarray = field(repr=False)
    metric_names: tuple[str, ...] = METRIC_NAMES

    def __len__(self) -> int:
        return int(self.order_block.size)

    def iter_chunks(self, size: int = _CHUNK_ROWS) -> Iterator[list[tuple[TypeBlock, np.ndarray, np.ndarray]]]:
        """Yield the global row order in chunks of ``size`` rows.

        Each chunk lists, per block, the positions within the chunk and the
        block rows that go there.
        """
        for lo in range(0, len(self), size):
            codes = self.order_block[lo : lo + size]
            rows = self.order_row[lo : lo + size]
            parts = []
            for code, block in enumerate(self.blocks):
                positions = np.flatnonzero(codes == code)
                if positions.size:
                    parts.append((block, positions, rows[positions]))
            yield parts

    def rows(self) -> Iterator[tuple[float, str, str, dict[str, float]]]:
        """Yield ``(time, device_id, device_type, metrics)`` for every row in time order."""
        for parts in self.iter_chunks():
            count = sum(positions.size for _, positions, _ in parts)
            chunk: list[tuple[float, str, str, dict[str, float]]] = [None] * count  # type: ignore[list-item]
            for block, positions, rows in parts:
                times = block.time[rows].tolist()
                devices = block.device[rows].tolist()
                for position, when, device, values in zip(
                    positions.tolist(), times, devices, block.values[rows].tolist()
                ):
                    chunk[position] = (when, self.device_ids[device], block.device_type, dict(zip(block.metrics, values)))
            yield from chunk

    def observations(self, source: str = "") -> Iterator[Observation]:
        """Yield every row as an :class:`~iotwarden.observation.Observation`, in time order.

        ``source`` defaults to ``simulator:seed=<seed>``, and ``line`` is the
        row's 1-based position in the stream.
        """
        name = source or f"simulator:seed={self.seed}"
        for number, (when, device_id, device_type, metrics) in enumerate(self.rows(), start=1):
            yield Observation(device_id, when, metrics, {"device_type": device_type}, name, number)

    def device_series(self, device_id: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Return one device's event times and a metric-name to values mapping.

        Raises:
            KeyError: No device has this id.
        """
        try:
            index = self.device_ids.index(device_id)
        except ValueError:
            raise KeyError(f"no device {device_id!r} in the simulation") from None
        block = next(block for block in self.blocks if block.device_type == self.device_types[index])
        mask = block.device == index
        values = block.values[mask]
        return block.time[mask], {name: values[:, column] for column, name in enumerate(block.metrics)}


def simulate_fleet(
    devices: int,
    hours: float,
    *,
    seed: int = 0,
    attacks: Sequence[str] | None = None,
    start: datetime | None = None,
) -> Simulation:
    """Generate a fleet of ``devices`` devices reporting for ``hours`` hours.

    Args:
        devices: Number of devices, at least 1. The fleet mixes the types of
            :data:`~iotwarden.simulate.devices.DEVICE_TYPES` by their share,
            with at least one device of each type from 5 devices on.
        hours: Simulated span in hours, greater than 0.
        seed: Non-negative seed. The same arguments give the same output.
        attacks: Incident kinds to inject (names from
            :data:`~iotwarden.simulate.incidents.ATTACKS`); None for all
            kinds, an empty sequence for none.
        start: Start of the span; a naive datetime is taken as UTC and
            fractions of a second are dropped. Defaults to :data:`DEFAULT_START`.

    Raises:
        InvalidConfigError: An argument is out of range, an attack name is
            unknown, or a requested attack has no suitable device or no room.
    """
    _validate_size(devices, hours, seed)
    kinds = validate_attacks(None if attacks is None else list(attacks))
    start_s = _start_seconds(start)
    end_s = start_s + hours * SECONDS_PER_HOUR

    device_ids, device_types = _build_fleet(devices)
    plan_rng = np.random.default_rng([seed, 1])
    incidents = plan_incidents(
        plan_rng, kinds, device_ids, device_types, start_s, end_s, explicit=attacks is not None
    )
    by_device: dict[str, list[Incident]] = {}
    for incident in incidents:
        by_device.setdefault(incident.device_id, []).append(incident)

    collected: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {
        name: ([], [], []) for name in DEVICE_TYPES if name in device_types
    }
    for index, (device_id, type_name) in enumerate(zip(device_ids, device_types)):
        rng = np.random.default_rng([seed, 2, index])
        times, values = DEVICE_TYPES[type_name].generate(rng, start_s, end_s)
        for incident in by_device.get(device_id, []):
            times, values = apply_incident(rng, incident, times, values)
        time_parts, device_parts, value_parts = collected[type_name]
        time_parts.append(times)
        device_parts.append(np.full(times.size, index, dtype=np.int32))
        value_parts.append(values)

    blocks = tuple(_build_block(name, *parts) for name, parts in collected.items())
    order_block, order_row = _merge_order(blocks)
    logger.debug("simulated %d rows from %d devices with %d incidents", order_row.size, devices, len(incidents))
    return Simulation(
        seed=seed,
        start=start_s,
        end=end_s,
        attacks=kinds,
        device_ids=tuple(device_ids),
        device_types=tuple(device_types),
        incidents=tuple(incidents),
        blocks=blocks,
        order_block=order_block,
        order_row=order_row,
    )


def _validate_size(devices: int, hours: float, seed: int) -> None:
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise InvalidConfigError(f"devices must be an integer of at least 1, got {devices!r}")
    if not isinstance(hours, (int, float)) or not math.isfinite(hours) or hours <= 0:
        raise InvalidConfigError(f"hours must be a finite number greater than 0, got {hours!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidConfigError(f"seed must be a non-negative integer, got {seed!r}")


def _start_seconds(start: datetime | None) -> float:
    moment = DEFAULT_START if start is None else start
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return float(math.floor(moment.timestamp()))


def _build_fleet(devices: int) -> tuple[list[str], list[str]]:
    """Return device ids and types: ``thermostat-0001`` and so on, grouped by type."""
    counts = _type_counts(devices)
    ids: list[str] = []
    types: list[str] = []
    for name, count in counts.items():
        width = max(4, len(str(count)))
        ids += [f"{name}-{number:0{width}d}" for number in range(1, count + 1)]
        types += [name] * count
    return ids, types


def _type_counts(devices: int) -> dict[str, int]:
    """Split ``devices`` over the types by share (largest remainder), at least one of each from 5 devices on."""
    names = list(DEVICE_TYPES)
    if devices < len(names):
        return {name: 1 for name in names[:devices]}
    spare = devices - len(names)
    exact = np.array([DEVICE_TYPES[name].share for name in names]) * spare
    counts = np.floor(exact).astype(int)
    for position in np.argsort(-(exact - counts), kind="stable")[: spare - counts.sum()]:
        counts[position] += 1
    return {name: int(count) + 1 for name, count in zip(names, counts)}


def _build_block(
    type_name: str, time_parts: list[np.ndarray], device_parts: list[np.ndarray], value_parts: list[np.ndarray]
) -> TypeBlock:
    spec = DEVICE_TYPES[type_name]
    times = np.concatenate(time_parts)
    device = np.concatenate(device_parts)
    values = np.concatenate(value_parts).reshape(-1, len(spec.metrics))
    order = np.lexsort((device, times))
    times, device, values = times[order], device[order], values[order]
    for column, decimals in enumerate(spec.decimals):
        values[:, column] = np.round(values[:, column], decimals)
    return TypeBlock(type_name, spec.metrics, spec.decimals, times, device, values)


def _merge_order(blocks: tuple[TypeBlock, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return block code and row within the block for every row, sorted by time and then device."""
    if not blocks:
        return np.zeros(0, np.int8), np.zeros(0, np.int64)
    times = np.concatenate([block.time for block in blocks])
    device = np.concatenate([block.device for block in blocks])
    codes = np.concatenate([np.full(block.time.size, code, np.int8) for code, block in enumerate(blocks)])
    rows = np.concatenate([np.arange(block.time.size) for block in blocks])
    order = np.lexsort((device, times))
    return codes[order], rows[order]
