"""The streaming engine and its settings."""

from iotwarden.engine.config import EngineConfig, SENSITIVITY_THRESHOLDS
from iotwarden.engine.core import BatchResult, Engine

__all__ = ["BatchResult", "Engine", "EngineConfig", "SENSITIVITY_THRESHOLDS"]
