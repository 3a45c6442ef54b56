"""Times at the API boundary: ISO 8601 or epoch seconds in, ISO 8601 UTC out."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from iotwarden.observation import format_time

__all__ = ["MAX_EPOCH", "iso", "parse_when"]

# 9999-12-31T23:59:59Z, the last second that ISO 8601 without extensions can write.
MAX_EPOCH = 253402300799.0


def parse_when(value: object, field: str) -> float | None:
    """Return epoch seconds for an ISO 8601 string (naive means UTC) or a number of epoch seconds.

    Raises ValueError naming ``field`` for anything else or for a time outside
    1970-01-01 .. 9999-12-31.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected an ISO 8601 time or epoch seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=timezone.utc)
                seconds = moment.timestamp()
            except (ValueError, OverflowError, OSError):
                raise ValueError(f"{field}: invalid time {value!r:.60}; expected ISO 8601 such as 2024-05-01T10:00:00Z or epoch seconds") from None
    else:
        raise ValueError(f"{field}: expected an ISO 8601 time or epoch seconds, got {type(value).__name__}")
    if not math.isfinite(seconds) or not 0.0 <= seconds <= MAX_EPOCH:
        raise ValueError(f"{field}: time {value!r:.60} is outside 1970-01-01 .. 9999-12-31")
    return seconds


def iso(seconds: float | None) -> str | None:
    """Format epoch seconds as ISO 8601 UTC, None as None."""
    if seconds is None:
        return None
    try:
        return format_time(seconds)
    except (OverflowError, OSError, ValueError):
        return None
