"""Turning detector scores into alerts: calibration, hysteresis, incidents."""

from iotwarden.decisions.alerts import Alert, Contribution, severity_for
from iotwarden.decisions.calibration import MAX_SURPRISE, surprise_from_z
from iotwarden.decisions.suppression import Suppression, SuppressionSet

__all__ = ["Alert", "Contribution", "MAX_SURPRISE", "Suppression", "SuppressionSet", "severity_for", "surprise_from_z"]
