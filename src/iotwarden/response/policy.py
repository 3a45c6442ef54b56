"""Response policies: the YAML file that maps alert conditions to actions.

The file is parsed with :func:`yaml.compose`, which keeps the line of every
node, so each error names the file, the line and the key. The format is
described in docs/policies.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iotwarden.decisions.alerts import SEVERITIES, Alert
from iotwarden.errors import InvalidConfigError

__all__ = [
    "ACTION_KINDS", "CONTAINMENT_KINDS", "MODES", "ActionSpec", "ActuatorConfig", "Condition", "Guards", "Policy",
    "PolicySet", "load_policies", "parse_duration",
]

MODES = ("dry_run", "approval", "automatic")
CONTAINMENT_KINDS = ("quarantine", "rate_limit", "disable_mqtt", "suspend_sim", "imei_lock")
ACTION_KINDS = (*CONTAINMENT_KINDS, "notify")

# Action kinds each actuator type performs (the generic cellular type depends on its requests).
ACTUATOR_KINDS: dict[str, frozenset[str]] = {
    "nftables": frozenset({"quarantine", "rate_limit"}),
    "osken": frozenset({"quarantine", "rate_limit"}),
    "onos": frozenset({"quarantine"}),
    "mosquitto": frozenset({"disable_mqtt"}),
    "emnify": frozenset({"suspend_sim", "imei_lock"}),
    "cellular": frozenset({"suspend_sim", "imei_lock"}),
    "webhook": frozenset({"notify"}),
    "syslog": frozenset({"notify"}),
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Return seconds for a number of seconds or a string such as ``90s``, ``10m``, ``1h``, ``2d``.

    Raises ValueError for anything else, or for a duration that is not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 10m or 1h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 30s, 10m or 1h, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Condition:
    """When a policy fires. Every field that is set must hold."""

    categories: frozenset[str] | None = None
    min_severity: str | None = None
    min_score: float | None = None
    groups: tuple[str, ...] = ()
    devices: frozenset[str] | None = None
    tags: frozenset[str] = frozenset()
    repeat_count: int = 1
    repeat_within: float | None = None

    def matches_alert(self, alert: Alert, policy_set: PolicySet) -> bool:
        """Return whether the alert meets every condition except repetition."""
        if self.categories is not None and alert.category not in self.categories:
            return False
        if self.min_severity is not None and _severity_rank(alert.severity) < _severity_rank(self.min_severity):
            return False
        if self.min_score is not None and not alert.score >= self.min_score:
            return False
        if self.devices is not None and alert.device not in self.devices:
            return False
        if self.groups and not any(policy_set.in_group(alert, group) for group in self.groups):
            return False
        if self.tags and not self.tags <= policy_set.device_tags(alert.device):
            return False
        return True


@dataclass(frozen=True)
class ActionSpec:
    """One action of a policy: its kind, the actuator that performs it, its time to live and parameters."""

    kind: str
    actuator: str
    ttl: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True)
class Policy:
    """A named rule: a condition, a mode and the actions to take."""

    name: str
    mode: str
    condition: Condition
    actions: tuple[ActionSpec, ...]
    ttl: float | None = None
    line: int = 0


@dataclass(frozen=True)
class Guards:
    """Limits that hold for every policy of a file."""

    allow_list: frozenset[str] = frozenset()
    blast_radius_max: int | None = None
    blast_radius_period: float = 3600.0
    default_ttl: float = 3600.0
    max_alert_age: float | None = 3600.0
    retry_initial: float = 2.0
    retry_max: float = 300.0


@dataclass(frozen=True)
class ActuatorConfig:
    """An actuator's settings from the file, kept with the line that defines it."""

    name: str
    type: str
    settings: dict[str, Any]
    line: int
    source: str


@dataclass
class PolicySet:
    """Everything a policy file defines."""

    path: Path | None
    policies: list[Policy]
    guards: Guards = field(default_factory=Guards)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    actuators: dict[str, ActuatorConfig] = field(default_factory=dict)

    def in_group(self, alert: Alert, group: str) -> bool:
        """Return whether the alert's device is in ``group``: its cohort, or a member of the file's group of that name."""
        return alert.cohort == group or alert.device in self.groups.get(group, frozenset())

    def device_tags(self, device: str) -> frozenset[str]:
        return frozenset(self.devices.get(device, {}).get("tags", ()))

    def device_attributes(self, device: str) -> dict[str, Any]:
        attributes = dict(self.devices.get(device, {}))
        attributes.pop("tags", None)
        return attributes


def _severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


# Loading --------------------------------------------------------------------


class _Reader:
    """Walk a composed YAML tree and raise errors that name file, line and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: yaml.Node | None, key: str, message: str) -> InvalidConfigError:
        line = node.start_mark.line + 1 if node is not None else 1
        return InvalidConfigError(f"{self.source}:{line}: {key}: {message}")

    def mapping(self, node: yaml.Node, key: str, allowed: Iterable[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected a mapping, got {_kind(node)}")
        allowed = list(allowed)
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            path = f"{key}.{name}" if key else name
            if allowed and name not in allowed:
                raise self.error(key_node, path, f"unknown key; allowed keys: {', '.join(allowed)}")
            if name in found:
                raise self.error(key_node, path, "duplicate key")
            found[name] = (key_node, value_node)
        return found

    def free_mapping(self, node: yaml.Node, key: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        return self.mapping(node, key, ())

    def sequence(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, f"expected a list, got {_kind(node)}")
        return list(node.value)

    def scalar(self, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, key, f"expected a single value, got {_kind(node)}")
        return yaml.safe_load(yaml.serialize(node))

    def string(self, node: yaml.Node, key: str, choices: Iterable[str] | None = None) -> str:
        value = self.scalar(node, key)
        if not isinstance(value, str) or not value:
            raise self.error(node, key, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(node, key, f"invalid value {value!r}; choose from {', '.join(choices)}")
        return value

    def strings(self, node: yaml.Node, key: str) -> list[str]:
        """Return a string or a list of strings as a list."""
        if isinstance(node, yaml.ScalarNode):
            return [str(self.scalar(node, key))]
        return [str(self.scalar(item, key)) for item in self.sequence(node, key)]

    def number(self, node: yaml.Node, key: str, *, minimum: float | None = None, integer: bool = False) -> float:
        value = self.scalar(node, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise self.error(node, key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(node, key, f"must be at least {minimum:g}, got {value!r}")
        return value

    def duration(self, node: yaml.Node, key: str) -> float:
        try:
            return parse_duration(self.scalar(node, key))
        except ValueError as error:
            raise self.error(node, key, str(error)) from None

    def native(self, node: yaml.Node, key: str) -> Any:
        try:
            return yaml.safe_load(yaml.serialize(node))
        except yaml.YAMLError as error:
            raise self.error(node, key, f"invalid value: {error}") from None


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the value {node.value!r}"


_TOP_KEYS = ("version", "devices", "groups", "guards", "actuators", "policies")
_DEVICE_KEYS = ("ip", "mac", "mqtt_username", "sim", "iccid", "imei", "endpoint", "dpid", "onos_device", "tags")
_GUARD_KEYS = ("allow_list", "blast_radius", "default_ttl", "max_alert_age", "retry")
_POLICY_KEYS = ("name", "mode", "when", "actions", "ttl")
_WHEN_KEYS = ("category", "min_severity", "min_score", "group", "devices", "tags", "repeat")
_ACTION_KEYS = ("type", "via", "ttl", "rate", "unit", "burst", "message")

# Settings of each actuator type: key -> (kind, required). Kind "secret" reads
# KEY or KEY_env (the name of an environment variable).
_ACTUATOR_SETTINGS: dict[str, dict[str, tuple[str, bool]]] = {
    "nftables": {"table": ("str", False), "netns": ("str", False), "nft": ("str", False), "timeout": ("number", False)},
    "osken": {"url": ("str", True), "dpid": ("int", False), "priority": ("int", False), "table_id": ("int", False), "output": ("any", False), "timeout": ("number", False)},
    "onos": {"url": ("str", True), "device_id": ("str", True), "username": ("str", False), "password": ("secret", False), "app_id": ("str", False), "priority": ("int", False), "timeout": ("number", False)},
    "mosquitto": {"host": ("str", False), "port": ("int", False), "username": ("str", True), "password": ("secret", True), "timeout": ("number", False), "tls": ("bool", False)},
    "emnify": {"url": ("str", False), "application_token": ("secret", True), "timeout": ("number", False)},
    "cellular": {"url": ("str", True), "token": ("secret", False), "requests": ("requests", True), "timeout": ("number", False)},
    "webhook": {"url": ("str", True), "secret": ("secret", True), "timeout": ("number", False)},
    "syslog": {"host": ("str", False), "port": ("int", False), "facility": ("str", False), "app_name": ("str", False)},
}
_REQUEST_NAMES = ("suspend", "reactivate", "imei_lock", "imei_unlock")


def load_policies(path: str | os.PathLike[str]) -> PolicySet:
    """Read and validate a policy file.

    Raises InvalidConfigError naming the file, line and key of the first problem.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidConfigError(f"cannot read the policy file {file}: {error.strerror or error}") from error
    return parse_policies(text, source=str(file), path=file)


def parse_policies(text: str, *, source: str = "<policies>", path: Path | None = None) -> PolicySet:
    """Validate policy YAML given as text; see :func:`load_policies`."""
    reader = _Reader(source)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(error, "problem", None) or str(error)
        raise InvalidConfigError(f"{source}:{line}: invalid YAML: {problem}") from None
    if root is None:
        raise InvalidConfigError(f"{source}:1: the policy file is empty; it needs at least a 'policies' list")
    top = reader.mapping(root, "", _TOP_KEYS)

    if "version" in top and reader.scalar(top["version"][1], "version") != 1:
        raise reader.error(top["version"][1], "version", "only version 1 is supported")
    devices = _read_devices(reader, top["devices"][1]) if "devices" in top else {}
    groups = _read_groups(reader, top["groups"][1]) if "groups" in top else {}
    guards = _read_guards(reader, top["guards"][1]) if "guards" in top else Guards()
    actuators = _read_actuators(reader, top["actuators"][1]) if "actuators" in top else {}
    if "policies" not in top:
        raise reader.error(root, "policies", "missing; the file needs a 'policies' list")
    policies = _read_policies(reader, top["policies"][1], actuators)
    return PolicySet(path=path, policies=policies, guards=guards, devices=devices, groups=groups, actuators=actuators)


def _read_devices(reader: _Reader, node: yaml.Node) -> dict[str, dict[str, Any]]:
    devices: dict[str, dict[str, Any]] = {}
    for name, (_, value) in reader.free_mapping(node, "devices").items():
        key = f"devices.{name}"
        attributes: dict[str, Any] = {}
        for attribute, (_, item) in reader.mapping(value, key, _DEVICE_KEYS).items():
            if attribute == "tags":
                attributes["tags"] = tuple(reader.strings(item, f"{key}.tags"))
            else:
                scalar = reader.scalar(item, f"{key}.{attribute}")
                attributes[attribute] = scalar if attribute == "dpid" else str(scalar)
        devices[name] = attributes
    return devices


def _read_groups(reader: _Reader, node: yaml.Node) -> dict[str, frozenset[str]]:
    return {name: frozenset(reader.strings(value, f"groups.{name}")) for name, (_, value) in reader.free_mapping(node, "groups").items()}


def _read_guards(reader: _Reader, node: yaml.Node) -> Guards:
    items = reader.mapping(node, "guards", _GUARD_KEYS)
    values: dict[str, Any] = {}
    if "allow_list" in items:
        values["allow_list"] = frozenset(reader.strings(items["allow_list"][1], "guards.allow_list"))
    if "blast_radius" in items:
        blast = reader.mapping(items["blast_radius"][1], "guards.blast_radius", ("max_devices", "period"))
        if "max_devices" not in blast:
            raise reader.error(items["blast_radius"][1], "guards.blast_radius.max_devices", "missing")
        values["blast_radius_max"] = int(reader.number(blast["max_devices"][1], "guards.blast_radius.max_devices", minimum=0, integer=True))
        if "period" in blast:
            values["blast_radius_period"] = reader.duration(blast["period"][1], "guards.blast_radius.period")
    if "default_ttl" in items:
        values["default_ttl"] = reader.duration(items["default_ttl"][1], "guards.default_ttl")
    if "max_alert_age" in items:
        node_value = items["max_alert_age"][1]
        values["max_alert_age"] = None if reader.scalar(node_value, "guards.max_alert_age") is None else reader.duration(node_value, "guards.max_alert_age")
    if "retry" in items:
        retry = reader.mapping(items["retry"][1], "guards.retry", ("initial", "max"))
        if "initial" in retry:
            values["retry_initial"] = reader.duration(retry["initial"][1], "guards.retry.initial")
        if "max" in retry:
            values["retry_max"] = reader.duration(retry["max"][1], "guards.retry.max")
    return Guards(**values)


def _read_actuators(reader: _Reader, node: yaml.Node) -> dict[str, ActuatorConfig]:
    configs: dict[str, ActuatorConfig] = {}
    for name, (key_node, value) in reader.free_mapping(node, "actuators").items():
        key = f"actuators.{name}"
        raw = reader.free_mapping(value, key)
        if "type" not in raw:
            raise reader.error(value, f"{key}.type", f"missing; choose from {', '.join(ACTUATOR_KINDS)}")
        kind = reader.string(raw["type"][1], f"{key}.type", ACTUATOR_KINDS)
        schema = _ACTUATOR_SETTINGS[kind]
        allowed = ["type", *schema, *(f"{setting}_env" for setting, (form, _) in schema.items() if form == "secret")]
        reader.mapping(value, key, allowed)
        settings: dict[str, Any] = {}
        for setting, (form, required) in schema.items():
            setting_key = f"{key}.{setting}"
            if form == "secret":
                settings[setting] = _read_secret(reader, raw, setting, setting_key, value, required)
                continue
            if setting not in raw:
                if required:
                    raise reader.error(value, setting_key, "missing")
                continue
            item = raw[setting][1]
            if form == "str":
                settings[setting] = reader.string(item, setting_key)
            elif form == "int":
                settings[setting] = int(reader.number(item, setting_key, minimum=0, integer=True))
            elif form == "number":
                settings[setting] = float(reader.number(item, setting_key, minimum=0))
            elif form == "bool":
                flag = reader.scalar(item, setting_key)
                if not isinstance(flag, bool):
                    raise reader.error(item, setting_key, f"expected true or false, got {flag!r}")
                settings[setting] = flag
            elif form == "requests":
                settings[setting] = _read_requests(reader, item, setting_key)
            else:
                settings[setting] = reader.native(item, setting_key)
        if kind == "syslog" and "facility" in settings:
            from iotwarden.response.actuators.notify import _FACILITIES

            if settings["facility"] not in _FACILITIES:
                raise reader.error(raw["facility"][1], f"{key}.facility", f"unknown facility {settings['facility']!r}; choose from {', '.join(_FACILITIES)}")
        configs[name] = ActuatorConfig(name=name, type=kind, settings=settings, line=key_node.start_mark.line + 1, source=reader.source)
    return configs


def _read_secret(reader: _Reader, raw: dict[str, tuple[yaml.Node, yaml.Node]], setting: str, key: str, parent: yaml.Node, required: bool) -> str | None:
    """Return a secret given inline or, with ``SETTING_env``, from an environment variable."""
    if setting in raw and f"{setting}_env" in raw:
        raise reader.error(raw[f"{setting}_env"][0], f"{key}_env", f"give either {setting} or {setting}_env, not both")
    if f"{setting}_env" in raw:
        variable = reader.string(raw[f"{setting}_env"][1], f"{key}_env")
        value = os.environ.get(variable)
        if value is None:
            raise reader.error(raw[f"{setting}_env"][1], f"{key}_env", f"the environment variable {variable} is not set")
        return value
    if setting in raw:
        return str(reader.scalar(raw[setting][1], key))
    if required:
        raise reader.error(parent, key, f"missing; give {setting}_env (an environment variable) or {setting}")
    return None


def _read_requests(reader: _Reader, node: yaml.Node, key: str) -> dict[str, Any]:
    from iotwarden.response.actuators.cellular import RequestTemplate

    templates = {}
    for name, (_, value) in reader.mapping(node, key, _REQUEST_NAMES).items():
        request_key = f"{key}.{name}"
        fields = reader.mapping(value, request_key, ("method", "path", "body"))
        for required in ("method", "path"):
            if required not in fields:
                raise reader.error(value, f"{request_key}.{required}", "missing")
        method = reader.string(fields["method"][1], f"{request_key}.method", ("GET", "POST", "PUT", "PATCH", "DELETE"))
        path = reader.string(fields["path"][1], f"{request_key}.path")
        body = reader.native(fields["body"][1], f"{request_key}.body") if "body" in fields else None
        templates[name] = RequestTemplate(method, path, body)
    for first, second in (("suspend", "reactivate"), ("imei_lock", "imei_unlock")):
        if (first in templates) != (second in templates):
            missing = second if first in templates else first
            raise reader.error(node, f"{key}.{missing}", f"missing; {first} and {second} come as a pair")
    return templates


def _read_policies(reader: _Reader, node: yaml.Node, actuators: dict[str, ActuatorConfig]) -> list[Policy]:
    policies: list[Policy] = []
    names: set[str] = set()
    for index, item in enumerate(reader.sequence(node, "policies")):
        key = f"policies[{index}]"
        fields = reader.mapping(item, key, _POLICY_KEYS)
        for required in ("name", "when", "actions"):
            if required not in fields:
                raise reader.error(item, f"{key}.{required}", "missing")
        name = reader.string(fields["name"][1], f"{key}.name")
        if name in names:
            raise reader.error(fields["name"][1], f"{key}.name", f"duplicate policy name {name!r}")
        names.add(name)
        mode = reader.string(fields["mode"][1], f"{key}.mode", MODES) if "mode" in fields else "dry_run"
        ttl = reader.duration(fields["ttl"][1], f"{key}.ttl") if "ttl" in fields else None
        condition = _read_condition(reader, fields["when"][1], f"{key}.when")
        action_nodes = reader.sequence(fields["actions"][1], f"{key}.actions")
        if not action_nodes:
            raise reader.error(fields["actions"][1], f"{key}.actions", "the list is empty; give at least one action")
        actions = tuple(_read_action(reader, action, f"{key}.actions[{position}]", actuators) for position, action in enumerate(action_nodes))
        kinds = [spec.kind for spec in actions]
        for spec in actions:
            if spec.kind != "notify" and kinds.count(spec.kind) > 1 and [s.actuator for s in actions if s.kind == spec.kind].count(spec.actuator) > 1:
                raise reader.error(item, f"{key}.actions", f"{spec.kind} via {spec.actuator} appears twice")
        policies.append(Policy(name=name, mode=mode, condition=condition, actions=actions, ttl=ttl, line=item.start_mark.line + 1))
    return policies


def _read_condition(reader: _Reader, node: yaml.Node, key: str) -> Condition:
    fields = reader.mapping(node, key, _WHEN_KEYS)
    values: dict[str, Any] = {}
    if "category" in fields:
        values["categories"] = frozenset(reader.strings(fields["category"][1], f"{key}.category"))
    if "min_severity" in fields:
        values["min_severity"] = reader.string(fields["min_severity"][1], f"{key}.min_severity", SEVERITIES)
    if "min_score" in fields:
        values["min_score"] = float(reader.number(fields["min_score"][1], f"{key}.min_score", minimum=0))
    if "group" in fields:
        values["groups"] = tuple(reader.strings(fields["group"][1], f"{key}.group"))
    if "devices" in fields:
        values["devices"] = frozenset(reader.strings(fields["devices"][1], f"{key}.devices"))
    if "tags" in fields:
        values["tags"] = frozenset(reader.strings(fields["tags"][1], f"{key}.tags"))
    if "repeat" in fields:
        repeat = reader.mapping(fields["repeat"][1], f"{key}.repeat", ("count", "within"))
        for required in ("count", "within"):
            if required not in repeat:
                raise reader.error(fields["repeat"][1], f"{key}.repeat.{required}", "missing")
        values["repeat_count"] = int(reader.number(repeat["count"][1], f"{key}.repeat.count", minimum=1, integer=True))
        values["repeat_within"] = reader.duration(repeat["within"][1], f"{key}.repeat.within")
    return Condition(**values)


def _read_action(reader: _Reader, node: yaml.Node, key: str, actuators: dict[str, ActuatorConfig]) -> ActionSpec:
    fields = reader.mapping(node, key, _ACTION_KEYS)
    if "type" not in fields:
        raise reader.error(node, f"{key}.type", f"missing; choose from {', '.join(ACTION_KINDS)}")
    kind = reader.string(fields["type"][1], f"{key}.type", ACTION_KINDS)
    if "via" in fields:
        via = reader.string(fields["via"][1], f"{key}.via")
        if via not in actuators:
            known = ", ".join(actuators) or "none"
            raise reader.error(fields["via"][1], f"{key}.via", f"no actuator named {via!r} in the actuators section (defined: {known})")
        config = actuators[via]
        if kind not in ACTUATOR_KINDS[config.type] or (config.type == "cellular" and not _cellular_supports(config, kind)):
            raise reader.error(fields["via"][1], f"{key}.via", f"actuator {via!r} of type {config.type} cannot perform {kind}")
    else:
        able = [name for name, config in actuators.items() if kind in ACTUATOR_KINDS[config.type] and (config.type != "cellular" or _cellular_supports(config, kind))]
        if len(able) != 1:
            reason = "no actuator can perform it" if not able else f"several actuators can perform it ({', '.join(able)})"
            raise reader.error(node, f"{key}.via", f"missing, and {reason}; name one with via")
        via = able[0]
    params: dict[str, Any] = {}
    if kind == "rate_limit":
        if "rate" not in fields:
            raise reader.error(node, f"{key}.rate", "missing; rate_limit needs a rate (packets or kilobits per second, see unit)")
        params["rate"] = reader.number(fields["rate"][1], f"{key}.rate", minimum=1)
        params["unit"] = reader.string(fields["unit"][1], f"{key}.unit", ("pps", "kbps")) if "unit" in fields else "pps"
        if "burst" in fields:
            params["burst"] = int(reader.number(fields["burst"][1], f"{key}.burst", minimum=1, integer=True))
    else:
        for only_rate in ("rate", "unit", "burst"):
            if only_rate in fields:
                raise reader.error(fields[only_rate][0], f"{key}.{only_rate}", "only rate_limit actions take this key")
    if "message" in fields:
        if kind != "notify":
            raise reader.error(fields["message"][0], f"{key}.message", "only notify actions take this key")
        params["message"] = reader.string(fields["message"][1], f"{key}.message")
    ttl = None
    if "ttl" in fields:
        if kind == "notify":
            raise reader.error(fields["ttl"][0], f"{key}.ttl", "notify actions have nothing to undo, so no ttl")
        ttl = reader.duration(fields["ttl"][1], f"{key}.ttl")
    return ActionSpec(kind=kind, actuator=via, ttl=ttl, params=params, line=node.start_mark.line + 1)


def _cellular_supports(config: ActuatorConfig, kind: str) -> bool:
    requests = config.settings.get("requests", {})
    needed = {"suspend_sim": {"suspend", "reactivate"}, "imei_lock": {"imei_lock", "imei_unlock"}}[kind] if kind in ("suspend_sim", "imei_lock") else set()
    return needed <= set(requests)
