"""Labelled incidents: which kinds exist, where they go and what they do to the data.

:func:`plan_incidents` picks devices and windows, and :func:`apply_incident`
changes one device's rows inside one window. A window is half-open: a row at
time ``t`` is affected when ``start <= t < end``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from iotwarden.errors import InvalidConfigError
from iotwarden.simulate._signals import SECONDS_PER_HOUR, SECONDS_PER_MINUTE
from iotwarden.simulate.devices import DEVICE_TYPES

__all__ = ["ATTACKS", "Incident", "apply_incident", "plan_incidents", "validate_attacks"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incident:
    """One injected incident and its ground-truth label.

    Attributes:
        incident_id: ``inc-0001`` and so on, unique within a simulation.
        device_id: The affected device.
        device_type: Type of the affected device.
        kind: One of :data:`ATTACKS`.
        start: Window start, epoch seconds UTC (inclusive).
        end: Window end, epoch seconds UTC (exclusive).
        metrics: Metrics that the incident changes. For ``silence`` every
            metric of the type, because the whole report is missing.
    """

    incident_id: str
    device_id: str
    device_type: str
    kind: str
    start: float
    end: float
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class _KindSpec:
    targets: dict[str, tuple[str, ...]]  # device type -> labelled metrics
    duration_h: tuple[float, float]


_SPECS: dict[str, _KindSpec] = {
    "exfiltration": _KindSpec({"camera": ("bytes_out", "packets_out")}, (0.15, 0.6)),
    "ddos": _KindSpec({"camera": ("bytes_out", "packets_out", "conn_failed", "cpu_pct")}, (0.25, 1.0)),
    "scanning": _KindSpec({"camera": ("distinct_dst", "conn_failed")}, (0.2, 0.75)),
    "drift": _KindSpec(
        {"thermostat": ("temperature_c",), "industrial_pump": ("vibration_rms",), "smart_meter": ("voltage_v",)},
        (3.0, 8.0),
    ),
    "stuck": _KindSpec(
        {"thermostat": ("temperature_c",), "industrial_pump": ("pressure_kpa",), "smart_meter": ("voltage_v",)},
        (2.0, 6.0),
    ),
    "silence": _KindSpec({name: spec.metrics for name, spec in DEVICE_TYPES.items()}, (0.75, 3.0)),
    "unit_change": _KindSpec({"thermostat": ("temperature_c",), "industrial_pump": ("pressure_kpa",)}, (1.5, 6.0)),
}

ATTACKS: tuple[str, ...] = tuple(_SPECS)
"""Names of the incident kinds, as accepted by ``attacks``."""

# Incidents start after the warm-up, so detectors have time to learn a
# baseline, and two incidents on one device are this far apart.
_WARMUP_S = 6 * SECONDS_PER_HOUR
_WARMUP_FRACTION = 0.3
_SEPARATION_S = 30 * SECONDS_PER_MINUTE
_PLACEMENT_TRIES = 30

_PSI_PER_KPA = 0.1450377


def validate_attacks(attacks: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Return the attack names without duplicates, or all of them for None.

    Raises:
        InvalidConfigError: A name is not one of :data:`ATTACKS`.
    """
    if attacks is None:
        return ATTACKS
    if isinstance(attacks, str):
        raise InvalidConfigError(f"attacks must be a sequence of names, not the string {attacks!r}")
    unknown = [name for name in attacks if name not in _SPECS]
    if unknown:
        raise InvalidConfigError(
            f"invalid attack name(s) {', '.join(map(repr, unknown))}. Allowed: {', '.join(ATTACKS)}"
        )
    return tuple(dict.fromkeys(attacks))


def incidents_per_kind(devices: int) -> int:
    """Return how many devices get each incident kind: 2 for small fleets, up to 6 for 900 or more devices."""
    return max(2, min(6, devices // 150))


def plan_incidents(
    rng: np.random.Generator,
    attacks: tuple[str, ...],
    device_ids: list[str],
    device_types: list[str],
    start: float,
    end: float,
    *,
    explicit: bool,
) -> list[Incident]:
    """Choose devices and non-overlapping windows for each requested incident kind.

    Each kind goes to distinct devices, spread over the types it suits, and
    starts after the warm-up: 6 hours, or 30 % of a shorter simulation.
    Devices without an incident are chosen first.

    Raises:
        InvalidConfigError: ``explicit`` is true and a requested kind has no
            suitable device or no room in the time span. Without ``explicit``
            the kind is skipped and logged.
    """
    span = end - start
    warmup = min(_WARMUP_S, _WARMUP_FRACTION * span)
    busy: dict[int, list[tuple[float, float]]] = {}
    per_kind = incidents_per_kind(len(device_ids))
    planned: list[tuple[int, str, float, float]] = []

    for kind in attacks:
        spec = _SPECS[kind]
        candidates = _candidates(rng, spec, device_types, busy)
        if not candidates:
            message = f"attack {kind!r} needs a device of type {', '.join(spec.targets)}, and the fleet has none"
            if explicit:
                raise InvalidConfigError(f"{message}. Simulate more devices or leave out {kind!r}.")
            logger.info("%s, so it is skipped", message)
            continue
        placed = 0
        for device in candidates:
            if placed == per_kind:
                break
            window = _place_window(rng, spec, start + warmup, end, busy.get(device, []))
            if window is None:
                continue
            busy.setdefault(device, []).append(window)
            planned.append((device, kind, *window))
            placed += 1
        if placed == 0:
            message = f"no room for attack {kind!r} in a {span / SECONDS_PER_HOUR:g} h simulation"
            if explicit:
                raise InvalidConfigError(f"{message}. Simulate more hours or leave out {kind!r}.")
            logger.info("%s, so it is skipped", message)

    planned.sort(key=lambda item: (item[2], item[0]))
    return [
        Incident(
            incident_id=f"inc-{number:04d}",
            device_id=device_ids[device],
            device_type=device_types[device],
            kind=kind,
            start=window_start,
            end=window_end,
            metrics=_SPECS[kind].targets[device_types[device]],
        )
        for number, (device, kind, window_start, window_end) in enumerate(planned, start=1)
    ]


def _candidates(
    rng: np.random.Generator, spec: _KindSpec, device_types: list[str], busy: dict[int, list[tuple[float, float]]]
) -> list[int]:
    """Return suitable devices, idle ones first, interleaved across the suitable types."""
    by_type: list[list[int]] = []
    for type_name in spec.targets:
        members = [index for index, name in enumerate(device_types) if name == type_name]
        rng.shuffle(members)
        members.sort(key=lambda index: len(busy.get(index, [])))
        if members:
            by_type.append(members)
    rng.shuffle(by_type)
    interleaved = [index for group in zip(*_pad(by_type)) for index in group if index is not None]
    interleaved.sort(key=lambda index: len(busy.get(index, [])))
    return interleaved


def _pad(groups: list[list[int]]) -> list[list[int | None]]:
    longest = max((len(group) for group in groups), default=0)
    return [group + [None] * (longest - len(group)) for group in groups]


def _place_window(
    rng: np.random.Generator, spec: _KindSpec, earliest: float, end: float, taken: list[tuple[float, float]]
) -> tuple[float, float] | None:
    """Return a whole-second window that fits in [earliest, end) and keeps clear of ``taken``, or None."""
    room = end - earliest
    if room < 2 * SECONDS_PER_MINUTE:
        return None
    duration = min(rng.uniform(*spec.duration_h) * SECONDS_PER_HOUR, 0.6 * room)
    margin = min(_SEPARATION_S, 0.1 * room)
    for _ in range(_PLACEMENT_TRIES):
        window_start = float(np.round(rng.uniform(earliest, end - duration)))
        window_end = window_start + float(np.round(duration))
        if all(window_end + margin <= lo or window_start >= hi + margin for lo, hi in taken):
            return window_start, window_end
    return None


def apply_incident(
    rng: np.random.Generator,
    incident: Incident,
    times: np.ndarray,
    values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return one device's times and values with ``incident`` applied inside its window.

    ``values`` is modified in place except for ``silence``, which returns
    copies without the rows in the window.
    """
    spec = DEVICE_TYPES[incident.device_type]
    inside = (times >= incident.start) & (times < incident.end)
    if incident.kind == "silence":
        return times[~inside], values[~inside]
    if not inside.any():
        return times, values

    rows = np.flatnonzero(inside)
    window_times = times[rows]
    gaps = np.diff(times, prepend=times[0] - spec.interval_s)[rows]
    columns = {name: spec.column(name) for name in spec.metrics}
    _EFFECTS[incident.kind](rng, incident, values, rows, window_times, gaps, columns)
    return times, values


def _exfiltrate(rng, incident, values, rows, window_times, gaps, columns) -> None:
    # An upload of 30 to 80 Mbit/s on top of 1 to 6 Mbit/s of video, in full-size packets.
    extra_bytes = np.round(rng.uniform(30e6, 80e6) / 8.0 * gaps * rng.uniform(0.8, 1.2, rows.size))
    values[rows, columns["bytes_out"]] += extra_bytes
    values[rows, columns["packets_out"]] += np.round(extra_bytes / 1400.0)
    values[rows, columns["cpu_pct"]] = np.minimum(values[rows, columns["cpu_pct"]] + 8.0, 100.0)


def _ddos(rng, incident, values, rows, window_times, gaps, columns) -> None:
    # A SYN flood: many small packets and many connections that never complete.
    extra_packets = np.round(rng.uniform(5_000, 20_000) * gaps * rng.uniform(0.7, 1.3, rows.size))
    values[rows, columns["packets_out"]] += extra_packets
    values[rows, columns["bytes_out"]] += extra_packets * rng.uniform(60.0, 120.0)
    values[rows, columns["conn_failed"]] += rng.poisson(rng.uniform(200.0, 2000.0), rows.size)
    values[rows, columns["distinct_dst"]] += rng.integers(1, 4)
    values[rows, columns["cpu_pct"]] = np.minimum(values[rows, columns["cpu_pct"]] + rng.uniform(30.0, 50.0), 100.0)


def _scan(rng, incident, values, rows, window_times, gaps, columns) -> None:
    # Probing random addresses: most probes fail. Each probe also adds about one
    # packet, a small change to packets_out that the label does not list.
    probes = rng.poisson(rng.uniform(300.0, 3000.0) * gaps / 30.0)
    values[rows, columns["distinct_dst"]] += probes
    values[rows, columns["conn_failed"]] += rng.binomial(probes, rng.uniform(0.85, 0.98))
    values[rows, columns["packets_out"]] += np.round(probes * 1.2)


def _drift(rng, incident, values, rows, window_times, gaps, columns) -> None:
    # A linear ramp from zero to ``target`` over the window. The value snaps
    # back at the end of the window, as after a recalibration or repair.
    # NOTE: only the reported metric moves. A drifting thermostat reading does
    # not change power_w, although a real controller would react to it.
    (metric,) = incident.metrics
    column = columns[metric]
    if metric == "temperature_c":
        target = rng.uniform(3.0, 6.0) * rng.choice([-1.0, 1.0])
    elif metric == "vibration_rms":
        target = float(np.median(values[:, column])) * rng.uniform(1.5, 3.0)
    else:
        target = -rng.uniform(10.0, 18.0)
    progress = (window_times - incident.start) / (incident.end - incident.start)
    values[rows, column] += target * progress


def _stick(rng, incident, values, rows, window_times, gaps, columns) -> None:
    (metric,) = incident.metrics
    column = columns[metric]
    values[rows, column] = values[rows[0], column]


def _change_unit(rng, incident, values, rows, window_times, gaps, columns) -> None:
    # A firmware update reports in the wrong unit until it is rolled back.
    (metric,) = incident.metrics
    column = columns[metric]
    if metric == "temperature_c":
        values[rows, column] = values[rows, column] * 9.0 / 5.0 + 32.0
    else:
        values[rows, column] = values[rows, column] * _PSI_PER_KPA


_EFFECTS = {
    "exfiltration": _exfiltrate,
    "ddos": _ddos,
    "scanning": _scan,
    "drift": _drift,
    "stuck": _stick,
    "unit_change": _change_unit,
}
