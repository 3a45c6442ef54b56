"""Per-device event-time ordering and duplicate handling.

:class:`Reorderer` sits between a source and the engine, so that every
device's observations leave it in event-time order, without duplicates.

Policy, per device:

* Lateness bound (default 300 s of event time): a device's *watermark* is
  its latest event time seen minus the bound. Observations wait in a buffer
  sorted by time and are released once their time is below the watermark,
  or when the stream ends (:meth:`Reorderer.flush`). Rows that arrive out of
  order by less than the bound are therefore put back in order.
* An observation older than the watermark is rejected as "too far out of
  order (N s behind the device's latest time)". It never moves the device's
  clock backwards.
* An exact duplicate (same device, time, metrics and attributes as an
  observation still pending) is dropped and reported as a Rejection with
  ``kind="duplicate"``.
* A conflicting duplicate (same device and time, different values) keeps the
  first observation and rejects the later one. The reason names both lines
  and the fields that differ. Values are never averaged.
* Field issues and rejections from the source pass through at once.

Duplicates are found among the observations still pending, which cover the
last ``lateness`` seconds of the device, and against the last observation
released. A duplicate of an older released observation is older than the
watermark, so it is rejected as too far out of order instead.

A quiet device does not hold back its last readings: once the stream as a
whole (its latest event time over all devices) has moved on by more than
the bound since the device's last report in order, everything the device
has pending is released. Replays then pass a device's last readings to the
engine before other devices' clocks make it look silent. After such a
release, a row of that device that is not newer than its latest time is
rejected as too far out of order, or as a duplicate.

With ``lateness=0`` nothing is re-ordered, and an observation waits only
until the device's next later one or the stream's. The buffer keeps per
device the observations of the last ``lateness`` seconds, so memory grows
with the bound times the reporting rate. A live source should also call
:meth:`Reorderer.release_until` on a timer, so that readings do not wait
while the whole stream is quiet.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from iotwarden.errors import InvalidConfigError, IotwardenError
from iotwarden.observation import FieldIssue, Observation, Rejection, format_time

__all__ = ["DEFAULT_LATENESS_SECONDS", "OrderingCounters", "Reorderer"]

logger = logging.getLogger(__name__)

DEFAULT_LATENESS_SECONDS = 300.0

Item = Observation | FieldIssue | Rejection


@dataclass
class OrderingCounters:
    """Counts of what the reorderer changed.

    Attributes:
        reordered: Observations that arrived before an earlier one and were
            put back in order.
        too_late: Observations rejected as older than the watermark.
        duplicates: Exact duplicates dropped.
        conflicts: Conflicting duplicates rejected.
        quiet: Observations released before their device's watermark
            passed them, because the device went quiet.
    """

    reordered: int = 0
    too_late: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quiet: int = 0


@dataclass
class _DeviceBuffer:
    """Observations of one device waiting for the watermark, sorted by time.

    A deque rather than a heap: rows in order, the common case, are appended
    and released from the left in O(1), and the duplicate of a row is its
    neighbour in the deque.
    """

    latest: float
    pending: deque[Observation] = field(default_factory=deque)
    last_released: Observation | None = None
    # The stream's latest time at the device's last report in order, and the
    # number of that report in the stream; None once its rows were released as quiet.
    arrived: float | None = None
    sequence: int = 0


class Reorderer:
    """Restore per-device event-time order and drop duplicates; see the module documentation.

    Args:
        lateness: How far, in seconds of event time, an observation may
            arrive behind its device's latest one and still be re-ordered.

    Use :meth:`process` on a whole stream, or :meth:`push` and
    :meth:`flush` when the caller drives the loop.
    """

    def __init__(self, lateness: float = DEFAULT_LATENESS_SECONDS) -> None:
        if not lateness >= 0 or lateness == float("inf"):
            raise InvalidConfigError(f"invalid lateness {lateness!r}: expected a finite number of seconds >= 0")
        self.lateness = float(lateness)
        self.counters = OrderingCounters()
        self._devices: dict[str, _DeviceBuffer] = {}
        # The latest event time over all devices, and the number of reports in order so far.
        self.stream_latest = -math.inf
        self.sequence = 0
        # Devices that reported in order since their rows were last released
        # as quiet, by their last such report: their `arrived` grows along it.
        self._quiet: OrderedDict[str, None] = OrderedDict()

    def process(self, items: Iterable[Item]) -> Iterator[Item]:
        """Yield the items of ``items`` in per-device order, then flush at the end."""
        for item in items:
            yield from self.push(item)
        yield from self.flush()

    def push(self, item: Item) -> list[Item]:
        """Take one item and return the items released by it, possibly none.

        Released are first the item's own device's rows that its watermark
        passes, then the rows of devices that went quiet, device by device
        in the order of their last reports.
        """
        if type(item) is not Observation:
            return [item]
        device = item.device
        event_time = item.time
        buffer = self._devices.get(device)
        if buffer is None:
            buffer = self._devices[device] = _DeviceBuffer(latest=event_time)
        elif not event_time > buffer.latest:
            return self._place_late(buffer, item)

        # In order, the common case: append and release what the new
        # watermark passes.
        buffer.latest = event_time
        pending = buffer.pending
        pending.append(item)
        advanced = event_time > self.stream_latest
        if advanced:
            self.stream_latest = event_time
        self.sequence += 1
        buffer.arrived = self.stream_latest
        buffer.sequence = self.sequence
        quiet = self._quiet
        quiet[device] = None
        quiet.move_to_end(device)

        released: list[Item] = []
        watermark = event_time - self.lateness
        if pending[0].time < watermark:
            while pending[0].time < watermark:
                released.append(pending.popleft())
            buffer.last_released = released[-1]  # type: ignore[assignment]
        if advanced:
            self._release_quiet(released)
        return released

    def _release_quiet(self, released: list[Item]) -> None:
        """Append to ``released`` the pending rows of devices quiet for longer than the bound."""
        watermark = self.stream_latest - self.lateness
        quiet = self._quiet
        devices = self._devices
        while quiet:
            device = next(iter(quiet))
            buffer = devices[device]
            if not buffer.arrived < watermark:  # type: ignore[operator]
                return
            del quiet[device]
            buffer.arrived = None
            if buffer.pending:
                self.counters.quiet += len(buffer.pending)
                released.extend(buffer.pending)
                buffer.last_released = buffer.pending[-1]
                buffer.pending.clear()

    def flush(self) -> list[Item]:
        """Release every pending observation, in time order across devices, and reset the buffers.

        The latest time of each device is kept, so rows older than the bound
        are still rejected after a flush.
        """
        released = list(heapq.merge(*(buffer.pending for buffer in self._devices.values()), key=_event_time))
        for buffer in self._devices.values():
            buffer.arrived = None
            if buffer.pending:
                buffer.last_released = buffer.pending[-1]
                buffer.pending.clear()
        self._quiet.clear()
        return released  # type: ignore[return-value]

    def release_until(self, time: float) -> list[Item]:
        """Release every pending observation older than ``time`` (epoch seconds), for live sources.

        Observations released this way can no longer be re-ordered: a later
        arrival of the same device that is not newer than the last one
        released is rejected as too far out of order (or as a duplicate of it).
        """
        released: list[Observation] = []
        for buffer in self._devices.values():
            pending = buffer.pending
            if pending and pending[0].time < time:
                while pending and pending[0].time < time:
                    released.append(pending.popleft())
                buffer.last_released = released[-1]
        released.sort(key=_event_time)
        return released  # type: ignore[return-value]

    def snapshot(self) -> dict[str, Any]:
        """Return the reorderer's state as JSON-serialisable data, for checkpoints."""
        return {
            "lateness": self.lateness,
            "counters": asdict(self.counters),
            "stream_latest": self.stream_latest if math.isfinite(self.stream_latest) else None,
            "sequence": self.sequence,
            "devices": {
                device: {
                    "latest": buffer.latest,
                    "pending": [_observation_to_dict(observation) for observation in buffer.pending],
                    "last_released": (
                        _observation_to_dict(buffer.last_released) if buffer.last_released is not None else None
                    ),
                    "arrived": buffer.arrived,
                    "sequence": buffer.sequence,
                }
                for device, buffer in self._devices.items()
            },
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Replace the reorderer's state with one returned by :meth:`snapshot`.

        The lateness bound of this instance is kept.

        Raises:
            IotwardenError: ``state`` is not a snapshot.
        """
        try:
            counters = OrderingCounters(**state["counters"])
            devices = {}
            for device, saved in state["devices"].items():
                last_released = saved["last_released"]
                buffer = _DeviceBuffer(
                    latest=float(saved["latest"]),
                    pending=deque(_observation_from_dict(data) for data in saved["pending"]),
                    last_released=_observation_from_dict(last_released) if last_released is not None else None,
                )
                # Snapshots from before quiet devices were released have no
                # `arrived`: a device with rows pending counts from its latest time.
                arrived = saved.get("arrived", buffer.latest if buffer.pending else None)
                buffer.arrived = None if arrived is None else float(arrived)
                buffer.sequence = int(saved.get("sequence", 0))
                devices[device] = buffer
            stream_latest = state.get("stream_latest")
            if stream_latest is None and "stream_latest" not in state and devices:
                stream_latest = max(buffer.latest for buffer in devices.values())
            sequence = int(state.get("sequence", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IotwardenError(f"invalid reorderer snapshot: {exc!r}") from exc
        self.counters = counters
        self.stream_latest = -math.inf if stream_latest is None else float(stream_latest)
        self.sequence = sequence
        self._set_devices(devices)

    def _set_devices(self, devices: dict[str, _DeviceBuffer]) -> None:
        """Take ``devices`` as the buffers, and queue the devices not yet released as quiet."""
        self._devices = devices
        queued = sorted(
            (buffer.sequence, index, device)
            for index, (device, buffer) in enumerate(devices.items())
            if buffer.arrived is not None
        )
        self._quiet = OrderedDict((device, None) for _, _, device in queued)

    def frontier(self) -> float:
        """Return the earliest event time still pending, or infinity when nothing is.

        Every observation older than this has been released, so a device
        that last reported before it is not waiting in the buffer.
        """
        return min((buffer.pending[0].time for buffer in self._devices.values() if buffer.pending), default=math.inf)

    @property
    def pending_count(self) -> int:
        """Number of observations waiting for their device's watermark."""
        return sum(len(buffer.pending) for buffer in self._devices.values())

    def _place_late(self, buffer: _DeviceBuffer, item: Observation) -> list[Item]:
        """Insert an observation that is not later than its device's latest, or reject it."""
        pending = buffer.pending
        event_time = item.time
        behind = buffer.latest - event_time
        if behind > self.lateness:
            return [self.too_late(item, self.too_late_detail(behind, buffer.latest))]

        last_released = buffer.last_released
        if last_released is not None and event_time <= last_released.time:
            # Only after a flush, release_until() or a quiet release: the
            # device's own watermark releases nothing this recent.
            if event_time == last_released.time:
                return [self.duplicate(last_released, item)]
            return [self.too_late(item, self.released_detail(last_released))]

        # Scan from the newest pending observation: late rows are usually recent.
        position = len(pending)
        while position > 0 and pending[position - 1].time > event_time:
            position -= 1
        if position > 0 and pending[position - 1].time == event_time:
            return [self.duplicate(pending[position - 1], item)]
        pending.insert(position, item)
        self.counters.reordered += 1
        return []

    def too_late(self, item: Observation, detail: str) -> Rejection:
        """Count ``item`` as too late and return its rejection, with ``detail`` telling how late it is."""
        self.counters.too_late += 1
        return Rejection(
            item.source,
            item.line,
            None,
            f"too far out of order ({detail}; the lateness bound is {_seconds(self.lateness)} s)",
            raw=_describe(item),
        )

    def too_late_detail(self, behind: float, latest: float) -> str:
        """Return the detail of :meth:`too_late` for an item ``behind`` seconds before the device's ``latest`` time."""
        return f"{_seconds(behind)} s behind the device's latest time {format_time(latest)}"

    def released_detail(self, released: Observation) -> str:
        """Return the detail of :meth:`too_late` for an item older than the released ``released``."""
        return f"a later observation of the device, at {format_time(released.time)}, was already released"

    def duplicate(self, first: Observation, item: Observation) -> Rejection:
        """Count ``item`` as a duplicate of ``first`` (exact or conflicting) and return its rejection."""
        differences = _differing_fields(first, item)
        if not differences:
            self.counters.duplicates += 1
            return Rejection(
                item.source,
                item.line,
                None,
                f"exact duplicate of {_line_name(first)} (same device, time and values); dropped",
                raw=_describe(item),
                kind="duplicate",
            )
        self.counters.conflicts += 1
        details = "; ".join(
            f"{name}: {_value_text(first, name)} on {_line_name(first)}, {_value_text(item, name)} on {_line_name(item)}"
            for name in differences
        )
        return Rejection(
            item.source,
            item.line,
            differences[0],
            f"conflicting duplicate: same device and time {format_time(item.time)} as {_line_name(first)}, "
            f"different values ({details}); the first is kept",
            raw=_describe(item),
        )


def _observation_to_dict(observation: Observation) -> dict[str, Any]:
    return {
        "device": observation.device,
        "time": observation.time,
        "metrics": observation.metrics,
        "attributes": observation.attributes,
        "source": observation.source,
        "line": observation.line,
    }


def _observation_from_dict(data: Mapping[str, Any]) -> Observation:
    return Observation(
        str(data["device"]),
        float(data["time"]),
        {str(name): float(value) for name, value in data["metrics"].items()},
        {str(name): str(value) for name, value in data["attributes"].items()},
        str(data["source"]),
        data["line"] if data["line"] is None else int(data["line"]),
    )


def _event_time(observation: Observation) -> float:
    return observation.time


def _differing_fields(first: Observation, second: Observation) -> list[str]:
    names = []
    for name in dict.fromkeys([*first.metrics, *second.metrics]):
        if first.metrics.get(name) != second.metrics.get(name):
            names.append(name)
    for name in dict.fromkeys([*first.attributes, *second.attributes]):
        if first.attributes.get(name) != second.attributes.get(name):
            names.append(name)
    return names


def _value_text(observation: Observation, name: str) -> str:
    if name in observation.metrics:
        return repr(observation.metrics[name])
    if name in observation.attributes:
        return repr(observation.attributes[name])
    return "missing"


def _line_name(observation: Observation) -> str:
    if observation.line is None:
        return "an earlier message"
    return f"line {observation.line}"


def _describe(observation: Observation) -> str:
    """Return the record as read, as a JSON object, for the dead-letter file.

    The input line itself is not kept past parsing; its source and line
    number are in the rejection.
    """
    record = {
        "device": observation.device,
        "time": format_time(observation.time),
        "metrics": observation.metrics,
        "attributes": observation.attributes,
    }
    return json.dumps(record, ensure_ascii=False)


def _seconds(value: float) -> str:
    return f"{value:g}"
