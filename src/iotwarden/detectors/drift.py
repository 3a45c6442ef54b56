"""Operational drift: the fast baseline walking away from the slow one.

The statistic is ``d = (fast mean - slow mean) / slow scale``. On a stable
device ``d`` wanders in a range set by the signal's own rhythm (a daily
cycle makes it swing), so it is standardised by its own learned spread
before calibration. While drift is suspected the engine freezes the slow
baseline, so a slow ramp cannot drag it along: the gap keeps growing until
the alert fires, or until the new level is adopted after ``adopt_after``.
"""

from __future__ import annotations

import numba
import numpy as np

from iotwarden.decisions.calibration import surprise_from_z
from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.detectors.baseline import ewm_floor
from iotwarden.engine.state import ArraySpec, ShardState

__all__ = ["DriftDetector"]

# Smallest spread of d, in slow standard deviations: a noise-free signal must
# move by about this much, times the alert's z, before drift is reported.
_MIN_DRIFT_SPREAD = 0.1

# The statistic is a difference of two exponentially weighted averages, so it
# is close to Gaussian even when single readings are not: a light-tailed
# Student-t reference fits it better than the one used for single values.
_DRIFT_DF = 30.0


class DriftDetector(Detector):
    """Level drift per metric; one float64 of state per metric."""

    name = "drift"

    def state_specs(self) -> dict[str, ArraySpec]:
        return {"drift_var": ArraySpec("metric", "f4", 0.0)}

    def score(self, state: ShardState, view: RoundView) -> DetectorScore:
        z, ready, direction = _score_kernel(view.slots, view.x, view.drift_ready, view.mean_fast, view.mean_slow, view.scale_slow, state["drift_var"])
        surprise = surprise_from_z(z, _DRIFT_DF)
        return DetectorScore(surprise, ready, direction, view.mean_slow, view.scale_slow)

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        _learn_kernel(view.slots, learn, view.count, view.mean_fast, view.mean_slow, view.scale_slow, state["drift_var"], ewm_floor(view.config.slow_halflife))


@numba.njit(cache=True, nogil=True)
def _score_kernel(slots, x, drift_ready, mean_fast, mean_slow, scale_slow, drift_var):
    """Return ``d`` standardised by its learned spread (NaN where not ready), readiness and sign of ``d``."""
    n, m = x.shape
    z = np.full((n, m), np.nan)
    ready = np.zeros((n, m), dtype=np.bool_)
    direction = np.zeros((n, m), dtype=np.int8)
    floor = np.float32(_MIN_DRIFT_SPREAD**2)
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            d = (mean_fast[row, column] - mean_slow[row, column]) / scale_slow[row, column]
            if np.isnan(d):
                continue
            direction[row, column] = np.sign(d)
            if drift_ready[row, column] and not np.isnan(x[row, column]):
                ready[row, column] = True
                z[row, column] = d / np.sqrt(drift_var[slot, column] + floor)
    return z, ready, direction


@numba.njit(cache=True, nogil=True)
def _learn_kernel(slots, learn, count, mean_fast, mean_slow, scale_slow, drift_var, alpha_floor):
    n, m = learn.shape
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            if not learn[row, column]:
                continue
            d = (mean_fast[row, column] - mean_slow[row, column]) / scale_slow[row, column]
            if np.isnan(d):
                d = 0.0
            alpha = max(1.0 / (count[row, column] + 1.0), alpha_floor)
            drift_var[slot, column] = (1.0 - alpha) * drift_var[slot, column] + alpha * min(d * d, 100.0)
