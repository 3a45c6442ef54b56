"""Detectors: each scores a round of observations before it learns from them."""

from iotwarden.detectors.base import Detector, DetectorScore, RoundView
from iotwarden.detectors.baseline import BaselineDetector
from iotwarden.detectors.correlation import CorrelationDetector
from iotwarden.detectors.drift import DriftDetector
from iotwarden.detectors.stuck import StuckDetector

__all__ = [
    "BaselineDetector",
    "CorrelationDetector",
    "Detector",
    "DetectorScore",
    "DriftDetector",
    "RoundView",
    "StuckDetector",
]
