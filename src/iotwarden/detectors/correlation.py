"""Multivariate detection: broken relations between a device's metrics.

Each metric's residual against its fast baseline, ``r = (x - mean) / scale``,
is normalised by its own learned power ``s_i = E[r_i^2]`` into
``u_i = r_i / sqrt(s_i)``, and every pair keeps ``rho_ij = E[u_i u_j]``, the
learned correlation of the two residuals (clipped to [-1, 1]). For pairs
with ``|rho| >= correlation_min``
the detector scores the part of their joint deviation that the marginals do
not explain: the Mahalanobis distance of ``(u_i, u_j)`` minus the larger
single-metric term, which equals ``min(e_ij, e_ji)`` where
``e_ij = (u_i - rho u_j) / sqrt(1 - rho^2)``. A pump whose current rises
while its flow falls, each within its own band, is caught here.

State is one float32 per metric and two per pair of metrics (about 400 bytes
at 10 metrics), shared nothing across devices, and every step is vectorised
over the devices of a round. Derived metrics (message rates) are left out.
Correlations are capped at 0.95 in magnitude when scoring, because a
near-perfect estimate from autocorrelated residuals would otherwise turn a
two-sigma wobble into an alert.
"""

from __future__ import annotations

import numpy as np

from iotwarden.decisions.calibration import bonferroni, surprise_from_z, zero_nan
from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.detectors.baseline import ewm_alpha
from iotwarden.engine.state import ArraySpec, ShardState, pair_count

__all__ = ["CorrelationDetector"]

_RESIDUAL_CLIP = 10.0
_RHO_LIMIT = 0.95


def _pair_columns(n_metrics: int, skip: int) -> tuple[np.ndarray, np.ndarray]:
    j_list, i_list = [], []
    for j in range(skip + 1, n_metrics):
        for i in range(skip, j):
            i_list.append(i)
            j_list.append(j)
    return np.array(i_list, dtype=np.intp), np.array(j_list, dtype=np.intp)


class CorrelationDetector(Detector):
    """Correlation breaks between pairs of metrics of one device."""

    name = "multivariate"
    per_metric = False

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def pairs(self, n_metrics: int) -> tuple[np.ndarray, np.ndarray]:
        """Metric columns (i, j) of every pair, in pair state column order.

        The first ``skip`` columns (derived metrics) are in no pair.
        """
        if n_metrics not in self._pairs:
            self._pairs[n_metrics] = _pair_columns(n_metrics, self.skip)
        return self._pairs[n_metrics]

    def pair_total(self, n_metrics: int) -> int:
        return pair_count(max(n_metrics - self.skip, 0))

    def state_specs(self) -> dict[str, ArraySpec]:
        return {
            "residual_power": ArraySpec("metric", "f4", 0.0),
            "pair_correlation": ArraySpec("pair", "f4", 0.0),
            "pair_count": ArraySpec("pair", "f4", 0.0),
        }

    def normalised(self, state: ShardState, view: RoundView) -> np.ndarray:
        """Residuals divided by their learned power: ``u = r / sqrt(E[r^2])``.

        Computed once per round from the state before learning, and kept on
        the view for ``learn`` and for explanations.
        """
        if view.normalised is None:
            power = state["residual_power"][view.slots, : view.n_metrics].astype(np.float64)
            r = self._residuals(view)
            with np.errstate(invalid="ignore", divide="ignore"):
                view.normalised = np.where(power > 0, r / np.sqrt(power), 0.0)
        return view.normalised

    def _residuals(self, view: RoundView) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            r = (view.x - view.mean_fast) / view.scale_fast
        return np.clip(zero_nan(r), -_RESIDUAL_CLIP, _RESIDUAL_CLIP)

    def score(self, state: ShardState, view: RoundView) -> DetectorScore:
        n, m = view.x.shape
        n_pairs = self.pair_total(m)
        surprise = np.zeros((n, 1))
        ready_rows = np.zeros((n, 1), dtype=bool)
        best = np.full(n, -1, dtype=np.intp)
        if n_pairs == 0 or n == 0:
            return DetectorScore(surprise, ready_rows, detail=best)

        i, j = self.pairs(m)
        usable = view.long_ready & view.present & ~view.derived[None, :]
        count = state["pair_count"][view.slots, :n_pairs]
        rho = state["pair_correlation"][view.slots, :n_pairs].astype(np.float64)
        valid = usable[:, i] & usable[:, j] & (count >= view.config.warmup * 4) & (np.abs(rho) >= view.config.correlation_min)
        if not valid.any():
            return DetectorScore(surprise, ready_rows, detail=best)

        rho = np.clip(rho, -_RHO_LIMIT, _RHO_LIMIT)
        u = self.normalised(state, view)
        u_i, u_j = u[:, i], u[:, j]
        spread = np.sqrt(1.0 - rho * rho)
        excess = np.minimum(np.abs(u_i - rho * u_j), np.abs(u_j - rho * u_i)) / spread
        excess = np.where(valid, excess, 0.0)

        best = np.argmax(excess, axis=1)
        top = excess[np.arange(n), best]
        tests = valid.sum(axis=1)
        ready_rows[:, 0] = tests > 0
        surprise[:, 0] = np.where(tests > 0, bonferroni(surprise_from_z(top, view.config.tail_df), tests), 0.0)
        best = np.where(tests > 0, best, -1)
        return DetectorScore(surprise, ready_rows, detail=best)

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        n, m = view.x.shape
        n_pairs = self.pair_total(m)
        slots = view.slots
        usable = learn & view.long_ready & ~view.derived[None, :]
        if n == 0 or not usable.any():
            return

        r = self._residuals(view)
        u = self.normalised(state, view)
        alpha = ewm_alpha(view.count, view.config.slow_halflife)
        power = state["residual_power"][slots, :m]
        updated = (1.0 - alpha) * power + alpha * r * r
        state["residual_power"][slots, :m] = np.where(usable, updated, power)
        if n_pairs == 0:
            return

        i, j = self.pairs(m)
        both = usable[:, i] & usable[:, j] & (power[:, i] > 0) & (power[:, j] > 0)
        count = state["pair_count"][slots, :n_pairs]
        rho = state["pair_correlation"][slots, :n_pairs]
        pair_alpha = np.maximum(1.0 / (count + 1.0), 1.0 - 2.0 ** (-1.0 / view.config.slow_halflife))
        updated_rho = np.clip((1.0 - pair_alpha) * rho + pair_alpha * u[:, i] * u[:, j], -1.0, 1.0)
        state["pair_correlation"][slots, :n_pairs] = np.where(both, updated_rho, rho)
        state["pair_count"][slots, :n_pairs] = np.where(both, np.minimum(count + 1.0, 1e9), count)
