"""Compiled per-round steps of the engine that are not a detector's own.

Each kernel loops once over the cells (device row, metric column) of a
round. It reads and writes the shard's state arrays in place through the
rows' slots, so a round costs one pass over memory instead of one NumPy
pass per operation. The arithmetic follows the same order and precision as
array code would, float32 rounding included where the state is float32.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "apply_transitions", "channel_transitions", "decide_round", "drop_routine", "learn_cohorts", "plan_rounds", "summarise_rows",
    "track_blocked",
]


@numba.njit(cache=True, nogil=True)
def plan_rounds(rows, slots, n_slots):
    """Split a shard's rows into rounds in which each slot appears at most once.

    ``slots[k]`` is the slot of ``rows[k]`` and must be below ``n_slots``
    (not checked: the engine passes its shard's device count). A slot's
    k-th row of the batch goes to round k, and each round lists its rows by
    ascending slot, so a round walks the state arrays forwards. Returns
    ``(ordered, bounds)``: round ``r`` is ``ordered[bounds[r]:bounds[r + 1]]``.
    Two counting sorts, so the cost grows with rows plus slots, not
    ``n log n``.
    """
    n = rows.shape[0]
    per_slot = np.zeros(n_slots + 1, dtype=np.int64)
    rounds = 0
    for k in range(n):
        seen = per_slot[slots[k] + 1] + 1
        per_slot[slots[k] + 1] = seen
        rounds = max(rounds, seen)
    # Rows grouped by slot, in batch order within a slot.
    for slot in range(n_slots):
        per_slot[slot + 1] += per_slot[slot]
    fill = per_slot[:n_slots].copy()
    by_slot = np.empty(n, dtype=np.int64)
    for k in range(n):
        by_slot[fill[slots[k]]] = k
        fill[slots[k]] += 1
    # Round sizes, then the rows of each round by ascending slot.
    bounds = np.zeros(rounds + 1, dtype=np.int64)
    for slot in range(n_slots):
        for r in range(per_slot[slot + 1] - per_slot[slot]):
            bounds[r + 1] += 1
    for r in range(rounds):
        bounds[r + 1] += bounds[r]
    position = bounds[:rounds].copy()
    ordered = np.empty(n, dtype=rows.dtype)
    for slot in range(n_slots):
        for r in range(per_slot[slot + 1] - per_slot[slot]):
            ordered[position[r]] = rows[by_slot[per_slot[slot] + r]]
            position[r] += 1
    return ordered, bounds


@numba.njit(cache=True, nogil=True)
def track_blocked(
    slots, times, x, learn, blocked, blocked_since, shadow_mean, shadow_var, shadow_count,
    alpha_floor, adopt_after, adopt_after_count,
):
    """Follow values kept out of the baseline and return the cells to adopt.

    A blocked episode starts at the first blocked value of a cell and ends at
    a learnable value that is not blocked (while drift holds the slow
    baseline, the fast one still learns, so such a value is both). During the
    episode a shadow mean and variance follow the blocked values. A cell is
    adopted once its episode lasted ``adopt_after`` seconds or
    ``adopt_after_count`` values (at least 3), with a finite shadow.
    """
    n, m = x.shape
    adopt = np.zeros((n, m), dtype=np.bool_)
    for row in range(n):
        slot = slots[row]
        time = times[row]
        for column in range(m):
            since = blocked_since[slot, column]
            if not blocked[row, column]:
                if learn[row, column]:
                    blocked_since[slot, column] = np.nan
                continue
            value = x[row, column]
            if np.isnan(since):
                blocked_since[slot, column] = time
                shadow_mean[slot, column] = value
                shadow_var[slot, column] = 0.0
                shadow_count[slot, column] = 1.0
                continue
            count = np.float64(shadow_count[slot, column])
            mean = shadow_mean[slot, column]
            alpha = max(1.0 / (count + 1.0), alpha_floor)
            delta = value - mean
            new_mean = mean + alpha * delta
            new_var = (1.0 - alpha) * (shadow_var[slot, column] + alpha * delta * delta)
            if not (np.isfinite(new_mean) and np.isfinite(new_var)):
                new_mean = value
                new_var = 0.0
            shadow_mean[slot, column] = new_mean
            shadow_var[slot, column] = new_var
            shadow_count[slot, column] = count + 1.0
            settled = np.isfinite(new_mean) and np.isfinite(shadow_var[slot, column])
            long_enough = time - since >= adopt_after or count >= adopt_after_count
            adopt[row, column] = long_enough and count >= 3 and settled
    return adopt


@numba.njit(cache=True, nogil=True)
def channel_transitions(slots, x, corrected, raw, open_state, quiet_state, open_threshold, learn_threshold, close_after):
    """Return the alert transitions of one channel in a round, without changing state.

    Returns ``(opening, closing, peaking, quiet, counts)``. A closed cell
    opens when its corrected surprise reaches ``open_threshold``. An open
    cell stays while its raw surprise is at least ``learn_threshold``;
    otherwise it is calm, and it closes after ``close_after`` calm values in
    a row (``quiet`` counts them, saturating at 255). ``peaking`` marks open
    cells at or above ``open_threshold``. ``counts`` contains the numbers of
    opening, closing, peaking and open cells, so the caller looks for cells
    only where there are some. All four are 0 when nothing is open or opening.
    """
    n, m = x.shape
    opening = np.zeros((n, m), dtype=np.bool_)
    closing = np.zeros((n, m), dtype=np.bool_)
    peaking = np.zeros((n, m), dtype=np.bool_)
    quiet = np.empty((n, m), dtype=np.uint8)
    counts = np.zeros(4, dtype=np.int64)
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            count = quiet_state[slot, column]
            if open_state[slot, column] == 0:
                if corrected[row, column] >= open_threshold:
                    opening[row, column] = True
                    counts[0] += 1
                    count = 0
            else:
                counts[3] += 1
                if corrected[row, column] >= open_threshold:
                    peaking[row, column] = True
                    counts[2] += 1
                if not np.isnan(x[row, column]):
                    if raw[row, column] >= learn_threshold:
                        count = 0
                    else:
                        count = min(count + 1, 255)
                        if count >= close_after:
                            closing[row, column] = True
                            counts[1] += 1
            quiet[row, column] = count
    return opening, closing, peaking, quiet, counts


@numba.njit(cache=True, nogil=True)
def apply_transitions(slots, opening, closing, direction, quiet, open_state, quiet_state):
    """Write a channel's transitions: opened cells take their direction (0 counts as +1)."""
    n, m = opening.shape
    for row in range(n):
        slot = slots[row]
        for column in range(m):
            if opening[row, column]:
                open_state[slot, column] = 1 if direction[row, column] == 0 else direction[row, column]
            elif closing[row, column]:
                open_state[slot, column] = 0
            quiet_state[slot, column] = 0 if closing[row, column] else quiet[row, column]


@numba.njit(cache=True, nogil=True)
def decide_round(
    x, own_ready, spike, drift, stuck, penalty, limit_low, limit_high, learn_threshold, drift_hold, max_learnable, max_surprise,
):
    """Correct a round's surprises for multiple tests and choose what is learned.

    ``penalty`` is each row's ``log10`` of the number of metrics it reports
    (at least 1), the Bonferroni correction. Flagged values (a spike or dip
    at ``learn_threshold``, a value outside the metric's physical limits, or
    a stuck run) stay out of the baselines. A drift surprise of
    ``drift_hold`` freezes only the slow baseline. Values of magnitude
    ``max_learnable`` or more are scored but never learned, because their
    squares would overflow.

    Returns the corrected spike, drift, stuck and range scores, the learn
    and hold-slow masks, and the cells kept out of an own baseline
    (``blocked``).
    """
    n, m = x.shape
    spike_score = np.zeros((n, m))
    drift_score = np.zeros((n, m))
    stuck_score = np.zeros((n, m))
    range_score = np.zeros((n, m))
    learn = np.zeros((n, m), dtype=np.bool_)
    hold_slow = np.zeros((n, m), dtype=np.bool_)
    blocked = np.zeros((n, m), dtype=np.bool_)
    for row in range(n):
        correction = penalty[row]
        for column in range(m):
            spike_score[row, column] = max(spike[row, column] - correction, 0.0)
            drift_score[row, column] = max(drift[row, column] - correction, 0.0)
            stuck_score[row, column] = max(stuck[row, column] - correction, 0.0)
            hold = drift[row, column] >= drift_hold
            hold_slow[row, column] = hold
            value = x[row, column]
            if np.isnan(value):
                continue
            out_of_range = value < limit_low[column] or value > limit_high[column]
            if out_of_range:
                range_score[row, column] = max_surprise
            flagged = spike[row, column] >= learn_threshold or out_of_range
            learn[row, column] = abs(value) < max_learnable and not flagged and stuck[row, column] < learn_threshold
            blocked[row, column] = own_ready[row, column] and (flagged or hold)
    return spike_score, drift_score, stuck_score, range_score, learn, hold_slow, blocked


@numba.njit(cache=True, nogil=True)
def drop_routine(
    opening, slots, cohort_of, x, mean_slow, direction, routine_high, routine_low, routine_up, routine_down,
    cohort_devices, cohort_routine_up, cohort_routine_down, cohort_excursion_up, cohort_excursion_down,
    enough, margin, cohort_share, cohort_minimum,
):
    """Clear the opening cells whose excursion is no larger than routine ones.

    An excursion is routine for a device once ``enough`` closed episodes in
    its direction were seen and the value lies within ``margin`` (a
    fraction) beyond the largest of them. It is routine for the device's
    cohort once ``cohort_share`` of the cohort's devices' worth of episodes
    (at least ``cohort_minimum``) were seen and the excursion from the slow
    baseline lies within ``1 + margin`` times the cohort's largest.
    """
    n, m = opening.shape
    for row in range(n):
        slot = slots[row]
        cohort = cohort_of[slot]
        for column in range(m):
            if not opening[row, column]:
                continue
            value = x[row, column]
            mean = mean_slow[row, column]
            excursion = value - mean
            needed = max(cohort_share * cohort_devices[cohort, column], cohort_minimum)
            if direction[row, column] > 0:
                high = routine_high[slot, column]
                high = high + margin * max(high - mean, 0.0)
                routine = routine_up[slot, column] >= enough and value <= high
                routine = routine or (cohort_routine_up[cohort, column] >= needed and excursion <= (1.0 + margin) * cohort_excursion_up[cohort, column])
            elif direction[row, column] < 0:
                low = routine_low[slot, column]
                low = low - margin * max(mean - low, 0.0)
                routine = routine_down[slot, column] >= enough and value >= low
                routine = routine or (cohort_routine_down[cohort, column] >= needed and -excursion <= (1.0 + margin) * cohort_excursion_down[cohort, column])
            else:
                routine = False
            if routine:
                opening[row, column] = False


@numba.njit(cache=True, nogil=True)
def summarise_rows(
    slots, spike_score, drift_score, stuck_score, range_score, multivariate, spike_ready, multivariate_ready,
    open_multivariate, open_spike, open_drift, open_stuck, open_range, silent,
):
    """Return each row's largest corrected surprise, whether anything scored it and whether its device is flagged."""
    n, m = spike_score.shape
    score = np.empty(n)
    ready = np.empty(n, dtype=np.bool_)
    flagged = np.empty(n, dtype=np.bool_)
    for row in range(n):
        slot = slots[row]
        top = multivariate[row, 0]
        any_ready = multivariate_ready[row, 0]
        any_open = open_multivariate[slot] != 0 or silent[slot]
        for column in range(m):
            top = max(top, spike_score[row, column], drift_score[row, column], stuck_score[row, column], range_score[row, column])
            any_ready = any_ready or spike_ready[row, column] or range_score[row, column] > 0
            any_open = any_open or open_spike[slot, column] != 0 or open_drift[slot, column] != 0 or open_stuck[slot, column] != 0 or open_range[slot, column] != 0
        score[row] = top
        ready[row] = any_ready
        flagged[row] = any_open
    return score, ready, flagged


@numba.njit(cache=True, nogil=True)
def learn_cohorts(slots, cohort_of, x, learn, count, weight, mean, m2, devices, max_weight):
    """Merge a round's learnable values into each cohort's mean and spread per metric.

    The round's values of one cohort are combined first (Chan's parallel
    update), then merged into the cohort statistics, which forget like an
    average over ``max_weight`` values. ``devices`` counts the devices that
    gave a metric its first value.
    """
    n, m = x.shape
    k = weight.shape[0]
    added = np.zeros((k, m))
    sums = np.zeros((k, m))
    first = np.zeros((k, m))
    for row in range(n):
        cohort = cohort_of[slots[row]]
        for column in range(m):
            if learn[row, column]:
                added[cohort, column] += 1.0
                sums[cohort, column] += x[row, column]
                if count[row, column] == 0:
                    first[cohort, column] += 1.0
    round_mean = np.zeros((k, m))
    for cohort in range(k):
        for column in range(m):
            if added[cohort, column] > 0:
                round_mean[cohort, column] = sums[cohort, column] / added[cohort, column]
    round_m2 = np.zeros((k, m))
    for row in range(n):
        cohort = cohort_of[slots[row]]
        for column in range(m):
            if learn[row, column]:
                deviation = x[row, column] - round_mean[cohort, column]
                round_m2[cohort, column] += deviation * deviation
    for cohort in range(k):
        for column in range(m):
            new = added[cohort, column]
            if new == 0:
                continue
            old = weight[cohort, column]
            total = old + new
            delta = round_mean[cohort, column] - mean[cohort, column]
            share = new / total
            mean[cohort, column] += delta * share
            merged = m2[cohort, column] + round_m2[cohort, column] + delta * delta * old * share
            factor = max_weight / total if total > max_weight else 1.0
            weight[cohort, column] = total * factor
            m2[cohort, column] = merged * factor
            devices[cohort, column] += first[cohort, column]
