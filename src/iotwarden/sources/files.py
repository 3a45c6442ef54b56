"""Read observations from CSV, JSON-lines and MQTT recording files.

:func:`read_records` yields, in file order, an :class:`Observation` for each
accepted record, a :class:`FieldIssue` (before its observation) for each
metric value dropped under the value policy of
:mod:`iotwarden.sources.payload`, and a :class:`Rejection` for each record
that cannot be used. Line numbers are physical lines; the CSV header is line 1.

Files may be gzip-compressed (recognised by the magic bytes, whatever the
suffix), ``-`` reads standard input, and a UTF-8 byte-order mark is skipped.
Three formats are read:

* ``csv``: a header row, then one record per row. The delimiter (``,``, ``;``,
  tab or ``|``) is taken from the header unless given. Column roles are
  chosen once per file from the header and the first
  :data:`SAMPLE_ROWS` rows: the device and time columns by name, metrics as
  the columns whose values look numeric, attributes as the other text columns.
* ``jsonl``: one JSON object per line. Nested objects are flattened with
  dotted names. A wrapper object with ``topic`` and ``payload`` or
  ``payload_b64`` (as MQTT recorders write) is unwrapped; its topic is added
  to the source as ``path#topic`` and its ``recv_at`` is the event time when
  the payload has none.
* ``mqtt``: one message per line as ``<topic> <payload>``.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

from iotwarden.errors import InvalidConfigError, IotwardenError
from iotwarden.sources.blocks import ObservationBlock, RecordStream
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.csvblocks import read_csv_blocks
from iotwarden.sources.csvfile import read_csv
from iotwarden.sources.jsonlines import read_json_lines, read_topic_lines
from iotwarden.sources.options import UTF8_BOM, Format, Item, ReadOptions
from iotwarden.sources.payload import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MISSING_VALUES,
    DEFAULT_SENTINELS,
    ValuePolicy,
)
from iotwarden.sources.timeparse import TimeParser

__all__ = ["Item", "open_binary", "open_text", "read_records"]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_SUFFIX_FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def read_records(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    format: Format | None = None,
    device_column: str | None = None,
    device: str | None = None,
    time_column: str | tuple[str, str] | None = None,
    time_format: str | None = None,
    timezone: str = "UTC",
    metrics: Sequence[str] | None = None,
    attribute_columns: Sequence[str] | None = None,
    ignore_columns: Collection[str] = (),
    delimiter: str | None = None,
    decimal: str = ".",
    thousands: str | None = None,
    day_first: bool = False,
    missing_values: Iterable[str] = DEFAULT_MISSING_VALUES,
    sentinels: Iterable[str] = DEFAULT_SENTINELS,
    sentinel_values: Mapping[str, Iterable[float]] | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    tolerant_json: bool = True,
    topic_device_segment: int | None = None,
    counters: SourceCounters | None = None,
) -> RecordStream:
    """Read records from files and yield observations, field issues and rejections.

    Options are checked when this function is called; the files are opened
    as the iterator is consumed. The returned :class:`RecordStream` also
    offers the items with CSV observations in column blocks, through
    :meth:`RecordStream.blocks`.

    Args:
        paths: One path or several; ``-`` is standard input.
        format: ``csv``, ``jsonl`` or ``mqtt``; None guesses from the suffix
            (``.gz`` ignored) and, for standard input or other suffixes, from
            the first byte (``{`` means JSON lines).
        device_column: Column (or JSON field) of the device id; default: the
            first of ``device_id``, ``device``, ``dev_id`` and similar names.
        device: Device id for every record, for files of a single device.
        time_column: Column of the event time, or a ``(date, time)`` pair of
            columns; default: ``ts``, ``timestamp``, ``datetime`` and similar
            names, then the ``date`` and ``time`` pair, then ``time`` alone.
        time_format: None (detect), ``iso``, ``epoch``, ``epoch_ms`` or a
            strptime format; see :mod:`iotwarden.sources.timeparse`.
        timezone: IANA zone of times written without an offset.
        metrics: Only these columns are metrics; default: every other column
            whose sampled values look numeric.
        attribute_columns: Only these columns are attributes; default: every
            other column whose sampled values are text.
        ignore_columns: Columns that are neither metrics nor attributes, such
            as ground-truth labels.
        delimiter: CSV delimiter; default: detected from the header.
        decimal: Decimal separator of CSV numbers, ``.`` or ``,``.
        thousands: Thousands separator of CSV numbers, or None.
        day_first: Read slash dates such as ``01/05/2024`` as day first.
        missing_values: Texts that mean "no value" (dropped silently).
        sentinels: Texts that mean "no reading" (dropped and reported).
        sentinel_values: Per metric, numeric codes that mean "no reading".
        max_payload_bytes: Largest JSON record or message payload, in bytes.
        tolerant_json: Retry JSON with bare ``nan``/``inf`` tokens so that the
            other fields survive; see :mod:`iotwarden.sources.payload`.
        topic_device_segment: For MQTT lines and envelopes, take the device
            id from this ``/``-separated part of the topic (0-based), for
            example 1 for ``fleet/<device>/telemetry``.
        counters: Collects the counts of records, observations, rejections
            and field issues.

    Raises:
        InvalidConfigError: an option is invalid (when called), or a file
            does not match the options: it is missing or unreadable, a named
            column is absent, no device or time column is found, or no
            sampled value of a metric column is a valid number (while
            iterating). The message names the file, line, field and fix.
        IotwardenError: a file cannot be read to its end (for example a
            truncated gzip stream).
    """
    if format is not None and format not in ("csv", "jsonl", "mqtt"):
        raise InvalidConfigError(f"invalid format {format!r}: expected 'csv', 'jsonl', 'mqtt' or None")
    if device is not None and device_column is not None:
        raise InvalidConfigError("device and device_column are both set: give a fixed device id or a column, not both")
    if device is not None and not device.strip():
        raise InvalidConfigError("invalid device '': expected a non-empty device id")
    if delimiter is not None and len(delimiter) != 1:
        raise InvalidConfigError(f"invalid delimiter {delimiter!r}: expected one character such as ',' or ';'")
    if max_payload_bytes <= 0:
        raise InvalidConfigError(f"invalid max_payload_bytes {max_payload_bytes!r}: expected a positive number")
    if isinstance(time_column, (list, tuple)) and len(time_column) != 2:
        raise InvalidConfigError(f"invalid time_column {time_column!r}: expected a column name or a (date, time) pair")
    # Build the time parser once to check time_format and timezone now.
    TimeParser(time_format, timezone=timezone, day_first=day_first)

    options = ReadOptions(
        format=format,
        device_column=device_column,
        device=device.strip() if device is not None else None,
        time_column=tuple(time_column) if isinstance(time_column, (list, tuple)) else time_column,  # type: ignore[arg-type]
        time_format=time_format,
        timezone=timezone,
        day_first=day_first,
        metrics=tuple(metrics) if metrics is not None else None,
        attribute_columns=tuple(attribute_columns) if attribute_columns is not None else None,
        ignore_columns=frozenset(ignore_columns),
        delimiter=delimiter,
        policy=ValuePolicy(
            missing_values=missing_values,
            sentinels=sentinels,
            sentinel_values=sentinel_values,
            decimal=decimal,
            thousands=thousands,
        ),
        max_payload_bytes=max_payload_bytes,
        tolerant_json=tolerant_json,
        topic_device_segment=topic_device_segment,
    )
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    names = [os.fspath(path) for path in paths]
    return RecordStream(lambda blocks: _read_all(names, options, counters, blocks))


def _read_all(
    paths: list[str], options: ReadOptions, counters: SourceCounters | None, blocks: bool = False
) -> Iterator[Item | ObservationBlock]:
    for path in paths:
        file_counters = SourceCounters()
        try:
            yield from _read_file(path, options, file_counters, blocks)
        finally:
            if counters is not None:
                counters.update(file_counters)
        _log_summary(path, file_counters)


def _read_file(
    path: str, options: ReadOptions, counters: SourceCounters, blocks: bool = False
) -> Iterator[Item | ObservationBlock]:
    source = "<stdin>" if path == "-" else path
    with open_binary(path) as stream:
        file_format = options.format or _guess_format(path, stream)
        logger.debug("reading %s as %s", source, file_format)
        try:
            if file_format == "csv" and blocks:
                yield from read_csv_blocks(source, stream, options, counters)
            elif file_format == "csv":
                yield from read_csv(source, stream, options, counters)
            elif file_format == "jsonl":
                yield from read_json_lines(source, stream, options, counters)
            else:
                yield from read_topic_lines(source, stream, options, counters)
        except (OSError, EOFError) as exc:
            raise IotwardenError(f"{source}: failed to read the file: {exc}") from exc


def _log_summary(source: str, counters: SourceCounters) -> None:
    if counters.rejected:
        reasons = ", ".join(f"{code} {count}" for code, count in counters.rejections.most_common())
        logger.warning(
            "read %s: %d records, %d observations, %d rejected (%s), %d field issues",
            source,
            counters.records,
            counters.observations,
            counters.rejected,
            reasons,
            sum(counters.field_issues.values()),
        )
    else:
        logger.info(
            "read %s: %d records, %d observations, %d field issues",
            source,
            counters.records,
            counters.observations,
            sum(counters.field_issues.values()),
        )


# Opening files.


@contextmanager
def open_binary(path: str) -> Iterator[BinaryIO]:
    """Open an input file (``-`` is standard input) for reading bytes.

    A gzip stream is recognised by its magic bytes, whatever the file's name,
    and decompressed. A missing or unreadable file raises InvalidConfigError.
    """
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        owned = False
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise InvalidConfigError(f"input file not found: {path}") from None
        except OSError as exc:
            raise InvalidConfigError(f"cannot open input file {path}: {exc.strerror or exc}") from None
        owned = True
    try:
        if not hasattr(raw, "peek"):
            raw = io.BufferedReader(raw)  # type: ignore[arg-type]
        if raw.peek(2)[:2] == _GZIP_MAGIC:  # type: ignore[attr-defined]
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield io.BufferedReader(unzipped)  # type: ignore[arg-type]
        else:
            yield raw
    finally:
        if owned:
            raw.close()


@contextmanager
def open_text(path: str) -> Iterator[TextIO]:
    """Open an input file like :func:`open_binary`, as UTF-8 text with invalid bytes replaced."""
    with open_binary(path) as binary:
        yield io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")  # type: ignore[arg-type]


def _guess_format(path: str, stream: BinaryIO) -> Format:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".mqtt.txt"):
        return "mqtt"
    suffix = Path(name).suffix
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    head = stream.peek(64).removeprefix(UTF8_BOM).lstrip()  # type: ignore[attr-defined]
    return "jsonl" if head.startswith(b"{") else "csv"
