"""The long-running service, ``iotwarden run``: live sources feeding the engine and the store.

See :mod:`iotwarden.service.runner` for the loop, :mod:`iotwarden.service.config`
for the configuration and docs/config.md for every key.
"""

from iotwarden.service.config import ServiceConfig, load_service_config
from iotwarden.service.runner import Service

__all__ = ["Service", "ServiceConfig", "load_service_config"]
