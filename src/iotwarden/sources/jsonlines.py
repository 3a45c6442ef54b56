"""JSON-lines and MQTT-recording reading, one record or message per line.

Each line is read with a size bound, so one huge line costs bounded memory:
it is skipped in chunks and rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import BinaryIO

from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.options import UTF8_BOM, Item, LogState, ReadOptions, log_rejection, raw_line_text
from iotwarden.sources.payload import (
    PayloadParser,
    RecordError,
    decode_json_object,
    device_from_topic,
    flatten,
    unwrap_envelope,
)

__all__ = ["read_json_lines", "read_topic_lines"]

logger = logging.getLogger(__name__)

# An envelope line carries its payload base64-encoded (4/3 larger) plus the
# topic and other fields. Lines up to twice the payload limit are read, so an
# envelope somewhat over the limit is still rejected with its decoded size.
_ENVELOPE_OVERHEAD_BYTES = 4096


def read_json_lines(source: str, stream: BinaryIO, options: ReadOptions, counters: SourceCounters) -> Iterator[Item]:
    """Yield the items of a file with one JSON object (or message envelope) per line."""
    return _JsonLineReader(source, options).read(stream, counters)


def read_topic_lines(source: str, stream: BinaryIO, options: ReadOptions, counters: SourceCounters) -> Iterator[Item]:
    """Yield the items of a file with one ``<topic> <payload>`` message per line."""
    return _TopicLineReader(source, options).read(stream, counters)


class _LineReader:
    """The loop shared by the line formats; subclasses parse one line."""

    def __init__(self, source: str, options: ReadOptions, line_limit: int) -> None:
        self.source = source
        self.options = options
        self.line_limit = line_limit
        self.parser = _payload_parser(options)
        # Source of the current line, with the topic when the line names one.
        self.item_source = source

    def read(self, stream: BinaryIO, counters: SourceCounters) -> Iterator[Item]:
        log_state = LogState()
        for line, (raw, size) in enumerate(_bounded_lines(stream, self.line_limit), 1):
            if line == 1 and raw.startswith(UTF8_BOM):
                raw = raw[3:]
            if raw and not raw.strip():
                continue
            counters.records += 1
            self.item_source = self.source
            try:
                if not raw:
                    raise RecordError(
                        f"line too large: {size} bytes, over the limit of {self.line_limit} bytes", code="too_large"
                    )
                observation, issues = self.parse_line(raw, line, size)
            except RecordError as exc:
                counters.rejections[exc.code] += 1
                rejection = Rejection(self.item_source, line, exc.field, exc.reason, raw=raw_line_text(raw))
                log_rejection(log_state, rejection)
                yield rejection
                continue
            for issue in issues:
                counters.field_issues[issue.field] += 1
                yield issue
            counters.observations += 1
            yield observation

    def parse_line(self, raw: bytes, line: int, size: int) -> tuple[Observation, list[FieldIssue]]:
        raise NotImplementedError

    def device_for_topic(self, topic: str) -> str | None:
        if self.options.topic_device_segment is not None:
            return device_from_topic(topic, self.options.topic_device_segment)
        return self.options.device


class _JsonLineReader(_LineReader):
    def __init__(self, source: str, options: ReadOptions) -> None:
        super().__init__(source, options, options.max_payload_bytes * 2 + _ENVELOPE_OVERHEAD_BYTES)

    def parse_line(self, raw: bytes, line: int, size: int) -> tuple[Observation, list[FieldIssue]]:
        max_bytes = self.options.max_payload_bytes
        obj = decode_json_object(raw, max_bytes=self.line_limit, tolerant=self.options.tolerant_json)
        topic = obj.get("topic")
        if isinstance(topic, str):
            self.item_source = f"{self.source}#{topic}"
        envelope = unwrap_envelope(obj, max_bytes=max_bytes)
        if envelope is None:
            # Only an envelope may exceed max_bytes, by its base64 overhead.
            if size > max_bytes:
                raise RecordError(
                    f"payload too large: {size} bytes, over the limit of {max_bytes} bytes", code="too_large"
                )
            return self.parser.build(flatten(obj), source=self.source, line=line, device=self.options.device)
        return self.parser.parse(
            envelope.payload,
            source=self.item_source,
            line=line,
            device=self.device_for_topic(envelope.topic),
            fallback_time=envelope.received,
        )


class _TopicLineReader(_LineReader):
    def __init__(self, source: str, options: ReadOptions) -> None:
        super().__init__(source, options, options.max_payload_bytes + _ENVELOPE_OVERHEAD_BYTES)

    def parse_line(self, raw: bytes, line: int, size: int) -> tuple[Observation, list[FieldIssue]]:
        topic_bytes, separator, payload = raw.rstrip(b"\r\n").partition(b" ")
        if not separator or not topic_bytes:
            raise RecordError("line is not '<topic> <payload>': no space after the topic", code="invalid_line")
        topic = topic_bytes.decode("utf-8", errors="replace")
        self.item_source = f"{self.source}#{topic}"
        return self.parser.parse(payload, source=self.item_source, line=line, device=self.device_for_topic(topic))


def _payload_parser(options: ReadOptions) -> PayloadParser:
    return PayloadParser(
        device_field=options.device_column,
        time_field=options.time_column,
        time_format=options.time_format,
        timezone=options.timezone,
        day_first=options.day_first,
        metrics=options.metrics,
        attribute_fields=options.attribute_columns,
        ignore_fields=options.ignore_columns,
        policy=options.policy,
        max_bytes=options.max_payload_bytes,
        tolerant=options.tolerant_json,
    )


def _bounded_lines(stream: BinaryIO, limit: int) -> Iterator[tuple[bytes, int]]:
    """Yield ``(line, size)``; a line over ``limit`` bytes is skipped and yielded as ``(b"", size)``."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line, len(line)
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = stream.readline(1 << 20)
            if not line:
                break
            size += len(line)
        yield b"", size
