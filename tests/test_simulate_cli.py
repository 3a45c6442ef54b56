"""Tests of the ``simulate`` command."""

from __future__ import annotations

import csv
import gzip

from click.testing import CliRunner

from iotwarden.simulate import ATTACKS, METRIC_NAMES
from iotwarden.simulate.cli import simulate


def _run(*arguments: str):
    return CliRunner().invoke(simulate, list(arguments))


def _label_kinds(path) -> set[str]:
    with open(path, encoding="utf-8", newline="") as stream:
        return {row["kind"] for row in csv.DictReader(stream)}


def test_cli_writes_both_files(tmp_path):
    out = tmp_path / "fleet.csv.gz"
    result = _run("--devices", "20", "--hours", "12", "--out", str(out), "--seed", "3")
    assert result.exit_code == 0, result.output
    labels = tmp_path / "fleet.labels.csv"
    assert out.is_file()
    assert labels.is_file()
    with gzip.open(out, "rt", encoding="utf-8") as stream:
        header = stream.readline().rstrip("\n").split(",")
    assert header == ["time", "device_id", "device_type", *METRIC_NAMES]
    assert _label_kinds(labels) == set(ATTACKS)


def test_cli_summary_line(tmp_path):
    out = tmp_path / "fleet.csv"
    result = _run("--devices", "10", "--hours", "8", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "rows from 10 devices" in lines[0]
    assert "incidents" in lines[0]
    assert str(out) in lines[0]
    assert str(tmp_path / "fleet.labels.csv") in lines[0]


def test_cli_attack_list(tmp_path):
    out = tmp_path / "fleet.csv"
    result = _run("--devices", "20", "--hours", "12", "--out", str(out), "--attacks", "exfiltration, stuck")
    assert result.exit_code == 0, result.output
    assert _label_kinds(tmp_path / "fleet.labels.csv") == {"exfiltration", "stuck"}


def test_cli_attacks_none(tmp_path):
    out = tmp_path / "fleet.csv"
    result = _run("--devices", "5", "--hours", "8", "--out", str(out), "--attacks", "none")
    assert result.exit_code == 0, result.output
    assert _label_kinds(tmp_path / "fleet.labels.csv") == set()


def test_cli_rejects_unknown_attack(tmp_path):
    result = _run("--devices", "5", "--hours", "8", "--out", str(tmp_path / "f.csv"), "--attacks", "ddos,meteor")
    assert result.exit_code == 2
    assert "meteor" in result.output
    for name in ATTACKS:
        assert name in result.output
    assert not (tmp_path / "f.csv").exists()


def test_cli_labels_path(tmp_path):
    out = tmp_path / "fleet.csv"
    labels = tmp_path / "truth.csv"
    result = _run("--devices", "10", "--hours", "8", "--out", str(out), "--labels", str(labels))
    assert result.exit_code == 0, result.output
    assert labels.is_file()
    assert not (tmp_path / "fleet.labels.csv").exists()


def test_cli_start_time(tmp_path):
    out = tmp_path / "fleet.csv"
    result = _run("--devices", "5", "--hours", "1", "--out", str(out), "--start", "2025-01-06T08:00:00Z")
    assert result.exit_code == 0, result.output
    with open(out, encoding="utf-8") as stream:
        stream.readline()
        first = stream.readline()
    assert first.startswith("2025-01-06T08:0")


def test_cli_rejects_bad_start(tmp_path):
    result = _run("--devices", "5", "--hours", "1", "--out", str(tmp_path / "f.csv"), "--start", "yesterday")
    assert result.exit_code == 2
    assert "ISO 8601" in result.output


def test_cli_rejects_bad_numbers(tmp_path):
    out = str(tmp_path / "f.csv")
    assert _run("--devices", "0", "--hours", "1", "--out", out).exit_code == 2
    assert _run("--devices", "5", "--hours", "0", "--out", out).exit_code == 2
    assert _run("--devices", "5", "--hours", "1", "--out", out, "--seed", "-1").exit_code == 2
