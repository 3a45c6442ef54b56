"""Simulated SIM session records of a cellular IoT fleet, with labelled incidents.

Each SIM sits in one device (an IMEI) on its home network, opens data
sessions at its own period (15 to 120 minutes, jittered) all day or, for
about 30 % of SIMs, only during 8 to 12 active hours, moves a lognormal number of bytes each way and stays on one or two
cells. Incidents, one SIM each, are drawn from :data:`SIM_INCIDENTS`:

* ``sim_swap``: the SIM moves to another IMEI and stays there;
* ``roaming``: the SIM attaches to a network in another country;
* ``usage_spike``: three sessions carry 50 times the usual uplink bytes;
* ``session_storm``: a session every 30 s for 20 minutes;
* ``odd_hours``: one session an hour for three hours in the middle of the
  quiet hours of a SIM that is active only part of the day.

:func:`write_sim_csv` writes the records in the column names of
``docs/formats.md`` and a labels file with one row per incident.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from iotwarden.errors import InvalidConfigError
from iotwarden.observation import format_time

__all__ = ["SIM_COLUMNS_OUT", "SIM_INCIDENTS", "SimIncident", "SimFleet", "simulate_sim_records", "write_sim_csv"]

SIM_INCIDENTS = ("sim_swap", "roaming", "usage_spike", "session_storm", "odd_hours")
SIM_COLUMNS_OUT = ("iccid", "imsi", "imei", "msisdn", "session_start", "session_end", "bytes_up", "bytes_down",
                   "cell_id", "tac", "radio_type", "apn", "visited_network")
_START = datetime(2024, 3, 4, tzinfo=timezone.utc).timestamp()
_HOME = "234-15"
_FOREIGN = ("250-01", "460-00", "724-05")


@dataclass(frozen=True)
class SimIncident:
    """One injected incident: its kind, SIM (ICCID) and time span in epoch seconds."""

    kind: str
    iccid: str
    start: float
    end: float


@dataclass(frozen=True)
class SimFleet:
    """Simulated records in time order and their incidents."""

    records: list[dict[str, object]]
    incidents: list[SimIncident]


def simulate_sim_records(sims: int, hours: float, *, seed: int = 0, incidents: tuple[str, ...] = SIM_INCIDENTS) -> SimFleet:
    """Simulate ``sims`` SIMs for ``hours`` hours; incidents start at a random time in the last third of the span.

    ``odd_hours`` sessions fall in the quiet hours of the day of that time, or
    of the day before when they would run past the end.

    Raises:
        InvalidConfigError: fewer SIMs than incidents, a non-positive span, or an unknown incident kind.
    """
    unknown = sorted(set(incidents) - set(SIM_INCIDENTS))
    if unknown:
        raise InvalidConfigError(f"unknown SIM incident(s) {unknown}; known: {', '.join(SIM_INCIDENTS)}")
    if hours <= 0:
        raise InvalidConfigError(f"hours must be > 0, got {hours!r}")
    if sims < max(1, len(incidents)):
        raise InvalidConfigError(f"sims must be at least {max(1, len(incidents))} (one per incident), got {sims!r}")
    rng = np.random.default_rng(seed)
    end = _START + hours * 3600.0
    victims = rng.permutation(sims)[: len(incidents)]
    planned = {int(v): kind for v, kind in zip(victims, incidents)}
    records: list[dict[str, object]] = []
    applied: list[SimIncident] = []
    for index in range(sims):
        kind = planned.get(index)
        sim = _sim_profile(rng, index, day_only=kind == "odd_hours" or rng.random() < 0.3)
        at = _START + hours * 3600.0 * rng.uniform(0.67, 0.9)
        sessions = _normal_sessions(rng, sim, end)
        if kind is not None:
            sessions, span = _inject(rng, kind, sim, sessions, at, end)
            applied.append(SimIncident(kind, str(sim["iccid"]), span[0], span[1]))
        records.extend(sessions)
    records.sort(key=lambda r: (r["session_start"], r["iccid"]))
    for record in records:
        record["session_start"] = format_time(round(float(record["session_start"]), 3))  # type: ignore[arg-type]
        record["session_end"] = format_time(round(float(record["session_end"]), 3))  # type: ignore[arg-type]
    applied.sort(key=lambda i: i.start)
    return SimFleet(records, applied)


def _sim_profile(rng: np.random.Generator, index: int, day_only: bool) -> dict[str, object]:
    first_hour = int(rng.integers(0, 12))
    hours = set(range(first_hour, first_hour + int(rng.integers(8, 13)))) if day_only else set(range(24))
    return {
        "iccid": f"8944150000{index:09d}",
        "imsi": f"23415{index:010d}",
        "imei": f"35{rng.integers(10**12, 10**13 - 1)}",
        "msisdn": f"447700{index:06d}",
        "period": float(rng.uniform(900, 7200)),
        "up": float(rng.uniform(2e3, 2e5)),
        "down": float(rng.uniform(1e3, 5e4)),
        "cells": [str(rng.integers(10000, 99999)) for _ in range(int(rng.integers(1, 3)))],
        "tac": str(rng.integers(1000, 9999)),
        "hours": hours,
        "rat": str(rng.choice(["LTE-M", "NB-IoT", "LTE"])),
    }


def _session(rng: np.random.Generator, sim: dict[str, object], start: float, up_factor: float = 1.0, network: str = _HOME, imei: str | None = None) -> dict[str, object]:
    duration = float(rng.uniform(20, 240))
    return {
        "iccid": sim["iccid"], "imsi": sim["imsi"], "imei": imei or sim["imei"], "msisdn": sim["msisdn"],
        "session_start": start, "session_end": start + duration,
        "bytes_up": int(float(sim["up"]) * up_factor * rng.lognormal(0, 0.3)),  # type: ignore[arg-type]
        "bytes_down": int(float(sim["down"]) * rng.lognormal(0, 0.3)),  # type: ignore[arg-type]
        "cell_id": str(rng.choice(sim["cells"])), "tac": sim["tac"], "radio_type": sim["rat"],  # type: ignore[arg-type]
        "apn": "iot.example", "visited_network": network,
    }


def _normal_sessions(rng: np.random.Generator, sim: dict[str, object], end: float) -> list[dict[str, object]]:
    sessions = []
    time = _START + float(rng.uniform(0, float(sim["period"])))  # type: ignore[arg-type]
    while time < end:
        if int(time // 3600) % 24 in sim["hours"]:  # type: ignore[operator]
            sessions.append(_session(rng, sim, time))
        time += float(sim["period"]) * float(rng.normal(1.0, 0.05))  # type: ignore[arg-type]
    return sessions


def _inject(
    rng: np.random.Generator, kind: str, sim: dict[str, object], sessions: list[dict[str, object]], at: float, end: float
) -> tuple[list[dict[str, object]], tuple[float, float]]:
    later = [s for s in sessions if float(s["session_start"]) >= at]  # type: ignore[arg-type]
    first = float(later[0]["session_start"]) if later else at  # type: ignore[arg-type]
    if kind == "sim_swap":
        new_imei = f"86{rng.integers(10**12, 10**13 - 1)}"
        for s in later:
            s["imei"] = new_imei
        return sessions, (first, first)
    if kind == "roaming":
        network = str(rng.choice(_FOREIGN))
        for s in later:
            s["visited_network"] = network
            s["cell_id"] = str(rng.integers(10000, 99999))
        return sessions, (first, first)
    if kind == "usage_spike":
        for s in later[:3]:
            s["bytes_up"] = int(s["bytes_up"]) * 50  # type: ignore[call-overload]
        return sessions, (first, float(later[min(2, len(later) - 1)]["session_start"]) if later else first)  # type: ignore[arg-type]
    if kind == "session_storm":
        storm = [_session(rng, sim, at + 30.0 * i) for i in range(40)]
        for s in storm:
            s["session_end"] = float(s["session_start"]) + float(rng.uniform(1, 5))  # type: ignore[arg-type]
        return sessions + storm, (at, at + 1200.0)
    # odd_hours: hourly sessions for three hours in the middle of the SIM's quiet hours, several hours
    # from any hour it uses, as when a stolen SIM is used at night. They fall on the day of `at`, or on
    # the day before when the three hours would run past the end of the simulation.
    active = sorted(sim["hours"])  # type: ignore[call-overload]
    if len(active) > 21:
        return sessions, (at, at)  # no three quiet hours
    quiet_start = active[-1] + 1  # day-only SIMs use one contiguous range of hours that does not wrap midnight
    quiet_hours = 24 - len(active)
    first_odd = (quiet_start + (quiet_hours - 3) // 2) % 24
    start = at - at % 86400.0 + first_odd * 3600.0
    if start + 3 * 3600.0 > end and start - 86400.0 >= _START:
        start -= 86400.0
    odd = [_session(rng, sim, start + i * 3600.0 + float(rng.uniform(0, 600))) for i in range(3)]
    return sessions + odd, (float(odd[0]["session_start"]), float(odd[-1]["session_start"]))  # type: ignore[arg-type]


def write_sim_csv(fleet: SimFleet, path: str | Path, labels: str | Path | None = None) -> tuple[Path, Path]:
    """Write the records to ``path`` and the incidents to ``labels`` (default ``<stem>.labels.csv``)."""
    data_path = Path(path)
    labels_path = Path(labels) if labels is not None else data_path.with_name(data_path.stem + ".labels.csv")
    with data_path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=SIM_COLUMNS_OUT)
        writer.writeheader()
        writer.writerows(fleet.records)
    with labels_path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(("kind", "iccid", "start", "end"))
        for incident in fleet.incidents:
            writer.writerow((incident.kind, incident.iccid, format_time(incident.start), format_time(incident.end)))
    return data_path, labels_path
