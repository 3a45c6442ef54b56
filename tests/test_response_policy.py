"""Policy files: the documented format loads, and each mistake names file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotwarden.decisions.alerts import Alert
from iotwarden.errors import InvalidConfigError
from iotwarden.response.policy import load_policies, parse_duration, parse_policies

VALID = """\
version: 1
devices:
  cam-01: {ip: 10.0.0.5, mac: "02:00:00:00:00:05", mqtt_username: cam-01, tags: [camera, lobby]}
  meter-07: {sim: "4711", endpoint: "99", imei: "35000000000000"}
groups:
  lobby: [cam-01, cam-02]
guards:
  allow_list: [gateway-01]
  blast_radius: {max_devices: 3, period: 1h}
  default_ttl: 30m
  max_alert_age: 10m
  retry: {initial: 1s, max: 2m}
actuators:
  gateway: {type: nftables, netns: gw, table: iotwarden}
  broker: {type: mosquitto, host: 127.0.0.1, port: 1883, username: admin, password_env: IW_TEST_MQTT_PASSWORD}
  hook: {type: webhook, url: "http://127.0.0.1:9/hook", secret: s3cret}
policies:
  - name: exfiltration
    mode: automatic
    ttl: 2h
    when:
      category: [spike, scan]
      min_severity: high
      min_score: 9
      group: lobby
      tags: camera
      repeat: {count: 2, within: 10m}
    actions:
      - {type: quarantine, via: gateway, ttl: 15m}
      - {type: rate_limit, via: gateway, rate: 100, unit: kbps}
      - {type: disable_mqtt}
      - {type: notify, message: "camera quarantined"}
  - name: watch
    when: {category: drift}
    actions:
      - type: notify
"""


def alert(**fields) -> Alert:
    values = dict(device="cam-01", time=0.0, category="spike", severity="high", score=10.0, detector="baseline", metrics=[], explanation="x", cohort="camera")
    values.update(fields)
    return Alert(**values)


@pytest.fixture(autouse=True)
def mqtt_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IW_TEST_MQTT_PASSWORD", "pw")


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(VALID)
    policies = load_policies(path)
    assert [p.name for p in policies.policies] == ["exfiltration", "watch"]
    first = policies.policies[0]
    assert first.mode == "automatic"
    assert first.ttl == 7200
    assert first.condition.categories == {"spike", "scan"}
    assert first.condition.repeat_count == 2
    assert first.condition.repeat_within == 600
    assert [(a.kind, a.actuator, a.ttl) for a in first.actions] == [
        ("quarantine", "gateway", 900), ("rate_limit", "gateway", None), ("disable_mqtt", "broker", None), ("notify", "hook", None),
    ]
    assert first.actions[1].params == {"rate": 100, "unit": "kbps"}
    assert policies.policies[1].mode == "dry_run"
    assert policies.guards.blast_radius_max == 3
    assert policies.guards.default_ttl == 1800
    assert policies.guards.retry_initial == 1
    assert policies.actuators["broker"].settings["password"] == "pw"
    assert policies.devices["cam-01"]["tags"] == ("camera", "lobby")


def test_condition_matching() -> None:
    policies = parse_policies(VALID)
    condition = policies.policies[0].condition
    assert condition.matches_alert(alert(), policies)
    assert condition.matches_alert(alert(severity="critical"), policies)
    assert not condition.matches_alert(alert(severity="medium"), policies)
    assert not condition.matches_alert(alert(score=8.9), policies)
    assert not condition.matches_alert(alert(category="drift"), policies)
    # Group by cohort name works too, but the tags still must match.
    assert not condition.matches_alert(alert(device="cam-02", cohort="lobby"), policies)


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "words"),
    [
        ("    mode: automatic\n", "    mode: yolo\n", 19, "policies[0].mode", "choose from dry_run, approval, automatic"),
        ("      min_severity: high\n", "      min_severity: severe\n", 23, "policies[0].when.min_severity", "invalid value 'severe'"),
        ("      min_score: 9\n", "      min_score: nine\n", 24, "policies[0].when.min_score", "expected a number"),
        ("      repeat: {count: 2, within: 10m}\n", "      repeat: {count: 2, within: soon}\n", 27, "policies[0].when.repeat.within", "duration"),
        ("      - {type: disable_mqtt}\n", "      - {type: disable_mqtt, via: gateway}\n", 31, "policies[0].actions[2].via", "cannot perform disable_mqtt"),
        ("      - {type: disable_mqtt}\n", "      - {type: reboot}\n", 31, "policies[0].actions[2].type", "choose from"),
        ("      - {type: quarantine, via: gateway, ttl: 15m}\n", "      - {type: quarantine, via: firewall}\n", 29, "policies[0].actions[0].via", "no actuator named 'firewall'"),
        ("  default_ttl: 30m\n", "  default_tll: 30m\n", 10, "guards.default_tll", "unknown key"),
        ("  gateway: {type: nftables, netns: gw, table: iotwarden}\n", "  gateway: {type: iptables}\n", 14, "actuators.gateway.type", "choose from"),
        ("  blast_radius: {max_devices: 3, period: 1h}\n", "  blast_radius: {max_devices: -1}\n", 9, "guards.blast_radius.max_devices", "at least 0"),
        ("      - {type: rate_limit, via: gateway, rate: 100, unit: kbps}\n", "      - {type: rate_limit, via: gateway}\n", 30, "policies[0].actions[1].rate", "missing"),
        ("  - name: watch\n", "  - name: exfiltration\n", 33, "policies[1].name", "duplicate policy name"),
    ],
)
def test_invalid_file_names_line_and_key(tmp_path: Path, old: str, new: str, line: int, key: str, words: str) -> None:
    assert old in VALID
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace(old, new, 1))
    with pytest.raises(InvalidConfigError) as caught:
        load_policies(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert words in message


def test_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IW_TEST_MQTT_PASSWORD")
    with pytest.raises(InvalidConfigError, match=r"<policies>:15: actuators.broker.password_env: the environment variable IW_TEST_MQTT_PASSWORD is not set"):
        parse_policies(VALID)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("policies:\n  - name: a\n    when: {category: [spike\n")
    with pytest.raises(InvalidConfigError, match=rf"^{path}:\d+: invalid YAML"):
        load_policies(path)


def test_via_required_when_ambiguous() -> None:
    text = VALID.replace("  hook: {", "  hook2: {type: syslog}\n  hook: {")
    with pytest.raises(InvalidConfigError, match=r"actions\[3\]\.via: missing, and several actuators can perform it \(hook2, hook\)"):
        parse_policies(text)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="cannot read the policy file"):
        load_policies(tmp_path / "absent.yaml")


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400
    assert parse_duration(45) == 45
    for bad in ("0s", "-1m", "soon", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
