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

import numba
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
    z = np.asarray(z, dtype=np.float64)
    degrees = np.asarray(df, dtype=np.float64)
    if degrees.size > 1:
        degrees = np.ascontiguousarray(np.broadcast_to(degrees, z.shape)).ravel()
    else:
        degrees = degrees.reshape(1)
    flat = np.ascontiguousarray(z).ravel()
    surprise, exact = _tabled_surprise(flat, degrees, _TABLES, _TABLE_ROW, _TABLE_MAX_Z, float(_TABLE_STEPS_PER_Z))
    # Degrees of freedom without a table row yet: compute the rows, then look up again.
    if exact.any() and _ensure_tables(degrees if degrees.size == 1 else degrees[exact]):
        surprise, exact = _tabled_surprise(flat, degrees, _TABLES, _TABLE_ROW, _TABLE_MAX_Z, float(_TABLE_STEPS_PER_Z))
    if exact.any():
        surprise[exact] = _exact_surprise(surprise[exact], degrees[exact] if degrees.size > 1 else degrees[0])
    return np.clip(surprise, 0.0, MAX_SURPRISE).reshape(z.shape)


@numba.njit(cache=True, nogil=True)
def _tabled_surprise(z, degrees, tables, table_row, max_z, steps):
    """Look surprise up in ``tables``; return it and the mask of cells left to compute exactly.

    Cells outside the tables (``|z| > max_z``, or degrees of freedom that
    are not whole or have no row) hold their ``|z|`` on return.
    """
    n = z.shape[0]
    surprise = np.empty(n)
    exact = np.zeros(n, dtype=np.bool_)
    single = degrees.shape[0] == 1
    for index in range(n):
        magnitude = abs(z[index])
        if np.isnan(magnitude):
            magnitude = 0.0
        df = degrees[0] if single else degrees[index]
        row = -1
        if df == np.floor(df) and df >= 0 and df < table_row.shape[0]:
            row = table_row[int(df)]
        if magnitude <= max_z and row >= 0:
            surprise[index] = tables[row, int(magnitude * steps + 0.5)]
        else:
            surprise[index] = magnitude
            exact[index] = True
    return surprise, exact


def _exact_surprise(magnitude: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    # stdtr(df, -|z|) is the one-sided lower tail; doubling gives two-sided.
    # A zero tail (|z| = inf or beyond float range) becomes MAX_SURPRISE.
    with np.errstate(divide="ignore", under="ignore", invalid="ignore"):
        tail = 2.0 * special.stdtr(df, -magnitude)
        exact = -np.log10(np.minimum(tail, 1.0))
    exact[np.isnan(exact)] = 0.0
    return np.minimum(exact, MAX_SURPRISE)


# _TABLES[_TABLE_ROW[df]] is the surprise at every _TABLE_Z for df degrees
# of freedom. Rows are computed on first use (about 3 ms and 160 kB each),
# so only the degrees of freedom in use take memory; _TABLE_ROW is -1 for
# the others.
_TABLES = np.zeros((0, _TABLE_Z.size))
_TABLE_ROW = np.full(_TABLE_MAX_DF + 1, -1, dtype=np.intp)


def _ensure_tables(degrees: np.ndarray) -> bool:
    """Compute the missing table rows of the whole degrees of freedom in ``degrees``; return whether any was missing."""
    global _TABLES
    wanted = degrees[(degrees >= 1) & (degrees <= _TABLE_MAX_DF) & (degrees == np.floor(degrees))]
    missing = [int(df) for df in np.unique(wanted) if _TABLE_ROW[int(df)] < 0]
    if missing:
        rows = [_exact_surprise(_TABLE_Z, float(df)) for df in missing]
        _TABLE_ROW[missing] = np.arange(len(_TABLES), len(_TABLES) + len(missing))
        _TABLES = np.vstack([_TABLES, *rows])
    return bool(missing)


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
