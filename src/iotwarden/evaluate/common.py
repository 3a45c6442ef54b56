"""Pieces shared by the benchmark runners: dataset errors and the engine replay."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from iotwarden.errors import IotwardenError
from iotwarden.observation import Observation

__all__ = [
    "BATCH_SIZE",
    "DatasetError",
    "EngineLike",
    "ReplayResult",
    "contiguous_runs",
    "describe_engine_config",
    "engine_factory",
    "precision_recall_f1",
    "read_json",
    "replay",
]

logger = logging.getLogger(__name__)

# Observations per call of Engine.process_batch, as a live source would hand
# them over in micro-batches.
BATCH_SIZE = 1000


class DatasetError(IotwardenError):
    """A benchmark folder lacks an expected file or a file cannot be read."""


def read_json(path: Path) -> Any:
    """Read a JSON file, raising :class:`DatasetError` when it is missing or invalid."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as err:
        raise DatasetError(f"{path} not found") from err
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: invalid JSON: {err}") from err


class BatchResult(Protocol):
    """Result of ``Engine.process_batch`` (see ``iotwarden.engine``)."""

    score: np.ndarray
    ready: np.ndarray
    flagged: np.ndarray
    alerts: list[Any]


class EngineLike(Protocol):
    """The part of ``iotwarden.engine.Engine`` that the benchmarks use."""

    def process_batch(self, observations: list[Observation]) -> BatchResult: ...

    def finish(self) -> list[Any]: ...


EngineFactory = Callable[[], EngineLike]


def engine_factory(**config_fields: Any) -> EngineFactory:
    """Return a function that builds a fresh ``Engine(EngineConfig(**config_fields))``.

    The import happens here, not at module load, so the scorers work and can
    be tested without the engine.
    """
    from iotwarden.engine import Engine, EngineConfig

    config = EngineConfig(**config_fields)
    return lambda: Engine(config)


def describe_engine_config(**config_fields: Any) -> dict[str, Any]:
    """Return every setting of ``EngineConfig(**config_fields)`` for reports.

    Without the engine only the given fields are returned.
    """
    try:
        from iotwarden.engine import EngineConfig
    except ImportError:
        return dict(config_fields)
    return EngineConfig(**config_fields).to_dict()


@dataclass
class ReplayResult:
    """Engine output for one replayed stream, one entry per observation."""

    score: np.ndarray
    ready: np.ndarray
    flagged: np.ndarray
    alerts: list[Any] = field(default_factory=list)


def replay(
    observations: Sequence[Observation], make_engine: EngineFactory, batch_size: int = BATCH_SIZE
) -> ReplayResult:
    """Feed observations to a fresh engine in micro-batches and collect its output.

    The alerts include those that ``Engine.finish`` returns at the end of the stream.
    """
    engine = make_engine()
    scores = []
    ready = []
    flagged = []
    alerts: list[Any] = []
    for start in range(0, len(observations), batch_size):
        batch = list(observations[start : start + batch_size])
        result = engine.process_batch(batch)
        scores.append(_column(result.score, len(batch), "score", float))
        ready.append(_column(result.ready, len(batch), "ready", bool))
        flagged.append(_column(result.flagged, len(batch), "flagged", bool))
        alerts.extend(result.alerts)
    alerts.extend(engine.finish())

    if not scores:
        return ReplayResult(np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool), alerts)
    return ReplayResult(np.concatenate(scores), np.concatenate(ready), np.concatenate(flagged), alerts)


def _column(values: Any, expected: int, name: str, dtype: type) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.shape != (expected,):
        raise RuntimeError(f"engine returned {array.shape} values for result.{name}, expected ({expected},)")
    return array


def contiguous_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Return ``(first, last)`` row of each run of True values, inclusive."""
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return []
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def precision_recall_f1(true_positives: int, false_positives: int, false_negatives: int) -> tuple[float, float, float]:
    """Return precision, recall and F1; a ratio with a zero denominator is 0.0."""
    predicted = true_positives + false_positives
    actual = true_positives + false_negatives
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
