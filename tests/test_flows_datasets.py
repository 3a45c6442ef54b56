"""Flow detection on the public Stratosphere Zeek logs and MQTTset captures (a few seconds in all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotwarden.sources.flows.benchmark import rates, run_pcap, run_zeek

pytestmark = pytest.mark.dataset


def test_port_scanner_found(datasets_dir: Path) -> None:
    result = run_zeek(datasets_dir / "stratosphere_zeek/002-zeek-scenario-port-scanning/conn.log")
    scanners = {a.device for a in result.alerts if a.category == "scan"}
    assert scanners == {"172.16.1.11"}


def test_njrat_beacon_scored(datasets_dir: Path) -> None:
    result = run_zeek(datasets_dir / "stratosphere_zeek/001-zeek-scenario-malicious/labeled-conn.log")
    precision, recall, fpr = rates(result.flow_counts)
    assert precision >= 0.9
    assert recall >= 0.9
    assert fpr <= 0.01


def test_host_under_attack_scored(datasets_dir: Path) -> None:
    result = run_zeek(datasets_dir / "stratosphere_zeek/008-zeek-mixed/conn.log.labeled")
    precision, recall, _ = rates(result.window_counts)
    assert precision >= 0.9
    assert recall >= 0.9


def test_internet_probes_flagged_by_rule(datasets_dir: Path) -> None:
    # The attack flows are unanswered connection attempts from about 1600 external hosts over a day.
    result = run_zeek(datasets_dir / "stratosphere_zeek/008-zeek-mixed/conn.log.labeled")
    precision, recall, _ = rates(result.rule_flow_counts)
    assert precision >= 0.9
    assert recall >= 0.9
    unsolicited = [a for a in result.alerts if a.category == "unsolicited_inbound"]
    assert len(unsolicited) <= 3


@pytest.mark.parametrize(
    ("capture", "category"),
    [("bruteforce/bruteforce-test.pcapng", "brute_force"), ("malariados/malariados-test.pcap", "ddos"),
     ("flood/flood-test.pcap", "mqtt_flood"), ("flood/flood-train.pcap", "mqtt_flood")],
)
def test_mqtt_attack_captures_alert(datasets_dir: Path, capture: str, category: str) -> None:
    result = run_pcap(datasets_dir / "mqttset" / capture)
    assert category in {a.category for a in result.alerts}


@pytest.mark.parametrize("capture", ["benign/benign-test.pcap", "benign/benign-train.pcap"])
def test_mqtt_benign_captures_quiet(datasets_dir: Path, capture: str) -> None:
    result = run_pcap(datasets_dir / "mqttset" / capture)
    assert result.alerts == []
