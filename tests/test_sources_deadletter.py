"""Tests for the dead-letter writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iotwarden.errors import IotwardenError
from iotwarden.observation import FieldIssue, Rejection
from iotwarden.sources.deadletter import DeadLetterWriter


def _entries(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rejection_written_as_json_line(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    with DeadLetterWriter(path) as writer:
        writer.write(Rejection("a.csv", 3, "t", "invalid time", raw="x,y"))
    [entry] = _entries(path)
    assert {key: entry[key] for key in ("kind", "source", "line", "field", "reason", "raw")} == {
        "kind": "rejected",
        "source": "a.csv",
        "line": 3,
        "field": "t",
        "reason": "invalid time",
        "raw": "x,y",
    }
    assert str(entry["recorded_at"]).endswith("Z")


def test_field_issue_written(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    with DeadLetterWriter(path) as writer:
        writer.write(FieldIssue("a.csv", 4, "rh", "sentinel value 'off'; the field is treated as missing", raw="t,off"))
    entry = _entries(path)[0]
    assert entry["kind"] == "field_issue"
    assert entry["raw"] == "t,off"


def test_raw_truncated_to_4_kib_without_splitting_characters(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    with DeadLetterWriter(path) as writer:
        writer.write(Rejection("a.jsonl", 1, None, "payload too large", raw="é" * 5000))
    [entry] = _entries(path)
    assert len(str(entry["raw"]).encode("utf-8")) == 4096
    assert entry["raw_truncated"] is True


def test_counts_per_kind(tmp_path: Path) -> None:
    with DeadLetterWriter(tmp_path / "dead.jsonl") as writer:
        writer.write(Rejection("a", 1, None, "r"))
        writer.write(Rejection("a", 2, None, "d", kind="duplicate"))
        writer.write(Rejection("a", 3, None, "r"))
    assert writer.counts == {"rejected": 2, "duplicate": 1}


def test_appends_to_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    for line in (1, 2):
        with DeadLetterWriter(path) as writer:
            writer.write(Rejection("a", line, None, "r"))
    assert [entry["line"] for entry in _entries(path)] == [1, 2]


def test_creates_parent_folder(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dead.jsonl"
    with DeadLetterWriter(path) as writer:
        writer.write(Rejection("a", 1, None, "r"))
    assert path.is_file()


def test_write_after_close_raises(tmp_path: Path) -> None:
    writer = DeadLetterWriter(tmp_path / "dead.jsonl")
    writer.close()
    with pytest.raises(IotwardenError, match="is closed"):
        writer.write(Rejection("a", 1, None, "r"))


def test_unopenable_path_raises(tmp_path: Path) -> None:
    with pytest.raises(IotwardenError, match="cannot open dead-letter file"):
        DeadLetterWriter(tmp_path)
