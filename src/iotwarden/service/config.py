"""The configuration of ``iotwarden run``: loading and validation.

Every key, its default and its unit is described in docs/config.md. Errors
raise :class:`~iotwarden.errors.InvalidConfigError` naming the file, the key
(``sources[0].port``) and the value received.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iotwarden.engine.config import EngineConfig
from iotwarden.errors import InvalidConfigError
from iotwarden.paths import data_dir, dead_letter_path
from iotwarden.sources.mqtt import DEFAULT_TOPIC, MqttSettings, TopicTemplate
from iotwarden.sources.payload import DEFAULT_MAX_PAYLOAD_BYTES, PayloadParser, ValuePolicy

__all__ = [
    "MosquittoLogSettings",
    "MqttSourceConfig",
    "OVERFLOW_POLICIES",
    "ServiceConfig",
    "TrafficSettings",
    "load_service_config",
]

OVERFLOW_POLICIES = ("block", "drop_oldest", "drop_newest")
CLOCKS = ("wall", "event")
_UNSET = object()


@dataclass(frozen=True)
class MqttSourceConfig:
    """An MQTT source: connection settings plus how its payloads are read."""

    settings: MqttSettings
    parser_options: dict[str, Any] = field(default_factory=dict)
    time_fallback: str = "receive"

    def make_parser(self) -> PayloadParser:
        """Build the payload parser of this source (one per source, it learns field roles)."""
        options = dict(self.parser_options)
        sentinel_values = options.pop("sentinel_values", None)
        if sentinel_values:
            options["policy"] = ValuePolicy(sentinel_values=sentinel_values)
        return PayloadParser(max_bytes=self.settings.max_payload_bytes, **options)


@dataclass(frozen=True)
class MosquittoLogSettings:
    """A Mosquitto log file to follow for connects, disconnects and authentication failures."""

    path: Path
    client_device: re.Pattern[str] | None = None
    from_start: bool = False


@dataclass(frozen=True)
class TrafficSettings:
    """Per-device broker traffic features."""

    enabled: bool = True
    interval: float = 60.0
    device_suffix: str = "@broker"


@dataclass(frozen=True)
class ServiceConfig:
    """Validated settings of ``iotwarden run``; see docs/config.md."""

    store: Path
    state: Path
    dead_letter: Path
    status_file: Path | None = None
    policies: Path | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    sources: tuple[MqttSourceConfig, ...] = ()
    logs: tuple[MosquittoLogSettings, ...] = ()
    traffic: TrafficSettings = field(default_factory=TrafficSettings)
    lateness: float = 10.0
    batch_size: int = 5000
    flush_interval: float = 0.2
    clock: str = "wall"
    silence_interval: float = 5.0
    silence_grace: float = 30.0
    checkpoint_interval: float = 300.0
    stats_interval: float = 60.0
    queue_size: int = 50_000
    queue_max_bytes: int = 64 * 1024 * 1024
    overflow: str = "block"
    block_timeout: float = 10.0
    dedupe_size: int = 100_000
    source_file: str = "<defaults>"


def load_service_config(path: str | os.PathLike[str] | None = None) -> ServiceConfig:
    """Read and validate a YAML (or JSON) service configuration; None gives the defaults.

    Raises:
        InvalidConfigError: the file cannot be read or parsed, or a key is
            unknown or has an invalid value.
    """
    if path is None:
        return build_service_config({}, "<defaults>")
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidConfigError(f"cannot read the configuration file {source}: {error.strerror}") from error
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidConfigError(f"{source}: invalid YAML: {error}") from error
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise InvalidConfigError(f"{source}: expected a mapping of settings at the top level, got {_type_name(loaded)}")
    return build_service_config(loaded, str(source))


def build_service_config(data: Mapping[str, Any], file_name: str) -> ServiceConfig:
    """Validate a decoded configuration mapping; ``file_name`` is used in error messages."""
    top = _Section(data, file_name, "")
    base = data_dir
    store = top.path("store", None) or base() / "iotwarden.db"
    state = top.path("state", None) or base() / "service-state.npz"
    dead_letter = top.path("dead_letter", None) or dead_letter_path(store)
    status_file = top.path("status_file", None)
    policies = top.path("policies", None)

    engine_data = top.mapping("engine", {})
    try:
        engine = EngineConfig.from_dict(dict(engine_data))
    except (InvalidConfigError, TypeError) as error:
        raise InvalidConfigError(f"{file_name}: key 'engine': {error}") from error

    traffic_section = top.section("traffic")
    traffic = TrafficSettings(
        enabled=traffic_section.boolean("enabled", True),
        interval=traffic_section.number("interval", 60.0, minimum=1.0),
        device_suffix=traffic_section.string("device_suffix", "@broker"),
    )
    traffic_section.finish()

    raw_sources = top.get("sources", _UNSET)
    if raw_sources is _UNSET:
        raw_sources = [{"type": "mqtt"}]
    if not isinstance(raw_sources, list) or not raw_sources:
        top.fail("sources", raw_sources, "a non-empty list of sources")
    sources: list[MqttSourceConfig] = []
    logs: list[MosquittoLogSettings] = []
    for index, raw in enumerate(raw_sources):
        key = f"sources[{index}]"
        if not isinstance(raw, dict):
            top.fail(key, raw, "a mapping with a 'type' key")
        section = _Section(raw, file_name, key + ".")
        kind = section.choice("type", None, ("mqtt", "mosquitto_log"))
        if kind == "mqtt":
            sources.append(_mqtt_source(section, index, state))
        else:
            logs.append(_mosquitto_log(section))
        section.finish()
    if not sources:
        top.fail("sources", raw_sources, "at least one source of type 'mqtt'")

    config = ServiceConfig(
        store=store,
        state=state,
        dead_letter=dead_letter,
        status_file=status_file,
        policies=policies,
        engine=engine,
        sources=tuple(sources),
        logs=tuple(logs),
        traffic=traffic,
        lateness=top.number("lateness", 10.0, minimum=0.0),
        batch_size=top.integer("batch_size", 5000, minimum=1),
        flush_interval=top.number("flush_interval", 0.2, minimum=0.001),
        clock=top.choice("clock", "wall", CLOCKS),
        silence_interval=top.number("silence_interval", 5.0, minimum=0.01),
        silence_grace=top.number("silence_grace", 30.0, minimum=0.0),
        checkpoint_interval=top.number("checkpoint_interval", 300.0, minimum=1.0),
        stats_interval=top.number("stats_interval", 60.0, minimum=0.1),
        queue_size=top.integer("queue_size", 50_000, minimum=1),
        queue_max_bytes=top.integer("queue_max_bytes", 64 * 1024 * 1024, minimum=1024),
        overflow=top.choice("overflow", "block", OVERFLOW_POLICIES),
        block_timeout=top.number("block_timeout", 10.0, minimum=0.0),
        dedupe_size=top.integer("dedupe_size", 100_000, minimum=0),
        source_file=file_name,
    )
    top.finish()
    return config


def _mqtt_source(section: _Section, index: int, state: Path) -> MqttSourceConfig:
    topics_value = section.get("topic", _UNSET)
    topics_key = "topic"
    if topics_value is _UNSET:
        topics_value = section.get("topics", [DEFAULT_TOPIC])
        topics_key = "topics"
    if isinstance(topics_value, str):
        topics_value = [topics_value]
    if not isinstance(topics_value, list) or not topics_value or not all(isinstance(t, str) for t in topics_value):
        section.fail(topics_key, topics_value, "a topic template or a non-empty list of them")
    for topic in topics_value:
        try:
            TopicTemplate(topic)
        except InvalidConfigError as error:
            section.fail(topics_key, topic, f"a valid topic template ({error})")

    default_id = "iotwarden-" + hashlib.blake2b(f"{state.resolve()}#{index}".encode(), digest_size=4).hexdigest()
    password = section.string("password", None)
    password_env = section.string("password_env", None)
    if password_env is not None:
        password = os.environ.get(password_env)
        if password is None:
            section.fail("password_env", password_env, "the name of a set environment variable")
    protocol = str(section.get("protocol", "3.1.1"))
    if protocol not in ("3.1.1", "5", "5.0"):
        section.fail("protocol", protocol, "'3.1.1' or '5'")
    reconnect_min = section.number("reconnect_min", 1.0, minimum=0.1)
    settings = MqttSettings(
        host=section.string("host", "127.0.0.1"),
        port=section.integer("port", 1883, minimum=1, maximum=65535),
        topics=tuple(topics_value),
        client_id=section.string("client_id", default_id),
        qos=section.integer("qos", 1, minimum=0, maximum=2),
        protocol="5" if protocol.startswith("5") else "3.1.1",
        session_expiry=section.integer("session_expiry", 7 * 86400, minimum=0),
        keepalive=section.integer("keepalive", 60, minimum=5),
        username=section.string("username", None),
        password=password,
        reconnect_min=reconnect_min,
        reconnect_max=section.number("reconnect_max", 60.0, minimum=reconnect_min),
        max_payload_bytes=section.integer("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES, minimum=16),
    )
    options: dict[str, Any] = {}
    device_field = section.string("device_field", None)
    if device_field is not None:
        options["device_field"] = device_field
    time_field = section.string("time_field", None)
    if time_field is not None:
        options["time_field"] = time_field
    time_format = section.string("time_format", None)
    if time_format is not None:
        options["time_format"] = time_format
    options["timezone"] = section.string("timezone", "UTC")
    for key in ("metrics", "attribute_fields"):
        names = section.string_list(key, None)
        if names is not None:
            options[key] = names
    options["ignore_fields"] = section.string_list("ignore_fields", []) or []
    sentinel_values = section.mapping("sentinel_values", {})
    for name, codes in sentinel_values.items():
        if not isinstance(codes, list) or not all(_is_number(code) for code in codes):
            section.fail(f"sentinel_values.{name}", codes, "a list of numbers")
    if sentinel_values:
        options["sentinel_values"] = dict(sentinel_values)
    time_fallback = section.choice("time_fallback", "receive", ("receive", "reject"))
    config = MqttSourceConfig(settings, options, time_fallback)
    try:
        config.make_parser()
    except InvalidConfigError as error:
        raise InvalidConfigError(f"{section.file_name}: {section.prefix.rstrip('.')}: {error}") from error
    return config


def _mosquitto_log(section: _Section) -> MosquittoLogSettings:
    path = section.path("path", None)
    if path is None:
        section.fail("path", None, "the path of a Mosquitto log file")
    pattern_text = section.string("client_device", None)
    pattern = None
    if pattern_text is not None:
        try:
            pattern = re.compile(pattern_text)
        except re.error as error:
            section.fail("client_device", pattern_text, f"a regular expression ({error})")
        if "device" not in pattern.groupindex:
            section.fail("client_device", pattern_text, "a regular expression with a group named 'device'")
    return MosquittoLogSettings(path=path, client_device=pattern, from_start=section.boolean("from_start", False))


class _Section:
    """Typed reads of one mapping of the configuration, with errors naming file and key."""

    def __init__(self, data: Mapping[str, Any], file_name: str, prefix: str) -> None:
        self.data = data
        self.file_name = file_name
        self.prefix = prefix
        self.used: set[str] = set()

    def get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        value = self.data.get(key, _UNSET)
        return default if value is _UNSET or value is None and default is not _UNSET else value

    def fail(self, key: str, value: Any, expected: str) -> Any:
        raise InvalidConfigError(
            f"{self.file_name}: key '{self.prefix}{key}' must be {expected}, got {value!r}"
        )

    def finish(self) -> None:
        unknown = sorted(str(key) for key in self.data if key not in self.used)
        if unknown:
            names = ", ".join(f"'{self.prefix}{key}'" for key in unknown)
            known = ", ".join(sorted(self.used))
            raise InvalidConfigError(f"{self.file_name}: unknown key(s) {names}; known keys here: {known}")

    def string(self, key: str, default: str | None) -> Any:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, value, "a non-empty string")
        return value

    def path(self, key: str, default: Path | None) -> Path | None:
        value = self.string(key, None)
        if value is None:
            return default
        return Path(os.path.expanduser(value))

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if type(value) is not bool:
            self.fail(key, value, "true or false")
        return value

    def integer(self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.get(key, default)
        if type(value) is not int:
            self.fail(key, value, _range_text("an integer", minimum, maximum))
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(key, value, _range_text("an integer", minimum, maximum))
        return value

    def number(self, key: str, default: float, *, minimum: float | None = None) -> float:
        value = self.get(key, default)
        if not _is_number(value) or (minimum is not None and value < minimum):
            self.fail(key, value, _range_text("a number", minimum, None))
        return float(value)

    def choice(self, key: str, default: str | None, allowed: tuple[str, ...]) -> str:
        value = self.get(key, default)
        if value not in allowed:
            self.fail(key, value, "one of " + ", ".join(repr(choice) for choice in allowed))
        return value

    def string_list(self, key: str, default: list[str] | None) -> list[str] | None:
        value = self.get(key, default)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.fail(key, value, "a list of field names")
        return value

    def mapping(self, key: str, default: Mapping[str, Any]) -> Mapping[str, Any]:
        value = self.get(key, default)
        if not isinstance(value, dict):
            self.fail(key, value, "a mapping")
        return value

    def section(self, key: str) -> _Section:
        return _Section(self.mapping(key, {}), self.file_name, f"{self.prefix}{key}.")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and value == value and value not in (float("inf"), float("-inf"))


def _range_text(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f"{kind} >= {minimum:g}"
    return kind


def _type_name(value: Any) -> str:
    return type(value).__name__
