"""Per-metric baselines on two timescales, and the spike and dip detector.

Each device and metric keeps an exponentially weighted mean and variance on
a fast and a slow timescale. Early on the weights are plain averages
(``1/(n+1)``), so the first observations are not over-trusted. Residuals
beyond ``clip_sigma`` are clipped before an update, so one huge value moves
a baseline by a bounded amount even when it was not flagged.

A value is a spike (or dip) only when it lies on the same side of both
baselines, and its score uses the smaller of the two deviations. The standard
deviation is floored by the sensor's resolution (the smallest change seen)
and by a fraction of the level, so a constant signal does not make a tiny
change look infinitely unlikely. The scale also widens by ``sqrt(1 + 1/n)``
and the Student-t degrees of freedom shrink to ``n - 1`` while a baseline is
young, which is what keeps a three-point baseline from raising alerts.
"""

from __future__ import annotations

import numba
import numpy as np

from iotwarden.decisions.calibration import surprise_from_z, zero_nan
from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.engine.config import EngineConfig
from iotwarden.engine.state import ArraySpec, ShardState

__all__ = ["BaselineDetector", "ewm_floor", "gather_baselines", "predictive_scale", "scale_of"]


def ewm_floor(halflife: float) -> float:
    """Return the smallest weight of a new value: ``1/(n+1)`` at first, never below this."""
    return 1.0 - 2.0 ** (-1.0 / halflife)


@numba.njit(cache=True, nogil=True)
def scale_of(variance, count, mean, resolution, alpha_floor, absolute_floor, relative_floor):
    """Standard deviation of the next value, floored and widened for small n.

    ``alpha_floor`` is :func:`ewm_floor` of the baseline's half-life: the
    baseline stands for at most ``(2 - alpha_floor) / alpha_floor`` values.
    """
    n = max(min(count, (2.0 - alpha_floor) / alpha_floor), 1.0)
    unbiased = variance * n / max(n - 1.0, 1.0)
    floor = max(absolute_floor, relative_floor * abs(mean))
    if np.isfinite(resolution):
        floor = max(floor, resolution)
    return np.sqrt(max(unbiased, floor * floor) * (1.0 + 1.0 / n))


@numba.njit(cache=True, nogil=True)
def _scale_all(variance, count, mean, resolution, alpha_floor, absolute_floor, relative_floor):
    out = np.empty(variance.shape)
    for index in range(variance.size):
        out.flat[index] = scale_of(variance.flat[index], count.flat[index], mean.flat[index], resolution.flat[index], alpha_floor, absolute_floor, relative_floor)
    return out


def predictive_scale(
    variance: np.ndarray,
    count: np.ndarray,
    mean: np.ndarray,
    resolution: np.ndarray,
    halflife: float,
    config: EngineConfig,
) -> np.ndarray:
    """Return :func:`scale_of` for arrays of baselines (broadcast together)."""
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (variance, count, mean, resolution)))
    contiguous = [np.ascontiguousarray(a) for a in arrays]
    return _scale_all(*contiguous, ewm_floor(halflife), config.absolute_floor, config.relative_floor)


@numba.njit(cache=True, nogil=True)
def gather_baselines(slots, m, count, mean_fast, var_fast, mean_slow, var_slow, resolution, integral, scale_floor, fast_floor, slow_floor, absolute_floor, relative_floor):
    """Gather a round's baselines: count, both means and both predictive scales.

    A sensor's resolution (smallest change seen) floors its scale. A
    whole-number metric that never changed (a count of rare events) has a
    resolution of one unit.
    """
    n = slots.shape[0]
    out_count = np.empty((n, m))
    out_mean_fast = np.empty((n, m))
    out_scale_fast = np.empty((n, m))
    out_mean_slow = np.empty((n, m))
    out_scale_slow = np.empty((n, m))
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            c = count[slot, column]
            step = np.float64(resolution[slot, column])
            if np.isinf(step) and integral[slot, column] and c > 0:
                step = 1.0
            step = scale_floor[column] if np.isinf(step) else max(step, scale_floor[column])
            out_count[row, column] = c
            out_mean_fast[row, column] = mean_fast[slot, column]
            out_mean_slow[row, column] = mean_slow[slot, column]
            out_scale_fast[row, column] = scale_of(var_fast[slot, column], c, mean_fast[slot, column], step, fast_floor, absolute_floor, relative_floor)
            out_scale_slow[row, column] = scale_of(var_slow[slot, column], c, mean_slow[slot, column], step, slow_floor, absolute_floor, relative_floor)
    return out_count, out_mean_fast, out_scale_fast, out_mean_slow, out_scale_slow


class BaselineDetector(Detector):
    """Spike and dip against the device's own baseline, or its cohort's.

    Owns the baseline arrays that the other detectors read through the
    round view. Cost per metric: five float64 values.
    """

    name = "baseline"

    def state_specs(self) -> dict[str, ArraySpec]:
        return {
            "count": ArraySpec("metric", "f8", 0.0),
            "mean_fast": ArraySpec("metric", "f8", 0.0),
            "var_fast": ArraySpec("metric", "f8", 0.0),
            "mean_slow": ArraySpec("metric", "f8", 0.0),
            "var_slow": ArraySpec("metric", "f8", 0.0),
        }

    def score(self, state: ShardState, view: RoundView) -> DetectorScore:
        z, df, ready, cohort, expected, scale = _score_kernel(
            view.x, view.count, view.mean_fast, view.scale_fast, view.mean_slow, view.scale_slow,
            view.own_ready, view.cohort_mean, view.cohort_scale, view.cohort_ready, float(view.config.tail_df),
        )
        surprise = surprise_from_z(z, df)
        surprise[~ready] = 0.0
        direction = np.sign(zero_nan(z)).astype(np.int8)
        return DetectorScore(surprise, ready, direction, expected, scale, from_cohort=cohort)

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        config = view.config
        hold_slow = view.hold_slow if view.hold_slow is not None else np.zeros(learn.shape, dtype=bool)
        _learn_kernel(
            view.slots, view.x, learn, hold_slow, view.count, view.scale_fast, view.scale_slow,
            state["count"], state["mean_fast"], state["var_fast"], state["mean_slow"], state["var_slow"],
            config.clip_sigma, ewm_floor(config.fast_halflife), ewm_floor(config.slow_halflife),
        )


@numba.njit(cache=True, nogil=True)
def _score_kernel(x, count, mean_fast, scale_fast, mean_slow, scale_slow, own_ready, cohort_mean, cohort_scale, cohort_ready, tail_df):
    """Return the standardised residual, its degrees of freedom and the reference used.

    A device's own residual is the smaller of the two (fast and slow), and
    only where both lie on the same side; otherwise it is 0.
    """
    n, m = x.shape
    z = np.full((n, m), np.nan)
    df = np.full((n, m), tail_df)
    ready = np.zeros((n, m), dtype=np.bool_)
    cohort = np.zeros((n, m), dtype=np.bool_)
    expected = np.empty((n, m))
    scale = np.empty((n, m))
    for row in range(n):
        for column in range(m):
            value = x[row, column]
            present = not np.isnan(value)
            if own_ready[row, column] and present:
                expected[row, column] = mean_slow[row, column]
                scale[row, column] = scale_slow[row, column]
                z_fast = (value - mean_fast[row, column]) / scale_fast[row, column]
                z_slow = (value - mean_slow[row, column]) / scale_slow[row, column]
                side = np.sign(z_fast)
                z[row, column] = side * min(abs(z_fast), abs(z_slow)) if side == np.sign(z_slow) else 0.0
                df[row, column] = min(max(count[row, column] - 1.0, 1.0), tail_df)
                ready[row, column] = True
            else:
                expected[row, column] = cohort_mean[row, column]
                scale[row, column] = cohort_scale[row, column]
                if present and not own_ready[row, column] and cohort_ready[row, column]:
                    z[row, column] = (value - cohort_mean[row, column]) / cohort_scale[row, column]
                    ready[row, column] = True
                    cohort[row, column] = True
    return z, df, ready, cohort, expected, scale


@numba.njit(cache=True, nogil=True)
def _ewm_step(mean, var, slot, column, value, count, limit, alpha_floor):
    """Apply one West step to one baseline cell, with the value clipped to ``limit`` from the mean once ``count >= 2``."""
    alpha = max(1.0 / (count + 1.0), alpha_floor)
    old = mean[slot, column]
    target = value
    if count >= 2:
        target = min(max(value, old - limit), old + limit)
    delta = target - old
    mean[slot, column] = old + alpha * delta
    var[slot, column] = (1.0 - alpha) * (var[slot, column] + alpha * delta * delta)


@numba.njit(cache=True, nogil=True)
def _learn_kernel(slots, x, learn, hold_slow, count, scale_fast, scale_slow, state_count, mean_fast, var_fast, mean_slow, var_slow, clip_sigma, fast_floor, slow_floor):
    """Update both baselines with West's exponentially weighted step.

    Bounded influence: from the second value on (during warm-up too, where
    the band is wide because n is small), a value far outside the band moves
    the baseline as if it sat at the band's edge. While drift is suspected
    (``hold_slow``) the slow baseline stays frozen, so a slow ramp cannot
    drag it along; the fast one keeps following the data.
    """
    n, m = x.shape
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            if not learn[row, column]:
                continue
            value = x[row, column]
            c = count[row, column]
            _ewm_step(mean_fast, var_fast, slot, column, value, c, clip_sigma * scale_fast[row, column], fast_floor)
            if not hold_slow[row, column]:
                _ewm_step(mean_slow, var_slow, slot, column, value, c, clip_sigma * scale_slow[row, column], slow_floor)
            state_count[slot, column] = c + 1.0
