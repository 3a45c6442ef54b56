"""Benchmarks on the real datasets: loaders on the real files, then full engine runs.

The engine runs check that each benchmark completes and that its figures are
well formed. The product floors (NAB standard >= 60, TON_IoT >= 80 % of attack
episodes with < 2 % of normal rows flagged) are checked in their own tests so
that a miss shows as one named failure.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from iotwarden.evaluate.nab import find_nab_files, load_windows, run_nab
from iotwarden.evaluate.skab import find_skab_files, load_skab_file, run_skab
from iotwarden.evaluate.ton_iot import find_ton_files, load_ton_file, replay_plan, run_ton_iot

pytestmark = pytest.mark.dataset


@functools.cache
def engine_nab_report(root: Path):
    """Run the engine on NAB once per session; the two NAB tests share it."""
    return run_nab(root)


@functools.cache
def engine_ton_report(root: Path):
    """Run the engine on TON_IoT once per session."""
    return run_ton_iot(root)


def test_nab_corpus_layout(datasets_dir):
    files = find_nab_files(datasets_dir / "nab")
    windows = load_windows(datasets_dir / "nab")
    assert len(files) == 58
    assert sum(len(w) for w in windows.values()) == 116


@pytest.mark.slow
def test_nab_random_scores_near_published(datasets_dir):
    # NAB's published random detector scores 16.8 (standard); seeds vary by about +-6.
    rng = np.random.default_rng(4)
    report = run_nab(datasets_dir / "nab", score_file=lambda nab_file: rng.random(nab_file.values.size))
    assert 5.0 < report.results["standard"].score < 25.0


def test_skab_files_and_labels(datasets_dir):
    files = find_skab_files(datasets_dir / "skab")
    assert files[-1][0] == "anomaly-free/anomaly-free"
    skab_file = load_skab_file(files[0][1], files[0][0])
    assert "anomaly" not in skab_file.metrics
    assert "changepoint" not in skab_file.metrics
    assert len(skab_file.metrics) == 8
    assert skab_file.anomaly.any()


def test_ton_iot_plan_covers_every_row(datasets_dir):
    for device, path in find_ton_files(datasets_dir / "ton_iot"):
        ton_file = load_ton_file(path, device)
        assert "label" not in ton_file.metrics
        assert "type" not in ton_file.metrics
        plan = replay_plan(ton_file)
        covered = plan.normal.size + sum(rows.size for rows in plan.episodes.values())
        assert covered == ton_file.n_rows
        assert plan.normal.size == 15000


@pytest.mark.slow
def test_nab_engine_run(datasets_dir):
    report = engine_nab_report(datasets_dir / "nab")
    output = report.to_dict()
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert -100.0 <= output[profile] <= 100.0
    assert "numenta" in output["scoreboard"]


@pytest.mark.slow
def test_nab_standard_floor(datasets_dir):
    report = engine_nab_report(datasets_dir / "nab")
    assert report.results["standard"].score >= 60.0


@pytest.mark.slow
def test_skab_engine_run(datasets_dir):
    summary = run_skab(datasets_dir / "skab").to_dict()
    assert summary["episode"]["episodes"] == 16
    assert 0.0 <= summary["point"]["f1"] <= 1.0


@pytest.mark.slow
def test_ton_iot_engine_run(datasets_dir):
    report = engine_ton_report(datasets_dir / "ton_iot")
    assert len(report.episodes) == 26
    assert len(report.files) == 4
    assert 0.0 <= report.normal_flagged_fraction <= 1.0


@pytest.mark.slow
def test_ton_iot_detection_floor(datasets_dir):
    assert engine_ton_report(datasets_dir / "ton_iot").detection_rate >= 0.80


@pytest.mark.slow
def test_ton_iot_false_alarm_floor(datasets_dir):
    assert engine_ton_report(datasets_dir / "ton_iot").normal_flagged_fraction < 0.02
