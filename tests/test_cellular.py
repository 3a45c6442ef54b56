"""SIM session records: reader, rules, derived metrics and the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iotwarden.decisions.alerts import Alert
from iotwarden.engine import Engine
from iotwarden.errors import InvalidConfigError
from iotwarden.observation import Observation, Rejection
from iotwarden.pipeline import Replay
from iotwarden.simulate.sim_records import SIM_INCIDENTS, simulate_sim_records, write_sim_csv
from iotwarden.sources.cellular import SimWatcher, read_sim_records
from iotwarden.sources.formats import read_format

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
    from iotwarden.sources.cellular import SimRecord

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
    assert (victims["roaming"], "new_network") in categories
    spiked = {a.device for a in alerts if a.category in ("spike", "drift")}
    assert victims["usage_spike"] in spiked
    assert victims["session_storm"] in spiked
