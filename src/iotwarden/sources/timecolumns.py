"""Event times of a whole column at once, equal to :class:`TimeParser` value by value.

:class:`TimeColumnParser` turns a column of time texts into epoch seconds
and a mask of the values it could parse. A value that is not in the mask is
left for the row-by-row reader, which rejects it with its usual message.

Two methods, both exact:

* ISO 8601 texts of the fixed shape ``YYYY-MM-DD[T ]HH:MM:SS``, with an
  optional fraction of 1 to 6 digits and an optional ``Z`` or ``+HH:MM``
  offset, are parsed with integer arithmetic on the bytes of the column.
  The result is the whole number of microseconds since the epoch divided by
  10**6 in float64, the same correctly rounded division that
  :meth:`datetime.timestamp` and :meth:`timedelta.total_seconds` make. A text
  without an offset takes this path only when naive times are read as UTC.
* Every other text is parsed once per distinct value by the
  :class:`TimeParser` itself.

In automatic mode :class:`TimeParser` moves the date layout that last
matched to the front of its list, so a text that only a layout reads may
parse differently depending on the texts before it. The column parser
returns None for a column holding such a text, and the caller reads those
rows one by one in file order. A text without a digit, which no layout
reads, changes nothing and is only left out of the mask.
"""

from __future__ import annotations

import logging
from datetime import datetime
from datetime import timezone as dt_timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iotwarden.sources.timeparse import _MAX_TIME, _MIN_TIME, TimeParser, resolve_timezone

__all__ = ["TimeColumnParser"]

logger = logging.getLogger(__name__)

_SHORTEST_ISO = 19  # YYYY-MM-DDTHH:MM:SS
_LONGEST_ISO = 32  # with 6 fraction digits and +HH:MM
_DAYS_BEFORE_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)

_DIGIT_POSITIONS = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)
_SEPARATORS = ((4, b"-"), (7, b"-"), (13, b":"), (16, b":"))


class TimeColumnParser:
    """Parse columns of time texts like ``parser`` parses each text.

    Args:
        parser: The file's time parser; its format, time zone and day-first
            setting apply.
    """

    def __init__(self, parser: TimeParser) -> None:
        self.parser = parser
        self.automatic = parser.time_format is None
        self.fixed_iso = parser.time_format in (None, "iso")
        self.naive_is_utc = resolve_timezone(parser.timezone) is dt_timezone.utc

    def parse(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
        """Return epoch seconds and the mask of parsed values, or None (see the module documentation)."""
        count = len(texts)
        times = np.zeros(count, dtype=np.float64)
        parsed = np.zeros(count, dtype=bool)
        if self.fixed_iso and count:
            _parse_fixed_iso(texts, times, parsed, self.naive_is_utc)
        rest = np.flatnonzero(~parsed)
        if rest.size == 0:
            return times, parsed
        encoded = pc.dictionary_encode(texts.take(pa.array(rest)))
        distinct = encoded.dictionary.to_pylist()
        values = np.zeros(len(distinct), dtype=np.float64)
        valid = np.zeros(len(distinct), dtype=bool)
        for index, text in enumerate(distinct):
            if self.automatic and _needs_layouts(text):
                if _may_fit_layout(text):
                    return None
                continue
            try:
                values[index] = self.parser.parse(text)
            except ValueError:
                continue
            valid[index] = True
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        times[rest] = values[codes]
        parsed[rest] = valid[codes]
        return times, parsed

    def parse_pairs(self, dates: pa.Array, clocks: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
        """Parse a date column and a time-of-day column as :meth:`TimeParser.parse_pair` does."""
        date_codes, date_texts = _encode(dates)
        clock_codes, clock_texts = _encode(clocks)
        width = max(len(clock_texts), 1)
        distinct, inverse = np.unique(date_codes.astype(np.int64) * width + clock_codes, return_inverse=True)
        values = np.zeros(len(distinct), dtype=np.float64)
        valid = np.zeros(len(distinct), dtype=bool)
        for index, code in enumerate(distinct.tolist()):
            date_text, clock_text = date_texts[code // width], clock_texts[code % width]
            joined = f"{date_text.strip()} {clock_text.strip()}"
            if self.automatic and _needs_layouts(joined):
                if _may_fit_layout(joined):
                    return None
                continue
            try:
                values[index] = self.parser.parse_pair(date_text, clock_text)
            except ValueError:
                continue
            valid[index] = True
        return values[inverse], valid[inverse]


def _encode(texts: pa.Array) -> tuple[np.ndarray, list[str]]:
    encoded = pc.dictionary_encode(texts)
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def _needs_layouts(text: str) -> bool:
    """Return True when TimeParser's automatic mode would read ``text`` with its date layouts.

    NOTE: this repeats the order of the attempts in ``TimeParser._parse_auto``
    (ISO 8601 as given, ISO 8601 stripped, empty, a number); keep the two in step.
    """
    try:
        datetime.fromisoformat(text)
        return False
    except ValueError:
        pass
    stripped = text.strip()
    if not stripped:
        return False
    try:
        datetime.fromisoformat(stripped)
        return False
    except ValueError:
        pass
    try:
        float(stripped)
        return False
    except ValueError:
        return True


def _may_fit_layout(text: str) -> bool:
    """Return False for a text that no date layout of TimeParser reads: every layout has a day number."""
    return any(character.isdigit() for character in text)


def _parse_fixed_iso(texts: pa.Array, times: np.ndarray, parsed: np.ndarray, naive_is_utc: bool) -> None:
    """Fill ``times`` and ``parsed`` for the texts of the fixed ISO 8601 shape."""
    if texts.type != pa.string() or texts.null_count or _buffers_missing(texts):
        return
    buffers = texts.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=len(texts) + 1, offset=texts.offset * 4)
    data = np.frombuffer(buffers[2], dtype=np.uint8)
    lengths = np.diff(offsets)
    first = int(lengths[0])
    if (lengths == first).all():
        # One length, the usual case: the texts are the rows of one byte matrix.
        if _SHORTEST_ISO <= first <= _LONGEST_ISO:
            characters = data[offsets[0] : offsets[-1]].reshape(len(texts), first)
            times[:], parsed[:] = _fixed_iso_seconds(np.ascontiguousarray(characters.T), naive_is_utc)
        return
    for length in np.unique(lengths).tolist():
        if not _SHORTEST_ISO <= length <= _LONGEST_ISO:
            continue
        rows = np.flatnonzero(lengths == length)
        # One row per character position, so that each position is a contiguous array.
        positions = data[offsets[rows][None, :] + np.arange(length)[:, None]]
        times[rows], parsed[rows] = _fixed_iso_seconds(positions, naive_is_utc)


def _buffers_missing(texts: pa.Array) -> bool:
    """Return True when a string array has no data buffer (every text is empty)."""
    return len(texts) == 0 or texts.buffers()[2] is None


def _fixed_iso_seconds(positions: np.ndarray, naive_is_utc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return epoch seconds and validity of ISO 8601 texts of one length.

    ``positions[k]`` contains byte ``k`` of every text, as uint8.
    """
    length, count = positions.shape
    # Bytes below "0" wrap around, so any byte that is not a digit is above 9.
    digits = positions - np.uint8(ord("0"))
    valid = np.ones(count, dtype=bool)
    for position in _DIGIT_POSITIONS:
        valid &= digits[position] <= 9
    for position, separator in _SEPARATORS:
        valid &= positions[position] == separator[0]
    valid &= (positions[10] == ord("T")) | (positions[10] == ord(" "))

    # The end of the text: nothing, Z, or an offset +HH:MM / -HH:MM.
    zulu = positions[length - 1] == ord("Z")
    offset = np.zeros(count, dtype=bool)
    if length >= _SHORTEST_ISO + 6:
        sign_at = positions[length - 6]
        offset = ((sign_at == ord("+")) | (sign_at == ord("-"))) & (positions[length - 3] == ord(":"))
    suffix = np.where(zulu, 1, np.where(offset, 6, 0))
    if not naive_is_utc:
        valid &= suffix > 0

    seconds = np.zeros(count, dtype=np.float64)
    for suffix_length in (0, 1, 6):
        rows = valid & (suffix == suffix_length)
        if not rows.any():
            continue
        fraction_length = length - _SHORTEST_ISO - suffix_length
        if fraction_length == 1 or fraction_length > 7:
            valid &= ~rows
            continue
        if rows.all():
            seconds, valid = _group_seconds(positions, digits, fraction_length, suffix_length == 6)
            break
        selected = np.flatnonzero(rows)
        part_seconds, part_valid = _group_seconds(
            positions[:, selected], digits[:, selected], fraction_length, suffix_length == 6
        )
        seconds[selected] = part_seconds
        valid[selected] = part_valid
    return seconds, valid


def _group_seconds(
    positions: np.ndarray, digits: np.ndarray, fraction_length: int, has_offset: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Convert texts that share one shape; ``fraction_length`` counts the dot."""
    length, count = positions.shape
    valid = np.ones(count, dtype=bool)

    def number(first: int, last: int) -> np.ndarray:
        value = digits[first].astype(np.int64)
        for position in range(first + 1, last + 1):
            value = value * 10 + digits[position]
        return value

    year, month, day = number(0, 3), number(5, 6), number(8, 9)
    hour, minute, second = number(11, 12), number(14, 15), number(17, 18)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_index = np.clip(month, 1, 12)
    days_in_month = _DAYS_BEFORE_MONTH[month_index] + ((month_index == 2) & leap)
    valid &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= days_in_month)
    valid &= (hour <= 23) & (minute <= 59) & (second <= 59)

    microseconds = np.zeros(count, dtype=np.int64)
    if fraction_length:
        valid &= positions[_SHORTEST_ISO] == ord(".")
        places = fraction_length - 1
        for position in range(_SHORTEST_ISO + 1, _SHORTEST_ISO + fraction_length):
            valid &= digits[position] <= 9
        microseconds = number(_SHORTEST_ISO + 1, _SHORTEST_ISO + places) * 10 ** (6 - places)

    offset_seconds = np.zeros(count, dtype=np.int64)
    if has_offset:
        start = length - 6
        offset_hours, offset_minutes = number(start + 1, start + 2), number(start + 4, start + 5)
        for position in (start + 1, start + 2, start + 4, start + 5):
            valid &= digits[position] <= 9
        valid &= (offset_hours <= 23) & (offset_minutes <= 59)
        sign = np.where(positions[start] == ord("-"), -1, 1)
        offset_seconds = sign * (offset_hours * 3600 + offset_minutes * 60)

    days = _days_from_civil(year, month_index, day)
    whole_seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_seconds
    total_microseconds = whole_seconds * 1_000_000 + microseconds
    seconds = total_microseconds.astype(np.float64) / 1e6
    valid &= (seconds >= _MIN_TIME) & (seconds < _MAX_TIME)
    return seconds, valid


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Return days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    shifted_year = year - (month <= 2)
    era = np.floor_divide(shifted_year, 400)
    year_of_era = shifted_year - era * 400
    month_from_march = (month + 9) % 12
    day_of_year = (153 * month_from_march + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468

