"""BlockReorderer releases and rejects exactly what Reorderer does, item by item."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.blockorder import BlockReorderer
from iotwarden.sources.blocks import ObservationBlock, block_from_items
from iotwarden.sources.ordering import Reorderer

T0 = 1714557600.0
SOURCE = "fleet.csv"
NAMES = ("t", "h")


def _stream(seed: int, count: int, devices: int) -> list[Observation | FieldIssue]:
    """Return observations with jitter, swaps, duplicates, conflicts and late rows, and a few field issues."""
    rng = random.Random(seed)
    clock = [T0 + rng.uniform(0, 60) for _ in range(devices)]
    items: list[Observation | FieldIssue] = []
    line = 2
    while len(items) < count:
        device = rng.randrange(devices)
        clock[device] += rng.choice([0.0, 1.0, 20.0, 60.0, 60.0, 60.0, 61.5])
        time = clock[device]
        roll = rng.random()
        if roll < 0.05:
            time -= rng.choice([30.0, 120.0, 290.0, 301.0, 3600.0])
        elif roll < 0.08 and items:
            previous = rng.choice(items[-20:])
            if isinstance(previous, Observation):
                time = previous.time
                device = int(previous.device.split("-")[1])
        if roll > 0.95 and items and isinstance(items[-1], Observation):
            copy = items[-1]
            items.append(Observation(copy.device, copy.time, dict(copy.metrics), dict(copy.attributes), SOURCE, line))
            line += 1
            continue
        metrics = {"t": round(rng.gauss(20, 1), 1), "h": round(rng.gauss(50, 5), 1)}
        if rng.random() < 0.1:
            del metrics[rng.choice(NAMES)]
        attributes = {"site": rng.choice(["north", "south"])} if rng.random() < 0.3 else {}
        if rng.random() < 0.03:
            items.append(FieldIssue(SOURCE, line, "t", "'x' is not a number"))
        items.append(Observation(f"d-{device}", time, metrics, attributes, SOURCE, line))
        line += 1
    return items


def _blocks(items: list[Any], rng: random.Random) -> list[ObservationBlock]:
    blocks = []
    start = 0
    while start < len(items):
        size = rng.choice([1, 2, 7, 30, 200])
        blocks.append(block_from_items(SOURCE, NAMES, items[start : start + size]))
        start += size
    return blocks


def _key(item: Any) -> Any:
    if isinstance(item, Observation):
        return ("observation", item.device, item.time, list(item.metrics.items()), list(item.attributes.items()), item.line)
    return item


@pytest.mark.parametrize("lateness", [300.0, 0.0, 90.0])
@pytest.mark.parametrize("seed", range(6))
def test_block_reorderer_matches_item_by_item(seed: int, lateness: float) -> None:
    items = _stream(seed, 1500, devices=1 + seed % 4 * 3)
    reference = Reorderer(lateness=lateness)
    expected_out: list[Any] = []
    rejected: list[Any] = []
    for item in items:
        if not isinstance(item, Observation):
            continue
        for out in reference.push(item):
            (rejected if isinstance(out, Rejection) else expected_out).append(_key(out))

    twin = Reorderer(lateness=lateness)
    blocks = BlockReorderer(twin)
    blocks.activate()
    actual_out: list[Any] = []
    actual_rejected: list[Any] = []
    for block in _blocks(items, random.Random(seed)):
        pushed = blocks.push(block)
        actual_out.extend(_key(observation) for observation in blocks.observations(pushed.released))
        actual_rejected.extend(_key(rejection) for _, rejection in pushed.rejections)

    assert reference.counters.duplicates
    assert reference.counters.conflicts
    assert reference.counters.too_late
    assert reference.counters.quiet or seed % 4 == 0  # a single device never goes quiet
    assert actual_rejected == rejected
    assert actual_out == expected_out
    assert twin.counters == reference.counters
    assert [_key(item) for item in blocks.observations(blocks.flush())] == [_key(item) for item in reference.flush()]
    blocks.deactivate()
    assert json.dumps(twin.snapshot()) == json.dumps(reference.snapshot())


@pytest.mark.parametrize("seed", range(4))
def test_block_reorderer_switches_forms(seed: int) -> None:
    items = _stream(100 + seed, 1200, devices=5)
    reference = Reorderer()
    expected = [_key(out) for item in items if isinstance(item, Observation) for out in reference.push(item)]

    twin = Reorderer()
    blocks = BlockReorderer(twin)
    released: list[Any] = []
    rejected: list[Any] = []
    rng = random.Random(seed)
    for block in _blocks(items, rng):
        if rng.random() < 0.5:
            blocks.activate()
            pushed = blocks.push(block)
            rejected.extend(_key(rejection) for _, rejection in pushed.rejections)
            released.extend(_key(observation) for observation in blocks.observations(pushed.released))
            continue
        blocks.deactivate()
        for item in block.items():
            if isinstance(item, Observation):
                for out in twin.push(item):
                    (rejected if isinstance(out, Rejection) else released).append(_key(out))
    blocks.deactivate()
    assert released == [key for key in expected if not isinstance(key, Rejection)]
    assert rejected == [key for key in expected if isinstance(key, Rejection)]
    assert json.dumps(twin.snapshot()) == json.dumps(reference.snapshot())


def test_block_after_flush_rejects_released_times() -> None:
    first = [Observation("d", T0 + 60 * index, {"t": 1.0}, {}, SOURCE, 2 + index) for index in range(3)]
    later = [
        Observation("d", T0 + 120, {"t": 1.0}, {}, SOURCE, 10),
        Observation("d", T0 + 90, {"t": 1.0}, {}, SOURCE, 11),
        Observation("d", T0 + 200, {"t": 2.0}, {}, SOURCE, 12),
    ]
    reference = Reorderer()
    for item in first:
        reference.push(item)
    reference.flush()
    expected = [_key(out) for item in later for out in reference.push(item)]

    twin = Reorderer()
    for item in first:
        twin.push(item)
    twin.flush()
    blocks = BlockReorderer(twin)
    blocks.activate()
    pushed = blocks.push(block_from_items(SOURCE, ("t",), later))
    assert [_key(rejection) for _, rejection in pushed.rejections] == expected
    assert [rejection.kind for _, rejection in pushed.rejections] == ["duplicate", "rejected"]


def test_attributes_survive_switching_forms() -> None:
    reorderer = Reorderer()
    reorderer.push(Observation("d", T0, {"t": 1.0}, {"site": "north"}, SOURCE, 2))
    before = reorderer.snapshot()
    blocks = BlockReorderer(reorderer)
    blocks.activate()
    blocks.deactivate()
    assert reorderer.snapshot() == before
