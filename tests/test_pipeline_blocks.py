"""A replay of CSV blocks leaves exactly what a replay of the same items one by one leaves."""

from __future__ import annotations

import gzip
import json
import signal
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from blockdata import (
    START,
    FleetOptions,
    Outcome,
    StoreWrites,
    assert_same_outcome,
    engine_state,
    fleet_lines,
    item_key,
    read_dead_letters,
    replay_outcome,
    write_fleet,
)

from iotwarden.decisions.suppression import Suppression
from iotwarden.engine import Engine, EngineConfig
from iotwarden.pipeline import Replay
from iotwarden.sources import csvblocks, csvfile
from iotwarden.sources.blocks import ObservationBlock
from iotwarden.sources.deadletter import DeadLetterWriter
from iotwarden.sources.files import read_records


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read column-wise after a 5-row sample, in chunks of about 6 kB."""
    monkeypatch.setattr(csvfile, "SAMPLE_ROWS", 5)
    monkeypatch.setattr(csvblocks, "CHUNK_BYTES", 6000)


def _by_rows(paths: Any, **options: Any) -> Any:
    """Return the items of ``paths`` as a plain iterator, which a replay takes one by one."""
    return iter(list(read_records(paths, **options)))


def _compare(
    tmp_path: Path,
    paths: Any,
    *,
    lateness: float = 300.0,
    config: EngineConfig | None = None,
    suppressions: Sequence[Suppression] = (),
    **options: Any,
) -> Outcome:
    settings = {"lateness": lateness, "config": config, "suppressions": suppressions}
    expected = replay_outcome(_by_rows(paths, **options), tmp_path, "rows", **settings)
    actual = replay_outcome(read_records(paths, **options), tmp_path, "blocks", **settings)
    assert_same_outcome(expected, actual)
    return actual


CONFIG = EngineConfig(batch_size=256)


@pytest.mark.parametrize("lateness", [300.0, 45.0, 0.0])
def test_replay_with_faults_mid_file(tmp_path: Path, small_chunks: None, lateness: float) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=4000, faults=0.05, seed=31))
    outcome = _compare(tmp_path, path, lateness=lateness, config=CONFIG)
    assert outcome.summary["rejected"]
    assert outcome.summary["field_issues"]
    assert outcome.summary["alerts"]


def test_replay_clean_file_default_batches(tmp_path: Path, small_chunks: None) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(devices=60, rows=12000, seed=32))
    outcome = _compare(tmp_path, path)
    assert outcome.summary["observations"] == 12000


@pytest.mark.parametrize(
    "options",
    [
        FleetOptions(rows=3000, faults=0.05, crlf=True, seed=33),
        FleetOptions(rows=3000, faults=0.03, quotes=0.005, seed=34),
        FleetOptions(rows=3000, faults=0.03, sparse=0.3, seed=35),
        FleetOptions(rows=3000, faults=0.03, bad_utf8=True, trailing_blank_lines=2, seed=36),
        FleetOptions(rows=3000, faults=0.05, attributes=True, seed=38),
    ],
    ids=["crlf", "quotes", "sparse", "invalid_utf8", "attributes"],
)
def test_replay_file_variants(tmp_path: Path, small_chunks: None, options: FleetOptions) -> None:
    path = write_fleet(tmp_path / "a.csv", options)
    _compare(tmp_path, path, config=CONFIG)


def test_replay_gzip(tmp_path: Path, small_chunks: None) -> None:
    plain = write_fleet(tmp_path / "a.csv", FleetOptions(rows=3000, faults=0.04, seed=37))
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    _compare(tmp_path, packed, config=CONFIG)


def test_replay_several_files_and_json_lines(tmp_path: Path, small_chunks: None) -> None:
    first = write_fleet(tmp_path / "a.csv", FleetOptions(rows=2000, faults=0.03, seed=38))
    middle = tmp_path / "b.jsonl"
    middle.write_text(
        "".join(
            json.dumps({"device_id": f"dev-{device:03d}", "ts": f"2024-05-01T03:{minute:02d}:00Z", "temperature": 20.0 + minute % 3, "site": "north"}) + "\n"
            for minute in range(20)
            for device in range(3)
        )
    )
    last = tmp_path / "c.csv"
    lines = fleet_lines(FleetOptions(rows=2000, faults=0.03, seed=39))
    last.write_text("\n".join(line.replace("humidity", "co2") for line in lines) + "\n")
    _compare(tmp_path, [first, middle, last], config=CONFIG)


def test_replay_counter_metric(tmp_path: Path, small_chunks: None) -> None:
    lines = fleet_lines(FleetOptions(rows=2000, seed=40))
    counter = ["bytes_total"] + [str(1000 * index) for index in range(1, len(lines))]
    path = tmp_path / "a.csv"
    path.write_text("\n".join(f"{line},{value}" for line, value in zip(lines, counter)) + "\n")
    outcome = _compare(tmp_path, path, config=CONFIG)
    assert "bytes_rate" in outcome.engine["metrics"]


def test_replay_with_suppression(tmp_path: Path, small_chunks: None) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=4000, faults=0.02, seed=44))
    suppressions = [Suppression("s-1", category="spike"), Suppression("s-2", device="dev-003")]
    outcome = _compare(tmp_path, path, config=CONFIG, suppressions=suppressions)
    assert "spike" not in outcome.summary["alerts_by_category"]


@pytest.mark.parametrize("name", ["case-03.csv", "case-05.csv", "case-13.csv", "case-14.csv", "case-15.csv", "case-16.csv", "case-23.csv", "case-25b.csv"])
def test_replay_cases(tmp_path: Path, cases_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(csvfile, "SAMPLE_ROWS", 1)
    monkeypatch.setattr(csvblocks, "CHUNK_BYTES", 64)
    _compare(tmp_path, cases_dir / name, config=EngineConfig(batch_size=4))



def _fleet_with_gap(path: Path) -> Path:
    """Write 4 devices reporting every 60 s for 4 h; device q-3 stops from 2:00 to 2:30 and q-2 at 3:50."""
    rows = ["device_id,timestamp,temperature"]
    events = []
    for device in range(4):
        for step in range(240):
            time = START + 60.0 * step + 7.0 * device + (step * 13 % 5)
            in_gap = device == 3 and 120 <= step < 150
            ended = device == 2 and step >= 230
            if not (in_gap or ended):
                events.append((time, device))
    for time, device in sorted(events):
        stamp = datetime.fromtimestamp(time, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(f"q-{device},{stamp},{20.0 + device + (time % 7) / 10:.1f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_replay_silence_only_where_devices_stopped(tmp_path: Path, small_chunks: None) -> None:
    # Batches of 50 rows: silence is checked after each one, while the reorderer keeps 5 minutes of readings.
    outcome = _compare(tmp_path, _fleet_with_gap(tmp_path / "gap.csv"), config=EngineConfig(batch_size=50))
    silences = [alert for alert in outcome.alerts if alert["category"] == "silence"]
    assert [alert["device"] for alert in silences] == ["q-3", "q-2"]
    assert silences[0]["details"]["silent_since"] == "2024-05-01T01:59:23Z"
    assert silences[1]["details"]["silent_since"] == "2024-05-01T03:49:16Z"

def _resumed_outcome(tmp_path: Path, path: Path, stops: list[int], *, blocks: list[bool]) -> Outcome:
    """Replay ``path`` in parts that stop after ``stops`` records, saving and resuming the state between them.

    Part ``i`` reads blocks when ``blocks[i]`` is True, else items.
    """
    state = tmp_path / "state.npz"
    letters = tmp_path / "resumed.deadletter.jsonl"
    alerts: list[Any] = []
    store = StoreWrites()
    batches: list[Any] = []
    summary = None
    replay = None
    for part, stop in enumerate([*stops, None]):
        with DeadLetterWriter(letters) as dead_letters:
            options = {"store": store, "dead_letters": dead_letters, "on_alert": lambda alert: alerts.append(alert.to_dict())}
            replay = Replay.resume(state, **options) if state.exists() else Replay(Engine(CONFIG), **options)
            replay.after_batch = lambda batch: batches.append([item_key(observation) for observation in batch])
            items = read_records(path) if blocks[part] else _by_rows(path)
            summary = replay.run(items, stop_after=stop)
            replay.save_state(state)
    assert summary is not None and replay is not None
    return Outcome(
        summary=summary.to_dict() | {"batches": batches},
        alerts=alerts,
        store_writes=store.writes,
        dead_letters=read_dead_letters(letters),
        reorderer=replay.reorderer.snapshot(),
        pending=[item_key(item) for item in replay.pending],
        engine=engine_state(replay.engine),
    )


@pytest.mark.parametrize(
    ("stops", "blocks", "attributes"),
    [
        ([1500], [True, True], False),
        ([7, 1501, 900], [True, True, True, True], False),
        ([1200], [True, False], False),
        ([1200], [False, True], False),
        ([900, 1700], [True, False, True], True),
    ],
    ids=["blocks", "blocks_three_stops", "blocks_then_items", "items_then_blocks", "attributes"],
)
def test_resume_equals_one_run(
    tmp_path: Path, small_chunks: None, stops: list[int], blocks: list[bool], attributes: bool
) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=4000, faults=0.05, seed=41, attributes=attributes))
    whole = replay_outcome(_by_rows(path), tmp_path, "whole", config=CONFIG)
    resumed = _resumed_outcome(tmp_path, path, stops, blocks=blocks)
    assert_same_outcome(whole, resumed)


def test_stop_inside_block_keeps_exact_state(tmp_path: Path, small_chunks: None) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=3000, faults=0.05, seed=42))
    by_rows = Replay(Engine(CONFIG))
    by_rows.run(_by_rows(path), stop_after=1234)
    by_blocks = Replay(Engine(CONFIG))
    by_blocks.run(read_records(path), stop_after=1234)
    assert by_blocks.consumed == by_rows.consumed == 1234
    assert by_blocks.summary.to_dict() == by_rows.summary.to_dict()
    assert by_blocks.reorderer.snapshot() == by_rows.reorderer.snapshot()
    assert by_blocks.pending == by_rows.pending


def test_interrupt_waits_for_end_of_block(tmp_path: Path, small_chunks: None) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=3000, seed=43))
    replay = Replay(Engine(CONFIG))
    sizes: list[int] = []

    def entries() -> Any:
        for entry in read_records(path).blocks():
            if isinstance(entry, ObservationBlock):
                sizes.append(entry.size)
                if len(sizes) == 3:
                    signal.raise_signal(signal.SIGINT)
            yield entry

    with pytest.raises(KeyboardInterrupt):
        replay.run(entries())
    assert replay.consumed == sum(sizes)
    assert replay.summary.records == replay.consumed
    assert replay.summary.observations + len(replay.pending) + replay.reorderer.pending_count == replay.consumed


def test_cli_detect_resume_equals_one_run(tmp_path: Path, small_chunks: None) -> None:
    from click.testing import CliRunner

    from iotwarden.cli import cli

    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=4000, faults=0.05, seed=45))

    def detect(*extra: str) -> None:
        result = CliRunner().invoke(cli, ["detect", str(path), *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    detect("--store", str(tmp_path / "whole.db"), "--alerts-out", str(tmp_path / "whole.jsonl"))
    state = tmp_path / "state.npz"
    parts = ["--store", str(tmp_path / "parts.db"), "--state", str(state)]
    detect(*parts, "--stop-after", "2222", "--alerts-out", str(tmp_path / "one.jsonl"))
    detect(*parts, "--alerts-out", str(tmp_path / "two.jsonl"))

    whole = (tmp_path / "whole.jsonl").read_text().splitlines()
    resumed = ((tmp_path / "one.jsonl").read_text() + (tmp_path / "two.jsonl").read_text()).splitlines()
    assert whole
    assert [json.loads(line)["id"] for line in resumed] == [json.loads(line)["id"] for line in whole]
    assert read_dead_letters(tmp_path / "parts.deadletter.jsonl") == read_dead_letters(tmp_path / "whole.deadletter.jsonl")
