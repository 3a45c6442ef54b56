"""Tests for per-device reordering, quiet devices and duplicate handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iotwarden.errors import InvalidConfigError, IotwardenError
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.files import read_records
from iotwarden.sources.ordering import Reorderer

T0 = 1714557600.0


def _obs(time_offset: float, line: int, device: str = "d", value: float = 1.0) -> Observation:
    return Observation(device, T0 + time_offset, {"t": value}, {}, "test.csv", line)


def _lines(items: list[object]) -> list[int | None]:
    return [item.line for item in items if isinstance(item, Observation)]


def _rejections(items: list[object]) -> list[Rejection]:
    return [item for item in items if isinstance(item, Rejection)]


def test_in_order_stream_unchanged() -> None:
    items = list(Reorderer().process([_obs(0, 2), _obs(60, 3), _obs(120, 4)]))
    assert _lines(items) == [2, 3, 4]


def test_swapped_rows_reordered() -> None:
    items = list(Reorderer().process([_obs(0, 2), _obs(120, 3), _obs(60, 4), _obs(180, 5)]))
    assert _lines(items) == [2, 4, 3, 5]


def test_reordered_rows_counted() -> None:
    reorderer = Reorderer()
    list(reorderer.process([_obs(0, 2), _obs(120, 3), _obs(60, 4)]))
    assert reorderer.counters.reordered == 1


def test_row_beyond_bound_rejected() -> None:
    items = list(Reorderer(lateness=300).process([_obs(0, 2), _obs(7200, 3), _obs(600, 4)]))
    assert _rejections(items)[0].reason == (
        "too far out of order (6600 s behind the device's latest time 2024-05-01T12:00:00Z; "
        "the lateness bound is 300 s)"
    )


def test_late_row_does_not_move_clock_back() -> None:
    items = list(Reorderer().process([_obs(0, 2), _obs(7200, 3), _obs(600, 4), _obs(7260, 5)]))
    assert _lines(items) == [2, 3, 5]


def test_exact_duplicate_dropped_as_duplicate() -> None:
    items = list(Reorderer().process([_obs(0, 2), _obs(0, 3)]))
    [rejection] = _rejections(items)
    assert rejection.kind == "duplicate"
    assert rejection.reason == "exact duplicate of line 2 (same device, time and values); dropped"



def test_rejection_keeps_record_as_json() -> None:
    items = list(Reorderer().process([_obs(0, 2), _obs(0, 3)]))
    [rejection] = _rejections(items)
    assert json.loads(rejection.raw) == {  # type: ignore[arg-type]
        "device": "d",
        "time": "2024-05-01T10:00:00Z",
        "metrics": {"t": 1.0},
        "attributes": {},
    }

def test_conflicting_duplicate_keeps_first() -> None:
    items = list(Reorderer().process([_obs(0, 8, value=20.2), _obs(0, 9, value=27.9)]))
    assert [obs.metrics for obs in items if isinstance(obs, Observation)] == [{"t": 20.2}]


def test_conflicting_duplicate_names_lines_and_field() -> None:
    items = list(Reorderer().process([_obs(0, 8, value=20.2), _obs(0, 9, value=27.9)]))
    [rejection] = _rejections(items)
    assert (rejection.kind, rejection.field, rejection.line) == ("rejected", "t", 9)
    assert rejection.reason == (
        "conflicting duplicate: same device and time 2024-05-01T10:00:00Z as line 8, "
        "different values (t: 20.2 on line 8, 27.9 on line 9); the first is kept"
    )


def test_devices_ordered_independently() -> None:
    stream = [_obs(0, 2, "a"), _obs(3600, 3, "b"), _obs(60, 4, "a"), _obs(30, 5, "a")]
    items = list(Reorderer().process(stream))
    assert [(obs.device, obs.line) for obs in items if isinstance(obs, Observation)] == [
        ("a", 2),
        ("a", 5),
        ("a", 4),
        ("b", 3),
    ]



def test_quiet_device_released_when_stream_moves_on() -> None:
    reorderer = Reorderer(lateness=300)
    for observation in [_obs(0, 2, "a"), _obs(60, 3, "a"), _obs(61, 4, "b"), _obs(300, 5, "b")]:
        assert reorderer.push(observation) == []
    released = reorderer.push(_obs(362, 6, "b"))
    assert [(obs.device, obs.line) for obs in released] == [("b", 4), ("a", 2), ("a", 3)]  # type: ignore[union-attr]
    assert reorderer.counters.quiet == 2


def test_active_device_not_released_as_quiet() -> None:
    reorderer = Reorderer(lateness=300)
    reorderer.push(_obs(0, 2, "a"))
    reorderer.push(_obs(3600, 3, "b"))  # releases a's row: a has been quiet for an hour of the stream
    assert reorderer.push(_obs(60, 4, "a")) == []
    assert reorderer.push(_obs(30, 5, "a")) == []
    assert reorderer.counters.reordered == 1


def test_row_behind_quiet_release_rejected() -> None:
    reorderer = Reorderer(lateness=300)
    reorderer.push(_obs(0, 2, "a"))
    reorderer.push(_obs(60, 3, "a"))
    reorderer.push(_obs(400, 4, "b"))
    [rejection] = reorderer.push(_obs(30, 5, "a"))
    assert rejection.reason.startswith(  # type: ignore[union-attr]
        "too far out of order (a later observation of the device, at 2024-05-01T10:01:00Z, was already released"
    )

def test_issues_and_rejections_pass_through_at_once() -> None:
    issue = FieldIssue("test.csv", 3, "t", "non-finite value nan; the field is treated as missing")
    reorderer = Reorderer()
    assert reorderer.push(_obs(0, 2)) == []
    assert reorderer.push(issue) == [issue]


def test_flush_releases_in_time_order_across_devices() -> None:
    reorderer = Reorderer()
    for observation in [_obs(60, 2, "a"), _obs(0, 3, "b"), _obs(30, 4, "a")]:
        reorderer.push(observation)
    assert [obs.line for obs in reorderer.flush()] == [3, 4, 2]  # type: ignore[union-attr]


def test_release_until_then_older_row_rejected() -> None:
    reorderer = Reorderer()
    reorderer.push(_obs(0, 2))
    reorderer.push(_obs(60, 3))
    assert [obs.line for obs in reorderer.release_until(T0 + 100)] == [2, 3]  # type: ignore[union-attr]
    [rejection] = reorderer.push(_obs(30, 4))
    assert rejection.reason.startswith(  # type: ignore[union-attr]
        "too far out of order (a later observation of the device, at 2024-05-01T10:01:00Z, was already released"
    )


def test_duplicate_of_released_row_detected() -> None:
    reorderer = Reorderer()
    reorderer.push(_obs(0, 2))
    reorderer.flush()
    [rejection] = reorderer.push(_obs(0, 3))
    assert rejection.kind == "duplicate"  # type: ignore[union-attr]


def test_zero_lateness_releases_on_next_row() -> None:
    reorderer = Reorderer(lateness=0)
    reorderer.push(_obs(0, 2))
    assert [obs.line for obs in reorderer.push(_obs(60, 3))] == [2]  # type: ignore[union-attr]


@pytest.mark.parametrize("lateness", [-1.0, float("nan"), float("inf")])
def test_invalid_lateness_rejected(lateness: float) -> None:
    with pytest.raises(InvalidConfigError, match="invalid lateness"):
        Reorderer(lateness=lateness)


def test_case13_order_and_duplicates(cases_dir: Path) -> None:
    reorderer = Reorderer()
    items = list(reorderer.process(read_records(cases_dir / "case-13.csv")))
    assert _lines(items) == [2, 3, 5, 4, 6, 8, 10, 12]


def test_case13_rejections(cases_dir: Path) -> None:
    items = list(Reorderer().process(read_records(cases_dir / "case-13.csv")))
    assert [(rejection.line, rejection.kind, rejection.field) for rejection in _rejections(items)] == [
        (7, "duplicate", None),
        (9, "rejected", "temperature_c"),
        (11, "rejected", None),
    ]


def test_case13_conflict_not_averaged(cases_dir: Path) -> None:
    items = list(Reorderer().process(read_records(cases_dir / "case-13.csv")))
    values = [obs.metrics["temperature_c"] for obs in items if isinstance(obs, Observation) and obs.line == 8]
    assert values == [20.2]


def test_snapshot_restore_round_trip() -> None:
    first = Reorderer()
    for observation in [_obs(0, 2), _obs(120, 3), _obs(7200, 4)]:
        first.push(observation)
    second = Reorderer()
    second.restore(json.loads(json.dumps(first.snapshot())))
    assert second.snapshot() == first.snapshot()
    assert _rejections(second.push(_obs(60, 5)))[0].reason.startswith("too far out of order (7140 s behind")


def test_restore_rejects_invalid_snapshot() -> None:
    with pytest.raises(IotwardenError, match="invalid reorderer snapshot"):
        Reorderer().restore({"devices": {}})
