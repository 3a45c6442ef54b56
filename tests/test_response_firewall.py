"""nftables actuator against real namespaces: device -- gateway -- peer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from test_response_lab import RoutedLab, is_root, missing_tools

from iotwarden.decisions.alerts import Alert
from iotwarden.response import Responder, parse_policies
from iotwarden.response.actuators import ActionRequest, NftablesActuator, Target
from iotwarden.store import AlertStore


@pytest.fixture
def lab():
    if not is_root():
        pytest.skip("network namespaces and nftables need root")
    missing = missing_tools("ip", "nft", "ping")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (run .ci/containment-setup.sh)")
    routed = RoutedLab()
    yield routed
    routed.close()


def test_quarantine_blocks_and_release_restores(lab: RoutedLab) -> None:
    firewall = NftablesActuator("gw", netns=lab.gateway_ns)
    request = ActionRequest("a-test1", "quarantine", Target("dev", {"ip": lab.device_ip}), ttl=600)
    assert lab.ping()
    handle = firewall.apply(request)
    assert not lab.ping()
    assert lab.device_ip in firewall.quarantined()
    firewall.apply(request)  # idempotent: still one element
    assert list(firewall.quarantined()) == [lab.device_ip]
    firewall.revert(request, handle)
    assert lab.ping()
    firewall.revert(request, handle)  # reverting twice is harmless


def test_quarantine_expires_by_itself(lab: RoutedLab) -> None:
    firewall = NftablesActuator("gw", netns=lab.gateway_ns)
    firewall.apply(ActionRequest("a-test2", "quarantine", Target("dev", {"ip": lab.device_ip}), ttl=2))
    assert not lab.ping()
    time.sleep(2.2)
    assert firewall.quarantined() == {}
    assert lab.ping()


def test_rate_limit_drops_excess(lab: RoutedLab) -> None:
    firewall = NftablesActuator("gw", netns=lab.gateway_ns)
    request = ActionRequest("a-test3", "rate_limit", Target("dev", {"ip": lab.device_ip}), params={"rate": 2, "unit": "pps"})
    handle = firewall.apply(request)
    firewall.apply(request)  # replaces its rules instead of adding more
    from test_response_lab import run

    flood = run("ip", "netns", "exec", lab.device_ns, "ping", "-n", "-q", "-c", "40", "-i", "0.02", "-W", "1", lab.peer_ip, check=False, timeout=20)
    received = int(flood.stdout.split(" received")[0].rsplit(" ", 1)[-1])
    assert 0 < received < 30, flood.stdout
    firewall.revert(request, handle)
    flood = run("ip", "netns", "exec", lab.device_ns, "ping", "-n", "-q", "-c", "20", "-i", "0.02", "-W", "1", lab.peer_ip, check=False, timeout=20)
    assert " 0% packet loss" in flood.stdout


def test_responder_contains_and_expires(lab: RoutedLab, tmp_path: Path) -> None:
    policies = parse_policies(
        f"""
devices:
  dev-1: {{ip: {lab.device_ip}}}
guards: {{default_ttl: 2s}}
actuators:
  gateway: {{type: nftables, netns: {lab.gateway_ns}}}
policies:
  - name: contain-scanners
    mode: automatic
    when: {{category: scan}}
    actions: [{{type: quarantine}}]
"""
    )
    with AlertStore(tmp_path / "store.db") as store:
        responder = Responder(store, policies)
        alert = Alert(device="dev-1", time=time.time(), category="scan", severity="high", score=10.0, detector="liveness", metrics=[], explanation="fan-out")
        action = responder.on_alert(alert)[0]
        assert action.state == "active"
        assert not lab.ping()
        time.sleep(2.1)
        responder.tick()
        assert responder.get(action.id).state == "expired"
        assert lab.ping()
