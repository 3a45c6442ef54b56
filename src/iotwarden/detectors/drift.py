"""Operational drift: the fast baseline walking away from the slow one.

The statistic is ``d = (fast mean - slow mean) / slow scale``. On a stable
device ``d`` wanders in a range set by the signal's own rhythm (a daily
cycle makes it swing), so it is standardised by its own learned spread
before calibration. While drift is suspected the engine freezes the slow
baseline, so a slow ramp cannot drag it along: the gap keeps growing until
the alert fires, or until the new level is adopted after ``adopt_after``.
"""

from __future__ import annotations

import numpy as np

from iotwarden.decisions.calibration import surprise_from_z, zero_nan
from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.detectors.baseline import ewm_alpha
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

    def _statistic(self, view: RoundView) -> np.ndarray:
        return (view.mean_fast - view.mean_slow) / view.scale_slow

    def score(self, state: ShardState, view: RoundView) -> DetectorScore:
        d = self._statistic(view)
        spread = np.sqrt(state["drift_var"][view.slots, : view.n_metrics] + _MIN_DRIFT_SPREAD**2)
        ready = view.drift_ready & view.present
        z = np.where(ready, d / spread, np.nan)
        surprise = surprise_from_z(z, _DRIFT_DF)
        direction = np.sign(zero_nan(d)).astype(np.int8)
        return DetectorScore(surprise, ready, direction, view.mean_slow, view.scale_slow)

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        d = zero_nan(self._statistic(view))
        var = state["drift_var"][view.slots, : view.n_metrics]
        alpha = ewm_alpha(view.count, view.config.slow_halflife)
        updated = ((1.0 - alpha) * var + alpha * np.minimum(d * d, 100.0)).astype(np.float32)
        state["drift_var"][view.slots, : view.n_metrics] = np.where(learn, updated, var)
