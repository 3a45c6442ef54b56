"""SIM session records: reader, rules, derived metrics and the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iotwarden.decisions.alerts import SEVERITY_SCORES, Alert
from iotwarden.engine import Engine
from iotwarden.errors import InvalidConfigError
from iotwarden.observation import Observation, Rejection
from iotwarden.pipeline import Replay
from iotwarden.simulate.sim_records import SIM_INCIDENTS, simulate_sim_records, write_sim_csv
from iotwarden.sources.cellular import SimRecord, SimWatcher, read_sim_records
from iotwarden.sources.formats import read_format
from iotwarden.sources.timeparse import TimeParser

HEADER = "iccid,imsi,imei,msisdn,session_start,session_end,bytes_up,bytes_down,cell_id,tac,radio_type,apn,visited_network\n"


def row(hour: int, imei: str = "353824276720642", network: str = "234-15", cell: str = "1001", up: str = "5000") -> str:
    return f"8944000000000000001,234150000000001,{imei},447700000001,2024-03-04T{hour:02d}:00:00Z,2024-03-04T{hour:02d}:02:00Z,{up},900,{cell},77,LTE-M,iot.example,{network}\n"


def items_of(tmp_path: Path, text: str) -> list[object]:
    path = tmp_path / "sims.csv"
    path.write_text(text)
    return list(read_format("sim", [str(path)], device="ignored"))


def test_sim_observation_metrics(tmp_path: Path) -> None:
    items = items_of(tmp_path, HEADER + row(1) + row(2))
    observations = [i for i in items if isinstance(i, Observation)]
    assert [o.device for o in observations] == ["8944000000000000001"] * 2
    first, second = observations
    assert first.metrics["bytes_up"] == 5000
    assert first.metrics["session_duration_s"] == 120
    assert first.metrics["sessions_per_hour"] == 1
    assert "hour_rarity" not in first.metrics
    assert second.metrics["hour_rarity"] > 0
    assert second.attributes["network"] == "234-15"


def test_sim_swap_ignores_check_digit(tmp_path: Path) -> None:
    items = items_of(tmp_path, HEADER + row(1) + row(2, imei="353824276720649") + row(3, imei="861111111111111"))
    alerts = [i for i in items if isinstance(i, Alert)]
    assert [a.category for a in alerts] == ["sim_swap"]
    assert alerts[0].details["imei"] == "861111111111111"


def test_new_network_after_warmup(tmp_path: Path) -> None:
    text = HEADER + "".join(row(h) for h in range(1, 7)) + row(8, network="234-10") + row(9, network="460-00")
    alerts = [i for i in items_of(tmp_path, text) if isinstance(i, Alert)]
    assert [(a.category, a.severity) for a in alerts] == [("new_network", "medium"), ("new_network", "high")]


def test_bad_records_are_rejected(tmp_path: Path) -> None:
    text = HEADER + row(1, up="-3") + row(2, network="abroad") + ",,,,,,,,,,,,\n".replace(",,,,,,,,,,,,", "x" + ",," * 6)
    rejections = [i for i in items_of(tmp_path, text) if isinstance(i, Rejection)]
    assert rejections[0].field == "bytes_up"
    assert rejections[1].field == "visited_network"
    assert rejections[2].field == "session_start"


def test_json_lines_aliases(tmp_path: Path) -> None:
    path = tmp_path / "sims.jsonl"
    record = {"ICCID": "89440001", "start_time": 1709510400, "end_time": 1709510460, "uplink_bytes": 10, "plmn": "23415"}
    path.write_text(json.dumps(record) + "\n{not json\n")
    items = list(read_sim_records(str(path)))
    assert items[0].bytes_up == 10
    assert items[0].mcc == "234"
    assert isinstance(items[1], Rejection)


def test_missing_iccid_column(tmp_path: Path) -> None:
    path = tmp_path / "sims.csv"
    path.write_text("imei,start\n1,2\n")
    with pytest.raises(InvalidConfigError, match="ICCID"):
        list(read_sim_records(str(path)))


def test_session_storm_counts_sessions() -> None:
    watcher = SimWatcher()
    last = None
    for i in range(20):
        last = watcher.process(SimRecord("89", 1000.0 + 30 * i))[-1]
    assert isinstance(last, Observation)
    assert last.metrics["sessions_per_hour"] == 20


def test_simulated_fleet_incidents_detected(tmp_path: Path) -> None:
    fleet = simulate_sim_records(30, 72, seed=1)
    assert sorted(i.kind for i in fleet.incidents) == sorted(SIM_INCIDENTS)
    data, labels = write_sim_csv(fleet, tmp_path / "sims.csv")
    assert labels.read_text().count("\n") == len(SIM_INCIDENTS) + 1
    alerts: list[Alert] = []
    Replay(Engine(), on_alert=alerts.append).run(read_format("sim", [str(data)]))
    victims = {i.kind: i.iccid for i in fleet.incidents}
    categories = {(a.device, a.category) for a in alerts}
    assert (victims["sim_swap"], "sim_swap") in categories
    rule_alerts = [a for a in alerts if a.detector == "sim_rules"]
    assert rule_alerts
    # Rule alerts rank by severity in score-ordered lists.
    assert all(a.score == SEVERITY_SCORES[a.severity] for a in rule_alerts)
    assert (victims["roaming"], "new_network") in categories
    spiked = {a.device for a in alerts if a.category in ("spike", "drift")}
    assert victims["usage_spike"] in spiked
    assert victims["session_storm"] in spiked
    odd = [a for a in alerts if a.category == "odd_hours"]
    assert [a.device for a in odd].count(victims["odd_hours"]) == 1
    # A session storm at hours its SIM never uses is odd-hours usage too. SIMs without incidents stay quiet.
    assert {a.device for a in odd} <= {victims["odd_hours"], victims["session_storm"]}


DAY = 86400.0
MONDAY = 1709510400.0  # 2024-03-04T00:00:00Z


def odd_hours_alerts(watcher: SimWatcher, iccid: str, starts: list[float]) -> list[Alert]:
    alerts: list[Alert] = []
    for start in starts:
        alerts.extend(i for i in watcher.process(SimRecord(iccid, start)) if isinstance(i, Alert) and i.category == "odd_hours")
    return alerts


def daytime_starts(days: int, first_hour: int = 8, last_hour: int = 16) -> list[float]:
    return [MONDAY + d * DAY + h * 3600.0 + 300.0 for d in range(days) for h in range(first_hour, last_hour + 1)]


def test_odd_hours_alerts_once_per_episode() -> None:
    night = [MONDAY + 3 * DAY + h * 3600.0 + 600.0 for h in (1, 2, 3)]
    morning = [MONDAY + 3 * DAY + 9 * 3600.0]
    late_evening = [MONDAY + 3 * DAY + 22 * 3600.0]
    alerts = odd_hours_alerts(SimWatcher(), "89", daytime_starts(3) + night + morning + late_evening)
    # The session at 09:00 closes the first episode, so the one at 22:00 opens another.
    assert [a.time for a in alerts] == [night[0], late_evening[0]]
    first = alerts[0]
    assert first.details["hour"] == 1
    assert first.details["sessions"] == 27
    assert first.details["days"] == pytest.approx(2.71, abs=0.01)
    assert first.details["sessions_in_hour"] == 0
    assert first.details["usual_hours"] == list(range(8, 17))
    assert "01:00 UTC hour" in first.explanation
    assert "27 sessions over 2.7 days" in first.explanation


def test_odd_hours_walk_from_usual_hours() -> None:
    # An evening that runs on past the usual last hour alerts once it is far from any usual hour.
    evening = [MONDAY + 3 * DAY + h * 3600.0 + 300.0 for h in range(17, 23)]
    alerts = odd_hours_alerts(SimWatcher(), "89", daytime_starts(3) + evening)
    assert [a.details["hour"] for a in alerts] == [19]


def test_odd_hours_quiet_in_first_days() -> None:
    half_hourly = [MONDAY + 8 * 3600.0 + 1800.0 * i for i in range(18)]
    starts = half_hourly + [MONDAY + DAY + 2 * 3600.0, MONDAY + DAY + 3 * 3600.0]
    assert odd_hours_alerts(SimWatcher(), "89", starts) == []
    assert odd_hours_alerts(SimWatcher(odd_hours_days=0.5), "89", starts)


def test_odd_hours_quiet_in_lone_used_hour() -> None:
    # Hour 15 is used every day although the hours around it are not.
    starts = sorted(MONDAY + d * DAY + h * 3600.0 + 600.0 for d in range(4) for h in (8, 9, 10, 15))
    assert odd_hours_alerts(SimWatcher(), "89", [*starts, MONDAY + 4 * DAY + 15.5 * 3600.0]) == []


def test_odd_hours_quiet_for_normal_fleet() -> None:
    for seed in range(3):
        fleet = simulate_sim_records(100, 72, seed=seed, incidents=())
        watcher = SimWatcher()
        alerts = []
        for record in fleet.records:
            session = SimRecord(str(record["iccid"]), TimeParser(None).parse(str(record["session_start"])))
            alerts.extend(i for i in watcher.process(session) if isinstance(i, Alert) and i.category == "odd_hours")
        round_the_clock = [s for s in watcher.sims.values() if all(s.hours)]
        assert len(round_the_clock) > 50
        assert alerts == []


def test_odd_hours_settings_checked() -> None:
    with pytest.raises(InvalidConfigError, match="odd_hours_share"):
        SimWatcher(odd_hours_share=1.0)
    with pytest.raises(InvalidConfigError, match="odd_hours_radius"):
        SimWatcher(odd_hours_radius=0)
