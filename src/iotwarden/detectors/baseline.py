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

import numpy as np

from iotwarden.decisions.calibration import surprise_from_z, zero_nan
from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.engine.config import EngineConfig
from iotwarden.engine.state import ArraySpec, ShardState

__all__ = ["BaselineDetector", "ewm_alpha", "predictive_scale"]


def ewm_alpha(count: np.ndarray, halflife: float) -> np.ndarray:
    """Weight of a new value: ``1/(n+1)`` at first, then the half-life's."""
    floor = 1.0 - 2.0 ** (-1.0 / halflife)
    return np.maximum(1.0 / (count + 1.0), floor)


def effective_count(count: np.ndarray, halflife: float) -> np.ndarray:
    """Number of observations an exponentially weighted estimate stands for."""
    floor = 1.0 - 2.0 ** (-1.0 / halflife)
    return np.minimum(count, (2.0 - floor) / floor)


def predictive_scale(
    variance: np.ndarray,
    count: np.ndarray,
    mean: np.ndarray,
    resolution: np.ndarray,
    halflife: float,
    config: EngineConfig,
) -> np.ndarray:
    """Standard deviation of the next value, floored and widened for small n."""
    n = np.maximum(effective_count(count, halflife), 1.0)
    unbiased = variance * n / np.maximum(n - 1.0, 1.0)
    floor = np.maximum(config.absolute_floor, config.relative_floor * np.abs(mean))
    floor = np.maximum(floor, np.where(np.isfinite(resolution), resolution, 0.0))
    return np.sqrt(np.maximum(unbiased, floor * floor) * (1.0 + 1.0 / n))


def ewm_update(
    mean: np.ndarray, var: np.ndarray, x: np.ndarray, alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one exponentially weighted mean and variance step (West's update)."""
    delta = x - mean
    new_mean = mean + alpha * delta
    new_var = (1.0 - alpha) * (var + alpha * delta * delta)
    return new_mean, new_var


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
        config = view.config
        with np.errstate(invalid="ignore", over="ignore"):
            z_fast = (view.x - view.mean_fast) / view.scale_fast
            z_slow = (view.x - view.mean_slow) / view.scale_slow
            same_side = np.sign(z_fast) == np.sign(z_slow)
            z_own = np.where(same_side, np.sign(z_fast) * np.minimum(np.abs(z_fast), np.abs(z_slow)), 0.0)
            z_cohort = (view.x - view.cohort_mean) / view.cohort_scale

        own = view.own_ready & view.present
        cohort = ~view.own_ready & view.cohort_ready & view.present
        z = np.where(own, z_own, np.where(cohort, z_cohort, np.nan))
        df = np.where(own, np.clip(view.count - 1.0, 1.0, config.tail_df), config.tail_df)
        surprise = surprise_from_z(z, df)
        ready = own | cohort
        surprise[~ready] = 0.0

        direction = np.sign(zero_nan(z)).astype(np.int8)
        expected = np.where(own, view.mean_slow, view.cohort_mean)
        scale = np.where(own, view.scale_slow, view.cohort_scale)
        return DetectorScore(surprise, ready, direction, expected, scale, from_cohort=cohort)

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        config = view.config
        slots = view.slots
        count = view.count
        x = np.where(learn, view.x, 0.0)

        # Bounded influence: a value far outside the band moves the baseline
        # as if it sat at the band's edge. This starts from the second value,
        # during warm-up too, where the band is wide because n is small.
        limit_fast = config.clip_sigma * view.scale_fast
        limit_slow = config.clip_sigma * view.scale_slow
        clip = count >= 2
        with np.errstate(invalid="ignore", over="ignore"):
            x_fast = np.where(clip, np.clip(x, view.mean_fast - limit_fast, view.mean_fast + limit_fast), x)
            x_slow = np.where(clip, np.clip(x, view.mean_slow - limit_slow, view.mean_slow + limit_slow), x)

        # While drift is suspected the slow baseline stays frozen, so a slow
        # ramp cannot drag it along. The fast one keeps following the data.
        learn_slow = learn if view.hold_slow is None else learn & ~view.hold_slow
        for prefix, values, halflife, mask in (
            ("fast", x_fast, config.fast_halflife, learn),
            ("slow", x_slow, config.slow_halflife, learn_slow),
        ):
            mean_name, var_name = f"mean_{prefix}", f"var_{prefix}"
            mean = state[mean_name][slots, : view.n_metrics]
            var = state[var_name][slots, : view.n_metrics]
            new_mean, new_var = ewm_update(mean, var, values, ewm_alpha(count, halflife))
            state[mean_name][slots, : view.n_metrics] = np.where(mask, new_mean, mean)
            state[var_name][slots, : view.n_metrics] = np.where(mask, new_var, var)

        state["count"][slots, : view.n_metrics] = count + learn
