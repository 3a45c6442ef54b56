"""NAB scorer on tiny series whose scores can be computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from iotwarden.evaluate.nab import (
    DEFAULT_PROFILES,
    CostProfile,
    anomaly_likelihood,
    load_profiles,
    optimise_threshold,
    prepare_layout,
    probationary_length,
    run_nab,
    scaled_sigmoid,
    score_corpus,
    score_detections,
    window_rows,
)

STANDARD, LOW_FP, LOW_FN = DEFAULT_PROFILES

# 100 rows, probation rows 0..14, one window on rows 50..59 (width 10).
N_ROWS = 100
WINDOW = (50, 59)


def sigmoid_by_hand(x: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def detections(*rows: int, n_rows: int = N_ROWS) -> np.ndarray:
    detected = np.zeros(n_rows, dtype=bool)
    detected[list(rows)] = True
    return detected


@pytest.fixture
def layout():
    return prepare_layout("synthetic.csv", N_ROWS, [WINDOW])


def test_scaled_sigmoid_values():
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(-1.0) == pytest.approx(0.9866142981514305)
    assert scaled_sigmoid(1.0) == pytest.approx(-0.9866142981514305)
    assert scaled_sigmoid(2.9) == pytest.approx(sigmoid_by_hand(2.9))
    assert scaled_sigmoid(3.0) == -1.0
    assert scaled_sigmoid(50.0) == -1.0


def test_probationary_length_caps_at_750():
    assert probationary_length(100) == 15
    assert probationary_length(4032) == 604
    assert probationary_length(5000) == 750
    assert probationary_length(22695) == 750


def test_perfect_detector_scores_100(layout):
    results = score_corpus([layout], [detections(50).astype(float)])
    for result in results.values():
        assert result.score == pytest.approx(100.0)


def test_null_detector_scores_0(layout):
    results = score_corpus([layout], [np.zeros(N_ROWS)])
    for result in results.values():
        assert result.score == pytest.approx(0.0)
        assert result.threshold == math.inf


def test_detection_at_window_start_earns_tp_weight(layout):
    score = score_detections(layout, detections(50), STANDARD)
    assert score.raw == pytest.approx(1.0)
    assert score.true_positives == 1
    assert score.false_negatives == 0


def test_detection_at_window_end(layout):
    # Position -(59 - 59 + 1) / 10 = -0.1, scaled so that the first row earns 1.
    expected = sigmoid_by_hand(-0.1) / sigmoid_by_hand(-1.0)
    score = score_detections(layout, detections(59), STANDARD)
    assert score.raw == pytest.approx(expected)
    assert score.raw == pytest.approx(0.24824, abs=1e-5)


def test_only_earliest_detection_in_window_counts(layout):
    expected = sigmoid_by_hand(-(59 - 52 + 1) / 10) / sigmoid_by_hand(-1.0)
    assert score_detections(layout, detections(52, 55, 59), STANDARD).raw == pytest.approx(expected)
    assert score_detections(layout, detections(50, 52), STANDARD).raw == pytest.approx(1.0)


def test_missed_window_costs_fn_weight(layout):
    assert score_detections(layout, detections(), STANDARD).raw == pytest.approx(-1.0)
    assert score_detections(layout, detections(), LOW_FN).raw == pytest.approx(-2.0)


def test_fp_before_any_window_costs_full_weight(layout):
    assert score_detections(layout, detections(20, 50), STANDARD).raw == pytest.approx(1.0 - 0.11)
    assert score_detections(layout, detections(20, 50), LOW_FP).raw == pytest.approx(1.0 - 0.22)


def test_fp_after_window_costs_weight_times_sigmoid(layout):
    # Row 64 is 5 rows after the window end; the window width less one is 9.
    expected_cost = 0.11 * sigmoid_by_hand(5 / 9)
    score = score_detections(layout, detections(50, 64), STANDARD)
    assert score.raw == pytest.approx(1.0 + expected_cost)
    assert score.false_positives == 1


def test_fp_three_widths_after_window_costs_full_weight(layout):
    # Row 86 is 27 rows after the window end: 27 / 9 = 3, where the sigmoid is -1.
    assert score_detections(layout, detections(50, 86), STANDARD).raw == pytest.approx(1.0 - 0.11)


def test_detections_in_probation_are_ignored(layout):
    score = score_detections(layout, detections(0, 5, 14, 50), STANDARD)
    assert score.raw == pytest.approx(1.0)
    assert score.false_positives == 0
    assert score.detections == 1


def test_normalised_score_with_one_fp(layout):
    results = score_corpus([layout], [detections(20, 50).astype(float)], [STANDARD])
    # raw 0.89, null -1, perfect 1: 100 * 1.89 / 2
    assert results["standard"].score == pytest.approx(94.5)


def test_window_rows_from_times():
    times = np.arange(0.0, 100.0, 10.0)
    assert window_rows(times, [(15.0, 45.0)]) == [(2, 4)]
    assert window_rows(times, [(20.0, 40.0)]) == [(2, 4)]
    assert window_rows(times, [(91.0, 99.0)]) == []


def test_overlapping_windows_rejected():
    with pytest.raises(ValueError, match="overlap"):
        prepare_layout("bad.csv", 100, [(40, 60), (55, 70)])


def test_optimiser_prefers_single_file_gain():
    first = prepare_layout("a.csv", N_ROWS, [WINDOW])
    second = prepare_layout("b.csv", N_ROWS, [WINDOW])
    scores_a = np.zeros(N_ROWS)
    scores_a[50] = 0.9
    scores_a[20] = 0.5
    scores_b = np.zeros(N_ROWS)
    scores_b[55] = 0.5

    # Threshold 0.9: a detects its window (+1), b misses (-1): total 0.
    # Threshold 0.5: a also has an FP (-0.11), b detects at row 55.
    row_55 = sigmoid_by_hand(-0.5) / sigmoid_by_hand(-1.0)
    threshold, total = optimise_threshold([first, second], [scores_a, scores_b], STANDARD)
    assert threshold == 0.5
    assert total == pytest.approx(1.0 - 0.11 + row_55)


def test_optimiser_matches_brute_force():
    rng = np.random.default_rng(7)
    layouts = [
        prepare_layout("a.csv", 300, [(100, 129), (200, 219)]),
        prepare_layout("b.csv", 200, [(60, 99)]),
        prepare_layout("c.csv", 150, []),
    ]
    # Rounded scores create ties, which the sweep must treat as one threshold.
    scores = [np.round(rng.random(layout.n_rows) ** 4, 2) for layout in layouts]
    for profile in DEFAULT_PROFILES:
        threshold, total = optimise_threshold(layouts, scores, profile)
        candidates = np.unique(np.concatenate(scores))
        brute = max(
            sum(score_detections(layout, s >= t, profile).raw for layout, s in zip(layouts, scores))
            for t in candidates
        )
        assert total == pytest.approx(brute)
        at_threshold = sum(score_detections(layout, s >= threshold, profile).raw for layout, s in zip(layouts, scores))
        assert at_threshold == pytest.approx(total)


def test_anomaly_likelihood_maps_surprise():
    surprise = np.array([0.0, 1.0, 2.0, np.nan, -1.0])
    assert anomaly_likelihood(surprise) == pytest.approx([0.0, 0.9, 0.99, 0.0, 0.0])


def make_corpus(root: Path) -> None:
    """Write a two-file NAB-shaped corpus with one window in the first file."""
    (root / "data" / "group").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "config").mkdir()
    (root / "results").mkdir()
    for name in ("one.csv", "two.csv"):
        lines = ["timestamp,value"] + [f"2020-01-01 {i // 60:02d}:{i % 60:02d}:00,{i % 7}" for i in range(100)]
        (root / "data" / "group" / name).write_text("\n".join(lines) + "\n")
    windows = {
        "group/one.csv": [["2020-01-01 00:50:00.000000", "2020-01-01 00:59:00.000000"]],
        "group/two.csv": [],
    }
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    profiles = {p.name: {"CostMatrix": {"tpWeight": p.tp_weight, "fpWeight": p.fp_weight, "fnWeight": p.fn_weight,
                                        "tnWeight": 1.0}} for p in DEFAULT_PROFILES}
    (root / "config" / "profiles.json").write_text(json.dumps(profiles))
    (root / "results" / "final_results.json").write_text(json.dumps({"null": {"standard": 0.0}}))


def test_run_nab_with_synthetic_scores(tmp_path):
    make_corpus(tmp_path)

    def perfect(nab_file):
        scores = np.zeros(len(nab_file.values))
        if nab_file.name == "group/one.csv":
            scores[50] = 1.0
        return scores

    report = run_nab(tmp_path, score_file=perfect)
    assert report.n_files == 2
    assert report.n_windows == 1
    assert report.results["standard"].score == pytest.approx(100.0)
    output = report.to_dict()
    assert output["standard"] == pytest.approx(100.0)
    assert output["scoreboard"] == {"null": {"standard": 0.0}}


def test_load_profiles_reads_cost_matrix(tmp_path):
    make_corpus(tmp_path)
    profiles = load_profiles(tmp_path)
    assert [p.name for p in profiles] == ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
    assert profiles[2] == CostProfile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)
