"""iotwarden: per-device streaming anomaly detection for IoT fleets."""

from iotwarden.errors import IotwardenError, InvalidConfigError, InvalidRecordError
from iotwarden.observation import FieldIssue, Observation, Rejection

__all__ = [
    "FieldIssue",
    "InvalidConfigError",
    "InvalidRecordError",
    "IotwardenError",
    "Observation",
    "Rejection",
]

__version__ = "0.1.0"
