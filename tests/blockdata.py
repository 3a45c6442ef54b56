"""Synthetic CSV fleets with faults, and helpers that compare the row-by-row and block paths."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from iotwarden.decisions.alerts import Alert
from iotwarden.decisions.suppression import Suppression
from iotwarden.engine import Engine, EngineConfig
from iotwarden.engine.state import pair_count
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.pipeline import Replay
from iotwarden.sources.blocks import ObservationBlock
from iotwarden.sources.deadletter import DeadLetterWriter

START = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()
METRICS = ("temperature", "humidity", "pressure", "voltage")
FAULTS = (
    "bad_time",
    "bad_number",
    "empty_value",
    "nan",
    "inf",
    "blank_device",
    "extra_field",
    "blank_line",
    "exact_duplicate",
    "conflict",
    "swap",
    "too_late",
    "spaced_number",
    "underscore_number",
    "sentinel",
    "offset_time",
    "naive_time",
    "huge_values",
    "spaced_device",
    "boolean",
)


@dataclass
class FleetOptions:
    """Settings of a synthetic fleet file; ``faults`` is the share of rows given a fault."""

    devices: int = 40
    rows: int = 3000
    seed: int = 1
    faults: float = 0.0
    quotes: float = 0.0
    sparse: float = 0.0
    crlf: bool = False
    bad_utf8: bool = False
    trailing_blank_lines: int = 0
    time_style: str = "iso"
    attributes: bool = False


def fleet_lines(options: FleetOptions) -> list[str]:
    """Return the lines (without line breaks) of a fleet CSV, header first."""
    rng = random.Random(options.seed)
    period = [rng.uniform(30.0, 90.0) for _ in range(options.devices)]
    level = [[rng.gauss(20.0 + 10 * k, 3.0) for k in range(len(METRICS))] for _ in range(options.devices)]
    events = []
    for device in range(options.devices):
        time = START + rng.uniform(0.0, period[device])
        for _ in range(options.rows // options.devices + 1):
            events.append((time, device))
            time += period[device] * rng.uniform(0.9, 1.1)
    events.sort()
    events = events[: options.rows]

    header = "device_id,timestamp," + ",".join(METRICS)
    lines = [header + ",device_type,site" if options.attributes else header]
    for time, device in events:
        values = [level[device][k] + rng.gauss(0.0, 0.5) for k in range(len(METRICS))]
        if rng.random() < 0.003:
            values[rng.randrange(len(values))] += rng.choice([-1, 1]) * 40.0
        fields = [f"dev-{device:03d}", _time_text(time, options.time_style)] + [f"{value:.2f}" for value in values]
        if options.attributes:
            # Types by device; sites with stray spaces, blanks and one non-ASCII name.
            fields += [("pump", "meter", "camera")[device % 3], rng.choice(["north", " north ", "", "süd", "east"])]
        if options.sparse and rng.random() < options.sparse:
            fields[2 + rng.randrange(len(METRICS))] = ""
        if options.quotes and rng.random() < options.quotes:
            fields[0] = f'"{fields[0]}"'
        if options.faults and rng.random() < options.faults:
            lines.extend(_with_fault(rng, fields, rng.choice(FAULTS)))
        else:
            lines.append(",".join(fields))
    lines.extend([""] * options.trailing_blank_lines)
    return lines


def write_fleet(path: Path, options: FleetOptions) -> Path:
    """Write a fleet CSV to ``path`` and return the path."""
    ending = "\r\n" if options.crlf else "\n"
    data = ending.join(fleet_lines(options)).encode("utf-8") + ending.encode()
    if options.bad_utf8:
        middle = data.index(b"\n", len(data) // 2) + 1
        data = data[:middle] + b"dev-\xff" + data[middle:]
    path.write_bytes(data)
    return path


def _time_text(time: float, style: str) -> str:
    moment = datetime.fromtimestamp(time, tz=timezone.utc)
    if style == "epoch":
        return f"{time:.3f}"
    if style == "dotted":
        return moment.strftime("%d.%m.%Y %H:%M:%S")
    if style == "naive":
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _with_fault(rng: random.Random, fields: list[str], fault: str) -> list[str]:
    """Return the lines of one row with ``fault`` applied."""
    row = list(fields)
    line = ",".join(row)
    if fault == "bad_time":
        row[1] = "not-a-time"
    elif fault == "bad_number":
        row[3] = "abc"
    elif fault == "empty_value":
        row[4] = ""
    elif fault == "nan":
        row[2] = "nan"
    elif fault == "inf":
        row[2] = "-inf"
    elif fault == "blank_device":
        row[0] = " "
    elif fault == "extra_field":
        row.append("extra")
    elif fault == "blank_line":
        return [line, ""]
    elif fault == "exact_duplicate":
        return [line, line]
    elif fault == "conflict":
        row[2] = f"{float(row[2]) + 1:.2f}"
        return [line, ",".join(row)]
    elif fault == "swap":
        # A report 20 s later arrives first, so this one comes out of order.
        row[1] = _shift(fields[1], 20.0)
        return [",".join(row), line]
    elif fault == "too_late":
        row[1] = _shift(fields[1], -7200.0)
    elif fault == "spaced_number":
        row[2] = f" {row[2]}"
    elif fault == "underscore_number":
        row[3] = "1_000"
    elif fault == "sentinel":
        row[3] = "n/a"
    elif fault == "offset_time":
        row[1] = _shift(fields[1], 0.0).replace("Z", "+00:00")
    elif fault == "naive_time":
        row[1] = _shift(fields[1], 0.0).replace("T", " ").replace("Z", "")
    elif fault == "huge_values":
        row[2] = row[3] = "1e308"
    elif fault == "spaced_device":
        row[0] = f" {row[0]} "
    elif fault == "boolean":
        row[2:] = ["true"] * (len(row) - 2)
    return [",".join(row)]


def _shift(text: str, seconds: float) -> str:
    """Return an ISO time text moved by ``seconds``, and any other text unchanged."""
    if not text.endswith("Z"):
        return text
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() + seconds
    return _time_text(moment, "iso")


# Comparing the two paths --------------------------------------------------------------


def item_key(item: Any) -> tuple[Any, ...]:
    """Return what identifies an item, with the order of metrics and attributes."""
    if isinstance(item, Observation):
        return ("observation", item.device, item.time, list(item.metrics.items()), list(item.attributes.items()), item.source, item.line)
    assert isinstance(item, (FieldIssue, Rejection)), item
    return (type(item).__name__, item)


def expand(entries: Any) -> list[Any]:
    """Return the items of a stream whose entries may be observation blocks."""
    items: list[Any] = []
    for entry in entries:
        if isinstance(entry, ObservationBlock):
            items.extend(entry.items())
        else:
            items.append(entry)
    return items


@dataclass
class Outcome:
    """Everything a replay leaves behind that must not depend on the path taken."""

    summary: dict[str, Any]
    alerts: list[dict[str, Any]]
    store_writes: list[Any]
    dead_letters: list[dict[str, Any]]
    reorderer: dict[str, Any]
    pending: list[Any]
    engine: dict[str, Any]


def replay_outcome(
    items: Any,
    tmp_path: Path,
    name: str,
    *,
    lateness: float = 300.0,
    config: EngineConfig | None = None,
    suppressions: Sequence[Suppression] = (),
) -> Outcome:
    """Replay ``items`` with a fresh engine and collect the outcome."""
    alerts: list[Alert] = []
    batches: list[list[Any]] = []
    store = StoreWrites()
    letters = tmp_path / f"{name}.deadletter.jsonl"
    with DeadLetterWriter(letters) as dead_letters:
        engine = Engine(config or EngineConfig())
        engine.set_suppressions(suppressions)
        replay = Replay(engine, store=store, dead_letters=dead_letters, lateness=lateness, on_alert=lambda alert: alerts.append(alert.to_dict()))  # type: ignore[arg-type]
        replay.after_batch = lambda batch: batches.append([item_key(observation) for observation in batch])
        summary = replay.run(items)
    return Outcome(
        summary=summary.to_dict() | {"batches": batches},
        alerts=alerts,
        store_writes=store.writes,
        dead_letters=read_dead_letters(letters),
        reorderer=replay.reorderer.snapshot(),
        pending=[item_key(item) for item in replay.pending],
        engine=engine_state(engine),
    )


class StoreWrites:
    """Stands in for an AlertStore and keeps what was written to it, in order."""

    def __init__(self) -> None:
        self.writes: list[Any] = []

    def record_alerts(self, opened: list[Alert], closed: list[Alert]) -> None:
        self.writes.append(([alert.to_dict() for alert in opened], [alert.to_dict() for alert in closed]))


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """Return the dead-letter entries without their wall-clock time."""
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [{key: value for key, value in entry.items() if key != "recorded_at"} for entry in entries]


def engine_state(engine: Engine) -> dict[str, Any]:
    """Return the engine's state: metrics, devices, state arrays and open alerts."""
    arrays = {}
    width = engine.n_metrics
    for number, shard in enumerate(engine.shards):
        for key, array in shard.arrays.items():
            # Only the rows of registered devices and the columns of registered metrics:
            # a loaded engine has no spare capacity.
            used = np.array(array[: shard.n_devices], copy=True)
            kind = shard.specs[key].kind
            if kind == "metric":
                used = used[:, :width]
            elif kind == "pair":
                used = used[:, : pair_count(max(width - shard.pair_skip, 0))]
            arrays[f"{number}.{key}"] = used
    return {
        "metrics": list(engine.metric_names),
        "devices": dict(engine.device_index),
        "observations": engine.observations,
        "arrays": arrays,
        "book": json.dumps(engine.book.snapshot(), default=str, sort_keys=True),
        "counters": engine.counters.snapshot(),
    }


def assert_same_outcome(expected: Outcome, actual: Outcome) -> None:
    """Assert that two replays left the same things behind, field by field."""
    assert actual.summary == expected.summary
    assert actual.alerts == expected.alerts
    assert actual.store_writes == expected.store_writes
    assert actual.dead_letters == expected.dead_letters
    assert actual.reorderer == expected.reorderer
    assert actual.pending == expected.pending
    expected_arrays = expected.engine["arrays"]
    actual_arrays = actual.engine["arrays"]
    assert sorted(actual_arrays) == sorted(expected_arrays)
    for key, array in expected_arrays.items():
        assert actual_arrays[key].dtype == array.dtype, key
        assert np.array_equal(actual_arrays[key], array, equal_nan=array.dtype.kind == "f"), key
    for key in ("metrics", "devices", "observations", "book", "counters"):
        assert actual.engine[key] == expected.engine[key], key
