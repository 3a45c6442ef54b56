"""Tests for event-time parsing."""

from __future__ import annotations

import pytest

from iotwarden.errors import InvalidConfigError
from iotwarden.sources.timeparse import TimeParser

MAY_1_10H_UTC = 1714557600.0


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00+00:00",
        "2024-05-01T12:00:00+02:00",
        "2024-05-01 10:00:00",
        " 2024-05-01T10:00:00Z ",
        "1714557600",
        "1714557600000",
        "1714557600.0",
        "01.05.2024 10:00:00",
        "01-May-24 10:00:00",
    ],
)
def test_auto_detects_format(text: str) -> None:
    assert TimeParser().parse(text) == MAY_1_10H_UTC


def test_fractional_seconds_kept() -> None:
    assert TimeParser().parse("2024-05-01T10:00:00.250Z") == MAY_1_10H_UTC + 0.25


def test_naive_time_read_in_timezone() -> None:
    parser = TimeParser(timezone="Europe/Paris")
    # Paris is UTC+2 in May.
    assert parser.parse("2024-05-01 12:00:00") == MAY_1_10H_UTC


def test_offset_wins_over_timezone() -> None:
    parser = TimeParser(timezone="Europe/Paris")
    assert parser.parse("2024-05-01T10:00:00Z") == MAY_1_10H_UTC


def test_slash_dates_month_first_by_default() -> None:
    assert TimeParser().parse("05/01/2024 10:00:00") == MAY_1_10H_UTC


def test_slash_dates_day_first_option() -> None:
    assert TimeParser(day_first=True).parse("01/05/2024 10:00:00") == MAY_1_10H_UTC


def test_date_and_time_pair_with_spaces() -> None:
    parser = TimeParser()
    assert parser.parse_pair("25-Apr-19", " 19:19:40 ") == 1556219980.0


def test_time_of_day_without_leading_zero() -> None:
    assert TimeParser().parse_pair("25-Apr-19", "8:59:02") == 1556182742.0


@pytest.mark.parametrize(
    ("time_format", "text", "expected"),
    [
        ("epoch", "1714557600", MAY_1_10H_UTC),
        ("epoch_ms", "1714557600000", MAY_1_10H_UTC),
        ("iso", "2024-05-01T10:00:00Z", MAY_1_10H_UTC),
        ("%d.%m.%Y %H:%M:%S", "01.05.2024 10:00:00", MAY_1_10H_UTC),
    ],
)
def test_explicit_formats(time_format: str, text: str, expected: float) -> None:
    assert TimeParser(time_format).parse(text) == expected


def test_epoch_numbers_from_json() -> None:
    parser = TimeParser()
    assert parser.parse_number(1714557600) == MAY_1_10H_UTC
    assert parser.parse_number(1714557600000) == MAY_1_10H_UTC


def test_unparseable_time_names_value() -> None:
    with pytest.raises(ValueError, match=r"time 'yesterday' is not ISO 8601, an epoch number or a known date layout"):
        TimeParser().parse("yesterday")


def test_strptime_mismatch_names_format() -> None:
    with pytest.raises(ValueError, match=r"time '2024-05-01' does not match format '%d\.%m\.%Y'"):
        TimeParser("%d.%m.%Y").parse("2024-05-01")


def test_time_before_1970_rejected() -> None:
    with pytest.raises(ValueError, match="outside 1970-01-01..2200-01-01"):
        TimeParser().parse("1960-01-01T00:00:00Z")


def test_non_finite_epoch_rejected() -> None:
    with pytest.raises(ValueError, match="is not a finite number"):
        TimeParser().parse("nan")


def test_invalid_time_format_option() -> None:
    with pytest.raises(InvalidConfigError, match=r"invalid time format 'ddmmyyyy' \(--time-format\)"):
        TimeParser("ddmmyyyy")


def test_invalid_timezone_option() -> None:
    with pytest.raises(InvalidConfigError, match="invalid timezone 'Mars/Olympus'"):
        TimeParser(timezone="Mars/Olympus")
