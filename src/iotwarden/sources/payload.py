"""Value policy and JSON payload parsing, shared by file and message sources.

Value policy for a metric field (:class:`ValuePolicy`):

* A metric value is a finite float. JSON integers and floats are accepted.
  Integers too large for a float are invalid.
* Booleans are never numbers: JSON ``true``, and the strings ``"true"`` and
  ``"false"`` in a metric field, are invalid. In Python ``True`` is an
  ``int``, so a plain numeric check would read it as 1.
* Quoted numbers such as ``"618"`` are accepted as 618.0, because many
  firmwares quote every value. The text is read by :func:`float`, so leading
  and trailing spaces and ``_`` between digits are allowed.
* ``null``, an empty string and the missing values (default ``""``,
  ``null``, ``none``, any case) make the field missing without a report.
* Non-finite numbers (JSON ``NaN``, ``Infinity``, ``-Infinity``, CSV
  ``nan``, ``inf``) and sentinel strings (``"not available"``, ``"n/a"``,
  ``"off"``, ``"-"`` and the rest of :data:`DEFAULT_SENTINELS`) make the
  field missing and are reported as a :class:`~iotwarden.observation.FieldIssue`.
  So are numeric sentinel codes configured per field (``sentinel_values``,
  for example 32768 for a counter that reports 0x8000 when it has no value).
* Any other text (``"6,20e2"``, ``"abc"``) is invalid and reported as a
  FieldIssue. A comma between digits gets a hint about the ``decimal``
  option.
* A record is kept, with the remaining metrics, while at least one metric
  is valid. A record whose metrics are all invalid is rejected, because that
  points to a format problem rather than a faulty sensor. A record whose
  metrics are all missing or non-finite is kept with no metrics, so that it
  still counts as a sign of life.

JSON payloads (:func:`decode_json_object`):

* A payload larger than ``max_bytes`` (default 256 KiB) is rejected before
  it is decoded.
* The payload must be UTF-8 (a byte-order mark is skipped) and one JSON
  object. Arrays, strings and numbers are rejected, and so is truncated JSON.
* Python's :mod:`json` accepts ``NaN`` and ``Infinity``. Those tokens become
  non-finite markers, so the field is reported and dropped. With
  ``tolerant=True`` (default), a payload that fails to parse is retried once
  with bare ``nan``, ``inf`` and ``infinity`` tokens outside strings (any case,
  optional sign) rewritten to the tokens that :mod:`json` accepts. The healthy
  fields of a multi-sensor message then survive.
* Nested objects are flattened with dotted names (``sensors.s1.temperature``).
  Lists are ignored.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from iotwarden.errors import InvalidConfigError, InvalidRecordError
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.timeparse import TimeParser

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_MISSING_VALUES",
    "DEFAULT_SENTINELS",
    "DEVICE_FIELDS",
    "TIME_FIELDS",
    "Envelope",
    "MetricValueError",
    "PayloadParser",
    "RecordError",
    "ValuePolicy",
    "decode_json_object",
    "device_from_topic",
    "flatten",
    "no_valid_metric_error",
    "split_topic_line",
    "unwrap_envelope",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024

DEFAULT_MISSING_VALUES: frozenset[str] = frozenset({"", "null", "none"})

DEFAULT_SENTINELS: frozenset[str] = frozenset(
    {
        "not available",
        "unavailable",
        "n/a",
        "na",
        "n.a.",
        "#n/a",
        "off",
        "-",
        "--",
        "?",
        "error",
        "err",
        "unknown",
        "undefined",
    }
)

# Field names recognised as the device id and the event time, in order of
# preference. Matching ignores case.
# A ``date`` plus ``time`` pair is preferred over a lone ``time`` field,
# which then holds only the time of day.
DEVICE_FIELDS = ("device_id", "deviceid", "device", "dev_id", "devid", "device_name", "sensor_id", "node_id")
TIME_FIELDS = ("ts", "timestamp", "datetime", "date_time", "event_time", "@timestamp", "time", "date")
_FULL_TIME_FIELDS = TIME_FIELDS[:-2]

_BOOLEAN_WORDS = frozenset({"true", "false"})
_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
_THOUSANDS_GROUPING = {
    ".": re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+(?:,\d*)?"),
    ",": re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?(?:[eE][+-]?\d+)?"),
    " ": re.compile(r"[+-]?\d{1,3}(?: \d{3})+(?:[.,]\d*)?"),
    "'": re.compile(r"[+-]?\d{1,3}(?:'\d{3})+(?:[.,]\d*)?"),
}

# A JSON string, or a bare non-finite token outside strings. Strings are
# matched first, so tokens inside them are left alone.
_BARE_NONFINITE = re.compile(
    r'"(?:[^"\\]|\\.)*"|(?<![\w.])([+-]?)(nan|inf(?:inity)?)(?![\w.])',
    re.IGNORECASE,
)


class RecordError(InvalidRecordError):
    """A record was rejected; ``code`` is a short reason key for counters."""

    def __init__(self, reason: str, *, code: str, field: str | None = None) -> None:
        super().__init__(reason, field=field)
        self.code = code


class MetricValueError(ValueError):
    """A metric value is not usable.

    ``invalid`` is True for text that is not a number at all (it counts
    towards rejecting the record) and False for a value that stands for
    "no reading" (sentinels, non-finite numbers), which only drops the field.
    """

    def __init__(self, reason: str, *, invalid: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.invalid = invalid


class _NonFinite:
    """Marker for a JSON ``NaN``/``Infinity`` token, kept until the field is read."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


class ValuePolicy:
    """Convert raw field values to metric floats under the module's value policy.

    Args:
        missing_values: Texts that mean "no value" and are dropped silently
            (compared after stripping spaces, ignoring case).
        sentinels: Texts that mean "no reading"; dropped and reported.
        sentinel_values: Per field, numeric codes that mean "no reading".
        decimal: Decimal separator of text numbers, ``"."`` or ``","``.
        thousands: Thousands separator of text numbers, or None. Grouping is
            checked, so ``1.2345`` is invalid with ``thousands="."``.
    """

    def __init__(
        self,
        *,
        missing_values: Iterable[str] = DEFAULT_MISSING_VALUES,
        sentinels: Iterable[str] = DEFAULT_SENTINELS,
        sentinel_values: Mapping[str, Iterable[float]] | None = None,
        decimal: str = ".",
        thousands: str | None = None,
    ) -> None:
        if decimal not in (".", ","):
            raise InvalidConfigError(f"invalid decimal {decimal!r}: expected '.' or ','")
        if thousands is not None and thousands not in _THOUSANDS_GROUPING:
            raise InvalidConfigError(f"invalid thousands {thousands!r}: expected None, '.', ',', ' ' or \"'\"")
        if thousands == decimal:
            raise InvalidConfigError(f"thousands and decimal are both {decimal!r}: they must differ")
        self.missing_values = frozenset(value.strip().lower() for value in missing_values)
        self.sentinels = frozenset(value.strip().lower() for value in sentinels) - self.missing_values
        self.sentinel_values: dict[str, frozenset[float]] = {
            name: frozenset(float(code) for code in codes) for name, codes in (sentinel_values or {}).items()
        }
        self.decimal = decimal
        self.thousands = thousands
        # True when float() alone reads text numbers correctly.
        self.plain_decimal = decimal == "." and thousands is None

    def from_text(self, field: str, text: str) -> float | None:
        """Return the metric value of ``text``, or None when it is missing.

        Raises:
            MetricValueError: the value is a sentinel, non-finite or not a number.
        """
        stripped = text.strip()
        lowered = stripped.lower()
        if lowered in self.missing_values:
            return None
        if lowered in self.sentinels:
            raise MetricValueError(f"sentinel value {text!r}; the field is treated as missing", invalid=False)
        if lowered in _BOOLEAN_WORDS:
            raise MetricValueError(f"boolean {text!r} is not a number", invalid=True)
        return self._check(field, self._text_to_float(stripped, text))

    def from_json(self, field: str, value: Any) -> float | None:
        """Return the metric value of a decoded JSON value, or None when it is missing.

        Raises:
            MetricValueError: the value is a boolean, a sentinel, non-finite,
                too large or not a number.
        """
        kind = type(value)
        if kind is float:
            return self._check(field, value)
        if kind is int:
            try:
                return self._check(field, float(value))
            except OverflowError:
                raise MetricValueError(f"integer {value} is too large for a float", invalid=True) from None
        if value is None:
            return None
        if kind is bool:
            raise MetricValueError(f"boolean {json.dumps(value)} is not a number", invalid=True)
        if kind is _NonFinite:
            raise MetricValueError(f"non-finite value {value.token}; the field is treated as missing", invalid=False)
        if kind is str:
            return self.from_text(field, value)
        raise MetricValueError(f"a JSON {_json_type_name(value)} is not a number", invalid=True)

    def _text_to_float(self, stripped: str, text: str) -> float:
        candidate = stripped
        if not self.plain_decimal:
            candidate = self._delocalise(stripped, text)
        try:
            return float(candidate)
        except ValueError:
            pass
        if self.decimal == "." and _COMMA_BETWEEN_DIGITS.search(stripped):
            raise MetricValueError(
                f"{text!r} is not a number: it contains a comma but the decimal separator is '.'; "
                "if the source writes decimal commas, set decimal=','",
                invalid=True,
            )
        raise MetricValueError(f"{text!r} is not a number", invalid=True)

    def _delocalise(self, stripped: str, text: str) -> str:
        candidate = stripped
        if self.thousands is not None and self.thousands in candidate:
            if _THOUSANDS_GROUPING[self.thousands].fullmatch(candidate) is None:
                raise MetricValueError(
                    f"{text!r} is not a number: the thousands separator {self.thousands!r} "
                    "does not group digits in threes",
                    invalid=True,
                )
            candidate = candidate.replace(self.thousands, "")
        if self.decimal == ",":
            if "." in candidate:
                raise MetricValueError(
                    f"{text!r} is not a number: it contains '.' but the decimal separator is ','",
                    invalid=True,
                )
            candidate = candidate.replace(",", ".")
        return candidate

    def _check(self, field: str, value: float) -> float:
        if not math.isfinite(value):
            raise MetricValueError(f"non-finite value {value!r}; the field is treated as missing", invalid=False)
        codes = self.sentinel_values.get(field)
        if codes is not None and value in codes:
            raise MetricValueError(
                f"value {value!r} is a sentinel code configured for this field; the field is treated as missing",
                invalid=False,
            )
        return value


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message wrapped with its transport details, as MQTT recorders write it.

    Attributes:
        topic: The MQTT topic.
        payload: Raw payload bytes or text, or an already decoded object.
        received: The ``recv_at`` value (receive time), or None.
    """

    topic: str
    payload: bytes | str | dict[str, Any]
    received: Any = None


def split_topic_line(text: str) -> tuple[str, str]:
    """Split a ``<topic> <payload>`` line at the first space.

    Raises:
        RecordError: the line has no space or an empty topic.
    """
    topic, separator, payload = text.rstrip("\r\n").partition(" ")
    if not separator or not topic:
        raise RecordError("line is not '<topic> <payload>': no space after the topic", code="invalid_line")
    return topic, payload


def device_from_topic(topic: str, segment: int = 1) -> str | None:
    """Return the ``segment``-th part of a ``/``-separated topic, or None if it is absent or empty."""
    parts = topic.split("/")
    if 0 <= segment < len(parts) and parts[segment]:
        return parts[segment]
    return None


def unwrap_envelope(obj: Mapping[str, Any], *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Envelope | None:
    """Return the envelope if ``obj`` wraps a message (``topic`` plus ``payload`` or ``payload_b64``).

    Returns None for any other object. A base64 payload is checked against
    ``max_bytes`` from its encoded length before it is decoded.

    Raises:
        RecordError: the topic is not a string, or the base64 payload is too
            large or not valid base64.
    """
    if "topic" not in obj or ("payload" not in obj and "payload_b64" not in obj):
        return None
    topic = obj["topic"]
    if not isinstance(topic, str):
        raise RecordError(
            f"envelope topic is a JSON {_json_type_name(topic)}, expected a string", code="invalid_envelope"
        )
    received = obj.get("recv_at")
    if "payload_b64" in obj:
        encoded = obj["payload_b64"]
        if not isinstance(encoded, str):
            raise RecordError("payload_b64 is not a string", code="invalid_envelope", field="payload_b64")
        decoded_size = len(encoded) * 3 // 4
        if decoded_size > max_bytes:
            raise _too_large(decoded_size, max_bytes)
        try:
            payload: bytes | str | dict[str, Any] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RecordError(
                f"payload_b64 is not valid base64 ({exc})", code="invalid_base64", field="payload_b64"
            ) from None
        return Envelope(topic, payload, received)
    raw = obj["payload"]
    if isinstance(raw, (str, dict)):
        return Envelope(topic, raw, received)
    raise RecordError(
        f"envelope payload is a JSON {_json_type_name(raw)}, expected an object or a string",
        code="not_object",
        field="payload",
    )


def decode_json_object(
    data: bytes | str, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, tolerant: bool = True
) -> dict[str, Any]:
    """Decode one JSON object, with the size, encoding and non-finite rules of this module.

    ``max_bytes`` counts bytes for ``bytes`` input and characters for ``str``
    input (a string is already in memory, and UTF-8 never has fewer bytes than
    characters). Non-finite tokens are left in the result as markers that
    :meth:`ValuePolicy.from_json` reports.

    Raises:
        RecordError: too large, not UTF-8, not JSON, truncated or not an object.
    """
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise RecordError(
                f"payload is not valid UTF-8: {exc.reason} (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                code="not_utf8",
            ) from None
    else:
        text = data[1:] if data.startswith("\ufeff") else data

    try:
        obj = _loads(text)
    except json.JSONDecodeError as exc:
        obj = _retry_with_repaired_tokens(text) if tolerant else None
        if obj is None:
            raise _json_error(text, exc) from None
    except RecursionError:
        raise RecordError("payload JSON is nested too deeply", code="invalid_json") from None

    if not isinstance(obj, dict):
        raise RecordError(f"payload is a JSON {_json_type_name(obj)}, expected an object", code="not_object")
    return obj


def flatten(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested objects into dotted names: ``{"a": {"b": 1}}`` becomes ``{"a.b": 1}``.

    Returns ``obj`` itself when nothing is nested.
    """
    for value in obj.values():
        if type(value) is dict:
            break
    else:
        return obj if isinstance(obj, dict) else dict(obj)
    flat: dict[str, Any] = {}
    _flatten_into(obj, "", flat)
    return flat


def _flatten_into(obj: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = prefix + str(key)
        if type(value) is dict:
            _flatten_into(value, name + ".", out)
        else:
            out[name] = value


class PayloadParser:
    """Turn JSON objects (or raw payloads) into observations under the value policy.

    One parser serves one stream (a file or a subscription). It remembers
    which fields have carried numbers, so that a later ``"rh": "off"`` or
    ``"co2": true`` in such a field is reported instead of becoming an
    attribute. A string or boolean in a field that has never carried a number
    becomes an attribute; a field whose first value is ``true`` is therefore
    only caught from its first numeric value on.

    Args:
        device_field: Field of the device id; default: the first of
            :data:`DEVICE_FIELDS` present (ignoring case).
        time_field: Field of the event time; default: the first of
            :data:`TIME_FIELDS` present, or a ``date`` plus ``time`` pair.
        time_format, timezone, day_first: See :class:`TimeParser`.
        metrics: Only these fields are metrics; None: every numeric field.
        attribute_fields: Only these fields are attributes; None: every
            string or boolean field that is not a metric.
        ignore_fields: Fields that are neither metrics nor attributes.
        policy: The value policy; default :class:`ValuePolicy` defaults.
        max_bytes: Largest payload accepted, in bytes.
        tolerant: Retry payloads with bare ``nan``/``inf`` tokens; see the
            module documentation.
    """

    #: Most field names remembered as numeric; beyond it new names are not learned.
    MAX_KNOWN_METRICS = 100_000

    def __init__(
        self,
        *,
        device_field: str | None = None,
        time_field: str | tuple[str, str] | None = None,
        time_format: str | None = None,
        timezone: str = "UTC",
        day_first: bool = False,
        metrics: Collection[str] | None = None,
        attribute_fields: Collection[str] | None = None,
        ignore_fields: Collection[str] = (),
        policy: ValuePolicy | None = None,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        tolerant: bool = True,
    ) -> None:
        if max_bytes <= 0:
            raise InvalidConfigError(f"invalid max_bytes {max_bytes!r}: expected a positive number of bytes")
        self.device_field = device_field
        self.time_field = time_field
        self.time_parser = TimeParser(time_format, timezone=timezone, day_first=day_first)
        self.metrics = frozenset(metrics) if metrics is not None else None
        self.attribute_fields = frozenset(attribute_fields) if attribute_fields is not None else None
        self.ignore_fields = frozenset(ignore_fields)
        self.policy = policy or ValuePolicy()
        self.max_bytes = max_bytes
        self.tolerant = tolerant
        self._known_metrics: set[str] = set(self.metrics or ())
        self._last_device_key: str | None = None
        self._last_time_key: str | None = None

    def parse(
        self,
        payload: bytes | str | Mapping[str, Any],
        *,
        source: str,
        line: int | None,
        device: str | None = None,
        fallback_time: Any = None,
    ) -> tuple[Observation, list[FieldIssue]]:
        """Parse one payload into an observation and the issues of its fields.

        Args:
            payload: Raw bytes or text of one JSON object, or a decoded object.
            source: File path or stream address, for messages.
            line: Line or message number.
            device: Device id to use (for example taken from the topic). When
                the payload names a different device, a FieldIssue reports it
                and ``device`` wins.
            fallback_time: Time to use when the payload has none, such as the
                receive time of an envelope; a string or an epoch number.

        Raises:
            RecordError: the payload or record is rejected (see the module
                documentation); ``field`` names the field at fault.
        """
        if isinstance(payload, (bytes, str)):
            obj: Mapping[str, Any] = decode_json_object(payload, max_bytes=self.max_bytes, tolerant=self.tolerant)
        else:
            obj = payload
        return self.build(flatten(obj), source=source, line=line, device=device, fallback_time=fallback_time)

    def parse_items(
        self,
        payload: bytes | str | Mapping[str, Any],
        *,
        source: str,
        line: int | None,
        device: str | None = None,
        fallback_time: Any = None,
        counters: SourceCounters | None = None,
    ) -> list[Observation | FieldIssue | Rejection]:
        """Parse one payload like :meth:`parse`, returning a Rejection instead of raising.

        The observation (if any) comes last, after its field issues.
        """
        if counters is not None:
            counters.records += 1
        try:
            observation, issues = self.parse(
                payload, source=source, line=line, device=device, fallback_time=fallback_time
            )
        except RecordError as exc:
            if counters is not None:
                counters.rejections[exc.code] += 1
            return [Rejection(source, line, exc.field, exc.reason, raw=_raw_text(payload))]
        if counters is not None:
            counters.observations += 1
            for issue in issues:
                counters.field_issues[issue.field] += 1
        text = _raw_text(payload) if issues else ""
        items: list[Observation | FieldIssue | Rejection] = [dataclasses.replace(issue, raw=text) for issue in issues]
        items.append(observation)
        return items

    def build(
        self,
        flat: Mapping[str, Any],
        *,
        source: str,
        line: int | None,
        device: str | None = None,
        fallback_time: Any = None,
    ) -> tuple[Observation, list[FieldIssue]]:
        """Build an observation from a flat mapping of field names to decoded JSON values.

        Raises:
            RecordError: no device, no or invalid time, or no valid metric.
        """
        issues: list[FieldIssue] = []
        device_key = self._find_device_key(flat)
        device = self._resolve_device(flat, device_key, device, source, line, issues)
        time_keys = self._find_time_keys(flat)
        event_time = self._resolve_time(flat, time_keys, fallback_time)

        skip = {device_key, *time_keys}
        metrics: dict[str, float] = {}
        attributes: dict[str, str] = {}
        invalid: list[tuple[str, str]] = []
        for key, value in flat.items():
            if key in skip or key in self.ignore_fields:
                continue
            if not self._is_metric(key, value):
                self._add_attribute(attributes, key, value)
                continue
            try:
                number = self.policy.from_json(key, value)
            except MetricValueError as exc:
                issues.append(FieldIssue(source, line, key, exc.reason))
                if exc.invalid:
                    invalid.append((key, exc.reason))
                continue
            if number is not None:
                metrics[key] = number
                self._learn_metric(key)

        if not metrics and invalid:
            raise no_valid_metric_error(invalid)
        return Observation(device, event_time, metrics, attributes, source, line), issues

    # Field roles.

    def _find_device_key(self, flat: Mapping[str, Any]) -> str | None:
        if self.device_field is not None:
            return self.device_field
        cached = self._last_device_key
        if cached is not None and cached in flat:
            return cached
        found = _find_key(flat, DEVICE_FIELDS)
        if found is not None:
            self._last_device_key = found
        return found

    def _find_time_keys(self, flat: Mapping[str, Any]) -> tuple[str, ...]:
        if isinstance(self.time_field, tuple):
            return self.time_field
        if self.time_field is not None:
            return (self.time_field,)
        cached = self._last_time_key
        if cached is not None and cached in flat:
            return (cached,)
        found = _find_key(flat, _FULL_TIME_FIELDS)
        if found is None:
            pair = (_find_key(flat, ("date",)), _find_key(flat, ("time",)))
            if pair[0] is not None and pair[1] is not None:
                return (pair[0], pair[1])
            found = _find_key(flat, ("time", "date"))
        if found is not None:
            self._last_time_key = found
            return (found,)
        return ()

    def _resolve_device(
        self,
        flat: Mapping[str, Any],
        device_key: str | None,
        device: str | None,
        source: str,
        line: int | None,
        issues: list[FieldIssue],
    ) -> str:
        payload_device = _device_text(flat.get(device_key)) if device_key is not None else None
        if device is not None:
            if payload_device is not None and payload_device != device and device_key is not None:
                issues.append(
                    FieldIssue(
                        source,
                        line,
                        device_key,
                        f"payload names device {payload_device!r} but the topic names {device!r}; the topic is used",
                    )
                )
            return device
        if payload_device is None:
            if device_key is not None and device_key in flat:
                raise RecordError(
                    f"device id {flat[device_key]!r} is not a non-empty string or integer",
                    code="missing_device",
                    field=device_key,
                )
            expected = self.device_field or ", ".join(DEVICE_FIELDS)
            raise RecordError(f"missing device id: no field {expected}", code="missing_device")
        return payload_device

    def _resolve_time(self, flat: Mapping[str, Any], time_keys: tuple[str, ...], fallback_time: Any) -> float:
        parser = self.time_parser
        if len(time_keys) == 2:
            date_value, clock_value = flat.get(time_keys[0]), flat.get(time_keys[1])
            if isinstance(date_value, str) and isinstance(clock_value, str):
                try:
                    return parser.parse_pair(date_value, clock_value)
                except ValueError as exc:
                    raise RecordError(f"invalid time: {exc}", code="invalid_time", field=time_keys[1]) from None
            time_keys = ()
        if time_keys and flat.get(time_keys[0]) is not None:
            key = time_keys[0]
            try:
                return _parse_time_value(parser, flat[key])
            except ValueError as exc:
                raise RecordError(f"invalid time: {exc}", code="invalid_time", field=key) from None
        if fallback_time is not None:
            try:
                return _parse_time_value(parser, fallback_time)
            except ValueError as exc:
                raise RecordError(f"invalid receive time: {exc}", code="invalid_time", field="recv_at") from None
        expected = "/".join(time_keys) if time_keys else ", ".join(TIME_FIELDS)
        raise RecordError(f"missing time: no field {expected}", code="missing_time")

    def _is_metric(self, key: str, value: Any) -> bool:
        if self.metrics is not None:
            return key in self.metrics
        if key in self._known_metrics:
            return True
        if self.attribute_fields is not None and key in self.attribute_fields:
            return False
        kind = type(value)
        if kind is float or kind is int or kind is _NonFinite:
            return True
        if kind is str:
            return _looks_numeric(value)
        return False

    def _add_attribute(self, attributes: dict[str, str], key: str, value: Any) -> None:
        if self.attribute_fields is not None and key not in self.attribute_fields:
            return
        if type(value) is str:
            if value:
                attributes[key] = value
        elif type(value) is bool:
            attributes[key] = "true" if value else "false"
        elif self.attribute_fields is not None and type(value) in (int, float):
            attributes[key] = str(value)

    def _learn_metric(self, key: str) -> None:
        known = self._known_metrics
        if key in known:
            return
        if len(known) >= self.MAX_KNOWN_METRICS:
            return
        known.add(key)
        if len(known) == self.MAX_KNOWN_METRICS:
            logger.warning(
                "%d distinct numeric field names seen; further new names are not remembered as metrics",
                self.MAX_KNOWN_METRICS,
            )


def no_valid_metric_error(invalid: list[tuple[str, str]]) -> RecordError:
    """Return the rejection of a record whose metrics are all invalid, given ``(field, reason)`` pairs."""
    if len(invalid) == 1:
        reason = f"no valid metric in the record: {invalid[0][1]}"
    else:
        reason = "no valid metric in the record: " + "; ".join(f"field {name!r}: {why}" for name, why in invalid)
    return RecordError(reason, code="no_valid_metric", field=invalid[0][0])


def _find_key(flat: Mapping[str, Any], candidates: Iterable[str]) -> str | None:
    for candidate in candidates:
        if candidate in flat:
            return candidate
    lowered = {key.lower(): key for key in flat if isinstance(key, str)}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    return None


def _device_text(value: Any) -> str | None:
    if type(value) is str:
        value = value.strip()
        return value or None
    if type(value) is int:
        return str(value)
    return None


def _parse_time_value(parser: TimeParser, value: Any) -> float:
    if type(value) is str:
        return parser.parse(value)
    if type(value) in (int, float):
        return parser.parse_number(value)
    raise ValueError(f"time is a JSON {_json_type_name(value)}, expected a string or a number")


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_NonFinite)


def _retry_with_repaired_tokens(text: str) -> Any:
    repaired = _BARE_NONFINITE.sub(_canonical_token, text)
    if repaired == text:
        return None
    try:
        return _loads(repaired)
    except (json.JSONDecodeError, RecursionError):
        return None


def _canonical_token(match: re.Match[str]) -> str:
    word = match.group(2)
    if word is None:
        return match.group(0)
    if word.lower() == "nan":
        return "NaN"
    return "-Infinity" if match.group(1) == "-" else "Infinity"


def _json_error(text: str, exc: json.JSONDecodeError) -> RecordError:
    end = len(text.rstrip())
    if exc.pos >= end or exc.msg.startswith("Unterminated string"):
        return RecordError(
            f"truncated JSON: the payload ends at char {end} before the object is complete ({exc.msg} char {exc.pos})",
            code="truncated_json",
        )
    return RecordError(f"invalid JSON: {exc.msg} (char {exc.pos})", code="invalid_json")


def _too_large(size: int, limit: int) -> RecordError:
    return RecordError(f"payload too large: {size} bytes, over the limit of {limit} bytes", code="too_large")


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, _NonFinite):
        return f"non-finite number ({value.token})"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _raw_text(payload: bytes | str | Mapping[str, Any]) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes):
        return payload[:8192].decode("utf-8", errors="replace")
    try:
        return json.dumps(payload, default=str)[:8192]
    except (TypeError, ValueError):
        return repr(payload)[:8192]
