"""Read Zeek conn.log files, in Zeek's TSV format or as JSON lines.

TSV logs start with ``#`` directives: ``#separator`` (``\\x09`` escaped),
``#set_separator``, ``#empty_field`` (``(empty)``), ``#unset_field`` (``-``),
``#fields`` (column names) and ``#types``; ``#close`` and other directives
are skipped, and a new ``#fields`` line (concatenated logs) starts a new
layout. JSON logs have one object per line with the same field names
(``id.orig_h`` and so on, or nested ``{"id": {"orig_h": ...}}``).

Required fields are ``ts``, ``id.orig_h`` and ``id.resp_h``. Unset or empty
numeric fields count as 0; a field that is set but not a valid number or
address rejects the line with a :class:`~iotwarden.observation.Rejection`
naming the file, line and field. Label columns (``label``,
``detailedlabel``) are read only when ``keep_labels`` is set and never reach
an observation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from iotwarden.errors import InvalidRecordError
from iotwarden.observation import Rejection
from iotwarden.sources.files import open_text
from iotwarden.sources.flows.records import Flow, parse_address

__all__ = ["read_zeek_conn"]

_REQUIRED = ("ts", "id.orig_h", "id.resp_h")
_LABEL_FIELDS = ("label", "detailedlabel")
_TSV_DEFAULTS = {"separator": "\t", "set_separator": ",", "empty_field": "(empty)", "unset_field": "-"}


def read_zeek_conn(path: str, *, keep_labels: bool = False) -> Iterator[Flow | Rejection]:
    """Yield a :class:`Flow` per conn.log row of ``path`` and a Rejection per bad row."""
    with open_text(path) as stream:
        first = stream.readline()
        line_number = 1
        if first.lstrip("\ufeff").lstrip().startswith("{"):
            yield from _read_json(path, first, stream, keep_labels)
        else:
            yield from _read_tsv(path, first, stream, keep_labels, line_number)


def _read_tsv(path: str, first: str, stream: TextIO, keep_labels: bool, line_number: int) -> Iterator[Flow | Rejection]:
    settings = dict(_TSV_DEFAULTS)
    fields: list[str] | None = None
    lines = _chain_first(first, stream)
    for number, raw in enumerate(lines, start=line_number):
        text = raw.rstrip("\r\n")
        if not text:
            continue
        if text.startswith("#"):
            fields = _directive(text, settings, fields)
            continue
        if fields is None:
            yield Rejection(path, number, None, "data line before the #fields header: not a Zeek TSV log", raw=text)
            continue
        values = text.split(settings["separator"])
        if len(values) != len(fields):
            yield Rejection(path, number, None, f"expected {len(fields)} tab-separated fields, found {len(values)}", raw=text)
            continue
        record: dict[str, Any] = {}
        for name, value in zip(fields, values):
            if value == settings["unset_field"]:
                continue
            record[name] = "" if value == settings["empty_field"] else value
        yield _build(record, path, number, keep_labels, text)


def _directive(text: str, settings: dict[str, str], fields: list[str] | None) -> list[str] | None:
    if text.startswith("#separator"):
        value = text[len("#separator") :].strip()
        settings["separator"] = value.encode().decode("unicode_escape") if value.startswith("\\x") else (value or "\t")
        return fields
    name, _, rest = text[1:].partition(settings["separator"])
    if name == "fields":
        return rest.split(settings["separator"])
    if name in ("set_separator", "empty_field", "unset_field"):
        settings[name] = rest
    return fields


def _read_json(path: str, first: str, stream: TextIO, keep_labels: bool) -> Iterator[Flow | Rejection]:
    for number, raw in enumerate(_chain_first(first, stream), start=1):
        text = raw.strip().lstrip("\ufeff")
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Rejection(path, number, None, f"invalid JSON: {exc.msg} (char {exc.pos})", raw=text)
            continue
        if not isinstance(obj, dict):
            yield Rejection(path, number, None, f"expected a JSON object, got {type(obj).__name__}", raw=text)
            continue
        yield _build(_flatten(obj), path, number, keep_labels, text)


def _chain_first(first: str, stream: TextIO) -> Iterator[str]:
    yield first
    yield from stream


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif value is not None:
            flat[name] = value
    return flat


def _build(record: Mapping[str, Any], path: str, line: int, keep_labels: bool, raw: str) -> Flow | Rejection:
    try:
        return flow_from_zeek(record, path, line, keep_labels)
    except InvalidRecordError as exc:
        return Rejection(path, line, exc.field, exc.reason, raw=raw)


def flow_from_zeek(record: Mapping[str, Any], source: str, line: int | None, keep_labels: bool = False) -> Flow:
    """Build a flow from one conn.log record given as field name to value.

    Raises:
        InvalidRecordError: a required field is missing or a field is invalid;
            ``field`` names it.
    """
    for name in _REQUIRED:
        if record.get(name) in (None, ""):
            raise InvalidRecordError(f"missing required field {name!r}", field=name)
    time = _number(record, "ts")
    label = None
    if keep_labels:
        label = next((str(record[name]) for name in _LABEL_FIELDS if record.get(name) not in (None, "")), None)
    return Flow(
        time=time,
        src=_address(record, "id.orig_h"),
        sport=int(_number(record, "id.orig_p")),
        dst=_address(record, "id.resp_h"),
        dport=int(_number(record, "id.resp_p")),
        proto=str(record.get("proto", "")).lower(),
        duration=_number(record, "duration"),
        src_bytes=_number(record, "orig_bytes"),
        dst_bytes=_number(record, "resp_bytes"),
        src_packets=_number(record, "orig_pkts"),
        dst_packets=_number(record, "resp_pkts"),
        state=str(record.get("conn_state", "")),
        service=str(record.get("service", "")),
        local_src=_flag(record, "local_orig"),
        local_dst=_flag(record, "local_resp"),
        source=source,
        line=line,
        label=label,
    )


def _number(record: Mapping[str, Any], name: str) -> float:
    value = record.get(name)
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise InvalidRecordError(f"invalid number {value!r}: expected a number, got a boolean", field=name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRecordError(f"invalid number {value!r}", field=name) from None
    if not math.isfinite(number) or number < 0:
        raise InvalidRecordError(f"invalid number {value!r}: expected a finite value >= 0", field=name)
    return number


def _address(record: Mapping[str, Any], name: str) -> str:
    value = str(record[name]).strip()
    if parse_address(value) is None:
        raise InvalidRecordError(f"invalid address {value!r}: expected an IPv4 or IPv6 address", field=name)
    return value


def _flag(record: Mapping[str, Any], name: str) -> bool | None:
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().upper()
    if text in ("T", "TRUE", "1"):
        return True
    if text in ("F", "FALSE", "0"):
        return False
    raise InvalidRecordError(f"invalid boolean {value!r}: expected T or F", field=name)
