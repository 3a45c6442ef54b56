"""Reporting behaviour: message rates, typical interval and silence.

Per device the engine keeps the time of the last report, an exponentially
weighted mean and variance of the interval between reports, and a decayed
message counter (time constant 10 minutes) that becomes the derived metric
``msg_rate`` in messages per minute. A burst of reports (DDoS
participation, a flood) or a thinning of them (a device busy with something
else) then shows as a spike or dip of this metric. The derived metric
``burst_share`` is the share of recent reports (about the last 50) that came
less than a second after the previous one: it changes when a device's
reporting rhythm changes even if its average rate does not.

A device is *silent* once it has not reported for longer than
``max(silence_factor * mean, mean + 10 * std, silence_min)`` of its own
intervals. After a silence the rate counters restart at the device's
typical rate, so no rate is computed across the gap.

Devices that only report at some hours (a SIM used in the daytime, a
camera that records at night) would be "silent" every day, so each device
also counts its reports per hour of the day (UTC). Once it has a day of
history, a silence raises an alert only when it covers an hour in which the
device normally reports (at least 5 % of its busiest hour). And a device
whose silences are routine (see ``EngineConfig.routine_after``) is only
silent once it exceeds its longest earlier silence by a fifth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iotwarden.engine.config import EngineConfig
from iotwarden.engine.state import ArraySpec, ShardState

__all__ = ["RATE_METRICS", "LivenessTracker", "RateUpdate"]

RATE_METRICS = ("msg_rate", "burst_share")
# Smallest scale of each derived metric in its own unit: a device that never
# sent two reports within a second must not alert on its first such pair.
RATE_METRIC_FLOORS = (0.0, 0.05)
_RATE_TIME_CONSTANT = 600.0
_BURST_INTERVAL = 1.0
_BURST_MEMORY = 50.0
_INTERVAL_SPREAD = 10.0
_ACTIVE_HOUR_SHARE = 0.05
_ROUTINE_MARGIN = 0.2
_ROUTINE_SILENCE_CAP = 86400.0


def _hour_of_day(times: np.ndarray) -> np.ndarray:
    return (np.floor(times / 3600.0) % 24).astype(np.intp)


@dataclass(slots=True)
class RateUpdate:
    """Result of one round of reports: rates and the devices that resumed."""

    rates: np.ndarray  # (n, len(RATE_METRICS)): msg_rate per minute, burst_share; NaN while not ready
    resumed: np.ndarray  # (n,) bool: this report ends a silence
    gap_start: np.ndarray  # (n,) time of the last report before this one


class LivenessTracker:
    """Interval statistics, decayed rates and silence per device."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    @staticmethod
    def state_specs() -> dict[str, ArraySpec]:
        return {
            "last_time": ArraySpec("device", "f8", -np.inf),
            "reports": ArraySpec("device", "f8", 0.0),
            "interval_mean": ArraySpec("device", "f8", 0.0),
            "interval_var": ArraySpec("device", "f8", 0.0),
            "rate": ArraySpec("device", "f8", 0.0),
            "burst_share": ArraySpec("device", "f4", 0.0),
            "silent": ArraySpec("device", "?", False),
            "hour_reports": ArraySpec("hour", "u2", 0),
            "silence_episodes": ArraySpec("device", "u1", 0),
            "silence_longest": ArraySpec("device", "f4", 0.0),
            "first_report": ArraySpec("device", "f8", np.nan),
        }

    def silence_threshold(self, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        """Seconds without a report after which a device counts as silent."""
        config = self.config
        spread = mean + _INTERVAL_SPREAD * np.sqrt(np.maximum(var, 0.0))
        return np.maximum(np.maximum(config.silence_factor * mean, spread), config.silence_min)

    def effective_threshold(self, state: ShardState, slots: np.ndarray | slice) -> np.ndarray:
        """Silence threshold of each device, widened for routine silences.

        A device that has already fallen silent ``routine_after`` times is
        only silent again after a fifth more than its longest silence so
        far, counting at most one day of it.
        """
        threshold = self.silence_threshold(state["interval_mean"][slots], state["interval_var"][slots])
        routine = state["silence_episodes"][slots] >= self.config.routine_episodes
        longest = np.minimum(state["silence_longest"][slots].astype(np.float64), _ROUTINE_SILENCE_CAP)
        return np.where(routine, np.maximum(threshold, (1.0 + _ROUTINE_MARGIN) * longest), threshold)

    def record_silence(self, state: ShardState, slot: int, duration: float) -> None:
        """Count a finished silence of ``duration`` seconds."""
        state["silence_episodes"][slot] = min(int(state["silence_episodes"][slot]) + 1, 255)
        state["silence_longest"][slot] = max(float(state["silence_longest"][slot]), duration)

    def interval_ready(self, reports: np.ndarray) -> np.ndarray:
        return reports > self.config.warmup

    def update(self, state: ShardState, slots: np.ndarray, times: np.ndarray) -> RateUpdate:
        """Record one report per slot and return the rates.

        Each slot may appear at most once; the engine's rounds guarantee it.
        """
        last = state["last_time"][slots]
        reports = state["reports"][slots]
        mean = state["interval_mean"][slots]
        var = state["interval_var"][slots]
        seen_before = np.isfinite(last)
        # Reports never move a device's clock backwards; a late one counts as
        # arriving at the latest time seen.
        now = np.where(seen_before, np.maximum(times, last), times)
        interval = np.where(seen_before, now - last, 0.0)

        ready = self.interval_ready(reports)
        threshold = self.effective_threshold(state, slots)
        gap = seen_before & ready & (interval > threshold)
        if gap.any():
            gap &= self._covers_active_hour(state, slots, last + threshold, now)
        resumed = gap | (state["silent"][slots] & seen_before)

        # Interval statistics learn from normal gaps only.
        learn = seen_before & ~gap
        count = np.maximum(reports - 1.0, 0.0)
        alpha = np.maximum(1.0 / (count + 1.0), 1.0 - 2.0 ** (-1.0 / self.config.slow_halflife))
        clip_limit = np.where(ready, mean + _INTERVAL_SPREAD * np.sqrt(var) + 1e-9, np.inf)
        clipped = np.minimum(interval, clip_limit)
        delta = clipped - mean
        new_mean = mean + alpha * delta
        new_var = (1.0 - alpha) * (var + alpha * delta * delta)
        mean = np.where(learn, new_mean, mean)
        var = np.where(learn, new_var, var)
        reports = reports + 1.0

        # Decayed counters, restarted at the typical rate after a silence or
        # when interval statistics first become ready.
        typical = 60.0 / np.maximum(mean, 1e-3)
        just_ready = self.interval_ready(reports) & ~ready
        restart = just_ready | resumed
        rates = np.full((len(slots), len(RATE_METRICS)), np.nan)
        decayed = state["rate"][slots] * np.exp(-interval / _RATE_TIME_CONSTANT) + 60.0 / _RATE_TIME_CONSTANT
        rate = np.where(restart, typical, decayed)
        state["rate"][slots] = rate

        burst_weight = 1.0 / np.minimum(np.maximum(reports - 1.0, 1.0), _BURST_MEMORY)
        burst = (seen_before & (interval < _BURST_INTERVAL)).astype(np.float64)
        share = state["burst_share"][slots] + burst_weight * (burst - state["burst_share"][slots])
        share = np.where(seen_before, share, 0.0)
        state["burst_share"][slots] = share

        reported = self.interval_ready(reports)
        rates[:, 0] = np.where(reported, rate, np.nan)
        rates[:, 1] = np.where(reported, share, np.nan)

        state["last_time"][slots] = now
        state["reports"][slots] = reports
        first = state["first_report"][slots]
        state["first_report"][slots] = np.where(np.isnan(first), now, first)
        hours = _hour_of_day(now)
        counts = state["hour_reports"][slots, hours].astype(np.int32)
        state["hour_reports"][slots, hours] = np.minimum(counts + 1, np.iinfo(np.uint16).max)
        state["interval_mean"][slots] = mean
        state["interval_var"][slots] = var
        state["silent"][slots] = False
        return RateUpdate(rates=rates, resumed=resumed, gap_start=last)

    def find_silent(self, state: ShardState, clock: float) -> np.ndarray:
        """Mark and return the slots that fell silent by ``clock``."""
        n = state.n_devices
        if n == 0:
            return np.empty(0, dtype=np.intp)
        last = state["last_time"][:n]
        threshold = self.effective_threshold(state, slice(0, n))
        silent = (
            ~state["silent"][:n]
            & np.isfinite(last)
            & self.interval_ready(state["reports"][:n])
            & (clock - last > threshold)
        )
        found = np.flatnonzero(silent)
        if found.size:
            start = last[found] + threshold[found]
            found = found[self._covers_active_hour(state, found, start, np.full(found.size, clock))]
        state["silent"][found] = True
        return found

    def _covers_active_hour(self, state: ShardState, slots: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Return whether ``[start, end]`` covers an hour in which each device reports.

        Devices with less than a day of history count every hour as active.
        """
        counts = state["hour_reports"][slots]
        active = counts >= _ACTIVE_HOUR_SHARE * counts.max(axis=1, keepdims=True)
        young = ~(end - state["first_report"][slots] >= 86400.0)
        span_hours = np.clip(np.ceil((end - start) / 3600.0), 1, 24).astype(np.intp)
        first_hour = _hour_of_day(start)
        covered = np.zeros(len(slots), dtype=bool)
        for offset in range(24):
            within = offset < span_hours
            covered |= within & active[np.arange(len(slots)), (first_hour + offset) % 24]
        return covered | young
