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

import numba
import numpy as np

from iotwarden.decisions.calibration import MAX_SURPRISE
from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.detectors.baseline import ewm_floor
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

    def score(self, state: ShardState, view: RoundView) -> DetectorScore:
        config = view.config
        surprise, ready = _score_kernel(
            view.slots, view.x, view.derived, view.long_ready,
            state["last_value"], state["run_length"], state["max_run"], state["repeat_rate"],
            state["integral"], state["value_low"], state["value_high"],
            config.stuck_min_run,
        )
        direction = np.zeros(surprise.shape, dtype=np.int8)
        return DetectorScore(surprise, ready, direction, view.mean_slow, view.scale_slow)

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        config = view.config
        _learn_kernel(
            view.slots, view.x, view.count, learn,
            state["last_value"], state["run_length"], state["max_run"], state["repeat_rate"],
            state["resolution"], state["integral"], state["value_low"], state["value_high"], state["routine_stuck"],
            config.stuck_min_run, config.routine_episodes, ewm_floor(config.slow_halflife),
        )


@numba.njit(cache=True, nogil=True)
def _score_kernel(slots, x, derived, long_ready, last_value, run_length, max_run, repeat_rate, integral, value_low, value_high, min_run):
    n, m = x.shape
    surprise = np.zeros((n, m))
    ready = np.zeros((n, m), dtype=np.bool_)
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            value = x[row, column]
            if np.isnan(value):
                continue
            if not long_ready[row, column] or derived[column]:
                continue
            ready[row, column] = True
            run = run_length[slot, column] + 1 if value == last_value[slot, column] else 1
            rate = np.float64(repeat_rate[slot, column])
            # Whole-number metrics (counts, states), runs of exactly 0 and runs
            # at the lowest or highest value seen (idle, standby, a saturated
            # valve) repeat in normal operation, so they are not scored.
            if run < min_run or run <= 2 * max_run[slot, column] or rate >= _MAX_REPEAT_RATE:
                continue
            if integral[slot, column] or value == 0.0:
                continue
            if not (value > value_low[slot, column] and value < value_high[slot, column]):
                continue
            q = min(max(rate, _MIN_REPEAT_RATE), _MAX_REPEAT_RATE)
            surprise[row, column] = min(max(-(run - 1) * np.log10(q), 0.0), MAX_SURPRISE)
    return surprise, ready


@numba.njit(cache=True, nogil=True)
def _learn_kernel(
    slots, x, count, learn, last_value, run_length, max_run, repeat_rate, resolution, integral,
    value_low, value_high, routine_stuck, min_run, routine_episodes, alpha_floor,
):
    n, m = x.shape
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            value = x[row, column]
            if np.isnan(value):
                continue
            last = last_value[slot, column]
            previous_run = run_length[slot, column]
            same = value == last
            run = previous_run + 1 if same else 1
            if learn[row, column]:
                # A run that ended on a learnable value becomes part of normal
                # behaviour, unless it was long enough to be flagged as stuck:
                # such runs count as routine only after `routine_episodes` of them.
                if not same and previous_run >= 2:
                    longest = max_run[slot, column]
                    was_stuck = previous_run >= min_run and previous_run > 2 * longest
                    episodes = routine_stuck[slot, column] + (1 if was_stuck else 0)
                    routine_stuck[slot, column] = min(episodes, 255)
                    if not was_stuck or episodes >= routine_episodes:
                        max_run[slot, column] = max(longest, previous_run)
                if not np.isnan(last):
                    alpha = np.float32(max(1.0 / (count[row, column] + 1.0), alpha_floor))
                    repeat_rate[slot, column] = (np.float32(1.0) - alpha) * repeat_rate[slot, column] + alpha * np.float32(1.0 if same else 0.0)
                    step = abs(value - last)
                    if not same and np.isfinite(step) and step > 0 and step < resolution[slot, column]:
                        resolution[slot, column] = step
                if integral[slot, column] and value != np.round(value):
                    integral[slot, column] = False
                if value < value_low[slot, column]:
                    value_low[slot, column] = value
                if value > value_high[slot, column]:
                    value_high[slot, column] = value
            run_length[slot, column] = run
            last_value[slot, column] = value
