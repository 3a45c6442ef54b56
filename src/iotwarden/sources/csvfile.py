"""CSV reading: column roles chosen once per file, then a tight conversion loop.

The delimiter is sniffed from the header unless given. Roles come from the
header and the first :data:`SAMPLE_ROWS` rows: the device and time columns
by name, metrics as the columns whose values look numeric, attributes as the
other text columns. Each row then costs one csv parse, one float() per metric
and one time parse (skipped when the stamp repeats the previous row's).

This row-by-row conversion is the reference: :mod:`iotwarden.sources.csvblocks`
reads most rows column-wise and hands the others to it.
"""

from __future__ import annotations

import csv
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from iotwarden.errors import InvalidConfigError
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.options import MAX_RAW_CHARS, UTF8_BOM, Item, LogState, ReadOptions, log_rejection
from iotwarden.sources.payload import DEVICE_FIELDS, TIME_FIELDS, MetricValueError, no_valid_metric_error
from iotwarden.sources.timeparse import TimeParser

__all__ = ["SAMPLE_ROWS", "read_csv"]

logger = logging.getLogger(__name__)

#: Data rows read ahead to classify CSV columns.
SAMPLE_ROWS = 200

_DELIMITERS = (",", ";", "\t", "|")


def read_csv(source: str, stream: BinaryIO, options: ReadOptions, counters: SourceCounters) -> Iterator[Item]:
    """Yield the items of one CSV file; ``source`` names it in messages."""
    return _CsvReader(source, stream, options, counters).rows()


@dataclass
class _CsvLayout:
    columns: list[str]
    device_index: int | None
    time_indexes: tuple[int, ...]
    metric_columns: list[tuple[str, int]]
    attribute_columns: list[tuple[str, int]]


@dataclass
class _CsvHead:
    """What :meth:`_CsvReader.read_head` found: the dialect, the roles and the rows read so far.

    ``lines_read`` returns the number of physical lines read from the stream
    until now. While ``numbered`` is not advanced, the stream is positioned
    right after those lines.
    """

    delimiter: str
    layout: _CsvLayout
    sample: list[tuple[int, list[str]]]
    numbered: Iterator[tuple[int, list[str]]]
    lines_read: Callable[[], int]


class _CsvReader:
    def __init__(self, source: str, stream: BinaryIO, options: ReadOptions, counters: SourceCounters) -> None:
        self.source = source
        self.stream = stream
        self.options = options
        self.counters = counters
        self.policy = options.policy
        self.time_parser = TimeParser(options.time_format, timezone=options.timezone, day_first=options.day_first)
        self.bad_lines: dict[int, str] = {}
        self.log_state = LogState()

    def rows(self) -> Iterator[Item]:
        head = self.read_head()
        if head is None:
            return
        yield from self.rows_after(head)

    def rows_after(self, head: _CsvHead) -> Iterator[Item]:
        """Convert the sample rows and the rest of the file, row by row."""
        return self._convert(itertools.chain(head.sample, head.numbered), head.layout, head.delimiter)

    def read_head(self) -> _CsvHead | None:
        """Read the header and the sample rows and choose the column roles, or return None for an empty file."""
        lines = _decoded_lines(self.stream, self.bad_lines)
        header_line, skipped = self._first_line(lines)
        if header_line is None:
            logger.warning("%s: the file is empty; no header found", self.source)
            return None
        delimiter = self.options.delimiter or _sniff_delimiter(header_line)
        reader = csv.reader(itertools.chain([header_line], lines), delimiter=delimiter)
        header = _unique_names([name.strip() for name in next(reader)], self.source)

        numbered = _numbered(reader, skipped)
        sample = list(itertools.islice(numbered, SAMPLE_ROWS))
        layout = self._layout(header, sample)
        logger.debug(
            "%s: delimiter %r, device column %s, time columns %s, metrics %s, attributes %s",
            self.source,
            delimiter,
            header[layout.device_index] if layout.device_index is not None else repr(self.options.device),
            [header[index] for index in layout.time_indexes],
            [name for name, _ in layout.metric_columns],
            [name for name, _ in layout.attribute_columns],
        )
        return _CsvHead(delimiter, layout, sample, numbered, lambda: skipped + reader.line_num)

    def convert(self, numbered_rows: Iterable[tuple[int, list[str]]], layout: _CsvLayout, delimiter: str) -> list[Item]:
        """Convert ``(line, row)`` pairs into items with the row-by-row rules."""
        return list(self._convert(iter(numbered_rows), layout, delimiter))

    def _first_line(self, lines: Iterator[str]) -> tuple[str | None, int]:
        skipped = 0
        for text in lines:
            if text.strip():
                return text, skipped
            skipped += 1
        return None, skipped

    # Column roles.

    def _layout(self, header: list[str], sample: list[tuple[int, list[str]]]) -> _CsvLayout:
        options = self.options
        rows = [row for _, row in sample if len(row) == len(header)]
        lookup = _ColumnLookup(header, self.source)

        device_index: int | None = None
        if options.device is None:
            if options.device_column is not None:
                device_index = lookup.require(options.device_column, "device_column")
            else:
                device_index = lookup.guess(DEVICE_FIELDS)
                if device_index is None:
                    raise InvalidConfigError(
                        f"{self.source}: no device column: expected one of {', '.join(DEVICE_FIELDS)}; "
                        f"columns are {', '.join(header)}; set the device column (--device-column), or the device id (--device) for a single-device file"
                    )

        time_indexes = self._time_indexes(lookup, header)
        ignored = {lookup.require(name, "ignore_columns") for name in options.ignore_columns}
        role_indexes = {index for index in (device_index, *time_indexes) if index is not None} | ignored

        attribute_set: set[int] | None = None
        if options.attribute_columns is not None:
            attribute_set = {lookup.require(name, "attribute_columns") for name in options.attribute_columns}
        if options.metrics is not None:
            metric_indexes = [lookup.require(name, "metrics") for name in options.metrics]
        else:
            metric_indexes = [
                index
                for index in range(len(header))
                if index not in role_indexes
                and (attribute_set is None or index not in attribute_set)
                and self._looks_numeric_column([row[index] for row in rows])
            ]
        metric_set = set(metric_indexes)
        if attribute_set is None:
            attribute_set = {
                index
                for index in range(len(header))
                if index not in role_indexes
                and index not in metric_set
                and not self._looks_numeric_column([row[index] for row in rows])
            }

        self._check_metric_columns(header, metric_indexes, sample)
        return _CsvLayout(
            columns=header,
            device_index=device_index,
            time_indexes=time_indexes,
            metric_columns=[(header[index], index) for index in metric_indexes],
            attribute_columns=[(header[index], index) for index in sorted(attribute_set)],
        )

    def _time_indexes(self, lookup: _ColumnLookup, header: list[str]) -> tuple[int, ...]:
        time_column = self.options.time_column
        if isinstance(time_column, tuple):
            return (lookup.require(time_column[0], "time_column"), lookup.require(time_column[1], "time_column"))
        if time_column is not None:
            return (lookup.require(time_column, "time_column"),)
        single = lookup.guess(TIME_FIELDS[:-2])
        if single is not None:
            return (single,)
        date_index, clock_index = lookup.guess(("date",)), lookup.guess(("time",))
        if date_index is not None and clock_index is not None:
            return (date_index, clock_index)
        single = lookup.guess(("time", "date"))
        if single is not None:
            return (single,)
        raise InvalidConfigError(
            f"{self.source}: no time column: expected one of {', '.join(TIME_FIELDS)} or a date and time pair; "
            f"columns are {', '.join(header)}; set time_column"
        )

    def _looks_numeric_column(self, values: list[str]) -> bool:
        """Return True when more sampled values look numeric than look like text.

        Values that read as numbers only with another decimal separator
        (``21,5``) count as numeric, so that the column is reported by
        :meth:`_check_metric_columns` instead of becoming an attribute. A
        column with no values in the sample counts as numeric.
        """
        policy = self.policy
        numeric = text = 0
        for value in values:
            try:
                policy.from_text("", value)
            except MetricValueError as exc:
                if not exc.invalid:
                    numeric += 1
                elif _looks_localised_number(value):
                    numeric += 1
                else:
                    text += 1
                continue
            if value.strip().lower() not in policy.missing_values:
                numeric += 1
        return numeric >= text

    def _check_metric_columns(
        self, header: list[str], metric_indexes: list[int], sample: list[tuple[int, list[str]]]
    ) -> None:
        """Raise when no sampled value of a metric column is a valid number.

        That means the options do not fit the file (most often the decimal
        separator), and every row would be rejected or lose the field.
        """
        width = len(header)
        for index in metric_indexes:
            first_error: tuple[int, str, str] | None = None
            valid = 0
            for line, row in sample:
                if len(row) != width:
                    continue
                try:
                    if self.policy.from_text(header[index], row[index]) is not None:
                        valid += 1
                except MetricValueError as exc:
                    if exc.invalid and first_error is None:
                        first_error = (line, row[index], exc.reason)
            if valid == 0 and first_error is not None:
                line, _, reason = first_error
                raise InvalidConfigError(
                    f"{self.source}:{line}: field {header[index]!r}: {reason}. No value of this column "
                    f"in the first {len(sample)} rows is a valid number, so the options do not match the file"
                )

    # Row conversion.

    def _convert(
        self, numbered_rows: Iterator[tuple[int, list[str]]], layout: _CsvLayout, delimiter: str
    ) -> Iterator[Item]:
        """Convert rows into items; the loop body is the hot path of file reading."""
        source = self.source
        width = len(layout.columns)
        bad_lines = self.bad_lines
        device_index = layout.device_index
        fixed_device = self.options.device
        time_indexes = layout.time_indexes
        time_index = time_indexes[0]
        clock_index = time_indexes[1] if len(time_indexes) == 2 else None
        parse_time = self.time_parser.parse
        metric_columns = layout.metric_columns
        attribute_columns = layout.attribute_columns
        # float() alone reads the numbers, unless separators or sentinel codes are configured.
        fast_metrics = self.policy.plain_decimal and not self.policy.sentinel_values
        counters = self.counters

        last_stamp: str | None = None
        last_time = 0.0
        records = observations = 0
        try:
            for line, row in numbered_rows:
                if len(row) != width:
                    if type(row) is _CsvErrorRow:
                        records += 1
                        yield self._reject(line, None, row.message, "", "invalid_csv")
                        continue
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue
                    records += 1
                    yield self._reject(
                        line,
                        None,
                        f"expected {width} fields as in the header, found {len(row)}",
                        delimiter.join(row),
                        "field_count",
                    )
                    continue
                records += 1
                # NOTE: only the first physical line of a row is checked, so a
                # bad byte inside a multi-line quoted field shows as U+FFFD.
                if bad_lines and line in bad_lines:
                    yield self._reject(line, None, bad_lines[line], delimiter.join(row), "not_utf8")
                    continue

                # Device.
                if device_index is None:
                    device = fixed_device
                else:
                    device = row[device_index].strip()
                    if not device:
                        yield self._reject(
                            line,
                            layout.columns[device_index],
                            "missing device id",
                            delimiter.join(row),
                            "missing_device",
                        )
                        continue

                # Time; consecutive rows often repeat the stamp.
                stamp = row[time_index] if clock_index is None else row[time_index] + " " + row[clock_index]
                if stamp != last_stamp:
                    try:
                        last_time = (
                            parse_time(stamp)
                            if clock_index is None
                            else self.time_parser.parse_pair(row[time_index], row[clock_index])
                        )
                    except ValueError as exc:
                        last_stamp = None
                        field = layout.columns[time_index if clock_index is None else clock_index]
                        code = "missing_time" if not stamp.strip() else "invalid_time"
                        reason = "missing time" if code == "missing_time" else f"invalid time: {exc}"
                        yield self._reject(line, field, reason, delimiter.join(row), code)
                        continue
                    last_stamp = stamp

                # Metrics: one float() per value. The sum of the values is
                # finite exactly when every value is finite, barring overflow
                # of the sum, which only sends the row to the slow path.
                metrics: dict[str, float] | None = None
                if fast_metrics:
                    try:
                        metrics = {name: float(row[index]) for name, index in metric_columns}
                    except ValueError:
                        metrics = None
                    else:
                        total = sum(metrics.values())
                        if total - total:
                            metrics = None
                if metrics is None:
                    metrics, issues, rejection = self._convert_metrics_slowly(line, row, metric_columns, delimiter)
                    if rejection is not None:
                        yield rejection
                        continue
                    yield from issues

                attributes = {}
                for name, index in attribute_columns:
                    value = row[index].strip()
                    if value:
                        attributes[name] = value

                observations += 1
                yield Observation(device, last_time, metrics, attributes, source, line)  # type: ignore[arg-type]
        finally:
            counters.records += records
            counters.observations += observations

    def _convert_metrics_slowly(
        self, line: int, row: list[str], metric_columns: list[tuple[str, int]], delimiter: str
    ) -> tuple[dict[str, float], list[FieldIssue], Rejection | None]:
        metrics: dict[str, float] = {}
        issues: list[FieldIssue] = []
        invalid: list[tuple[str, str]] = []
        for name, index in metric_columns:
            try:
                value = self.policy.from_text(name, row[index])
            except MetricValueError as exc:
                issues.append(FieldIssue(self.source, line, name, exc.reason, raw=delimiter.join(row)[:MAX_RAW_CHARS]))
                if exc.invalid:
                    invalid.append((name, exc.reason))
                continue
            if value is not None:
                metrics[name] = value
        if not metrics and invalid:
            error = no_valid_metric_error(invalid)
            return metrics, [], self._reject(line, error.field, error.reason, delimiter.join(row), error.code)
        for issue in issues:
            self.counters.field_issues[issue.field] += 1
        return metrics, issues, None

    def _reject(self, line: int, field: str | None, reason: str, raw: str, code: str) -> Rejection:
        self.counters.rejections[code] += 1
        rejection = Rejection(self.source, line, field, reason, raw=raw[:MAX_RAW_CHARS])
        log_rejection(self.log_state, rejection)
        return rejection


class _ColumnLookup:
    """Find header columns by exact name, then ignoring case."""

    def __init__(self, header: list[str], source: str) -> None:
        self.header = header
        self.source = source
        self.exact = {name: index for index, name in enumerate(header)}
        self.folded: dict[str, int] = {}
        for index, name in enumerate(header):
            self.folded.setdefault(name.lower(), index)

    def find(self, name: str) -> int | None:
        index = self.exact.get(name)
        return index if index is not None else self.folded.get(name.lower())

    def require(self, name: str, option: str) -> int:
        index = self.find(name)
        if index is None:
            raise InvalidConfigError(
                f"{self.source}: column {name!r} given in {option} is not in the header; "
                f"columns are {', '.join(self.header)}"
            )
        return index

    def guess(self, candidates: Iterable[str]) -> int | None:
        for candidate in candidates:
            index = self.folded.get(candidate)
            if index is not None:
                return index
        return None


class _CsvErrorRow(list):  # type: ignore[type-arg]
    """An empty row standing for a row that csv.reader could not read."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


def _numbered(reader: Any, line_offset: int) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first physical line, row)`` for each row of a csv.reader.

    A row that csv.reader cannot read (such as a field over
    :func:`csv.field_size_limit`) is yielded as a :class:`_CsvErrorRow`, and
    reading goes on with the next line.
    """
    previous = reader.line_num
    while True:
        try:
            for row in reader:
                yield previous + 1 + line_offset, row
                previous = reader.line_num
            return
        except csv.Error as exc:
            yield previous + 1 + line_offset, _CsvErrorRow(f"invalid CSV: {exc}")
            previous = reader.line_num


def _sniff_delimiter(header_line: str) -> str:
    counts = [(header_line.count(candidate), -order, candidate) for order, candidate in enumerate(_DELIMITERS)]
    count, _, best = max(counts)
    return best if count else ","


def _unique_names(header: list[str], source: str) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for position, name in enumerate(header, 1):
        if not name:
            name = f"column_{position}"
        if name in seen:
            seen[name] += 1
            renamed = f"{name}_{seen[name]}"
            logger.warning(
                "%s: column %r appears more than once; column %d is named %r", source, name, position, renamed
            )
            name = renamed
        else:
            seen[name] = 1
        names.append(name)
    return names


def _looks_localised_number(text: str) -> bool:
    """Return True for numbers written with other separators, such as ``21,5`` or ``1.234,5``."""
    stripped = text.strip()
    if not stripped or not any(separator in stripped for separator in ",.' "):
        return False
    candidate = stripped.lstrip("+-")
    return bool(candidate) and candidate[0].isdigit() and all(char.isdigit() or char in ",.' " for char in candidate)


def _decoded_lines(stream: BinaryIO, bad_lines: dict[int, str]) -> Iterator[str]:
    """Yield the lines of ``stream`` as text, recording lines that are not UTF-8.

    A line that is not UTF-8 is yielded with replacement characters and its
    number is stored in ``bad_lines`` with the reason, so that the row it
    belongs to is rejected instead of the whole file failing.
    """
    number = 0
    for raw in stream:
        number += 1
        if number == 1 and raw.startswith(UTF8_BOM):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            yield decode_line(raw, number, bad_lines)


def decode_line(raw: bytes, number: int, bad_lines: dict[int, str]) -> str:
    """Decode one line as UTF-8, with replacement characters for an invalid line, which goes into ``bad_lines``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_lines[number] = f"line is not valid UTF-8: {exc.reason} (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        return raw.decode("utf-8", errors="replace")
