"""The block form of read_records yields exactly the items of the row-by-row form."""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path
from typing import Any

import pytest
from blockdata import FleetOptions, expand, fleet_lines, item_key, write_fleet

from iotwarden.errors import IotwardenError
from iotwarden.sources import csvblocks, csvfile
from iotwarden.sources.blocks import ObservationBlock
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.files import read_records


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read column-wise after a 5-row sample, in chunks of about 4 kB."""
    monkeypatch.setattr(csvfile, "SAMPLE_ROWS", 5)
    monkeypatch.setattr(csvblocks, "CHUNK_BYTES", 4096)


def _both_forms(paths: Any, **options: Any) -> tuple[list[Any], list[Any], SourceCounters, SourceCounters]:
    row_counters, block_counters = SourceCounters(), SourceCounters()
    rows = [item_key(item) for item in read_records(paths, counters=row_counters, **options)]
    blocks = [item_key(item) for item in expand(read_records(paths, counters=block_counters, **options).blocks())]
    return rows, blocks, row_counters, block_counters


def _assert_same_items(paths: Any, **options: Any) -> list[Any]:
    rows, blocks, row_counters, block_counters = _both_forms(paths, **options)
    assert len(blocks) == len(rows)
    for expected, actual in zip(rows, blocks):
        assert actual == expected
    assert block_counters == row_counters
    return rows


@pytest.fixture
def converted_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the rows that the row-by-row conversion handles."""
    counts: list[int] = []
    convert = csvfile._CsvReader.convert

    def counting(self: Any, numbered_rows: Any, layout: Any, delimiter: str) -> Any:
        rows = list(numbered_rows)
        counts.append(len(rows))
        return convert(self, rows, layout, delimiter)

    monkeypatch.setattr(csvfile._CsvReader, "convert", counting)
    return counts


FILES = {
    "clean": FleetOptions(),
    "faults": FleetOptions(faults=0.05, seed=2),
    "faults_crlf": FleetOptions(faults=0.05, seed=3, crlf=True),
    "quotes": FleetOptions(faults=0.02, quotes=0.01, seed=4),
    "invalid_utf8": FleetOptions(faults=0.02, bad_utf8=True, seed=5),
    "sparse": FleetOptions(sparse=0.3, faults=0.02, seed=6),
    "trailing_blank_lines": FleetOptions(trailing_blank_lines=3, seed=7),
    "naive_times": FleetOptions(time_style="naive", seed=8),
    "epoch_times": FleetOptions(time_style="epoch", seed=9),
    "dotted_dates": FleetOptions(time_style="dotted", seed=10),
    "attributes": FleetOptions(attributes=True, seed=13),
    "attributes_faults": FleetOptions(attributes=True, faults=0.05, sparse=0.1, seed=14),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_blocks_equal_rows(tmp_path: Path, small_chunks: None, name: str) -> None:
    path = write_fleet(tmp_path / f"{name}.csv", FILES[name])
    _assert_same_items(path)


@pytest.mark.parametrize(
    "options",
    [
        {"timezone": "Europe/Paris"},
        {"time_format": "iso"},
        {"time_format": "%Y-%m-%d %H:%M:%S.%f"},
        {"metrics": ["humidity", "temperature"]},
        {"ignore_columns": ["pressure"]},
        {"missing_values": ["", "null", "20.00"]},
    ],
    ids=["timezone", "iso", "strptime", "metrics", "ignored", "numeric_missing_value"],
)
def test_blocks_equal_rows_with_options(tmp_path: Path, small_chunks: None, options: dict[str, Any]) -> None:
    style = "naive" if options.get("time_format", "").startswith("%") or "timezone" in options else "iso"
    path = write_fleet(tmp_path / "a.csv", FleetOptions(faults=0.03, sparse=0.1, time_style=style, seed=11))
    _assert_same_items(path, **options)


def test_blocks_equal_rows_fixed_device(tmp_path: Path, small_chunks: None) -> None:
    lines = fleet_lines(FleetOptions(devices=1, rows=800, faults=0.03, seed=12))
    text = "\n".join(line.split(",", 1)[1] if line else line for line in lines) + "\n"
    path = tmp_path / "one.csv"
    path.write_text(text)
    _assert_same_items(path, device="pump-1")


def test_blocks_equal_rows_date_and_time_columns(tmp_path: Path, small_chunks: None) -> None:
    lines = fleet_lines(FleetOptions(rows=800, faults=0.03, seed=13))
    out = ["device_id,date,time," + lines[0].split(",", 2)[2]]
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > 2 and "T" in fields[1]:
            day, clock = fields[1].rstrip("Z").split("T")
            fields[1:2] = [day, clock]
        else:
            fields[1:2] = [fields[1] if len(fields) > 1 else "", ""]
        out.append(",".join(fields))
    path = tmp_path / "pair.csv"
    path.write_text("\n".join(out) + "\n")
    _assert_same_items(path)


def test_blocks_equal_rows_gzip(tmp_path: Path, small_chunks: None) -> None:
    plain = write_fleet(tmp_path / "plain.csv", FleetOptions(faults=0.03, seed=14))
    packed = tmp_path / "packed.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    _assert_same_items(packed)


def test_blocks_equal_rows_stdin(tmp_path: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_fleet(tmp_path / "a.csv", FleetOptions(faults=0.03, seed=15)).read_bytes()

    def read(form: str) -> list[Any]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
        stream = read_records("-")
        return [item_key(item) for item in (expand(stream.blocks()) if form == "blocks" else stream)]

    assert read("blocks") == read("rows")


def test_blocks_equal_rows_several_files(tmp_path: Path, small_chunks: None) -> None:
    first = write_fleet(tmp_path / "a.csv", FleetOptions(faults=0.03, seed=16))
    second = tmp_path / "b.csv"
    lines = fleet_lines(FleetOptions(faults=0.03, seed=17))
    second.write_text("\n".join(line.replace("humidity", "co2") for line in lines) + "\n")
    _assert_same_items([first, second])


def test_blocks_equal_rows_field_over_size_limit(tmp_path: Path, small_chunks: None) -> None:
    lines = fleet_lines(FleetOptions(rows=300, seed=18))
    lines[150] = lines[150].replace("dev-", "dev-" + "x" * 140_000, 1)
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    items = _assert_same_items(path)
    assert any(key[0] == "Rejection" and "field larger than field limit" in key[1].reason for key in items)


def test_truncated_gzip_raises_after_whole_lines(tmp_path: Path, small_chunks: None) -> None:
    plain = write_fleet(tmp_path / "plain.csv", FleetOptions(rows=2000, seed=19)).read_bytes()
    packed = gzip.compress(plain)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])

    def read(form: str) -> tuple[list[Any], str]:
        seen: list[Any] = []
        stream = read_records(path)
        with pytest.raises(IotwardenError) as error:
            for item in expand(stream.blocks()) if form == "blocks" else stream:
                seen.append(item_key(item))
        return seen, str(error.value)

    block_items, block_error = read("blocks")
    row_items, row_error = read("rows")
    assert block_error == row_error
    # The block form reads whole chunks before yielding, so it yields no item past the rows' last one.
    assert row_items[: len(block_items)] == block_items


def test_clean_rows_read_column_wise(tmp_path: Path, small_chunks: None, converted_rows: list[int]) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=2000, seed=20))
    blocks = list(read_records(path).blocks())
    assert all(isinstance(block, ObservationBlock) for block in blocks)
    assert sum(block.row_count for block in blocks) == 2000
    assert sum(converted_rows) == 5  # the sample rows only


def test_faulty_rows_converted_one_by_one(tmp_path: Path, small_chunks: None, converted_rows: list[int]) -> None:
    path = tmp_path / "a.csv"
    lines = fleet_lines(FleetOptions(rows=1000, seed=21))
    lines[500] = lines[500].replace(lines[500].split(",")[3], "abc")
    path.write_text("\n".join(lines) + "\n")
    list(read_records(path).blocks())
    assert sum(converted_rows) == 5 + 1


def test_attribute_columns_read_column_wise(tmp_path: Path, small_chunks: None, converted_rows: list[int]) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=2000, attributes=True, seed=23))
    blocks = list(read_records(path).blocks())
    assert all(isinstance(block, ObservationBlock) for block in blocks)
    assert sum(converted_rows) == 5  # the sample rows only
    rows = _assert_same_items(path)
    assert {"device_type": "pump", "site": "north"} in [dict(key[4]) for key in rows]


def test_block_head_and_tail_split_items(tmp_path: Path, small_chunks: None) -> None:
    path = write_fleet(tmp_path / "a.csv", FleetOptions(rows=600, faults=0.1, seed=22))
    for block in read_records(path).blocks():
        assert isinstance(block, ObservationBlock)
        items = [item_key(item) for item in block.items()]
        assert len(items) == block.size
        for cut in (0, 1, block.size // 3, block.size - 1, block.size):
            head = [item_key(item) for item in block.head(cut).items()]
            tail = [item_key(item) for item in block.tail(cut).items()]
            assert head + tail == items


@pytest.mark.parametrize("name", ["case-03.csv", "case-05.csv", "case-13.csv", "case-14.csv", "case-15.csv", "case-16.csv", "case-23.csv", "case-25b.csv"])
def test_cases_blocks_equal_rows(cases_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(csvfile, "SAMPLE_ROWS", 1)
    monkeypatch.setattr(csvblocks, "CHUNK_BYTES", 64)
    _assert_same_items(cases_dir / name)


def test_case25a_locale_blocks_equal_rows(cases_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "SAMPLE_ROWS", 1)
    options = {"delimiter": ";", "decimal": ",", "thousands": ".", "day_first": True}
    _assert_same_items(cases_dir / "case-25a.csv", **options)


def test_numeric_missing_value_on_row_with_empty_field(tmp_path: Path, small_chunks: None) -> None:
    lines = fleet_lines(FleetOptions(rows=400, seed=23))
    fields = lines[300].split(",")
    fields[2], fields[3] = "20.00", ""
    lines[300] = ",".join(fields)
    path = tmp_path / "a.csv"
    path.write_text("\n".join(lines) + "\n")
    items = _assert_same_items(path, missing_values=["", "20.00"])
    [row] = [key for key in items if key[0] == "observation" and key[6] == 301]
    assert [name for name, _ in row[3]] == ["pressure", "voltage"]
