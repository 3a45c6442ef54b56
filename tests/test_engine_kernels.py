"""The compiled scoring steps against plain reference computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from iotwarden.decisions.calibration import MAX_SURPRISE, surprise_from_z
from iotwarden.detectors.baseline import ewm_floor, predictive_scale
from iotwarden.engine import Engine, EngineConfig
from iotwarden.engine.kernels import plan_rounds
from iotwarden.observation import Observation


def exact_surprise(z: float, df: float) -> float:
    if math.isnan(z):
        return 0.0
    tail = 2.0 * special.stdtr(df, -abs(z))
    return min(-math.log10(min(tail, 1.0)), MAX_SURPRISE) if tail > 0 else MAX_SURPRISE


@pytest.mark.parametrize("df", [1.0, 3.0, 10.0, 30.0, 64.0])
def test_surprise_table_matches_student_t(df: float) -> None:
    z = np.random.default_rng(1).normal(0.0, 8.0, 2000)
    got = surprise_from_z(z, df)
    expected = np.array([exact_surprise(value, df) for value in z])
    assert np.max(np.abs(got - expected)) < 0.003


def test_surprise_exact_outside_table() -> None:
    z = np.array([60.0, -1e10, np.inf, 2.5, 2.5, np.nan])
    df = np.array([10.0, 10.0, 10.0, 2.5, 100.0, 7.5])
    got = surprise_from_z(z, df)
    expected = [exact_surprise(value, d) for value, d in zip(z, df)]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_surprise_keeps_shape_and_bounds() -> None:
    z = np.array([[0.0, 3.0], [np.nan, 1e308]])
    got = surprise_from_z(z, np.array([[5.0, 5.0], [5.0, 5.0]]))
    assert got.shape == (2, 2)
    assert got[0, 0] == 0.0
    assert got[1, 0] == 0.0
    assert got[1, 1] == MAX_SURPRISE



def reference_rounds(rows: np.ndarray, slots: np.ndarray) -> list[list[int]]:
    """Return the rounds: round k contains each slot's k-th row of the batch, by ascending slot."""
    rounds: list[list[tuple[int, int]]] = []
    seen: dict[int, int] = {}
    for row, slot in zip(rows.tolist(), slots.tolist()):
        k = seen.get(slot, 0)
        seen[slot] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append((slot, row))
    return [[row for _, row in sorted(members)] for members in rounds]


@pytest.mark.parametrize("n, n_slots", [(0, 5), (1, 1), (50, 3), (4096, 10_000), (4096, 700)])
def test_plan_rounds_matches_reference(n: int, n_slots: int) -> None:
    rng = np.random.default_rng(n + n_slots)
    rows = np.sort(rng.choice(3 * n + 1, size=n, replace=False)).astype(np.intp)
    slots = rng.integers(0, n_slots, size=n).astype(np.intp)
    ordered, bounds = plan_rounds(rows, slots, n_slots)
    got = [ordered[start:end].tolist() for start, end in zip(bounds[:-1], bounds[1:])]
    assert got == reference_rounds(rows, slots)
    assert bounds[0] == 0
    assert bounds[-1] == n

def test_predictive_scale_formula() -> None:
    config = EngineConfig()
    variance = np.array([0.0, 4.0, 4.0, 1e-12])
    count = np.array([1.0, 2.0, 1000.0, 50.0])
    mean = np.array([100.0, 0.0, 0.0, 5.0])
    resolution = np.array([np.inf, 0.5, np.inf, 0.1])
    got = predictive_scale(variance, count, mean, resolution, config.fast_halflife, config)

    alpha = ewm_floor(config.fast_halflife)
    for k in range(4):
        n = max(min(count[k], (2.0 - alpha) / alpha), 1.0)
        unbiased = variance[k] * n / max(n - 1.0, 1.0)
        floor = max(config.absolute_floor, config.relative_floor * abs(mean[k]))
        if math.isfinite(resolution[k]):
            floor = max(floor, resolution[k])
        assert got[k] == pytest.approx(math.sqrt(max(unbiased, floor * floor) * (1.0 + 1.0 / n)))


def one_device_state(values: list[float]) -> dict[str, float]:
    engine = Engine(EngineConfig(rate_features=False))
    for i, value in enumerate(values):
        engine.process_batch([Observation("d", 60.0 * i, {"t": value})])
    number, slot = engine.device_index["d"]
    shard = engine.shards[number]
    return {name: float(shard[name][slot, 0]) for name in ("count", "mean_fast", "var_fast", "mean_slow", "var_slow", "run_length", "max_run")}


def test_baseline_follows_west_update() -> None:
    rng = np.random.default_rng(5)
    values = list(20.0 + rng.normal(0.0, 0.5, 200))
    state = one_device_state(values)

    config = EngineConfig(rate_features=False)
    mean = var = 0.0
    for n, value in enumerate(values):
        alpha = max(1.0 / (n + 1.0), ewm_floor(config.fast_halflife))
        delta = value - mean  # N(20, 0.5) values never reach the clipping band
        mean += alpha * delta
        var = (1.0 - alpha) * (var + alpha * delta * delta)
    assert state["count"] == 200
    assert state["mean_fast"] == pytest.approx(mean, rel=1e-12)
    assert state["var_fast"] == pytest.approx(var, rel=1e-9)


def test_baseline_clips_a_huge_value() -> None:
    # During warm-up nothing is flagged, so the third value is learned, but
    # only as far as the edge of the band (clip_sigma scales from the mean).
    state = one_device_state([10.0, 10.5, 1e6])
    unclipped = 10.25 + (1e6 - 10.25) / 3.0
    assert state["count"] == 3
    assert state["mean_fast"] < 1000.0 < unclipped


def test_stuck_counts_runs() -> None:
    values = [1.5, 2.5, 2.5, 2.5, 3.5, 4.5, 4.5]
    state = one_device_state(values)
    assert state["run_length"] == 2
    assert state["max_run"] == 3
