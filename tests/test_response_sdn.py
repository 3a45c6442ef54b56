"""os-ken ofctl_rest actuator against a real os-ken controller driving an OVS bridge (userspace datapath)."""

from __future__ import annotations

import time

import pytest

from test_response_lab import SdnLab, is_root, missing_tools, osken_python, scratch_dir, run

from iotwarden.response.actuators import ActionRequest, OsKenActuator, Target
from iotwarden.response.actuators.sdn import action_cookie


@pytest.fixture(scope="module")
def sdn():
    if not is_root():
        pytest.skip("network namespaces and OVS taps need root")
    missing = missing_tools("ip", "ovs-vsctl", "ovs-vswitchd", "ovsdb-server", "ethtool", "ping")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (run .ci/containment-setup.sh)")
    if osken_python() is None:
        pytest.skip("the os-ken 1.4.1 venv is missing (run .ci/containment-setup.sh)")
    folder = scratch_dir("iwt-sdn-")
    lab = SdnLab(folder)
    yield lab
    lab.close()
    run("rm", "-rf", str(folder))


def test_drop_flow_blocks_and_delete_restores(sdn: SdnLab) -> None:
    actuator = OsKenActuator("sdn", url=sdn.url, dpid=sdn.dpid)
    request = ActionRequest("a-sdn1", "quarantine", Target("dev-1", {"mac": sdn.macs[0]}), ttl=600)
    assert sdn.ping(count=2)
    handle = actuator.apply(request)
    assert not sdn.ping()
    actuator.apply(request)  # the same match and priority replace the flows
    tagged = [flow for flow in sdn.flows() if flow["cookie"] == action_cookie("a-sdn1")]
    assert len(tagged) == 2
    assert all(flow["hard_timeout"] == 600 and flow["actions"] == [] for flow in tagged)
    actuator.revert(request, handle)
    assert not [flow for flow in sdn.flows() if flow["cookie"] == action_cookie("a-sdn1")]
    assert sdn.reachable_within(5)


def test_drop_flow_by_ip_expires(sdn: SdnLab) -> None:
    actuator = OsKenActuator("sdn", url=sdn.url, dpid=sdn.dpid)
    actuator.apply(ActionRequest("a-sdn2", "quarantine", Target("dev-1", {"ip": sdn.ips[0]}), ttl=2))
    assert not sdn.ping()
    time.sleep(2.3)
    assert sdn.reachable_within(5)


def test_meter_limits_rate(sdn: SdnLab) -> None:
    actuator = OsKenActuator("sdn", url=sdn.url, dpid=sdn.dpid)
    request = ActionRequest("a-sdn3", "rate_limit", Target("dev-1", {"mac": sdn.macs[0]}), params={"rate": 5, "unit": "pps"})
    handle = actuator.apply(request)
    flood = run("ip", "netns", "exec", sdn.namespaces[0], "ping", "-n", "-q", "-c", "50", "-i", "0.02", "-W", "1", sdn.ips[1], check=False, timeout=20)
    received = int(flood.stdout.split(" received")[0].rsplit(" ", 1)[-1])
    assert received < 35, flood.stdout
    actuator.revert(request, handle)
    flood = run("ip", "netns", "exec", sdn.namespaces[0], "ping", "-n", "-q", "-c", "20", "-i", "0.02", "-W", "1", sdn.ips[1], check=False, timeout=20)
    assert " 0% packet loss" in flood.stdout
