"""TimeColumnParser gives every time exactly as TimeParser does, or leaves it to the row path."""

from __future__ import annotations

import random
from datetime import datetime

import pyarrow as pa
import pytest

from iotwarden.sources.timecolumns import TimeColumnParser
from iotwarden.sources.timeparse import TimeParser


def _iso_like(rng: random.Random) -> str:
    """Return a text near the ISO 8601 shape, valid or not."""
    year = rng.choice([1969, 1970, 2000, 2024, 2199, 2200, rng.randint(1, 9999)])
    month = rng.choice([0, 1, 2, 12, 13, rng.randint(1, 12)])
    day = rng.choice([0, 1, 28, 29, 30, 31, 32, rng.randint(1, 31)])
    hour = rng.choice([0, 23, 24, rng.randint(0, 23)])
    minute = rng.choice([0, 59, 60, rng.randint(0, 59)])
    second = rng.choice([0, 59, 60, rng.randint(0, 59)])
    text = f"{year:04d}-{month:02d}-{day:02d}{rng.choice('TT x')}{hour:02d}:{minute:02d}:{second:02d}"
    if rng.random() < 0.7:
        text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 8)))
    ending = rng.random()
    if ending < 0.3:
        text += "Z"
    elif ending < 0.6:
        text += f"{rng.choice('+-')}{rng.choice([0, 5, 23, 24]):02d}:{rng.choice([0, 30, 59, 60]):02d}"
    elif ending < 0.65:
        text += "z"
    if rng.random() < 0.05:
        text = f" {text}"
    return text


def _assert_like_time_parser(texts: list[str], time_format: str | None, timezone: str) -> None:
    result = TimeColumnParser(TimeParser(time_format, timezone=timezone)).parse(pa.array(texts))
    assert result is not None
    times, parsed = result
    reference = TimeParser(time_format, timezone=timezone)
    for text, time, ok in zip(texts, times.tolist(), parsed.tolist()):
        try:
            expected = reference.parse(text)
        except ValueError:
            assert not ok, text
            continue
        assert ok, text
        assert time == expected, text


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_mixed_lengths_like_time_parser(timezone: str) -> None:
    rng = random.Random(7)
    _assert_like_time_parser([_iso_like(rng) for _ in range(20_000)], "iso", timezone)


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Paris"])
def test_automatic_format_valid_iso_like_time_parser(timezone: str) -> None:
    rng = random.Random(9)
    texts = []
    while len(texts) < 5_000:
        text = _iso_like(rng)
        try:
            datetime.fromisoformat(text)
        except ValueError:
            continue
        texts.append(text)
    _assert_like_time_parser(texts, None, timezone)


def test_automatic_format_invalid_iso_left_to_rows() -> None:
    # An invalid date with digits might fit a date layout, which only the row path may try.
    assert TimeColumnParser(TimeParser()).parse(pa.array(["2024-02-30T10:00:00Z"])) is None


@pytest.mark.parametrize("ending", ["Z", "+02:00", "", ".5Z", ".123456-03:30"])
def test_one_length_like_time_parser(ending: str) -> None:
    rng = random.Random(8)
    texts = []
    for _ in range(5_000):
        stamp = rng.uniform(0, 7.3e9)
        text = f"{1970 + int(stamp // 31_600_000):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        text += f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{ending}"
        texts.append(text)
    _assert_like_time_parser(texts, None, "UTC")


@pytest.mark.parametrize(
    ("time_format", "texts"),
    [
        ("epoch", ["1714557600", "1714557600.125", " 1714557600 ", "-5", "nan", "1e20", "x"]),
        ("epoch_ms", ["1714557600000", "1714557600123.5", "abc"]),
        ("%d.%m.%Y %H:%M:%S", ["01.05.2024 10:00:00", "31.02.2024 10:00:00", "1.5.2024 10:00:00"]),
        (None, ["1714557600", "1714557600123", "20240501", "", "  ", "null"]),
    ],
)
def test_other_formats_like_time_parser(time_format: str | None, texts: list[str]) -> None:
    _assert_like_time_parser(texts, time_format, "UTC")


def test_layout_dates_left_to_rows() -> None:
    parser = TimeColumnParser(TimeParser())
    assert parser.parse(pa.array(["2024-05-01T10:00:00Z", "01.05.2024 10:00:00"])) is None


def test_text_without_digits_not_parsed() -> None:
    times, parsed = TimeColumnParser(TimeParser()).parse(pa.array(["2024-05-01T10:00:00Z", "n/a"]))  # type: ignore[misc]
    assert parsed.tolist() == [True, False]
    assert times[0] == 1714557600.0


def test_date_and_time_pairs_like_parse_pair() -> None:
    dates = ["2024-05-01", "01.05.2024", "2024-05-01", " 2024-05-02 ", "x"]
    clocks = ["10:00:00", "10:00:00", "25:00:00", " 11:00:00", "10:00"]
    result = TimeColumnParser(TimeParser("%Y-%m-%d %H:%M:%S")).parse_pairs(pa.array(dates), pa.array(clocks))
    assert result is not None
    times, parsed = result
    reference = TimeParser("%Y-%m-%d %H:%M:%S")
    for date, clock, time, ok in zip(dates, clocks, times.tolist(), parsed.tolist()):
        try:
            expected = reference.parse_pair(date, clock)
        except ValueError:
            assert not ok
            continue
        assert ok
        assert time == expected
