"""Calibration of raw detector statistics to one scale.

Every detector reports *surprise*: ``-log10`` of the tail probability of
what it saw under that device's learned behaviour. Surprise 6 means a
one-in-a-million event for that device, whatever the metric or detector, so
one sensitivity setting serves the whole fleet.

Standardised residuals are turned into two-sided tail probabilities of a
Student-t distribution, whose heavier tails keep real sensors (which are
rarely Gaussian) from looking astonishing at four standard deviations.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import special

__all__ = ["MAX_SURPRISE", "bonferroni", "surprise_from_z", "surprise_from_log_p", "zero_nan"]

# A tail probability below 1e-300 is clamped: the score stays finite for an
# absurd value such as 1e308, and the alert still reads as "extremely unlikely".
MAX_SURPRISE = 300.0

_TABLE_MAX_Z = 50.0
_TABLE_MAX_DF = 64
_TABLE_STEPS_PER_Z = 400
_TABLE_Z = np.linspace(0.0, _TABLE_MAX_Z, int(_TABLE_MAX_Z * _TABLE_STEPS_PER_Z) + 1)


def surprise_from_z(z: np.ndarray, df: float | np.ndarray) -> np.ndarray:
    """Return ``-log10`` of the two-sided Student-t tail probability of ``z``.

    NaN in ``z`` (nothing scored) gives 0. The result is finite and in
    ``[0, MAX_SURPRISE]``. For whole-number degrees of freedom up to 64 and
    ``|z| <= 50`` the value is read from a table of the exact function at
    steps of 0.0025 in ``z`` (error below 0.003), because the Student-t CDF
    is the costliest step of scoring; elsewhere it is computed exactly.
    """
    magnitude = np.abs(z)
    magnitude[np.isnan(magnitude)] = 0.0
    degrees = np.broadcast_to(np.asarray(df, dtype=np.float64), magnitude.shape)
    surprise = np.empty(magnitude.shape)
    tabled = (magnitude <= _TABLE_MAX_Z) & (degrees == np.round(degrees)) & (degrees >= 1) & (degrees <= _TABLE_MAX_DF)

    values = np.unique(degrees[tabled])
    if values.size == 1 and tabled.all():
        surprise = _table(int(values[0]))[_table_index(magnitude)]
    else:
        for value in values:
            cells = tabled & (degrees == value)
            surprise[cells] = _table(int(value))[_table_index(magnitude[cells])]
    rest = ~tabled
    if rest.any():
        surprise[rest] = _exact_surprise(magnitude[rest], degrees[rest])
    return np.clip(surprise, 0.0, MAX_SURPRISE)


def _table_index(magnitude: np.ndarray) -> np.ndarray:
    return (magnitude * _TABLE_STEPS_PER_Z + 0.5).astype(np.intp)


def _exact_surprise(magnitude: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    # stdtr(df, -|z|) is the one-sided lower tail; doubling gives two-sided.
    # A zero tail (|z| = inf or beyond float range) becomes MAX_SURPRISE.
    with np.errstate(divide="ignore", under="ignore", invalid="ignore"):
        tail = 2.0 * special.stdtr(df, -magnitude)
        exact = -np.log10(np.minimum(tail, 1.0))
    exact[np.isnan(exact)] = 0.0
    return np.minimum(exact, MAX_SURPRISE)


@functools.lru_cache(maxsize=_TABLE_MAX_DF)
def _table(df: int) -> np.ndarray:
    return _exact_surprise(_TABLE_Z, float(df))


def surprise_from_log_p(log10_p: np.ndarray) -> np.ndarray:
    """Return surprise from ``log10`` tail probabilities, clamped and finite."""
    surprise = -np.asarray(log10_p, dtype=np.float64)
    surprise = np.where(np.isnan(surprise), 0.0, surprise)
    return np.clip(surprise, 0.0, MAX_SURPRISE)


def bonferroni(surprise: np.ndarray, tests: np.ndarray | float) -> np.ndarray:
    """Correct surprise for the number of tests made (``p * tests``)."""
    count = np.maximum(np.asarray(tests, dtype=np.float64), 1.0)
    return np.maximum(surprise - np.log10(count), 0.0)


def zero_nan(values: np.ndarray) -> np.ndarray:
    """Return ``values`` with NaN replaced by 0 (a cheaper ``nan_to_num``)."""
    return np.where(np.isnan(values), 0.0, values)
