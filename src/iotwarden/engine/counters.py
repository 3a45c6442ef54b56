"""Cumulative counters turned into rates, with wrap-around and resets told apart.

A counter metric is one named in ``EngineConfig.counters`` or whose name ends
in ``_total`` (the Prometheus convention). Its per-second rate replaces it
as ``<name without _total>_rate``. When a counter goes down:

* it *wrapped* if its width is known (``counters`` setting or a
  ``counter_bits`` metric in the same record), the previous value was in the
  upper half of the range and the new one in the lower half; the rate is
  computed modulo ``2**bits``;
* it was *reset* (a reboot) if an ``uptime_s`` or ``uptime`` metric in the
  record went down, or in every other case: the rate of that interval is
  unknown, the counter is re-based and a ``counter_reset`` event is raised;
* a single reading of exactly 0 without an uptime drop is held as suspect:
  if the next reading continues from the value before the 0, the 0 was a
  glitch and the rate spans both intervals; otherwise it was a reset.

``counter_bits`` and uptime metrics describe the counter and are not scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from iotwarden.engine.config import EngineConfig

__all__ = ["CounterEvent", "CounterTracker"]

logger = logging.getLogger(__name__)

_BITS_METRIC = "counter_bits"
_UPTIME_METRICS = ("uptime_s", "uptime")


@dataclass(slots=True)
class CounterEvent:
    """A reset or an invalid reading of a counter."""

    metric: str
    kind: str  # "reset" or "invalid"
    previous: float
    value: float
    message: str


@dataclass(slots=True)
class _CounterState:
    value: float
    time: float
    suspect_zero: bool = False


@dataclass(slots=True)
class CounterTracker:
    """Per-device counter memory; cheap when a stream has no counters."""

    config: EngineConfig
    states: dict[tuple[str, str], _CounterState] = field(default_factory=dict)
    uptimes: dict[str, float] = field(default_factory=dict)
    _plain: set[str] = field(default_factory=set)  # names known to need no conversion

    def is_counter(self, name: str) -> bool:
        return name.endswith("_total") or name in self.config.counters

    def needs_conversion(self, metrics: dict[str, float]) -> bool:
        """Whether a record has anything this tracker must handle."""
        if self._plain.issuperset(metrics):
            return False
        special = False
        for name in metrics:
            if self.is_counter(name) or name == _BITS_METRIC or name in _UPTIME_METRICS:
                special = True
            else:
                self._plain.add(name)
        return special

    def convert(self, device: str, time: float, metrics: dict[str, float]) -> tuple[dict[str, float], list[CounterEvent]]:
        """Return the record's metrics with counters replaced by rates, and events."""
        out: dict[str, float] = {}
        events: list[CounterEvent] = []
        bits_value = metrics.get(_BITS_METRIC)
        uptime = next((metrics[name] for name in _UPTIME_METRICS if name in metrics), None)
        rebooted = False
        if uptime is not None:
            previous_uptime = self.uptimes.get(device)
            rebooted = previous_uptime is not None and uptime < previous_uptime
            self.uptimes[device] = uptime

        for name, value in metrics.items():
            if name == _BITS_METRIC or name in _UPTIME_METRICS:
                continue
            if not self.is_counter(name):
                out[name] = value
                continue
            bits = self.config.counters.get(name)
            if bits is None and bits_value in (32.0, 64.0):
                bits = int(bits_value)
            rate, event = self._step(device, name, time, value, bits, rebooted)
            rate_name = (name[: -len("_total")] if name.endswith("_total") else name) + "_rate"
            if rate is not None:
                out[rate_name] = rate
            if event is not None:
                events.append(event)
        return out, events

    def _step(
        self, device: str, name: str, time: float, value: float, bits: int | None, rebooted: bool
    ) -> tuple[float | None, CounterEvent | None]:
        key = (device, name)
        state = self.states.get(key)
        if state is None:
            self.states[key] = _CounterState(value, time)
            return None, None

        elapsed = time - state.time
        if elapsed <= 0:
            return None, None

        if value >= state.value:
            rate = (value - state.value) / elapsed
            self.states[key] = _CounterState(value, time)
            return rate, None

        if rebooted:
            self.states[key] = _CounterState(value, time)
            message = f"{name} went from {state.value:.17g} to {value:.17g} and uptime went down: counter reset by a restart"
            return None, CounterEvent(name, "reset", state.value, value, message)

        if state.suspect_zero:
            # The reading after a suspect 0 did not continue from the old value,
            # so the counter really restarted from 0.
            self.states[key] = _CounterState(value, time)
            message = f"{name} restarted from 0 (now {value:.17g}): counter reset"
            return None, CounterEvent(name, "reset", state.value, value, message)

        if value == 0.0:
            state.suspect_zero = True
            message = f"{name} read 0 after {state.value:.17g}: invalid reading, held until the next value"
            return None, CounterEvent(name, "invalid", state.value, value, message)

        if bits is not None:
            modulus = float(2**bits)
            if state.value >= modulus / 2 and value < modulus / 2:
                rate = (value + modulus - state.value) / elapsed
                self.states[key] = _CounterState(value, time)
                return rate, None

        self.states[key] = _CounterState(value, time)
        message = f"{name} went down from {state.value:.17g} to {value:.17g}: counter reset"
        return None, CounterEvent(name, "reset", state.value, value, message)

    def snapshot(self) -> dict:
        """Return the tracker's memory as JSON-compatible data."""
        return {
            "states": [[d, m, s.value, s.time, s.suspect_zero] for (d, m), s in self.states.items()],
            "uptimes": self.uptimes,
        }

    def restore(self, data: dict) -> None:
        self.states = {(d, m): _CounterState(v, t, z) for d, m, v, t, z in data["states"]}
        self.uptimes = dict(data["uptimes"])
