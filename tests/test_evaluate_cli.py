"""``iotwarden evaluate`` command: output formats and errors, with a stand-in engine."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from click.testing import CliRunner

import iotwarden.evaluate.nab as nab_module
import iotwarden.evaluate.skab as skab_module
from iotwarden.evaluate.cli import evaluate
from test_evaluate_nab import make_corpus
from test_evaluate_skab import ThresholdEngine, write_skab_file


@dataclass
class FakeBatch:
    score: np.ndarray
    ready: np.ndarray
    flagged: np.ndarray
    alerts: list = field(default_factory=list)


class SpikeEngine:
    """Scores 3.0 (surprise) on the first row of the window in ``group/one.csv``, 0 elsewhere."""

    def process_batch(self, observations):
        score = np.array([3.0 if o.device == "group/one.csv" and o.line == 52 else 0.0 for o in observations])
        ready = np.ones(len(observations), dtype=bool)
        return FakeBatch(score, ready, score > 0)

    def finish(self):
        return []


@pytest.fixture
def stand_in_engines(monkeypatch):
    monkeypatch.setattr(nab_module, "engine_factory", lambda **config: SpikeEngine)
    monkeypatch.setattr(skab_module, "engine_factory", lambda **config: ThresholdEngine)


def test_nab_json_has_profile_keys(tmp_path, stand_in_engines):
    make_corpus(tmp_path)
    result = CliRunner().invoke(evaluate, ["nab", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["standard"] == pytest.approx(100.0)
    assert output["reward_low_FP_rate"] == pytest.approx(100.0)
    assert output["reward_low_FN_rate"] == pytest.approx(100.0)
    assert "scoreboard" in output


def test_nab_table_lists_scoreboard(tmp_path, stand_in_engines):
    make_corpus(tmp_path)
    result = CliRunner().invoke(evaluate, ["nab", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "iotwarden" in result.stdout
    assert "null" in result.stdout


def test_nab_table_explains_variants(tmp_path, stand_in_engines):
    make_corpus(tmp_path)
    result = CliRunner().invoke(evaluate, ["nab", str(tmp_path)], terminal_width=400)
    assert "iotwarden (surprise): engine surprise on every row" in result.stdout


def test_skab_json(tmp_path, stand_in_engines):
    write_skab_file(tmp_path / "data" / "valve1" / "0.csv", [0] * 10 + [1] * 5 + [0] * 5)
    result = CliRunner().invoke(evaluate, ["skab", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["episode"]["detected"] == 1
    assert "protocol" in output


@pytest.mark.parametrize("dataset", ["nab", "skab", "ton-iot"])
def test_missing_files_give_clear_error(tmp_path, dataset):
    result = CliRunner().invoke(evaluate, [dataset, str(tmp_path)])
    assert result.exit_code == 1
    assert "not found" in result.output or "no " in result.output
    assert "Traceback" not in result.output
