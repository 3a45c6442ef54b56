"""Responder: modes, guards, retries, analyst commands, the ledger and the CLI, with a recording actuator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from iotwarden.decisions.alerts import Alert
from iotwarden.response import Responder, ResponseError, attach_policies, parse_policies
from iotwarden.response.actuators import ActionRequest, Actuator, ActuatorError
from iotwarden.response.cli import actions as actions_group
from iotwarden.store import AlertStore

POLICIES = """\
devices:
  cam-01: {ip: 10.0.0.5}
guards:
  allow_list: [core-router]
  blast_radius: {max_devices: 2, period: 1h}
  default_ttl: 10m
  retry: {initial: 2s, max: 30s}
actuators:
  fw: {type: nftables}
  hook: {type: syslog, port: 9}
policies:
  - name: contain
    mode: automatic
    when: {category: scan, min_severity: high}
    actions:
      - {type: quarantine, via: fw}
      - {type: notify, via: hook}
  - name: review
    mode: approval
    when: {category: spike}
    actions:
      - {type: quarantine, via: fw, ttl: 1h}
  - name: observe
    when: {category: drift}
    actions:
      - {type: quarantine, via: fw}
  - name: persistent
    mode: automatic
    when: {category: silence, repeat: {count: 3, within: 5m}}
    actions:
      - {type: rate_limit, via: fw, rate: 10}
"""


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class RecordingActuator(Actuator):
    """Keeps the rules in force in a set; fails while ``failures`` is positive."""

    kinds = frozenset({"quarantine", "rate_limit"})

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.rules: dict[tuple[str, str], float | None] = {}
        self.calls: list[tuple[str, str, str, float | None]] = []
        self.failures = 0
        self.error = ActuatorError("controller unreachable: connection refused")

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        self.calls.append(("apply", request.kind, request.target.device, request.ttl))
        if self.failures:
            self.failures -= 1
            raise self.error
        self.rules[(request.kind, request.target.device)] = request.ttl
        return {"rule": f"{request.kind}:{request.target.device}"}

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        self.calls.append(("revert", request.kind, request.target.device, None))
        if self.failures:
            self.failures -= 1
            raise self.error
        self.rules.pop((request.kind, request.target.device), None)


class RecordingNotifier(Actuator):
    kinds = frozenset({"notify"})
    one_shot = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sent: list[dict[str, Any]] = []

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        self.sent.append(request.params["notification"])
        return {}

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        return None


def make_alert(clock: Clock, device: str = "cam-01", category: str = "scan", severity: str = "high", offset: float = 0.0) -> Alert:
    return Alert(device=device, time=clock.now + offset, category=category, severity=severity, score=12.0, detector="baseline", metrics=[], explanation="fan-out", cohort="camera", incident_id="inc-1")


@pytest.fixture
def setup(tmp_path: Path):
    clock = Clock()
    store = AlertStore(tmp_path / "store.db")
    firewall = RecordingActuator("fw")
    notifier = RecordingNotifier("hook")
    responder = Responder(store, parse_policies(POLICIES), {"fw": firewall, "hook": notifier}, clock=clock)
    yield responder, firewall, notifier, clock, store
    store.close()


def ledger_events(store: AlertStore) -> list[tuple[str, str, str | None]]:
    events = []
    for entry in store.ledger.entries():
        payload = entry.payload
        events.append((entry.kind, payload.get("event") or payload.get("outcome"), entry.actor))
    return events


def test_automatic_quarantine_and_notify(setup) -> None:
    responder, firewall, notifier, clock, store = setup
    alert = make_alert(clock)
    actions = responder.on_alert(alert)
    assert [(a.kind, a.state) for a in actions] == [("quarantine", "active"), ("notify", "done")]
    assert firewall.rules == {("quarantine", "cam-01"): 600}
    quarantine = actions[0]
    assert quarantine.expires_at == clock.now + 600
    assert quarantine.target == {"ip": "10.0.0.5"}
    assert notifier.sent[0]["device"] == "cam-01"
    assert notifier.sent[0]["actions"][0]["kind"] == "quarantine"
    events = ledger_events(store)
    assert ("response_action", "created", "policy:contain") in events
    assert ("response_action", "applied", "iotwarden-responder") in events
    assert ("response_decision", "automatic", "policy:contain") in events
    decisions = responder.decisions()
    assert decisions[0].alert_id == alert.id
    assert "matched alert" in decisions[0].reason


def test_second_alert_does_not_stack(setup) -> None:
    responder, firewall, notifier, clock, _ = setup
    first = responder.on_alert(make_alert(clock))[0]
    clock.now += 5
    second = responder.on_alert(make_alert(clock, offset=0.001))
    assert [a.id for a in second] == [first.id]
    assert len([call for call in firewall.calls if call[0] == "apply"]) == 1
    assert len(responder.get(first.id).trigger_alerts) == 2
    assert len(notifier.sent) == 1
    assert responder.decisions()[-1].outcome == "already_contained"


def test_allow_list_is_never_touched(setup) -> None:
    responder, firewall, notifier, clock, _ = setup
    actions = responder.on_alert(make_alert(clock, device="core-router"))
    assert [a.kind for a in actions] == ["notify"]
    assert firewall.calls == []
    assert responder.decisions()[-1].outcome == "allow_listed"
    assert "allow-listed" in notifier.sent[0]["message"]


def test_blast_radius_cap_waits_for_approval(setup) -> None:
    responder, firewall, _, clock, _ = setup
    for device in ("d1", "d2"):
        assert responder.on_alert(make_alert(clock, device=device))[0].state == "active"
    third = responder.on_alert(make_alert(clock, device="d3"))[0]
    assert third.state == "awaiting_approval"
    assert "blast-radius cap of 2 devices" in third.reason
    assert ("quarantine", "d3") not in firewall.rules
    approved = responder.approve(third.id, "alice")
    assert approved.state == "active"
    assert approved.approved_by == "alice"
    assert ("quarantine", "d3") in firewall.rules
    # The cap counts per period: an hour later there is room again.
    clock.now += 3601
    assert responder.on_alert(make_alert(clock, device="d4"))[0].state == "active"


def test_ttl_expiry_and_confirm(setup) -> None:
    responder, firewall, _, clock, store = setup
    expiring = responder.on_alert(make_alert(clock, device="d1"))[0]
    kept = responder.on_alert(make_alert(clock, device="d2"))[0]
    confirmed = responder.confirm(kept.id, "bob")
    assert confirmed.expires_at is None
    assert firewall.calls[-1] == ("apply", "quarantine", "d2", None)  # re-applied without a timeout
    clock.now += 599
    assert responder.tick() == []
    clock.now += 2
    changed = responder.tick()
    assert [(a.id, a.state) for a in changed] == [(expiring.id, "expired")]
    assert ("quarantine", "d1") not in firewall.rules
    assert ("quarantine", "d2") in firewall.rules
    assert responder.get(kept.id).state == "active"
    assert ("response_action", "confirmed", "analyst:bob") in ledger_events(store)
    assert ("response_action", "expiring", "iotwarden-responder") in ledger_events(store)


def test_approval_mode_and_reject(setup) -> None:
    responder, firewall, _, clock, store = setup
    queued = responder.on_alert(make_alert(clock, category="spike"))[0]
    assert queued.state == "awaiting_approval"
    assert queued.ttl == 3600
    rejected = responder.reject(queued.id, "carol", "maintenance window")
    assert rejected.state == "rejected"
    assert firewall.calls == []
    with pytest.raises(ResponseError, match="only actions awaiting approval"):
        responder.approve(queued.id, "carol")
    entry = [e for e in store.ledger.entries() if e.payload.get("event") == "rejected"][0]
    assert entry.actor == "analyst:carol"
    assert entry.payload["detail"] == "maintenance window"


def test_dry_run_records_only(setup) -> None:
    responder, firewall, _, clock, _ = setup
    recorded = responder.on_alert(make_alert(clock, category="drift"))[0]
    assert recorded.state == "dry_run"
    assert firewall.calls == []
    # A repeat within the would-be time to live is folded into the same record.
    again = responder.on_alert(make_alert(clock, category="drift", offset=1))[0]
    assert again.id == recorded.id


def test_old_alert_only_recorded(setup) -> None:
    responder, firewall, _, clock, _ = setup
    action = responder.on_alert(make_alert(clock, offset=-7200))[0]
    assert action.state == "dry_run"
    assert "max_alert_age" in action.reason
    assert firewall.calls == []


def test_repetition_needs_n_alerts(setup) -> None:
    responder, firewall, _, clock, _ = setup
    assert responder.on_alert(make_alert(clock, category="silence", offset=0)) == []
    assert responder.on_alert(make_alert(clock, category="silence", offset=400)) == []  # first one is now out of the 5 min window
    assert responder.on_alert(make_alert(clock, category="silence", offset=500)) == []
    actions = responder.on_alert(make_alert(clock, category="silence", offset=600))
    assert [(a.kind, a.state) for a in actions] == [("rate_limit", "active")]
    assert responder.decisions()[0].outcome == "waiting_for_repeats"


def test_failure_is_retried_with_backoff(setup) -> None:
    responder, firewall, _, clock, store = setup
    firewall.failures = 2
    action = responder.on_alert(make_alert(clock))[0]
    assert action.state == "pending"
    assert action.attempts == 1
    assert "connection refused" in action.last_error
    assert action.next_attempt_at == clock.now + 2
    assert responder.tick() == []  # not due yet
    clock.now += 2
    retried = responder.tick()[0]
    assert retried.attempts == 2
    assert retried.next_attempt_at == clock.now + 4
    listed = responder.list_actions(state="pending")
    assert listed[0].last_error == "controller unreachable: connection refused"
    clock.now += 4
    assert responder.tick()[0].state == "active"
    assert [e[1] for e in ledger_events(store) if e[0] == "response_action"].count("apply_failed") == 2


def test_non_retryable_failure_is_kept(setup) -> None:
    responder, firewall, _, clock, _ = setup
    firewall.failures = 1
    firewall.error = ActuatorError("device has no ip", retryable=False)
    action = responder.on_alert(make_alert(clock))[0]
    assert action.state == "failed"
    assert responder.list_actions(state="failed")[0].id == action.id
    # An analyst can retry it once the cause is fixed.
    assert responder.approve(action.id, "dave").state == "active"


def test_release_after_restart(tmp_path: Path) -> None:
    clock = Clock()
    firewall = RecordingActuator("fw")
    with AlertStore(tmp_path / "store.db") as store:
        action = Responder(store, parse_policies(POLICIES), {"fw": firewall, "hook": RecordingNotifier("hook")}, clock=clock).on_alert(make_alert(clock))[0]
    assert firewall.rules
    with AlertStore(tmp_path / "store.db") as store:
        responder = Responder(store, parse_policies(POLICIES), {"fw": firewall, "hook": RecordingNotifier("hook")}, clock=clock)
        released = responder.release(action.id, "erin", "false positive")
        assert released.state == "released"
        assert released.released_by == "erin"
        assert firewall.rules == {}
        # Releasing again is harmless.
        assert responder.release(action.id, "erin").state == "released"


def test_failed_release_is_retried(setup) -> None:
    responder, firewall, _, clock, _ = setup
    action = responder.on_alert(make_alert(clock))[0]
    firewall.failures = 1
    releasing = responder.release(action.id, "frank")
    assert releasing.state == "releasing"
    assert "connection refused" in releasing.last_error
    clock.now += 2
    assert responder.tick()[0].state == "released"
    assert firewall.rules == {}


def test_unknown_id(setup) -> None:
    responder = setup[0]
    with pytest.raises(ResponseError, match="no action with id 'a-nope'"):
        responder.release("a-nope", "x")


def test_attach_policies_wraps_callback(tmp_path: Path) -> None:
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(POLICIES)
    seen: list[str] = []
    with AlertStore(tmp_path / "store.db") as store:
        callback, responder = attach_policies(store, policy_file, on_alert=lambda alert: seen.append(alert.id))
        clock = Clock()
        responder.clock = clock
        alert = make_alert(clock, category="drift")
        callback(alert)
        assert seen == [alert.id]
        assert responder.list_actions()[0].state == "dry_run"
        assert responder.tables.meta("policy_file") == str(policy_file.resolve())


def test_cli_list_approve_release(tmp_path: Path) -> None:
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(POLICIES)
    store_file = tmp_path / "store.db"
    clock = Clock()
    with AlertStore(store_file) as store:
        responder = Responder(store, parse_policies(POLICIES, path=policy_file), {"fw": RecordingActuator("fw"), "hook": RecordingNotifier("hook")}, clock=clock)
        clock.now = make_alert(Clock()).time
        queued = responder.on_alert(make_alert(clock, category="spike"))[0]

    group = click.Group(commands={"actions": actions_group})
    runner = CliRunner()
    listed = runner.invoke(group, ["actions", "list", "--store", str(store_file), "--format", "json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert rows[0]["id"] == queued.id
    assert rows[0]["state"] == "awaiting_approval"

    table = runner.invoke(group, ["actions", "list", "--store", str(store_file)])
    assert table.exit_code == 0, table.output
    assert table.output.rstrip().endswith("1 actions")

    # No actuator can run here (nft in the root namespace is not for tests), so only the state changes.
    approved = runner.invoke(group, ["actions", "approve", queued.id, "--store", str(store_file), "--analyst", "gina", "--no-execute"])
    assert approved.exit_code == 0, approved.output
    assert f"{queued.id}: quarantine of cam-01 via fw is pending" in approved.output

    released = runner.invoke(group, ["actions", "release", queued.id, "--store", str(store_file), "--analyst", "gina", "--no-execute"])
    assert released.exit_code == 0, released.output
    assert "is released" in released.output

    missing = runner.invoke(group, ["actions", "reject", "a-missing", "--store", str(store_file)])
    assert missing.exit_code != 0
    assert "no action with id 'a-missing'" in str(missing.exception)
