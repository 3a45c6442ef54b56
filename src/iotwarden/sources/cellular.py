"""Read cellular SIM session records (CSV or JSON lines) and watch each SIM.

Records are exported by a connectivity management platform, one per data
session. ``docs/formats.md`` lists the columns and their aliases. The
device id is the ICCID: a SIM is what the platform bills and what an
attacker moves to another device.

Each accepted record yields, in this order, rule alerts and then one
:class:`~iotwarden.observation.Observation` for the SIM at the session's
start with these metrics, which the engine baselines per SIM:

* ``bytes_up``, ``bytes_down``: bytes of the session;
* ``session_duration_s``: end minus start (absent without an end time);
* ``sessions_per_hour``: sessions of this SIM that started in the hour up
  to and including this one;
* ``hour_rarity``: ``-log10`` of the smoothed share of this SIM's earlier
  sessions that started in the same UTC hour of day; it is high for an
  hour the SIM never uses.

Rules (finished alerts, detector ``sim_rules``):

* ``sim_swap``: the IMEI differs from the SIM's previous one in its first
  14 digits (type allocation code and serial; the check digit and a
  software version are ignored);
* ``new_network``: after ``warmup_sessions`` sessions, a visited network
  (MCC-MNC) the SIM never used; high severity when the country code (MCC)
  is new too;
* ``new_cell``: a cell never seen for a SIM that has stayed on at most
  ``stationary_cells`` cells over at least ``stationary_sessions``
  sessions (a fixed device that moved), severity low.
"""

from __future__ import annotations

import csv
import json
import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from iotwarden.decisions.alerts import Alert, Contribution
from iotwarden.errors import InvalidConfigError, InvalidRecordError
from iotwarden.observation import Observation, Rejection, format_time
from iotwarden.sources.files import open_text
from iotwarden.sources.formats import register
from iotwarden.sources.timeparse import TimeParser

__all__ = ["SIM_COLUMNS", "SimRecord", "SimWatcher", "read_sim_records", "read_sim_format"]

SIM_COLUMNS: dict[str, tuple[str, ...]] = {
    "iccid": ("iccid", "sim_id", "sim"),
    "imsi": ("imsi",),
    "imei": ("imei", "imeisv", "device_imei"),
    "msisdn": ("msisdn", "phone_number"),
    "start": ("session_start", "start_time", "start", "begin"),
    "end": ("session_end", "end_time", "end", "stop"),
    "bytes_up": ("bytes_up", "uplink_bytes", "bytes_tx", "up_bytes", "data_up"),
    "bytes_down": ("bytes_down", "downlink_bytes", "bytes_rx", "down_bytes", "data_down"),
    "cell_id": ("cell_id", "cid", "eci", "ecgi"),
    "tac": ("tac", "tracking_area", "lac"),
    "rat": ("radio_type", "rat"),
    "apn": ("apn",),
    "network": ("visited_network", "plmn", "mcc_mnc", "visited_plmn"),
}
"""Field role to accepted column names (case-insensitive); the first present wins."""

_REQUIRED = ("iccid", "start")


@dataclass(slots=True)
class SimRecord:
    """One data session of one SIM."""

    iccid: str
    start: float
    end: float | None = None
    imsi: str = ""
    imei: str = ""
    msisdn: str = ""
    bytes_up: float | None = None
    bytes_down: float | None = None
    cell_id: str = ""
    tac: str = ""
    rat: str = ""
    apn: str = ""
    network: str = ""
    source: str = ""
    line: int | None = None

    @property
    def mcc(self) -> str:
        """Mobile country code: the first three digits of the visited network."""
        return self.network.replace("-", "")[:3]


def read_sim_records(path: str, *, time_format: str | None = None) -> Iterator[SimRecord | Rejection]:
    """Yield a :class:`SimRecord` per record of ``path`` (CSV or JSON lines) and a Rejection per bad one."""
    parser = TimeParser(time_format)
    with open_text(path) as stream:
        first = stream.readline().lstrip("\ufeff")
        if first.lstrip().startswith("{"):
            for number, text in enumerate(_chain(first, stream), start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                    if not isinstance(obj, dict):
                        raise InvalidRecordError(f"expected a JSON object, got {type(obj).__name__}")
                    yield _record({str(k).lower(): v for k, v in obj.items()}, parser, path, number)
                except json.JSONDecodeError as exc:
                    yield Rejection(path, number, None, f"invalid JSON: {exc.msg} (char {exc.pos})", raw=text.strip())
                except InvalidRecordError as exc:
                    yield Rejection(path, number, exc.field, exc.reason, raw=text.strip())
            return
        if not first.strip():
            raise InvalidConfigError(f"{path}: empty file, expected a CSV header or JSON lines")
        delimiter = max(",;\t|", key=first.count)
        header = [name.strip().lower() for name in next(csv.reader([first], delimiter=delimiter))]
        if not any(alias in header for alias in SIM_COLUMNS["iccid"]):
            raise InvalidConfigError(f"{path}: no ICCID column; expected one of {', '.join(SIM_COLUMNS['iccid'])}")
        for number, row in enumerate(csv.reader(stream, delimiter=delimiter), start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield Rejection(path, number, None, f"expected {len(header)} columns, found {len(row)}", raw=delimiter.join(row))
                continue
            try:
                yield _record(dict(zip(header, row)), parser, path, number)
            except InvalidRecordError as exc:
                yield Rejection(path, number, exc.field, exc.reason, raw=delimiter.join(row))


def _chain(first: str, stream: Any) -> Iterator[str]:
    yield first
    yield from stream


def _record(fields: Mapping[str, Any], parser: TimeParser, path: str, line: int) -> SimRecord:
    found: dict[str, tuple[str, Any]] = {}
    for role, aliases in SIM_COLUMNS.items():
        for alias in aliases:
            value = fields.get(alias)
            if value is not None and str(value).strip() != "":
                found[role] = (alias, value)
                break
    for role in _REQUIRED:
        if role not in found:
            raise InvalidRecordError(f"missing {role}: expected one of {', '.join(SIM_COLUMNS[role])}", field=SIM_COLUMNS[role][0])

    def text(role: str) -> str:
        return str(found[role][1]).strip() if role in found else ""

    def moment(role: str) -> float | None:
        if role not in found:
            return None
        alias, value = found[role]
        try:
            return parser.parse_number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else parser.parse(str(value).strip())
        except ValueError as exc:
            raise InvalidRecordError(f"invalid time: {exc}", field=alias) from None

    def count(role: str) -> float | None:
        if role not in found:
            return None
        alias, value = found[role]
        if isinstance(value, bool):
            raise InvalidRecordError(f"invalid byte count {value!r}: a boolean", field=alias)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidRecordError(f"invalid byte count {value!r}", field=alias) from None
        if not math.isfinite(number) or number < 0:
            raise InvalidRecordError(f"invalid byte count {value!r}: expected a finite number >= 0", field=alias)
        return number

    start = moment("start")
    assert start is not None
    end = moment("end")
    if end is not None and end < start:
        raise InvalidRecordError(f"session ends before it starts ({format_time(end)} < {format_time(start)})", field=found["end"][0])
    network = text("network")
    if network and not network.replace("-", "").isdigit():
        raise InvalidRecordError(f"invalid visited network {network!r}: expected MCC-MNC digits such as 234-15", field=found["network"][0])
    return SimRecord(
        iccid=text("iccid"), start=start, end=end, imsi=text("imsi"), imei=text("imei"), msisdn=text("msisdn"),
        bytes_up=count("bytes_up"), bytes_down=count("bytes_down"), cell_id=text("cell_id"), tac=text("tac"),
        rat=text("rat"), apn=text("apn"), network=network, source=path, line=line,
    )


@dataclass
class _SimState:
    imei: str = ""
    sessions: int = 0
    networks: set[str] = field(default_factory=set)
    countries: set[str] = field(default_factory=set)
    cells: set[str] = field(default_factory=set)
    recent_starts: deque[float] = field(default_factory=deque)
    hours: list[int] = field(default_factory=lambda: [0] * 24)


@dataclass
class SimWatcher:
    """Per-SIM rules and derived metrics over session records in time order.

    Attributes:
        warmup_sessions: Sessions of a SIM before a new network alerts.
        stationary_sessions: Sessions before a SIM can count as stationary.
        stationary_cells: Most distinct cells of a stationary SIM.
    """

    warmup_sessions: int = 5
    stationary_sessions: int = 20
    stationary_cells: int = 3
    sims: dict[str, _SimState] = field(default_factory=dict)

    def process(self, record: SimRecord) -> list[Observation | Alert]:
        """Return the rule alerts and the observation of one session."""
        state = self.sims.setdefault(record.iccid, _SimState())
        items: list[Observation | Alert] = []
        if record.imei:
            if state.imei and _imei_core(record.imei) != _imei_core(state.imei):
                items.append(self._alert(record, "sim_swap", "high", f"SIM {record.iccid} moved from device IMEI {state.imei} to IMEI {record.imei}",
                                         {"previous_imei": state.imei, "imei": record.imei}))
            state.imei = record.imei
        if record.network:
            mcc = record.mcc
            if state.sessions >= self.warmup_sessions and record.network not in state.networks:
                new_country = mcc not in state.countries
                where = f"country code {mcc}, never used by this SIM" if new_country else "a network never used by this SIM in a known country"
                items.append(self._alert(record, "new_network", "high" if new_country else "medium",
                                         f"SIM {record.iccid} attached to visited network {record.network} ({where}); known: {', '.join(sorted(state.networks))}",
                                         {"network": record.network, "known_networks": sorted(state.networks), "new_country": new_country}))
            state.networks.add(record.network)
            state.countries.add(mcc)
        if record.cell_id:
            cell = f"{record.network}/{record.tac}/{record.cell_id}"
            stationary = state.sessions >= self.stationary_sessions and len(state.cells) <= self.stationary_cells
            if stationary and cell not in state.cells:
                items.append(self._alert(record, "new_cell", "low", f"SIM {record.iccid}, on {len(state.cells)} cells so far, attached to new cell {cell}",
                                         {"cell": cell, "known_cells": sorted(state.cells)}))
            if len(state.cells) <= 4 * self.stationary_cells:
                state.cells.add(cell)
        items.append(self._observation(record, state))
        state.sessions += 1
        return items

    def _observation(self, record: SimRecord, state: _SimState) -> Observation:
        starts = state.recent_starts
        starts.append(record.start)
        while starts and starts[0] <= record.start - 3600.0:
            starts.popleft()
        hour = int(record.start // 3600) % 24
        earlier = sum(state.hours)
        metrics: dict[str, float] = {"sessions_per_hour": float(len(starts))}
        if earlier:
            metrics["hour_rarity"] = -math.log10((state.hours[hour] + 0.5) / (earlier + 12.0))
        state.hours[hour] += 1
        if record.bytes_up is not None:
            metrics["bytes_up"] = record.bytes_up
        if record.bytes_down is not None:
            metrics["bytes_down"] = record.bytes_down
        if record.end is not None:
            metrics["session_duration_s"] = record.end - record.start
        attributes = {"device_type": "sim"}
        for name in ("imei", "imsi", "network", "rat", "apn"):
            value = getattr(record, name)
            if value:
                attributes[name] = value
        return Observation(record.iccid, record.start, metrics, attributes, record.source, record.line)

    def _alert(self, record: SimRecord, category: str, severity: str, text: str, details: dict[str, Any]) -> Alert:
        return Alert(
            device=record.iccid, time=record.start, category=category, severity=severity, score=0.0, detector="sim_rules",
            metrics=[Contribution(category, None, None, None, None, 0.0)], explanation=text, cohort="sim",
            end_time=record.start, close_reason="rule alert", source=record.source, line=record.line, details=details,
        )


def _imei_core(imei: str) -> str:
    digits = "".join(c for c in imei if c.isdigit())
    return digits[:14]


def read_sim_format(paths: list[str], **options: Any) -> Iterator[Observation | Alert | Rejection]:
    """Read SIM session records into per-SIM observations and rule alerts (format ``sim``).

    Options: ``time_format`` and the fields of :class:`SimWatcher`; others,
    such as ``device``, are ignored because the ICCID names the device.
    """
    watcher = SimWatcher(**{name: int(options[name]) for name in ("warmup_sessions", "stationary_sessions", "stationary_cells") if options.get(name) is not None})
    time_format = options.get("time_format")

    def run() -> Iterator[Observation | Alert | Rejection]:
        for path in paths:
            for item in read_sim_records(path, time_format=time_format):
                if isinstance(item, Rejection):
                    yield item
                else:
                    yield from watcher.process(item)

    return run()


register("sim", read_sim_format, "cellular SIM session records (CSV or JSON lines) from a connectivity management platform")
