"""Vectorised building blocks for the device physics: calendar, noise, sampling.

Every function takes event times as epoch seconds (UTC, float64 arrays) and
returns arrays of the same length. The simulated sites run on UTC, so "office
hours" are UTC hours.
"""

from __future__ import annotations

import numpy as np

SECONDS_PER_MINUTE = 60.0
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0

# 1970-01-01 was a Thursday, so day 0 has ISO weekday index 3 (Monday = 0).
_EPOCH_WEEKDAY = 3


def hour_of_day(times: np.ndarray) -> np.ndarray:
    """Return the UTC hour of day as a float in [0, 24)."""
    return (times % SECONDS_PER_DAY) / SECONDS_PER_HOUR


def weekday(times: np.ndarray) -> np.ndarray:
    """Return the UTC weekday, Monday = 0 to Sunday = 6."""
    days = np.floor(times / SECONDS_PER_DAY).astype(np.int64)
    return (days + _EPOCH_WEEKDAY) % 7


def is_weekend(times: np.ndarray) -> np.ndarray:
    """Return True for Saturday and Sunday."""
    return weekday(times) >= 5


def smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Return 0 below ``low``, 1 above ``high`` and a smooth S-curve between."""
    u = np.clip((x - low) / (high - low), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def window_weight(hours: np.ndarray, opens: float, closes: float, ramp: float = 1.0) -> np.ndarray:
    """Return a 0..1 weight that rises around ``opens`` and falls around ``closes``.

    ``ramp`` is the width of each transition in hours. Requires opens < closes.
    """
    rise = smoothstep(hours, opens - ramp / 2, opens + ramp / 2)
    fall = 1.0 - smoothstep(hours, closes - ramp / 2, closes + ramp / 2)
    return rise * fall


def gaussian_bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Return a peak of height 1 at ``centre`` hours with standard deviation ``width`` hours."""
    return np.exp(-0.5 * ((hours - centre) / width) ** 2)


def office_occupancy(times: np.ndarray, opens: float = 8.0, closes: float = 18.0) -> np.ndarray:
    """Return 0..1 occupancy of an office: working hours on weekdays, zero at weekends."""
    weight = window_weight(hour_of_day(times), opens, closes, ramp=1.5)
    return np.where(is_weekend(times), 0.0, weight)


def daylight(times: np.ndarray) -> np.ndarray:
    """Return 0..1 daylight: zero from about 19:00 to 07:00 UTC, highest at 13:00."""
    angle = 2.0 * np.pi * (hour_of_day(times) - 13.0) / 24.0
    return np.clip((np.cos(angle) - 0.25) / 0.75, 0.0, 1.0)


def slow_noise(rng: np.random.Generator, times: np.ndarray, period_s: float, scale: float) -> np.ndarray:
    """Return smooth zero-mean noise: Gaussian knots every ``period_s``, interpolated.

    Consecutive knots are independent, so the noise decorrelates over about one
    period. ``scale`` is the standard deviation at the knots.
    """
    if times.size == 0:
        return np.zeros(0)
    first = times[0] - period_s
    count = int(np.ceil((times[-1] - first) / period_s)) + 2
    knot_times = first + period_s * np.arange(count)
    knots = rng.normal(0.0, scale, count)
    return np.interp(times, knot_times, knots)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Return the trailing mean over ``window`` samples, or over all earlier samples near the start."""
    if window <= 1 or values.size == 0:
        return values.copy()
    sums = np.cumsum(np.concatenate(([0.0], values)))
    index = np.arange(1, values.size + 1)
    lower = np.maximum(index - window, 0)
    return (sums[index] - sums[lower]) / (index - lower)


def reporting_times(
    rng: np.random.Generator,
    start: float,
    end: float,
    interval_s: float,
    jitter: float = 0.05,
) -> np.ndarray:
    """Return report times in [start, end) every ``interval_s`` with relative jitter.

    The first report falls at a random phase within one interval. Times are
    rounded to whole seconds and strictly increase.
    """
    if end <= start:
        return np.zeros(0)
    phase = rng.uniform(0.0, interval_s)
    count = int((end - start) / interval_s * 1.2) + 4
    steps = interval_s * np.clip(1.0 + jitter * rng.standard_normal(count), 0.5, 1.5)
    offsets = phase + np.concatenate(([0.0], np.cumsum(steps[:-1])))
    times = np.round(start + offsets)
    return strictly_increasing(times[times < end])


def strictly_increasing(times: np.ndarray) -> np.ndarray:
    """Return whole-second ``times`` with each one at least one second after the previous."""
    if times.size < 2:
        return times
    gaps = np.maximum(np.diff(times), 1.0)
    return times[0] + np.concatenate(([0.0], np.cumsum(gaps)))


def report_gaps(times: np.ndarray, first_gap_s: float) -> np.ndarray:
    """Return the seconds since the previous report; the first row gets ``first_gap_s``."""
    if times.size == 0:
        return np.zeros(0)
    return np.concatenate(([first_gap_s], np.diff(times)))
