"""Stuck sensors: one value repeated far longer than the metric ever has.

Tracks, per metric, the current run of identical values, the longest run
seen in normal operation and how often a value repeats its predecessor
(``q``). A run of length L has probability about ``q**(L-1)`` if repeats
were independent, which gives the surprise. A run must also be longer than
twice the longest normal run and than ``stuck_min_run``. Metrics that
repeat almost always (status codes, counts of rare events) never qualify,
because ``q`` is capped at 0.99, and neither do whole-number metrics, runs
of exactly 0 or runs at the lowest or highest value seen, which are usually
an idle or saturated state rather than a fault.

This detector also records the sensor's resolution (the smallest non-zero
change seen) and whether every value so far was a whole number; both floor
the baseline's scale, so a count that was always 0 does not make a single
event look impossible.
"""

from __future__ import annotations

import numpy as np

from iotwarden.decisions.calibration import surprise_from_log_p, zero_nan
from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.detectors.baseline import ewm_alpha
from iotwarden.engine.state import ArraySpec, ShardState

__all__ = ["StuckDetector"]

_MIN_REPEAT_RATE = 0.25
_MAX_REPEAT_RATE = 0.99


class StuckDetector(Detector):
    """Stuck values per metric; about 24 bytes of state per metric."""

    name = "stuck"

    def state_specs(self) -> dict[str, ArraySpec]:
        return {
            "last_value": ArraySpec("metric", "f8", np.nan),
            "run_length": ArraySpec("metric", "i4", 0),
            "max_run": ArraySpec("metric", "i4", 0),
            "repeat_rate": ArraySpec("metric", "f4", 0.0),
            "resolution": ArraySpec("metric", "f4", np.inf),
            "integral": ArraySpec("metric", "?", True),
            "value_low": ArraySpec("metric", "f4", np.inf),
            "value_high": ArraySpec("metric", "f4", -np.inf),
        }

    def _current_run(self, state: ShardState, view: RoundView) -> tuple[np.ndarray, np.ndarray]:
        last = state["last_value"][view.slots, : view.n_metrics]
        run = state["run_length"][view.slots, : view.n_metrics]
        same = view.present & (view.x == last)
        return same, np.where(same, run + 1, np.where(view.present, 1, run))

    def score(self, state: ShardState, view: RoundView) -> DetectorScore:
        config = view.config
        _, run = self._current_run(state, view)
        longest = state["max_run"][view.slots, : view.n_metrics]
        rate = state["repeat_rate"][view.slots, : view.n_metrics].astype(np.float64)
        ready = view.long_ready & view.present & ~view.derived[None, :]

        q = np.clip(rate, _MIN_REPEAT_RATE, _MAX_REPEAT_RATE)
        # Whole-number metrics (counts, states), runs of exactly 0 and runs at
        # the lowest or highest value seen (idle, standby, a saturated valve)
        # repeat in normal operation, so they are not scored.
        slots, m = view.slots, view.n_metrics
        fractional = ~state["integral"][slots, :m]
        interior = (view.x > state["value_low"][slots, :m]) & (view.x < state["value_high"][slots, :m])
        long_enough = (run >= config.stuck_min_run) & (run > 2 * longest) & (rate < _MAX_REPEAT_RATE)
        long_enough &= fractional & interior & (view.x != 0.0)
        surprise = surprise_from_log_p((run - 1) * np.log10(q))
        surprise = np.where(ready & long_enough, surprise, 0.0)
        direction = np.zeros(surprise.shape, dtype=np.int8)
        return DetectorScore(surprise, ready, direction, view.mean_slow, view.scale_slow)

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        slots, m = view.slots, view.n_metrics
        last = state["last_value"][slots, :m]
        previous_run = state["run_length"][slots, :m]
        same, run = self._current_run(state, view)

        # A run that ended on a learnable value becomes part of normal
        # behaviour, unless it was long enough to be flagged as stuck: such
        # runs count as routine only after `routine_after` of them.
        longest = state["max_run"][slots, :m]
        ended = view.present & ~same & (previous_run >= 2) & learn
        was_stuck = ended & (previous_run >= view.config.stuck_min_run) & (previous_run > 2 * longest)
        episodes = state["routine_stuck"][slots, :m].astype(np.int32) + was_stuck
        state["routine_stuck"][slots, :m] = np.minimum(episodes, 255)
        absorb = ended & (~was_stuck | (episodes >= view.config.routine_episodes))
        state["max_run"][slots, :m] = np.where(absorb, np.maximum(longest, previous_run), longest)

        rate = state["repeat_rate"][slots, :m]
        alpha = ewm_alpha(view.count, view.config.slow_halflife).astype(np.float32)
        has_last = ~np.isnan(last)
        updated = (1 - alpha) * rate + alpha * same.astype(np.float32)
        state["repeat_rate"][slots, :m] = np.where(learn & has_last, updated, rate)

        with np.errstate(invalid="ignore", over="ignore"):
            step = np.abs(view.x - last)
        changed = learn & has_last & ~same & np.isfinite(step) & (step > 0)
        state["resolution"][slots, :m] = np.where(changed, np.minimum(state["resolution"][slots, :m], step), state["resolution"][slots, :m])
        whole = np.where(learn, view.x == np.round(zero_nan(view.x)), True)
        state["integral"][slots, :m] &= whole
        low, high = state["value_low"][slots, :m], state["value_high"][slots, :m]
        state["value_low"][slots, :m] = np.where(learn, np.fmin(low, view.x), low)
        state["value_high"][slots, :m] = np.where(learn, np.fmax(high, view.x), high)

        state["run_length"][slots, :m] = run
        state["last_value"][slots, :m] = np.where(view.present, view.x, last)
