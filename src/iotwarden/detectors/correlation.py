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

import numba
import numpy as np

from iotwarden.decisions.calibration import bonferroni, surprise_from_z
from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.detectors.baseline import ewm_floor
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
            view.normalised = _normalise(view.slots, view.x, view.mean_fast, view.scale_fast, state["residual_power"])
        return view.normalised

    def score(self, state: ShardState, view: RoundView) -> DetectorScore:
        n, m = view.x.shape
        n_pairs = self.pair_total(m)
        surprise = np.zeros((n, 1))
        ready_rows = np.zeros((n, 1), dtype=bool)
        if n_pairs == 0 or n == 0:
            return DetectorScore(surprise, ready_rows, detail=np.full(n, -1, dtype=np.intp))

        i, j = self.pairs(m)
        config = view.config
        top, tests, best = _score_kernel(
            view.slots, view.x, view.long_ready, view.derived, self.normalised(state, view), i, j,
            state["pair_count"], state["pair_correlation"], float(config.warmup * 4), config.correlation_min,
        )
        ready_rows[:, 0] = tests > 0
        surprise[:, 0] = np.where(tests > 0, bonferroni(surprise_from_z(top, config.tail_df), tests), 0.0)
        return DetectorScore(surprise, ready_rows, detail=best)

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        n, m = view.x.shape
        if n == 0:
            return
        i, j = self.pairs(m)
        _learn_kernel(
            view.slots, view.x, learn, view.long_ready, view.derived, view.count, view.mean_fast, view.scale_fast,
            self.normalised(state, view), i, j, state["residual_power"], state["pair_correlation"], state["pair_count"],
            ewm_floor(view.config.slow_halflife),
        )


@numba.njit(cache=True, nogil=True)
def _residual(value, mean, scale):
    r = (value - mean) / scale
    if np.isnan(r):
        return 0.0
    return min(max(r, -_RESIDUAL_CLIP), _RESIDUAL_CLIP)


@numba.njit(cache=True, nogil=True)
def _normalise(slots, x, mean_fast, scale_fast, residual_power):
    n, m = x.shape
    u = np.zeros((n, m))
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            power = np.float64(residual_power[slot, column])
            if power > 0:
                u[row, column] = _residual(x[row, column], mean_fast[row, column], scale_fast[row, column]) / np.sqrt(power)
    return u


@numba.njit(cache=True, nogil=True)
def _score_kernel(slots, x, long_ready, derived, u, pair_i, pair_j, pair_count, pair_correlation, min_count, min_correlation):
    """Return each row's largest pair excess, the pairs tested and the best pair (-1 if none)."""
    n, m = x.shape
    n_pairs = pair_i.shape[0]
    top = np.zeros(n)
    tests = np.zeros(n, dtype=np.int64)
    best = np.full(n, -1, dtype=np.intp)
    usable = np.zeros(m, dtype=np.bool_)
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            usable[column] = long_ready[row, column] and not derived[column] and not np.isnan(x[row, column])
        row_top = 0.0
        row_best = 0
        row_tests = 0
        for pair in range(n_pairs):
            i = pair_i[pair]
            j = pair_j[pair]
            if not (usable[i] and usable[j]) or pair_count[slot, pair] < min_count:
                continue
            rho = np.float64(pair_correlation[slot, pair])
            if abs(rho) < min_correlation:
                continue
            row_tests += 1
            rho = min(max(rho, -_RHO_LIMIT), _RHO_LIMIT)
            excess = min(abs(u[row, i] - rho * u[row, j]), abs(u[row, j] - rho * u[row, i])) / np.sqrt(1.0 - rho * rho)
            if excess > row_top:
                row_top = excess
                row_best = pair
        if row_tests > 0:
            tests[row] = row_tests
            top[row] = row_top
            best[row] = row_best
    return top, tests, best


@numba.njit(cache=True, nogil=True)
def _learn_kernel(slots, x, learn, long_ready, derived, count, mean_fast, scale_fast, u, pair_i, pair_j, residual_power, pair_correlation, pair_count, alpha_floor):
    n, m = x.shape
    n_pairs = pair_i.shape[0]
    pair_floor = np.float32(alpha_floor)
    paired = np.zeros(m, dtype=np.bool_)
    for row in range(n):
        slot = slots[row]
        any_paired = 0
        for column in range(m):
            usable = learn[row, column] and long_ready[row, column] and not derived[column]
            # Pairs use the power from before this update.
            paired[column] = usable and residual_power[slot, column] > 0
            any_paired += paired[column]
            if usable:
                alpha = max(1.0 / (count[row, column] + 1.0), alpha_floor)
                r = _residual(x[row, column], mean_fast[row, column], scale_fast[row, column])
                residual_power[slot, column] = (1.0 - alpha) * residual_power[slot, column] + alpha * r * r
        if any_paired < 2:
            continue
        for pair in range(n_pairs):
            i = pair_i[pair]
            j = pair_j[pair]
            if not (paired[i] and paired[j]):
                continue
            c = pair_count[slot, pair]
            alpha32 = max(np.float32(1.0) / (c + np.float32(1.0)), pair_floor)
            rho = (np.float32(1.0) - alpha32) * pair_correlation[slot, pair] + alpha32 * u[row, i] * u[row, j]
            pair_correlation[slot, pair] = min(max(rho, -1.0), 1.0)
            pair_count[slot, pair] = min(c + np.float32(1.0), np.float32(1e9))
