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
  sessions (a fixed device that moved), severity low;
* ``odd_hours``: a SIM with at least ``odd_hours_sessions`` sessions over
  at least ``odd_hours_days`` days starts a session at a UTC hour that,
  with ``odd_hours_radius`` hours on each side, it has essentially never
  used, in a stretch of unused hours too long to be chance (see
  :meth:`SimWatcher._odd_hours`); once per episode, which ends at the
  SIM's next session in or next to its usual hours.
"""

from __future__ import annotations

import csv
import json
import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from iotwarden.decisions.alerts import SEVERITY_SCORES, Alert, Contribution
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

# A session joins the history that the odd-hours rule compares against only
# this many clock hours after the hour it started in, so the sessions of one
# night at unusual hours cannot vouch for each other.
_ODD_HOURS_LAG = 6


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
    first_start: float | None = None
    # Odd-hours rule: sessions per UTC hour of day that are older than the lag,
    # and [clock hour since the epoch, sessions] pairs still inside the lag.
    settled_hours: list[int] = field(default_factory=lambda: [0] * 24)
    pending_hours: deque[list[int]] = field(default_factory=deque)
    odd_episode: bool = False


@dataclass
class SimWatcher:
    """Per-SIM rules and derived metrics over session records in time order.

    Attributes:
        warmup_sessions: Sessions of a SIM before a new network alerts.
        stationary_sessions: Sessions before a SIM can count as stationary.
        stationary_cells: Most distinct cells of a stationary SIM.
        odd_hours_sessions: Earlier sessions (older than the 6-hour lag of
            the odd-hours history) a SIM needs before ``odd_hours`` can alert.
        odd_hours_days: Days since a SIM's first session before
            ``odd_hours`` can alert.
        odd_hours_radius: Hours on each side of the session's hour that
            must be unused too, so a session between two used hours is never odd.
        odd_hours_share: Largest share of the SIM's earlier sessions that an
            hour of day may hold and still count as unused.
        odd_hours_probability: Largest chance that the SIM's earlier sessions
            all missed the unused hours around the session's hour if its active
            hours did reach that hour. A larger chance means the session is not odd.
    """

    warmup_sessions: int = 5
    stationary_sessions: int = 20
    stationary_cells: int = 3
    odd_hours_sessions: int = 8
    odd_hours_days: float = 1.0
    odd_hours_radius: int = 2
    odd_hours_share: float = 0.01
    odd_hours_probability: float = 0.01
    sims: dict[str, _SimState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("odd_hours_sessions", "odd_hours_radius"):
            if int(getattr(self, name)) < 1:
                raise InvalidConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (math.isfinite(self.odd_hours_days) and self.odd_hours_days >= 0):
            raise InvalidConfigError(f"odd_hours_days must be a finite number >= 0, got {self.odd_hours_days!r}")
        for name in ("odd_hours_share", "odd_hours_probability"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidConfigError(f"{name} must be >= 0 and < 1, got {getattr(self, name)!r}")

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
        odd = self._odd_hours(record, state)
        if odd is not None:
            items.append(odd)
        items.append(self._observation(record, state))
        state.sessions += 1
        return items

    def _odd_hours(self, record: SimRecord, state: _SimState) -> Alert | None:
        """Update the odd-hours history with ``record``; return an alert when it opens an episode.

        An hour of day is used when it contains more than ``odd_hours_share`` of
        the SIM's settled sessions. The session is at an odd hour when no hour
        within ``odd_hours_radius`` of its own is used, and the unused stretch
        around it is too long to be chance (see :func:`_unused_stretch_probability`).
        """
        clock_hour = math.floor(record.start / 3600.0)
        _settle(state, clock_hour)
        if state.first_start is None:
            state.first_start = record.start

        sessions = sum(state.settled_hours)
        days = (record.start - state.first_start) / 86400.0
        if sessions < self.odd_hours_sessions or days < self.odd_hours_days:
            return None
        hour = clock_hour % 24
        used = [count > self.odd_hours_share * sessions for count in state.settled_hours]
        if not any(used):
            return None
        before, after = _unused_hours_around(used, hour)
        if used[hour] or min(before, after) < self.odd_hours_radius:
            state.odd_episode = False  # in or next to its usual hours, so a later odd session opens a new episode
            return None
        probability = _unused_stretch_probability(before, after, sessions)
        if probability > self.odd_hours_probability or state.odd_episode:
            return None
        state.odd_episode = True

        first, last = (hour - before) % 24, (hour + after) % 24
        in_hour = state.settled_hours[hour]
        in_stretch = sum(state.settled_hours[(hour + offset) % 24] for offset in range(-before, after + 1))
        text = (f"SIM {record.iccid} started a session in the {hour:02d}:00 UTC hour, which it has essentially never used. "
                f"Of its {sessions} sessions over {days:.1f} days (not counting the last {_ODD_HOURS_LAG} hours), "
                f"{in_hour} started in that hour and {in_stretch} between {first:02d}:00 and {last:02d}:59 UTC; "
                f"if its active hours reached {hour:02d}:00, that would happen by chance with probability {probability:.2g}")
        return self._alert(record, "odd_hours", "medium", text, {
            "hour": hour, "sessions": sessions, "days": round(days, 2), "sessions_in_hour": in_hour,
            "unused_first_hour": first, "unused_last_hour": last, "sessions_in_unused_hours": in_stretch,
            "probability": probability, "usual_hours": [h for h in range(24) if used[h]],
        })

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
            device=record.iccid, time=record.start, category=category, severity=severity, score=SEVERITY_SCORES[severity],
            detector="sim_rules", metrics=[Contribution(category, None, None, None, None, SEVERITY_SCORES[severity])],
            explanation=text, cohort="sim",
            end_time=record.start, close_reason="rule alert", source=record.source, line=record.line, details=details,
        )


def _settle(state: _SimState, clock_hour: int) -> None:
    """Count a session of ``clock_hour`` (hours since the epoch) as pending and settle pending sessions older than the lag."""
    pending = state.pending_hours
    while pending and pending[0][0] <= clock_hour - _ODD_HOURS_LAG:
        settled_hour, count = pending.popleft()
        state.settled_hours[settled_hour % 24] += count
    if pending and pending[-1][0] == clock_hour:
        pending[-1][1] += 1
    else:
        pending.append([clock_hour, 1])


def _unused_hours_around(used: list[bool], hour: int) -> tuple[int, int]:
    """Return how many unused hours of day lie just before and just after ``hour``.

    ``hour`` itself is not looked at, and at least one hour must be used.
    """
    before = 0
    while not used[(hour - before - 1) % 24]:
        before += 1
    after = 0
    while not used[(hour + after + 1) % 24]:
        after += 1
    return before, after


def _unused_stretch_probability(before: int, after: int, sessions: int) -> float:
    """Return the chance that ``sessions`` sessions all missed the unused hours next to an odd hour.

    Suppose the SIM's active hours did reach the odd hour, from its used hours
    on one side, with sessions spread evenly over them. Then the odd hour and
    the unused hours between it and that side belong to the active hours, and
    each session misses them with probability one minus their share of the
    active hours. The larger of the two sides' probabilities is returned.
    """
    used_span = 24 - (before + 1 + after)
    worst = 0.0
    for unused in (before, after):
        stretch = unused + 1
        worst = max(worst, (1.0 - stretch / (used_span + stretch)) ** sessions)
    return worst


def _imei_core(imei: str) -> str:
    digits = "".join(c for c in imei if c.isdigit())
    return digits[:14]


def read_sim_format(paths: list[str], **options: Any) -> Iterator[Observation | Alert | Rejection]:
    """Read SIM session records into per-SIM observations and rule alerts (format ``sim``).

    Options: ``time_format`` and the fields of :class:`SimWatcher`; others,
    such as ``device``, are ignored because the ICCID names the device.
    """
    counts = ("warmup_sessions", "stationary_sessions", "stationary_cells", "odd_hours_sessions", "odd_hours_radius")
    fractions = ("odd_hours_days", "odd_hours_share", "odd_hours_probability")
    settings: dict[str, Any] = {name: int(options[name]) for name in counts if options.get(name) is not None}
    settings.update({name: float(options[name]) for name in fractions if options.get(name) is not None})
    watcher = SimWatcher(**settings)
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
