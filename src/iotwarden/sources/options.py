"""Options and helpers shared by the file readers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.payload import ValuePolicy

__all__ = ["Format", "Item", "ReadOptions", "log_rejection", "raw_line_text"]

logger = logging.getLogger(__name__)

Item = Observation | FieldIssue | Rejection
Format = Literal["csv", "jsonl", "mqtt"]

UTF8_BOM = b"\xef\xbb\xbf"
# Raw text kept in a Rejection; the dead-letter writer truncates further.
MAX_RAW_CHARS = 8192
# Rejections logged one by one per file before only the summary is logged.
_LOGGED_REJECTIONS = 5


@dataclass(frozen=True)
class ReadOptions:
    """The checked options of :func:`~iotwarden.sources.files.read_records`."""

    format: Format | None
    device_column: str | None
    device: str | None
    time_column: str | tuple[str, str] | None
    time_format: str | None
    timezone: str
    day_first: bool
    metrics: tuple[str, ...] | None
    attribute_columns: tuple[str, ...] | None
    ignore_columns: frozenset[str]
    delimiter: str | None
    policy: ValuePolicy
    max_payload_bytes: int
    tolerant_json: bool
    topic_device_segment: int | None


class LogState:
    """Number of rejections logged for one file."""

    def __init__(self) -> None:
        self.logged_rejections = 0


def log_rejection(state: LogState, rejection: Rejection) -> None:
    """Log the first rejections of a file; the summary at the end counts the rest."""
    if state.logged_rejections < _LOGGED_REJECTIONS:
        state.logged_rejections += 1
        logger.warning("rejected %s", rejection)
    elif state.logged_rejections == _LOGGED_REJECTIONS:
        state.logged_rejections += 1
        logger.warning("%s: more rejections follow; they are counted in the summary", rejection.source.split("#")[0])


def raw_line_text(raw: bytes) -> str:
    """Return the start of a raw line as text for a Rejection."""
    return raw[:MAX_RAW_CHARS].decode("utf-8", errors="replace").rstrip("\r\n")
