"""The streaming engine and its settings.

``Engine`` and ``BatchResult`` load on first use, so that the detectors can
import ``iotwarden.engine.config`` and ``iotwarden.engine.state`` without
importing the engine that uses them.
"""

from typing import Any

from iotwarden.engine.config import SENSITIVITY_THRESHOLDS, EngineConfig

__all__ = ["BatchResult", "Engine", "EngineConfig", "SENSITIVITY_THRESHOLDS"]


def __getattr__(name: str) -> Any:
    if name in ("BatchResult", "Engine"):
        from iotwarden.engine import core

        return getattr(core, name)
    raise AttributeError(f"module 'iotwarden.engine' has no attribute {name!r}")
