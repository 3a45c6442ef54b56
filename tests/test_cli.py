"""The command line, run as a user runs it, on simulated and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotwarden.cli import cli
from iotwarden.decisions.alerts import Alert
from iotwarden.demo import IncidentMatch
from iotwarden.observation import format_time
from iotwarden.simulate import simulate_fleet, write_csv
from iotwarden.store import AlertStore


@pytest.fixture(scope="module")
def fleet_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fleet")
    data, _ = write_csv(simulate_fleet(12, 30, seed=3), folder / "fleet.csv")
    return data


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_help_on_every_command():
    for command in ("detect", "alerts", "demo", "simulate", "evaluate", "ledger"):
        code, output = invoke(command, "--help")
        assert code == 0, command
        assert "Usage:" in output


def test_detect_summary_store_and_jsonl(tmp_path, fleet_csv):
    store = tmp_path / "alerts.db"
    out = tmp_path / "alerts.jsonl"
    code, output = invoke("detect", str(fleet_csv), "--store", str(store), "--alerts-out", str(out))
    assert code == 0
    assert "observations scored" in output
    lines = out.read_text().splitlines()
    assert len(lines) >= 1
    first = json.loads(lines[0])
    assert {"device", "time", "category", "severity", "score", "detector", "metrics", "explanation"} <= set(first)
    with AlertStore(store) as opened:
        assert opened.count_alerts() == len({json.loads(line)["id"] for line in lines})


def test_alerts_lists_and_filters(tmp_path, fleet_csv):
    store = tmp_path / "alerts.db"
    invoke("detect", str(fleet_csv), "--store", str(store))
    code, output = invoke("alerts", "--store", str(store), "--format", "json")
    assert code == 0
    alerts = [json.loads(line) for line in output.splitlines()]
    device = alerts[0]["device"]
    code, output = invoke("alerts", "--store", str(store), "--format", "json", "--device", device)
    assert {json.loads(line)["device"] for line in output.splitlines()} == {device}
    code, output = invoke("alerts", "--store", str(store), "--since", "2099-01-01T00:00:00Z", "--format", "json")
    assert output.strip() == ""


def test_resume_gives_same_alerts(tmp_path, fleet_csv):
    whole_out = tmp_path / "whole.jsonl"
    invoke("detect", str(fleet_csv), "--store", str(tmp_path / "whole.db"), "--alerts-out", str(whole_out))

    state = tmp_path / "state.npz"
    part_one = tmp_path / "one.jsonl"
    part_two = tmp_path / "two.jsonl"
    store = str(tmp_path / "parts.db")
    code, output = invoke("detect", str(fleet_csv), "--store", store, "--state", str(state), "--stop-after", "7777", "--alerts-out", str(part_one))
    assert code == 0
    assert "stopped early" in output
    code, output = invoke("detect", str(fleet_csv), "--store", store, "--state", str(state), "--alerts-out", str(part_two))
    assert code == 0
    assert "resumed after" in output
    assert "7,777 records" in output

    whole = [json.loads(line) for line in whole_out.read_text().splitlines()]
    parts = [json.loads(line) for line in (part_one.read_text() + part_two.read_text()).splitlines()]
    assert [alert["id"] for alert in parts] == [alert["id"] for alert in whole]


def test_bad_rows_go_to_dead_letters(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text(
        "ts,device_id,temperature_c,humidity\n"
        "2024-05-01T10:00:00Z,dev-1,21.5,40\n"
        "2024-05-01T10:01:00Z,dev-1,abc,41\n"
        "not-a-time,dev-1,21.6,42\n"
        "2024-05-01T10:03:00Z,dev-1,21.7,43,extra\n"
        "2024-05-01T10:04:00Z,dev-1,21.8,44\n"
    )
    store = tmp_path / "s.db"
    code, output = invoke("detect", str(data), "--store", str(store))
    assert code == 0
    assert "records not scored" in output
    letters = [json.loads(line) for line in (tmp_path / "s.deadletter.jsonl").read_text().splitlines()]
    by_line = {entry["line"]: entry for entry in letters}
    assert by_line[3]["field"] == "temperature_c"
    assert by_line[4]["kind"] == "rejected"
    assert "4" in by_line[5]["reason"] and "5" in by_line[5]["reason"]


def test_missing_file_is_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "iotwarden", "detect", str(tmp_path / "nope.csv"), "--store", str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "nope.csv" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_silence_delay_counts_until_overdue():
    alert = Alert(
        device="d", time=1000.0, category="silence", severity="medium", score=3.0, detector="liveness",
        metrics=[], explanation="", details={"detected_at": format_time(1180.0)},
    )
    match = IncidentMatch("inc-0001", "d", "silence", 1005.0, 5000.0, alert)
    assert match.delay == 175.0


def test_demo_catches_injected_incidents(tmp_path):
    code, output = invoke("demo", "--devices", "20", "--hours", "30", "--store", str(tmp_path / "demo.db"))
    assert code == 0
    assert "Caught" in output
    caught, total = (int(word) for word in output.split("Caught ", 1)[1].split(" injected")[0].split(" of "))
    assert total >= 5
    assert caught >= total * 0.7
