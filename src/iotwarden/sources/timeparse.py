"""Event-time parsing for file and message sources.

:class:`TimeParser` turns the text of a time field into seconds since the
Unix epoch (UTC). It is built once per file or stream, so the choice of
format and time zone is made once and each value costs one parse.

Formats (``time_format``):

* ``None`` (auto): ISO 8601 as :meth:`datetime.fromisoformat` reads it in
  Python 3.11 (``2024-05-01T10:00:00Z``, ``2024-05-01 10:00:00+02:00``, basic
  format, fractions), then epoch numbers, then a short list of common day or
  month layouts (``01.05.2024 10:00:00``, ``25-Apr-19 19:19:40``,
  ``05/01/2024 10:00``). The first layout that fits a value is remembered and
  tried first for the next values.
* ``"iso"``: ISO 8601 only.
* ``"epoch"`` / ``"epoch_ms"``: a number of seconds / milliseconds.
* any other string: a :meth:`datetime.strptime` format.

Auto-detected epoch numbers are read as milliseconds when their magnitude is
at least 1e11. As seconds, 1e11 is past the year 5000, while millisecond
stamps of today are about 1.7e12.

Naive times (no offset in the text) are read in ``timezone``, an IANA name
such as ``Europe/Paris`` (default UTC). A local time that occurs twice when
clocks go back is read as the first occurrence (``fold=0``), and a local time
skipped when clocks go forward is shifted as :mod:`zoneinfo` shifts it.

Slash dates are month first (``05/01/2024`` is 1 May) unless
``day_first=True``. Dotted dates (``01.05.2024``) are always day first,
because that is the only convention that writes dates with dots.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, tzinfo
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from iotwarden.errors import InvalidConfigError

__all__ = ["TimeParser", "resolve_timezone"]

logger = logging.getLogger(__name__)

_EPOCH_NAIVE = datetime(1970, 1, 1)
_EPOCH_MS_THRESHOLD = 1e11
# Bounds of a plausible event time: 1970-01-01 up to 2200-01-01 (UTC).
_MIN_TIME = 0.0
_MAX_TIME = 7258118400.0

_DAY_FIRST_LAYOUTS = (
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M:%S.%f",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d-%b-%y %H:%M:%S",
    "%d-%b-%Y %H:%M:%S",
    "%d-%b-%y",
    "%d-%b-%Y",
    "%d %b %Y %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
)
_SLASH_MONTH_FIRST = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%m/%d/%y %H:%M:%S", "%m/%d/%y %H:%M")
_SLASH_DAY_FIRST = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y", "%d/%m/%y %H:%M:%S", "%d/%m/%y %H:%M")

_NAMED_FORMATS = ("iso", "epoch", "epoch_ms")


def resolve_timezone(name: str) -> tzinfo:
    """Return the zone for an IANA name; raise InvalidConfigError if it is unknown."""
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return dt_timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidConfigError(
            f"invalid timezone {name!r}: expected an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from exc


class TimeParser:
    """Parse time fields into epoch seconds (UTC).

    Args:
        time_format: ``None`` (auto), ``"iso"``, ``"epoch"``, ``"epoch_ms"``
            or a :meth:`datetime.strptime` format.
        timezone: IANA zone applied to naive times.
        day_first: Read ``01/05/2024`` as 1 May instead of 5 January.

    :meth:`parse` raises :class:`ValueError` with a message naming the value
    and the format tried; callers add the field and line.
    """

    def __init__(self, time_format: str | None = None, *, timezone: str = "UTC", day_first: bool = False) -> None:
        if time_format is not None and time_format not in _NAMED_FORMATS and "%" not in time_format:
            raise InvalidConfigError(
                f"invalid time format {time_format!r} (--time-format): expected 'iso', 'epoch', 'epoch_ms' "
                "or a strptime format such as '%d.%m.%Y %H:%M:%S'; leave it unset to detect the format"
            )
        self.time_format = time_format
        self.timezone = timezone
        self.day_first = day_first
        self._zone = resolve_timezone(timezone)
        self._naive_is_utc = self._zone is dt_timezone.utc
        slash = _SLASH_DAY_FIRST if day_first else _SLASH_MONTH_FIRST
        self._layouts: list[str] = list(_DAY_FIRST_LAYOUTS + slash)
        self.parse: Callable[[str], float] = self._select_parser(time_format)

    def _select_parser(self, time_format: str | None) -> Callable[[str], float]:
        if time_format is None:
            return self._parse_auto
        if time_format == "iso":
            return self._parse_iso_only
        if time_format == "epoch":
            return self._parse_epoch_seconds
        if time_format == "epoch_ms":
            return self._parse_epoch_ms
        return self._parse_strptime

    def parse_number(self, number: float) -> float:
        """Parse an epoch number from a JSON value, with the rules of ``time_format``."""
        if not math.isfinite(number):
            raise ValueError(f"time {number!r} is not a finite number")
        if self.time_format == "epoch":
            return _check_range(float(number))
        if self.time_format == "epoch_ms":
            return _check_range(number / 1000.0)
        if self.time_format is None:
            return _check_range(number / 1000.0 if abs(number) >= _EPOCH_MS_THRESHOLD else float(number))
        raise ValueError(f"time {number!r} is a number but time_format is {self.time_format!r}")

    def parse_pair(self, date_text: str, time_text: str) -> float:
        """Parse a date field and a time-of-day field, such as ``25-Apr-19`` and `` 19:19:40 ``."""
        return self.parse(f"{date_text.strip()} {time_text.strip()}")

    # Conversion of a parsed datetime to epoch seconds.

    def _to_epoch(self, moment: datetime) -> float:
        if moment.tzinfo is None:
            if self._naive_is_utc:
                # Subtracting a naive epoch avoids attaching a tzinfo, which
                # costs about four times the parse itself.
                seconds = (moment - _EPOCH_NAIVE).total_seconds()
            else:
                seconds = moment.replace(tzinfo=self._zone).timestamp()
        else:
            seconds = moment.timestamp()
        return _check_range(seconds)

    # One parser per time_format.

    def _parse_auto(self, text: str) -> float:
        try:
            return self._to_epoch(datetime.fromisoformat(text))
        except ValueError:
            # Either not ISO 8601 or out of range; the slow path below tells
            # the two apart.
            pass
        stripped = text.strip()
        if not stripped:
            raise ValueError("time is empty")
        try:
            moment = datetime.fromisoformat(stripped)
        except ValueError:
            moment = None
        if moment is not None:
            return self._to_epoch(moment)
        try:
            number = float(stripped)
        except ValueError:
            return self._parse_layouts(stripped)
        if not math.isfinite(number):
            raise ValueError(f"time {text!r} is not a finite number")
        if abs(number) >= _EPOCH_MS_THRESHOLD:
            number /= 1000.0
        return _check_range(number)

    def _parse_iso_only(self, text: str) -> float:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError as exc:
            raise ValueError(f"time {text!r} is not ISO 8601 ({exc})") from None
        return self._to_epoch(moment)

    def _parse_epoch_seconds(self, text: str) -> float:
        return _check_range(_parse_epoch_number(text))

    def _parse_epoch_ms(self, text: str) -> float:
        return _check_range(_parse_epoch_number(text) / 1000.0)

    def _parse_strptime(self, text: str) -> float:
        assert self.time_format is not None
        try:
            moment = datetime.strptime(text.strip(), self.time_format)
        except ValueError:
            raise ValueError(f"time {text!r} does not match format {self.time_format!r}") from None
        return self._to_epoch(moment)

    def _parse_layouts(self, text: str) -> float:
        for index, layout in enumerate(self._layouts):
            try:
                moment = datetime.strptime(text, layout)
            except ValueError:
                continue
            if index:
                # Move the layout that fits to the front: files keep one layout.
                self._layouts.insert(0, self._layouts.pop(index))
                logger.debug("time layout %r detected from %r", layout, text)
            return self._to_epoch(moment)
        raise ValueError(
            f"time {text!r} is not ISO 8601, an epoch number or a known date layout; "
            "give its format with --time-format, or time_format in a configuration file (for example '%d.%m.%Y %H:%M:%S')"
        )


def _parse_epoch_number(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"time {text!r} is not an epoch number") from None
    if not math.isfinite(number):
        raise ValueError(f"time {text!r} is not a finite number")
    return number


def _check_range(seconds: float) -> float:
    if not _MIN_TIME <= seconds < _MAX_TIME:
        raise ValueError(f"time {seconds!r} s since the epoch is outside 1970-01-01..2200-01-01")
    return seconds
