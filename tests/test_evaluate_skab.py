"""SKAB loading and point/episode scoring on synthetic files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from iotwarden.evaluate.common import DatasetError, contiguous_runs, precision_recall_f1, replay
from iotwarden.evaluate.skab import (
    engine_flags,
    find_skab_files,
    load_skab_file,
    run_skab,
    score_file,
    skab_observations,
    summarise,
)

HEADER = "datetime;Pressure;Temperature;anomaly;changepoint"


def write_skab_file(path: Path, anomaly: list[int], labelled: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER if labelled else "datetime;Pressure;Temperature"]
    for i, flag in enumerate(anomaly):
        pressure = 5.0 if flag else 1.0
        row = f"2020-03-09 10:{i // 60:02d}:{i % 60:02d};{pressure};70.5"
        lines.append(f"{row};{float(flag)};0.0" if labelled else row)
    path.write_text("\n".join(lines) + "\n")


@dataclass
class FakeBatch:
    score: np.ndarray
    ready: np.ndarray
    flagged: np.ndarray
    alerts: list = field(default_factory=list)


class ThresholdEngine:
    """Flags an observation whose pressure exceeds 3; ready after 5 observations."""

    def __init__(self) -> None:
        self.seen = 0
        self.metric_names: set[str] = set()

    def process_batch(self, observations):
        pressure = np.array([o.metrics.get("Pressure", 0.0) for o in observations])
        for observation in observations:
            self.metric_names.update(observation.metrics)
        ready = np.arange(self.seen, self.seen + len(observations)) >= 5
        self.seen += len(observations)
        flagged = (pressure > 3.0) & ready
        return FakeBatch(flagged.astype(float) * 4.0, ready, flagged)

    def finish(self):
        return []


def test_contiguous_runs():
    assert contiguous_runs(np.array([0, 1, 1, 0, 1], dtype=bool)) == [(1, 2), (4, 4)]
    assert contiguous_runs(np.zeros(3, dtype=bool)) == []
    assert contiguous_runs(np.ones(2, dtype=bool)) == [(0, 1)]


def test_precision_recall_f1_zero_division():
    assert precision_recall_f1(0, 0, 0) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(3, 1, 2) == pytest.approx((0.75, 0.6, 2 * 0.75 * 0.6 / 1.35))


def test_score_file_points_and_episodes():
    times = np.arange(20.0)
    anomaly = np.zeros(20, dtype=bool)
    anomaly[5:10] = True
    flagged = np.zeros(20, dtype=bool)
    flagged[7:12] = True  # enters the episode 2 s after its start
    flagged[15] = True  # a false alarm

    outcome = score_file("valve1/0", times, anomaly, flagged)
    assert outcome.true_positive_rows == 3
    assert outcome.flagged_rows == 6
    assert outcome.anomalous_rows == 5
    assert outcome.episodes_detected == 1
    assert outcome.delays == [2.0]
    assert outcome.alert_runs == 2
    assert outcome.alert_runs_on_episode == 1


def test_summarise_pools_files():
    times = np.arange(10.0)
    anomaly = np.zeros(10, dtype=bool)
    anomaly[4:8] = True
    detected = score_file("a", times, anomaly, anomaly.copy())
    missed = score_file("b", times, anomaly, np.zeros(10, dtype=bool))
    summary = summarise([detected, missed])
    assert summary["point"]["precision"] == pytest.approx(1.0)
    assert summary["point"]["recall"] == pytest.approx(0.5)
    assert summary["episode"]["recall"] == pytest.approx(0.5)
    assert summary["episode"]["precision"] == pytest.approx(1.0)
    assert summary["mean_detection_delay_s"] == pytest.approx(0.0)


def test_find_skab_files_orders_numerically(tmp_path):
    for n in (10, 2, 0):
        write_skab_file(tmp_path / "data" / "valve1" / f"{n}.csv", [0, 0])
    write_skab_file(tmp_path / "data" / "anomaly-free" / "anomaly-free.csv", [0, 0], labelled=False)
    names = [name for name, _ in find_skab_files(tmp_path)]
    assert names == ["valve1/0", "valve1/2", "valve1/10", "anomaly-free/anomaly-free"]


def test_find_skab_files_missing_data(tmp_path):
    with pytest.raises(DatasetError, match="data"):
        find_skab_files(tmp_path)


def test_labels_never_reach_engine(tmp_path):
    path = tmp_path / "data" / "valve1" / "0.csv"
    write_skab_file(path, [0] * 10 + [1] * 5 + [0] * 5)
    skab_file = load_skab_file(path, "valve1/0")
    engine = ThresholdEngine()
    replay_result = replay(skab_observations(skab_file), lambda: engine, batch_size=4)
    assert engine.metric_names == {"Pressure", "Temperature"}
    assert replay_result.flagged.sum() == 5


def test_run_skab_with_fake_engine(tmp_path):
    write_skab_file(tmp_path / "data" / "valve1" / "0.csv", [0] * 10 + [1] * 5 + [0] * 5)
    write_skab_file(tmp_path / "data" / "valve1" / "1.csv", [0] * 12 + [1] * 3 + [0] * 5)
    write_skab_file(tmp_path / "data" / "anomaly-free" / "anomaly-free.csv", [0] * 20, labelled=False)

    report = run_skab(tmp_path, flag_file=engine_flags(ThresholdEngine))
    summary = report.to_dict()
    assert summary["point"]["f1"] == pytest.approx(1.0)
    assert summary["episode"]["detected"] == 2
    assert summary["anomaly_free_flagged_fraction"] == 0.0
    assert len(summary["files"]) == 3
