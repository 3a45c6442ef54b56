"""CSV files read column-wise in chunks, with the same result as the row-by-row reader.

:func:`read_csv_blocks` yields the items of a CSV file as
:class:`~iotwarden.sources.blocks.ObservationBlock` values. The header and
the sample rows are read as in :mod:`iotwarden.sources.csvfile`. The rest of
the file is read in chunks of whole lines (:data:`CHUNK_BYTES`) and parsed
with pyarrow's CSV reader. A row takes the column-wise path only when the
row-by-row reader would turn it into an observation with no field issue:
the right number of fields, a device id, a time that parses, and metric
values that parse as finite floats or are empty (a missing value, when the
value policy counts the empty text as missing and no missing or sentinel
text is a number). pyarrow's float parsing is correctly rounded, as
:func:`float` is, so the values are equal. Every other row goes through the
row-by-row conversion, in place, so its rejection or field issue names the
same line, field and reason.

A whole chunk goes row by row when it contains a quote (a quoted field may
hold delimiters or line breaks), a NUL byte, a carriage return that does
not end a line, invalid UTF-8 or a line longer than the csv module's field
size limit, or when one of its times needs the stateful date layouts of
:class:`~iotwarden.sources.timeparse.TimeParser`. A whole file goes row by
row when it has locale number options or sentinel codes. Attribute columns
are read as text, stripped, and kept per row as a code into the block's
distinct attribute sets.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.blocks import ObservationBlock, block_from_items
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.csvfile import _CsvHead, _CsvReader, _numbered, decode_line
from iotwarden.sources.options import Item, ReadOptions
from iotwarden.sources.payload import ValuePolicy
from iotwarden.sources.timecolumns import TimeColumnParser

__all__ = ["CHUNK_BYTES", "read_csv_blocks"]

logger = logging.getLogger(__name__)

#: Bytes of whole lines parsed column-wise at once.
CHUNK_BYTES = 8 << 20

_ARROW_BLOCK_BYTES = 1 << 20
_READ_BYTES = 1 << 20
# A row with a larger metric value goes row by row, because the row-by-row
# reader checks the sum of the values for overflow.
_MAX_COLUMNAR_MAGNITUDE = 1e300
# Numbers that float() and pyarrow read alike, for locating bad values in a column.
_PLAIN_DECIMAL = r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


def read_csv_blocks(
    source: str, stream: BinaryIO, options: ReadOptions, counters: SourceCounters
) -> Iterator[Item | ObservationBlock]:
    """Yield the items of one CSV file, with runs of rows as observation blocks.

    ``source`` names the file in messages.
    A file that the column-wise reader does not handle (see the module
    documentation) is yielded item by item, as :func:`read_csv` yields it.
    """
    reader = _CsvReader(source, stream, options, counters)
    head = reader.read_head()
    if head is None:
        return
    chunks = _ChunkReader.create(reader, head)
    if chunks is None:
        yield from reader.rows_after(head)
        return
    sample = reader.convert(head.sample, head.layout, head.delimiter)
    if sample:
        yield block_from_items(source, chunks.metric_names, sample)
    yield from chunks.blocks()


class _ByteLines:
    """A binary stream read as whole lines, a chunk or one line at a time.

    A read error is raised only after the complete lines read before it were
    returned, as iterating over the stream line by line would.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.buffer = b""
        self.at_end = False
        self.error: BaseException | None = None
        self._read = getattr(stream, "read1", stream.read)

    def read_chunk(self, size: int) -> bytes:
        """Return about ``size`` bytes of whole lines (at least one line); b"" when none are left."""
        parts = [self.buffer]
        total = len(self.buffer)
        while not self.at_end:
            if total >= size:
                joined = b"".join(parts)
                cut = joined.rfind(b"\n", 0, size) + 1 or joined.find(b"\n", size) + 1
                if cut:
                    self.buffer = joined[cut:]
                    return joined[:cut]
                parts = [joined]
            more = self._read_more()
            parts.append(more)
            total += len(more)
        data = b"".join(parts)
        cut = data.rfind(b"\n", 0, size) + 1
        if cut and len(data) > size:
            self.buffer = data[cut:]
            return data[:cut]
        return self._take_rest(data)

    def read_line(self) -> bytes:
        """Return the next line with its line break; b"" at the end."""
        while True:
            cut = self.buffer.find(b"\n") + 1
            if cut:
                line, self.buffer = self.buffer[:cut], self.buffer[cut:]
                return line
            if self.at_end:
                return self._take_rest(self.buffer)
            self.buffer += self._read_more()

    def _read_more(self) -> bytes:
        try:
            more = self._read(_READ_BYTES)
        except (OSError, EOFError) as exc:
            self.error = exc
            self.at_end = True
            return b""
        if not more:
            self.at_end = True
        return more

    def _take_rest(self, data: bytes) -> bytes:
        """Return the last bytes: whole lines, or the unterminated last line unless reading failed."""
        self.buffer = b""
        if self.error is None:
            return data
        complete = data[: data.rfind(b"\n") + 1]
        if complete:
            return complete
        error, self.error = self.error, None
        raise error


class _ChunkReader:
    """Read the rest of a CSV file in chunks, column-wise where the rows allow it."""

    def __init__(self, reader: _CsvReader, head: _CsvHead) -> None:
        layout = head.layout
        self.reader = reader
        self.head = head
        self.layout = layout
        self.source = reader.source
        self.counters = reader.counters
        self.delimiter = head.delimiter
        self.delimiter_byte = head.delimiter.encode("ascii")
        self.width = len(layout.columns)
        self.metric_names = tuple(name for name, _ in layout.metric_columns)
        self.device_name = layout.columns[layout.device_index] if layout.device_index is not None else None
        self.fixed_device = reader.options.device
        self.time_names = [layout.columns[index] for index in layout.time_indexes]
        self.attribute_names = [name for name, _ in layout.attribute_columns]
        self.times = TimeColumnParser(reader.time_parser)
        self.lines = _ByteLines(reader.stream)
        self.next_line = head.lines_read() + 1
        self.field_limit = csv.field_size_limit()

        string_columns = [name for name in (self.device_name, *self.time_names, *self.attribute_names) if name is not None]
        self.columns = [*string_columns, *self.metric_names]
        self.number_types = {name: pa.string() for name in string_columns} | {
            name: pa.float64() for name in self.metric_names
        }
        self.text_types = {name: pa.string() for name in self.columns}
        self.empty_is_missing = _empty_is_missing(reader.options.policy)

    @classmethod
    def create(cls, reader: _CsvReader, head: _CsvHead) -> _ChunkReader | None:
        """Return a chunk reader, or None when the file must be read row by row."""
        layout = head.layout
        policy = reader.options.policy
        roles = [index for index in (layout.device_index, *layout.time_indexes) if index is not None]
        metric_indexes = [index for _, index in layout.metric_columns]
        reasons = []
        if not (policy.plain_decimal and not policy.sentinel_values):
            reasons.append("locale number options or sentinel codes")
        if not metric_indexes or len(set(metric_indexes)) != len(metric_indexes) or set(metric_indexes) & set(roles):
            reasons.append("no metric columns, or metric columns that repeat or hold the device or time")
        if len(head.delimiter) != 1 or not head.delimiter.isascii() or head.delimiter in "\"\r\n":
            reasons.append(f"delimiter {head.delimiter!r}")
        if reasons:
            logger.debug("%s: read row by row because of %s", reader.source, "; ".join(reasons))
            return None
        return cls(reader, head)

    def blocks(self) -> Iterator[ObservationBlock]:
        """Yield one block per chunk of the rest of the file."""
        while True:
            data = self.lines.read_chunk(CHUNK_BYTES)
            if not data:
                return
            first_line = self.next_line
            converted = self._columnar_block(data, first_line) if self._is_plain(data) else None
            if converted is None:
                converted = self._row_block(data, first_line)
            block, line_count = converted
            self.next_line += line_count
            if block.size:
                yield block

    # Row by row ------------------------------------------------------------------

    def _row_block(self, data: bytes, first_line: int) -> tuple[ObservationBlock, int]:
        """Convert a chunk row by row, reading on past its end while a quoted field continues."""
        pieces = data.split(b"\n")
        raw_lines = [piece + b"\n" for piece in pieces[:-1]]
        if pieces[-1]:
            raw_lines.append(pieces[-1])
        consumed = 0

        def decoded_lines() -> Iterator[str]:
            nonlocal consumed
            bad_lines = self.reader.bad_lines
            for raw in raw_lines:
                consumed += 1
                yield decode_line(raw, first_line + consumed - 1, bad_lines)
            while raw := self.lines.read_line():
                consumed += 1
                yield decode_line(raw, first_line + consumed - 1, bad_lines)

        reader = csv.reader(decoded_lines(), delimiter=self.delimiter)
        rows = []
        for numbered in _numbered(reader, first_line - 1):
            rows.append(numbered)
            if consumed >= len(raw_lines):
                break
        items = self.reader.convert(rows, self.layout, self.delimiter)
        return block_from_items(self.source, self.metric_names, items), consumed

    # Column-wise -------------------------------------------------------------------

    def _is_plain(self, data: bytes) -> bool:
        """Return True when csv.reader would split every line of ``data`` at each delimiter."""
        if b'"' in data or b"\x00" in data:
            return False
        if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
            return False
        if data.isascii():
            return True
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    def _columnar_block(self, data: bytes, first_line: int) -> tuple[ObservationBlock, int] | None:
        """Convert a plain chunk column-wise, or return None to have it converted row by row."""
        array = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(array == ord("\n"))
        terminated = data.endswith(b"\n")
        line_count = len(ends) + (0 if terminated else 1)
        starts = np.concatenate(([0], ends + 1))[:line_count]
        stops = ends if terminated else np.append(ends, len(data))
        if int((stops - starts).max()) > self.field_limit:
            return None

        invalid_rows: list[int | None] = []
        whole_lines = None
        if data.count(self.delimiter_byte) != (self.width - 1) * line_count:
            whole_lines = self._whole_lines(array, ends, line_count)
        table = self._parse(data, invalid_rows)
        if table is None:
            return None
        if invalid_rows and whole_lines is None:
            whole_lines = self._whole_lines(array, ends, line_count)
        good_lines = np.arange(line_count) if whole_lines is None else np.flatnonzero(whole_lines)
        if table.num_rows != len(good_lines):
            logger.debug("%s:%d: pyarrow read %d rows of %d lines; chunk read row by row", self.source, first_line, table.num_rows, len(good_lines))
            return None

        columns = self._columns(table)
        if columns is None:
            return None
        device_codes, device_names, times, values, usable = columns
        attribute_codes, attribute_sets = self._attributes(table)

        # Lines that the row-by-row conversion handles: wrong field counts, blank lines, unusable rows.
        by_rows = np.ones(line_count, dtype=bool)
        by_rows[good_lines[usable]] = False
        row_lines = np.flatnonzero(by_rows).tolist()
        converted = {
            line: self.reader.convert([(first_line + line, self._split_line(data, int(starts[line]), int(stops[line])))], self.layout, self.delimiter)
            for line in row_lines
        }
        fast_lines = good_lines[usable]
        self.counters.records += len(fast_lines)
        self.counters.observations += len(fast_lines)
        block = self._assemble(
            first_line, line_count, fast_lines, device_codes[usable], device_names, times[usable], values[usable], converted,
            None if attribute_codes is None else attribute_codes[usable], attribute_sets,
        )
        return block, line_count

    def _whole_lines(self, array: np.ndarray, ends: np.ndarray, line_count: int) -> np.ndarray:
        """Return the mask of lines with exactly one field per header column."""
        delimiters = np.flatnonzero(array == self.delimiter_byte[0])
        counts = np.bincount(np.searchsorted(ends, delimiters), minlength=line_count)[:line_count]
        return counts == self.width - 1

    def _parse(self, data: bytes, invalid_rows: list[int | None]) -> pa.Table | None:
        """Parse the chunk with pyarrow, skipping lines with another field count."""

        def skip(row: pa_csv.InvalidRow) -> str:
            invalid_rows.append(row.number)
            return "skip"

        read_options = pa_csv.ReadOptions(
            column_names=self.layout.columns, use_threads=False, block_size=_ARROW_BLOCK_BYTES
        )
        parse_options = pa_csv.ParseOptions(
            delimiter=self.delimiter,
            quote_char=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=True,
            invalid_row_handler=skip,
        )
        for types in (self.number_types, self.text_types):
            invalid_rows.clear()
            convert_options = pa_csv.ConvertOptions(
                column_types=types,
                include_columns=self.columns,
                # Only float columns can be null: text columns keep empty texts.
                null_values=[""] if self.empty_is_missing else [],
                true_values=[],
                false_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            )
            try:
                return pa_csv.read_csv(
                    pa.py_buffer(data),
                    read_options=read_options,
                    parse_options=parse_options,
                    convert_options=convert_options,
                )
            except pa.ArrowInvalid as exc:
                # A value that is not a number: read the metrics as text and find it.
                logger.debug("%s: a chunk has values that are not plain numbers: %s", self.source, exc)
        return None

    def _columns(
        self, table: pa.Table
    ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray] | None:
        """Return device codes, device names, times, values and the mask of rows usable as they are."""
        count = table.num_rows
        values = np.empty((count, len(self.metric_names)), dtype=np.float64)
        usable = np.ones(count, dtype=bool)
        for column, name in enumerate(self.metric_names):
            converted = _float_column(table.column(name), self.empty_is_missing)
            if converted is None:
                return None
            numbers, missing = converted
            values[:, column] = numbers
            fits = np.abs(numbers) < _MAX_COLUMNAR_MAGNITUDE
            usable &= fits if missing is None else fits | missing

        if len(self.time_names) == 1:
            parsed = self.times.parse(table.column(self.time_names[0]).combine_chunks())
        else:
            parsed = self.times.parse_pairs(
                table.column(self.time_names[0]).combine_chunks(), table.column(self.time_names[1]).combine_chunks()
            )
        if parsed is None:
            return None
        times, time_parsed = parsed
        usable &= time_parsed

        if self.device_name is None:
            device_names = [self.fixed_device or ""]
            device_codes = np.zeros(count, dtype=np.int32)
        else:
            encoded = pc.dictionary_encode(table.column(self.device_name).combine_chunks())
            device_names, lookup = _device_lookup(encoded.dictionary.to_pylist())
            device_codes = lookup[encoded.indices.to_numpy(zero_copy_only=False)]
            usable &= device_codes >= 0
        return device_codes, device_names, times, values, usable

    def _attributes(self, table: pa.Table) -> tuple[np.ndarray | None, list[dict[str, str]]]:
        """Return each row's code into the distinct attribute sets, and the sets; code 0 is no attributes.

        Values are stripped and empty ones left out, as the row-by-row
        reader does. Codes are None when the file has no attribute columns.
        """
        if not self.attribute_names:
            return None, [{}]
        texts = []
        indices = []
        for name in self.attribute_names:
            encoded = pc.dictionary_encode(table.column(name).combine_chunks())
            texts.append([text.strip() for text in encoded.dictionary.to_pylist()])
            indices.append(encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64))
        combinations, inverse = np.unique(np.stack(indices, axis=1), axis=0, return_inverse=True)
        index: dict[tuple[tuple[str, str], ...], int] = {(): 0}
        code_of = np.empty(len(combinations), dtype=np.int32)
        for combination, choice in enumerate(combinations.tolist()):
            pairs = tuple(
                (name, texts[column][value])
                for column, (name, value) in enumerate(zip(self.attribute_names, choice))
                if texts[column][value]
            )
            code_of[combination] = index.setdefault(pairs, len(index))
        return code_of[inverse.reshape(-1)], [dict(pairs) for pairs in index]

    def _split_line(self, data: bytes, start: int, stop: int) -> list[str]:
        """Split one line of a plain chunk into fields, as csv.reader does."""
        text = data[start:stop].decode("utf-8")
        if text.endswith("\r"):
            text = text[:-1]
        return text.split(self.delimiter)

    def _assemble(
        self,
        first_line: int,
        line_count: int,
        fast_lines: np.ndarray,
        device_codes: np.ndarray,
        device_names: list[str],
        times: np.ndarray,
        values: np.ndarray,
        converted: dict[int, list[Item]],
        attribute_codes: np.ndarray | None,
        attribute_sets: list[dict[str, str]],
    ) -> ObservationBlock:
        """Merge the column-wise rows and the items of the lines converted row by row, in line order."""
        item_counts = np.ones(line_count, dtype=np.int64)
        for line, items in converted.items():
            item_counts[line] = len(items)
        first_position = np.cumsum(item_counts) - item_counts

        row_lines = fast_lines
        positions = first_position[fast_lines]
        others: list[tuple[int, FieldIssue | Rejection]] = []
        extra: list[Observation] = []
        extra_lines: list[int] = []
        for line, items in converted.items():
            start = int(first_position[line])
            for offset, item in enumerate(items):
                if type(item) is Observation:
                    extra.append(item)
                    extra_lines.append(line)
                else:
                    others.append((start + offset, item))  # type: ignore[arg-type]
        others.sort(key=lambda entry: entry[0])

        if extra:
            names = dict(zip(device_names, range(len(device_names))))
            column_of = {name: column for column, name in enumerate(self.metric_names)}
            extra_values = np.full((len(extra), len(self.metric_names)), np.nan)
            extra_codes = np.empty(len(extra), dtype=np.int32)
            sets = {tuple(attributes.items()): code for code, attributes in enumerate(attribute_sets)}
            extra_attributes = np.empty(len(extra), dtype=np.int32)
            for row, observation in enumerate(extra):
                extra_codes[row] = names.setdefault(observation.device, len(names))
                extra_attributes[row] = sets.setdefault(tuple(observation.attributes.items()), len(sets))
                for name, value in observation.metrics.items():
                    extra_values[row, column_of[name]] = value
            attribute_sets = [dict(pairs) for pairs in sets]
            fast_attributes = np.zeros(len(row_lines), dtype=np.int32) if attribute_codes is None else attribute_codes
            device_names = list(names)
            extra_line_array = np.array(extra_lines, dtype=np.int64)
            order = np.argsort(np.concatenate([row_lines, extra_line_array]), kind="stable")
            row_lines = np.concatenate([row_lines, extra_line_array])[order]
            positions = np.concatenate(
                [positions, first_position[extra_line_array] + item_counts[extra_line_array] - 1]
            )[order]
            device_codes = np.concatenate([device_codes, extra_codes])[order]
            times = np.concatenate([times, np.array([item.time for item in extra])])[order]
            values = np.concatenate([values, extra_values])[order]
            attribute_codes = np.concatenate([fast_attributes, extra_attributes])[order]

        return ObservationBlock(
            source=self.source,
            metric_names=self.metric_names,
            device_names=device_names,
            devices=device_codes,
            times=times,
            values=values,
            lines=row_lines.astype(np.int64) + first_line,
            positions=positions,
            other_items=others,
            size=int(item_counts.sum()),
            attributes=attribute_codes,
            attribute_sets=attribute_sets,
        )


def _float_column(column: pa.ChunkedArray, empty_is_missing: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Return a metric column as floats and the mask of missing (empty) values, or None if that fails.

    A value is NaN where it is missing or where the text is not a plain
    number; the mask is None when no value is missing.
    """
    if column.type == pa.float64():
        numbers = column.to_numpy()
        if not column.null_count:
            return numbers, None
        return numbers, column.is_null().to_numpy()
    texts = column.combine_chunks()
    missing = pc.equal(texts, "") if empty_is_missing else None
    plain = pc.match_substring_regex(texts, _PLAIN_DECIMAL)
    try:
        numbers = pc.cast(pc.if_else(plain, texts, pa.scalar("0")), pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return None
    numbers = numbers.copy()
    numbers[~plain.to_numpy(zero_copy_only=False)] = np.nan
    return numbers, None if missing is None else missing.to_numpy(zero_copy_only=False)


def _empty_is_missing(policy: ValuePolicy) -> bool:
    """Return True when an empty metric text is a missing value wherever it appears in a row.

    The row-by-row reader reads a row with an empty value through the value
    policy, which also drops any value listed as missing or as a sentinel.
    So an empty text can be taken as missing only when none of those lists
    holds a number.
    """
    if "" not in policy.missing_values:
        return False
    for word in policy.missing_values | policy.sentinels:
        try:
            float(word)
        except ValueError:
            continue
        return False
    return True


def _device_lookup(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Return the distinct device ids (stripped) and, per text, its index or -1 for an empty id."""
    names: dict[str, int] = {}
    lookup = np.empty(len(texts), dtype=np.int32)
    for index, text in enumerate(texts):
        name = text.strip()
        lookup[index] = names.setdefault(name, len(names)) if name else -1
    return list(names), lookup
