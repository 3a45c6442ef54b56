"""The record that every source produces and the engine consumes.

An :class:`Observation` is one report of one device at one event time: named
numeric metrics and string attributes. Sources validate at the boundary, so
past it a metric value is always a finite float and a missing metric is
absent from ``metrics`` (never 0, never NaN).

Records that cannot become an observation are returned as :class:`Rejection`;
a metric that was dropped from an otherwise good record is reported as a
:class:`FieldIssue`. Both name the source, the line or message and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

__all__ = ["FieldIssue", "Observation", "Rejection", "format_time", "parse_time"]


@dataclass(slots=True)
class Observation:
    """One device report.

    Attributes:
        device: Device id as the source names it (after normalisation).
        time: Event time in seconds since the Unix epoch, UTC.
        metrics: Metric name to finite value. Missing metrics are absent.
        attributes: String attributes, for example ``device_type``.
        source: Where the record came from (a file path, ``mqtt://host/topic``).
        line: Physical line in ``source`` (the header is line 1), or the
            message sequence number for a stream; None when unknown.
    """

    device: str
    time: float
    metrics: dict[str, float]
    attributes: dict[str, str] = field(default_factory=dict)
    source: str = ""
    line: int | None = None

    def __post_init__(self) -> None:
        if not self.device:
            raise ValueError("Observation.device must be a non-empty string")
        if not math.isfinite(self.time):
            raise ValueError(f"Observation.time must be finite, got {self.time!r}")

    @property
    def datetime(self) -> datetime:
        """Event time as a timezone-aware UTC datetime."""
        return datetime.fromtimestamp(self.time, tz=timezone.utc)

    @property
    def where(self) -> str:
        """Source and line as one string, for messages."""
        return _where(self.source, self.line)


@dataclass(slots=True, frozen=True)
class Rejection:
    """A record that was not accepted, kept for the dead-letter file.

    Attributes:
        source: File path or stream address.
        line: Physical line or message number; None when unknown.
        field: The field at fault; None when the whole record is at fault.
        reason: What is wrong, in words a user can act on.
        raw: The raw record as text (truncated by the writer if very long).
        kind: ``rejected`` for a dropped record, ``duplicate`` for an exact
            duplicate that was dropped on purpose.
    """

    source: str
    line: int | None
    field: str | None
    reason: str
    raw: str = ""
    kind: str = "rejected"

    def __str__(self) -> str:
        where = _where(self.source, self.line)
        if self.field:
            return f"{where}: field {self.field!r}: {self.reason}"
        return f"{where}: {self.reason}"


@dataclass(slots=True, frozen=True)
class FieldIssue:
    """A metric dropped from a record that was otherwise accepted.

    Example: ``"humidity": NaN`` or ``"rh": "not available"``. The rest of
    the record is used; this field is treated as missing and counted.
    """

    source: str
    line: int | None
    field: str
    reason: str
    raw: str = ""  # the record the field came from, where the reader has its text

    def __str__(self) -> str:
        return f"{_where(self.source, self.line)}: field {self.field!r}: {self.reason}"


def format_time(epoch_seconds: float) -> str:
    """Format epoch seconds as ISO 8601 UTC with a ``Z`` suffix."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
    text = moment.isoformat(timespec="milliseconds" if epoch_seconds % 1 else "seconds")
    return text.replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """Parse an ISO 8601 time (naive means UTC) into epoch seconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _where(source: str, line: int | None) -> str:
    if line is None:
        return source or "<unknown source>"
    return f"{source or '<unknown source>'}:{line}"
