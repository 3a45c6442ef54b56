"""Engine settings, validated where they enter."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from iotwarden.errors import InvalidConfigError

__all__ = ["DRIFT_HOLD", "EngineConfig", "SENSITIVITY_THRESHOLDS", "Sensitivity"]

Sensitivity = Literal["low", "medium", "high"]

# Surprise (-log10 of the calibrated tail probability) at which an alert
# opens, after the per-device correction for the number of metrics tested.
# "medium" opens at a one-in-a-million event for that device and metric.
SENSITIVITY_THRESHOLDS: dict[str, float] = {"low": 7.0, "medium": 6.0, "high": 4.5}

# Drift surprise (p < 0.05) at which the slow baseline freezes, so a ramp
# cannot drag it along. It is also the default of ``drift_learn_below``.
DRIFT_HOLD = 1.3


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the detection engine.

    Counts are in observations of one device and metric; durations are in
    seconds of event time.

    Attributes:
        sensitivity: One setting for every device and metric: ``low`` raises
            fewer alerts, ``high`` more.
        threshold: Surprise at which an alert opens, in place of the one that
            ``sensitivity`` sets (7, 6 and 4.5 for low, medium and high).
        warmup: Observations a device needs for its own baseline of a metric
            to be ready. Before that the device is scored against its cohort.
        cohort_warmup: Observations a cohort needs, from at least
            ``cohort_min_devices`` devices, before it can score new devices.
        drift_warmup: Seconds of a device's history before drift is scored;
            it should span the signal's slowest normal rhythm (a day).
        drift_learn_below: Drift surprise below which the spread of the drift
            statistic keeps learning. The default learns only where no drift
            is suspected (p > 0.05), so a slow ramp cannot widen the spread.
            A higher value (4.5) lets a series whose level swings (a daily
            cycle) learn how far it swings, so fewer swings alert as drift,
            but a slow ramp then widens the spread as it grows and may never
            alert.
        routine_after: Closed alert episodes in the same direction after
            which an excursion no larger than those is routine: it no longer
            opens an alert (a tracker that drives every day, a thermostat's
            night setback). Larger excursions still alert. None turns this
            off: every excursion alerts, however often it recurs.
        fast_halflife: Half-life of the fast baseline, in observations.
        slow_halflife: Half-life of the slow baseline, in observations.
        clip_sigma: Residuals beyond this many standard deviations are
            clipped before they update a baseline (bounded influence).
        learn_threshold: Surprise at or above which an observation does not
            update the baselines (flagged points do not poison them).
        adopt_after: Seconds a metric may stay anomalous before its recent
            level is adopted as the new normal and the alert closes.
        adopt_after_count: The same in observations, whichever comes first;
            it matters for devices that report in dense bursts.
        close_after: Consecutive normal observations that close an alert.
        relative_floor: Smallest scale as a fraction of the level, so a
            constant signal does not turn a tiny change into a huge score.
        absolute_floor: Smallest scale in the metric's own unit.
        tail_df: Degrees of freedom of the Student-t reference that turns a
            standardised residual into a tail probability. Lower is more
            tolerant of heavy-tailed sensors.
        rate_features: Add the derived metric ``msg_rate`` per device
            (messages per minute, decayed over 10 minutes).
        silence_factor: A device is silent after this many typical intervals
            without a report (see also ``silence_min``).
        silence_min: Shortest silence that raises an alert, in seconds.
        stuck_min_run: Shortest run of identical values that can be "stuck".
        correlation_min: Smallest absolute correlation for a pair of metrics
            to be watched by the multivariate detector.
        incident_gap: Alerts of one device closer than this, in seconds, join
            one incident.
        cohort_attribute: Attribute names tried in order to find a device's
            cohort; devices without one belong to the whole fleet.
        counters: Metric names that are cumulative counters (converted to
            rates per second), besides every metric whose name ends in
            ``_total``. Values are the counter width in bits (32 or 64).
        limits: Physical range per metric as ``(low, high)``; a value outside
            it raises an ``out_of_range`` alert and never trains a baseline.
        shards: Number of state shards; a device always maps to one shard.
            Shards are the unit of checkpointing and of scale-out; in one
            process more shards only add work, so the default is 1.
        batch_size: Observations per micro-batch when replaying a stream.
    """

    sensitivity: Sensitivity = "medium"
    threshold: float | None = None
    warmup: int = 8
    cohort_warmup: int = 100
    cohort_min_devices: int = 3
    drift_warmup: float = 86400.0
    drift_learn_below: float = DRIFT_HOLD
    routine_after: int | None = 2
    fast_halflife: float = 15.0
    slow_halflife: float = 400.0
    clip_sigma: float = 4.0
    learn_threshold: float = 3.0
    adopt_after: float = 6 * 3600.0
    adopt_after_count: int = 1000
    close_after: int = 3
    relative_floor: float = 1e-3
    absolute_floor: float = 1e-9
    tail_df: float = 10.0
    rate_features: bool = True
    silence_factor: float = 3.0
    silence_min: float = 60.0
    stuck_min_run: int = 10
    correlation_min: float = 0.7
    incident_gap: float = 1800.0
    cohort_attribute: tuple[str, ...] = ("device_type", "type", "group", "cohort")
    counters: dict[str, int] = field(default_factory=dict)
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    shards: int = 1
    batch_size: int = 4096

    def __post_init__(self) -> None:
        for setting in dataclasses.fields(self):
            value = getattr(self, setting.name)
            if setting.type in _NUMBER_TYPES and not (value is None and "None" in setting.type):
                number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
                _require(number, setting.name, "a number", value)
            elif setting.type == "bool":
                _require(isinstance(value, (bool, np.bool_)), setting.name, "true or false", value)
        if self.sensitivity not in SENSITIVITY_THRESHOLDS:
            raise InvalidConfigError(
                f"sensitivity must be one of {sorted(SENSITIVITY_THRESHOLDS)}, got {self.sensitivity!r}"
            )
        _require(self.threshold is None or self.threshold > 0, "threshold", "a surprise > 0 or None", self.threshold)
        _require(self.warmup >= 2, "warmup", "an integer >= 2", self.warmup)
        _require(self.cohort_warmup >= 1, "cohort_warmup", "an integer >= 1", self.cohort_warmup)
        _require(self.cohort_min_devices >= 1, "cohort_min_devices", "an integer >= 1", self.cohort_min_devices)
        _require(self.drift_warmup >= 0, "drift_warmup", "a number of seconds >= 0", self.drift_warmup)
        _require(self.drift_learn_below > 0, "drift_learn_below", "a surprise > 0", self.drift_learn_below)
        _require(self.routine_after is None or self.routine_after >= 1, "routine_after", "an integer >= 1 or None (never routine)", self.routine_after)
        _require(self.fast_halflife > 0, "fast_halflife", "a number > 0", self.fast_halflife)
        _require(
            self.slow_halflife > self.fast_halflife,
            "slow_halflife",
            f"a number > fast_halflife ({self.fast_halflife})",
            self.slow_halflife,
        )
        _require(self.clip_sigma > 1, "clip_sigma", "a number > 1", self.clip_sigma)
        _require(self.learn_threshold > 0, "learn_threshold", "a number > 0", self.learn_threshold)
        _require(self.adopt_after > 0, "adopt_after", "a number of seconds > 0", self.adopt_after)
        _require(self.adopt_after_count >= 3, "adopt_after_count", "an integer >= 3", self.adopt_after_count)
        _require(self.close_after >= 1, "close_after", "an integer >= 1", self.close_after)
        _require(self.relative_floor >= 0, "relative_floor", "a number >= 0", self.relative_floor)
        _require(self.absolute_floor > 0, "absolute_floor", "a number > 0", self.absolute_floor)
        _require(self.tail_df >= 1, "tail_df", "a number >= 1", self.tail_df)
        _require(self.silence_factor > 1, "silence_factor", "a number > 1", self.silence_factor)
        _require(self.silence_min >= 0, "silence_min", "a number of seconds >= 0", self.silence_min)
        _require(self.stuck_min_run >= 3, "stuck_min_run", "an integer >= 3", self.stuck_min_run)
        _require(0 < self.correlation_min < 1, "correlation_min", "a number in (0, 1)", self.correlation_min)
        _require(self.incident_gap >= 0, "incident_gap", "a number of seconds >= 0", self.incident_gap)
        _require(1 <= self.shards <= 4096, "shards", "an integer in [1, 4096]", self.shards)
        _require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        for name, bits in self.counters.items():
            _require(bits in (32, 64), f"counters.{name}", "32 or 64", bits)
        for name, bounds in self.limits.items():
            ok = len(bounds) == 2 and float(bounds[0]) < float(bounds[1])
            _require(ok, f"limits.{name}", "a pair (low, high) with low < high", bounds)

    @property
    def routine_episodes(self) -> int:
        """Episode count at which an excursion becomes routine.

        Episode counters saturate at 255, so 256 means never.
        """
        return 256 if self.routine_after is None else self.routine_after

    @property
    def open_threshold(self) -> float:
        """Surprise at which an alert opens."""
        if self.threshold is not None:
            return self.threshold
        return SENSITIVITY_THRESHOLDS[self.sensitivity]

    def replace(self, **changes: Any) -> EngineConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain JSON-compatible values."""
        data = dataclasses.asdict(self)
        data["cohort_attribute"] = list(self.cohort_attribute)
        data["limits"] = {name: list(bounds) for name, bounds in self.limits.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineConfig:
        """Build settings from a mapping, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidConfigError(f"unknown engine setting(s) {unknown}; known settings: {sorted(known)}")
        values = dict(data)
        if "cohort_attribute" in values:
            values["cohort_attribute"] = tuple(values["cohort_attribute"])
        if "limits" in values:
            values["limits"] = {name: tuple(bounds) for name, bounds in values["limits"].items()}
        return cls(**values)


# Annotations of the numeric settings, as strings (annotations are postponed).
_NUMBER_TYPES = ("float", "int", "float | None", "int | None")


def _require(condition: bool, name: str, allowed: str, value: object) -> None:
    if not condition:
        raise InvalidConfigError(f"{name} must be {allowed}, got {value!r}")
