"""The long-running service, ``iotwarden run``: live sources feeding the engine and the store.

See :mod:`iotwarden.service.runner` for the loop, :mod:`iotwarden.service.receiver`
for the MQTT receiver process, :mod:`iotwarden.service.config` for the
configuration and docs/config.md for every key.
"""

from __future__ import annotations

from typing import Any

from iotwarden.service.config import ServiceConfig, load_service_config

__all__ = ["Service", "ServiceConfig", "load_service_config"]


def __getattr__(name: str) -> Any:
    # Service is imported on first use, so that the receiver process, which
    # imports iotwarden.service.receiver, does not load the engine and numpy.
    if name == "Service":
        from iotwarden.service.runner import Service

        return Service
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
