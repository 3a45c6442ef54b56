"""Actuators: the control points that contain a device and release it.

Each actuator implements :class:`~iotwarden.response.actuators.base.Actuator`
(``apply`` and ``revert``, both idempotent). :func:`build_actuators` creates
them from a policy file's ``actuators`` section.
"""

from __future__ import annotations

from typing import Any

from iotwarden.errors import InvalidConfigError
from iotwarden.response.actuators.base import ActionRequest, Actuator, ActuatorError, Target
from iotwarden.response.actuators.cellular import CellularActuator, EmnifyActuator, RequestTemplate
from iotwarden.response.actuators.mqtt import MosquittoDynsecActuator
from iotwarden.response.actuators.nftables import NftablesActuator
from iotwarden.response.actuators.notify import SyslogNotifier, WebhookNotifier
from iotwarden.response.actuators.sdn import OnosActuator, OsKenActuator
from iotwarden.response.policy import ActuatorConfig, PolicySet

__all__ = [
    "ActionRequest", "Actuator", "ActuatorError", "CellularActuator", "EmnifyActuator", "MosquittoDynsecActuator",
    "NftablesActuator", "OnosActuator", "OsKenActuator", "RequestTemplate", "SyslogNotifier", "Target",
    "WebhookNotifier", "build_actuator", "build_actuators",
]

_CLASSES: dict[str, type[Actuator]] = {
    "nftables": NftablesActuator,
    "osken": OsKenActuator,
    "onos": OnosActuator,
    "mosquitto": MosquittoDynsecActuator,
    "emnify": EmnifyActuator,
    "cellular": CellularActuator,
    "webhook": WebhookNotifier,
    "syslog": SyslogNotifier,
}


def build_actuator(config: ActuatorConfig) -> Actuator:
    """Create one actuator from its policy-file settings."""
    settings: dict[str, Any] = {key: value for key, value in config.settings.items() if value is not None}
    if config.type == "emnify" and "url" not in settings:
        settings["url"] = "https://cdn.emnify.net"
    try:
        return _CLASSES[config.type](config.name, **settings)
    except (TypeError, ValueError, ActuatorError) as error:
        raise InvalidConfigError(f"{config.source}:{config.line}: actuators.{config.name}: {error}") from error


def build_actuators(policies: PolicySet) -> dict[str, Actuator]:
    """Create every actuator that a policy file defines, keyed by name."""
    return {name: build_actuator(config) for name, config in policies.actuators.items()}
