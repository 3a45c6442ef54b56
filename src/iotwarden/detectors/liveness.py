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

import numba
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
_MAX_HOUR_COUNT = 65535  # hour_reports is uint16


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

    def effective_threshold(self, state: ShardState, slots: np.ndarray) -> np.ndarray:
        """Seconds without a report after which each device counts as silent.

        ``max(silence_factor * mean, mean + 10 * std, silence_min)`` of its
        own intervals. A device that has already fallen silent
        ``routine_after`` times is only silent again after a fifth more
        than its longest silence so far, counting at most one day of it.
        """
        config = self.config
        return _thresholds(
            state["interval_mean"][slots], state["interval_var"][slots],
            state["silence_episodes"][slots], state["silence_longest"][slots],
            config.silence_factor, config.silence_min, config.routine_episodes,
        )

    def record_silence(self, state: ShardState, slot: int, duration: float) -> None:
        """Count a finished silence of ``duration`` seconds."""
        state["silence_episodes"][slot] = min(int(state["silence_episodes"][slot]) + 1, 255)
        state["silence_longest"][slot] = max(float(state["silence_longest"][slot]), duration)

    def update(self, state: ShardState, slots: np.ndarray, times: np.ndarray) -> RateUpdate:
        """Record one report per slot and return the rates.

        Each slot may appear at most once; the engine's rounds guarantee it.
        """
        config = self.config
        rates, resumed, gap_start = _update_kernel(
            slots, times, state["last_time"], state["reports"], state["interval_mean"], state["interval_var"],
            state["rate"], state["burst_share"], state["silent"], state["hour_reports"], state["first_report"],
            state["silence_episodes"], state["silence_longest"],
            float(config.warmup), config.silence_factor, config.silence_min, config.routine_episodes,
            1.0 - 2.0 ** (-1.0 / config.slow_halflife),
        )
        return RateUpdate(rates=rates, resumed=resumed, gap_start=gap_start)

    def find_silent(self, state: ShardState, clock: float) -> np.ndarray:
        """Mark and return the slots that fell silent by ``clock``."""
        config = self.config
        return _find_silent_kernel(
            state.n_devices, clock, state["last_time"], state["reports"], state["interval_mean"], state["interval_var"],
            state["silent"], state["hour_reports"], state["first_report"], state["silence_episodes"], state["silence_longest"],
            float(config.warmup), config.silence_factor, config.silence_min, config.routine_episodes,
        )


# Compiled steps ---------------------------------------------------------------
# Each kernel steps one device at a time. The engine's rounds contain each
# device at most once, so looping over a round's rows gives what whole-array code would.


@numba.njit(cache=True, nogil=True)
def _threshold(mean, var, episodes, longest, factor, minimum, routine_episodes):
    spread = mean + _INTERVAL_SPREAD * np.sqrt(max(var, 0.0))
    threshold = max(max(factor * mean, spread), minimum)
    if episodes >= routine_episodes:
        threshold = max(threshold, (1.0 + _ROUTINE_MARGIN) * min(np.float64(longest), _ROUTINE_SILENCE_CAP))
    return threshold


@numba.njit(cache=True, nogil=True)
def _thresholds(mean, var, episodes, longest, factor, minimum, routine_episodes):
    out = np.empty(mean.shape[0])
    for k in range(mean.shape[0]):
        out[k] = _threshold(mean[k], var[k], episodes[k], longest[k], factor, minimum, routine_episodes)
    return out


@numba.njit(cache=True, nogil=True)
def _hour_of_day(time):
    return int(np.floor(time / 3600.0) % 24)


@numba.njit(cache=True, nogil=True)
def _covers_active_hour(hour_counts, first_report, start, end):
    """Return whether ``[start, end]`` covers an hour in which the device reports.

    ``hour_counts`` is the device's row of reports per hour of the day. A
    device with less than a day of history counts every hour as active.
    """
    if not end - first_report >= 86400.0:
        return True
    busiest = np.float64(hour_counts.max())
    span = int(min(max(np.ceil((end - start) / 3600.0), 1.0), 24.0))
    first_hour = _hour_of_day(start)
    for offset in range(span):
        if hour_counts[(first_hour + offset) % 24] >= _ACTIVE_HOUR_SHARE * busiest:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _update_kernel(
    slots, times, last_time, reports, interval_mean, interval_var, rate, burst_share, silent, hour_reports, first_report,
    silence_episodes, silence_longest, warmup, silence_factor, silence_min, routine_episodes, alpha_floor,
):
    n = slots.shape[0]
    rates = np.full((n, 2), np.nan)
    resumed = np.zeros(n, dtype=np.bool_)
    gap_start = np.empty(n)
    for k in range(n):
        slot = slots[k]
        last = last_time[slot]
        count = reports[slot]
        mean = interval_mean[slot]
        var = interval_var[slot]
        gap_start[k] = last
        seen_before = np.isfinite(last)
        # Reports never move a device's clock backwards; a late one counts as
        # arriving at the latest time seen.
        now = max(times[k], last) if seen_before else times[k]
        interval = now - last if seen_before else 0.0

        ready = count > warmup
        gap = False
        if seen_before and ready:
            threshold = _threshold(mean, var, silence_episodes[slot], silence_longest[slot], silence_factor, silence_min, routine_episodes)
            if interval > threshold:
                gap = _covers_active_hour(hour_reports[slot], first_report[slot], last + threshold, now)
        resumed[k] = gap or (silent[slot] and seen_before)

        # Interval statistics learn from normal gaps only.
        if seen_before and not gap:
            alpha = max(1.0 / (max(count - 1.0, 0.0) + 1.0), alpha_floor)
            clip_limit = mean + _INTERVAL_SPREAD * np.sqrt(var) + 1e-9 if ready else np.inf
            delta = min(interval, clip_limit) - mean
            mean, var = mean + alpha * delta, (1.0 - alpha) * (var + alpha * delta * delta)
        count += 1.0

        # Decayed counters, restarted at the typical rate after a silence or
        # when interval statistics first become ready.
        reported = count > warmup
        if (reported and not ready) or resumed[k]:
            current = 60.0 / max(mean, 1e-3)
        else:
            current = rate[slot] * np.exp(-interval / _RATE_TIME_CONSTANT) + 60.0 / _RATE_TIME_CONSTANT
        rate[slot] = current

        share = 0.0
        if seen_before:
            weight = 1.0 / min(max(count - 1.0, 1.0), _BURST_MEMORY)
            burst = 1.0 if interval < _BURST_INTERVAL else 0.0
            previous = np.float64(burst_share[slot])
            share = previous + weight * (burst - previous)
        burst_share[slot] = share
        if reported:
            rates[k, 0] = current
            rates[k, 1] = share

        last_time[slot] = now
        reports[slot] = count
        if np.isnan(first_report[slot]):
            first_report[slot] = now
        hour = _hour_of_day(now)
        hour_reports[slot, hour] = min(np.int64(hour_reports[slot, hour]) + 1, _MAX_HOUR_COUNT)
        interval_mean[slot] = mean
        interval_var[slot] = var
        silent[slot] = False
    return rates, resumed, gap_start


@numba.njit(cache=True, nogil=True)
def _find_silent_kernel(
    n, clock, last_time, reports, interval_mean, interval_var, silent, hour_reports, first_report,
    silence_episodes, silence_longest, warmup, silence_factor, silence_min, routine_episodes,
):
    found = np.empty(n, dtype=np.intp)
    count = 0
    for slot in range(n):
        last = last_time[slot]
        if silent[slot] or not np.isfinite(last) or not reports[slot] > warmup:
            continue
        threshold = _threshold(
            interval_mean[slot], interval_var[slot], silence_episodes[slot], silence_longest[slot],
            silence_factor, silence_min, routine_episodes,
        )
        if clock - last > threshold and _covers_active_hour(hour_reports[slot], first_report[slot], last + threshold, clock):
            silent[slot] = True
            found[count] = slot
            count += 1
    return found[:count]
