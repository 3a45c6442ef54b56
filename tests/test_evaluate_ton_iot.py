"""TON_IoT loading, replay plan and per-episode scoring on a synthetic device file."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from iotwarden.evaluate.common import DatasetError
from iotwarden.evaluate.ton_iot import find_ton_files, load_ton_file, parse_value, replay_plan, run_ton_iot

START = datetime(2019, 3, 31, 12, 0, 0, tzinfo=timezone.utc)


def line(moment: datetime, temperature: float, condition: str, label: int, kind: str) -> str:
    return f"{moment:%d-%b-%y}, {moment:%H:%M:%S} ,{temperature},{condition},{label},{kind}"


def write_fridge(path: Path) -> None:
    """Normal rows every 10 s in two blocks out of time order, attacks every 2 s or 30 s."""
    lines = ["\ufeffdate,time,fridge_temperature,temp_condition,label,type"]
    attack_start = START + timedelta(days=25)
    # First attack block: ddos rows 50 to 99 of the episode, before its rows 0 to 49.
    lines += [line(attack_start + timedelta(seconds=2 * i), 5.0, "high", 1, "ddos") for i in range(50, 100)]
    lines += [line(attack_start + timedelta(seconds=2 * i), 5.0, "high", 1, "ddos") for i in range(50)]
    # Normal: the later half first, with the padded formatting of the real files.
    lines += [line(START + timedelta(seconds=10 * i), 4.0, "low ", 0, "normal") for i in range(300, 600)]
    lines += [line(START + timedelta(seconds=10 * i), 4.0, "high  ", 0, "normal") for i in range(300)]
    scan_start = attack_start - timedelta(days=2)
    lines += [line(scan_start + timedelta(seconds=30 * i), 4.0, "low", 1, "scanning") for i in range(40)]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")


@dataclass
class FakeBatch:
    score: np.ndarray
    ready: np.ndarray
    flagged: np.ndarray
    alerts: list = field(default_factory=list)


class RateEngine:
    """Flags an observation that comes less than 5 s after the previous one; ready after 20."""

    def __init__(self) -> None:
        self.last_time: float | None = None
        self.seen = 0
        self.metric_names: set[str] = set()

    def process_batch(self, observations):
        flagged = np.zeros(len(observations), dtype=bool)
        ready = np.zeros(len(observations), dtype=bool)
        for i, observation in enumerate(observations):
            self.metric_names.update(observation.metrics)
            ready[i] = self.seen >= 20
            if ready[i] and self.last_time is not None:
                flagged[i] = observation.time - self.last_time < 5.0
            self.last_time = observation.time
            self.seen += 1
        return FakeBatch(flagged.astype(float), ready, flagged)

    def finish(self):
        return []


def test_parse_value_words_and_padding():
    assert parse_value("high  ") == 1.0
    assert parse_value(" low") == 0.0
    assert parse_value("false  ") == 0.0
    assert parse_value("true") == 1.0
    assert parse_value("open") == 1.0
    assert parse_value("closed") == 0.0
    assert parse_value(" 29.5 ") == 29.5
    with pytest.raises(ValueError):
        parse_value("unknown")


def test_load_strips_labels_and_padding(tmp_path):
    path = tmp_path / "Train_Test_IoT_Fridge.csv"
    write_fridge(path)
    ton_file = load_ton_file(path, "fridge")
    assert set(ton_file.metrics) == {"fridge_temperature", "temp_condition"}
    assert set(np.unique(ton_file.metrics["temp_condition"])) == {0.0, 1.0}
    assert ton_file.n_rows == 740
    assert ton_file.times[0] == (START + timedelta(days=25, seconds=100)).timestamp()


def test_replay_plan_sorts_blocks(tmp_path):
    path = tmp_path / "Train_Test_IoT_Fridge.csv"
    write_fridge(path)
    ton_file = load_ton_file(path, "fridge")
    plan = replay_plan(ton_file)
    assert plan.normal.size == 600
    assert np.all(np.diff(ton_file.times[plan.normal]) >= 0)
    assert list(plan.episodes) == ["ddos", "scanning"]
    assert plan.chunks == {"ddos": 1, "scanning": 1}
    assert np.all(np.diff(ton_file.times[plan.episodes["ddos"]]) > 0)
    assert plan.splice_interval == pytest.approx(10.0)


def test_run_detects_fast_episode_only(tmp_path):
    write_fridge(tmp_path / "Train_Test_IoT_Fridge.csv")
    engines = []

    def make_engine():
        engines.append(RateEngine())
        return engines[-1]

    report = run_ton_iot(tmp_path, make_engine=make_engine)
    (outcome,) = report.files
    by_attack = {episode.attack: episode for episode in outcome.episodes}
    assert by_attack["ddos"].detected
    # The first episode row comes one normal interval (10 s) after the last
    # normal row, so the rate engine flags every episode row but that one.
    assert by_attack["ddos"].flagged_fraction == pytest.approx(0.99)
    assert not by_attack["scanning"].detected
    assert not outcome.control.detected
    assert outcome.normal_flagged == 0
    assert outcome.normal_not_ready == 20
    assert report.detection_rate == pytest.approx(0.5)
    assert not report.floors_met
    for engine in engines:
        assert "label" not in engine.metric_names
        assert "type" not in engine.metric_names


def test_find_ton_files_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="Train_Test_IoT_Fridge.csv"):
        find_ton_files(tmp_path)


class LatchEngine(RateEngine):
    """Flags every observation from the 500th on, so an alert is open at the splice."""

    def process_batch(self, observations):
        start = self.seen
        self.seen += len(observations)
        flagged = np.arange(start, self.seen) >= 500
        return FakeBatch(flagged.astype(float), np.ones(len(observations), dtype=bool), flagged)


def test_alert_open_at_splice_not_detection(tmp_path):
    write_fridge(tmp_path / "Train_Test_IoT_Fridge.csv")
    report = run_ton_iot(tmp_path, make_engine=LatchEngine)
    (outcome,) = report.files
    for episode in [*outcome.episodes, outcome.control]:
        assert not episode.detected, episode.attack
        assert episode.carried_over_rows == episode.rows
        assert episode.flagged_fraction == pytest.approx(1.0)
    assert outcome.normal_flagged == 100
