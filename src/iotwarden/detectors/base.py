"""The detector contract.

A detector scores a *round* of observations, in which every device appears
at most once, before it learns from them. Scores are *surprise*:
``-log10`` of a calibrated tail probability, so higher means more anomalous
and 0 means unremarkable. "Not ready" is the ``ready`` mask, never a number:
where ``ready`` is False the surprise is 0 and must not be read as normal or
abnormal. The caller decides which observations a detector may learn from,
so flagged points need not train the baseline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from iotwarden.engine.config import EngineConfig
from iotwarden.engine.state import ArraySpec, ShardState

__all__ = ["Detector", "DetectorScore", "RoundView"]


@dataclass(slots=True)
class RoundView:
    """One round of observations of one shard, with its baseline gathered.

    ``x`` contains metric values with NaN where a metric is missing; ``present``
    is the mask of real values. Baseline fields are read from the shard state
    before any learning in this round.
    """

    config: EngineConfig
    slots: np.ndarray
    rows: np.ndarray
    times: np.ndarray
    x: np.ndarray
    present: np.ndarray
    derived: np.ndarray
    count: np.ndarray
    mean_fast: np.ndarray
    scale_fast: np.ndarray
    mean_slow: np.ndarray
    scale_slow: np.ndarray
    own_ready: np.ndarray
    long_ready: np.ndarray
    drift_ready: np.ndarray
    cohort_mean: np.ndarray
    cohort_scale: np.ndarray
    cohort_ready: np.ndarray
    hold_slow: np.ndarray | None = None
    normalised: np.ndarray | None = None

    @property
    def n_metrics(self) -> int:
        return self.x.shape[1]


@dataclass(slots=True)
class DetectorScore:
    """A detector's scores for one round.

    ``surprise`` and ``ready`` have shape ``(n, n_metrics)`` for per-metric
    detectors and ``(n, 1)`` for whole-device ones. ``direction`` is +1 above
    and -1 below the expected value (0 where it has no meaning);
    ``expected`` and ``scale`` give the range shown in explanations.
    """

    surprise: np.ndarray
    ready: np.ndarray
    direction: np.ndarray | None = None
    expected: np.ndarray | None = None
    scale: np.ndarray | None = None
    from_cohort: np.ndarray | None = None
    detail: np.ndarray | None = None


class Detector(ABC):
    """Base class of the engine's detectors; see the module docstring."""

    name: ClassVar[str]
    per_metric: ClassVar[bool] = True

    def state_specs(self) -> dict[str, ArraySpec]:
        """State arrays this detector keeps per device, metric or pair."""
        return {}

    @abstractmethod
    def score(self, state: ShardState, view: RoundView) -> DetectorScore:
        """Score the round without changing any state."""

    def learn(self, state: ShardState, view: RoundView, learn: np.ndarray) -> None:
        """Update state from the observations where ``learn`` is True.

        ``learn`` has shape ``(n, n_metrics)``: it is False for missing
        values and for points that were flagged.
        """
