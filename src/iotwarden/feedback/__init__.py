"""Analyst feedback that changes detection.

A false-positive label creates a :class:`~iotwarden.decisions.suppression.Suppression`
scoped to what raised the alert (device, lead metric, category), so the
engine stops reporting that pattern once ``engine.set_suppressions`` has
been called with :func:`load_suppressions`. True- and false-positive labels
train :class:`AlertRanker`, which orders the alert queue.
"""

from iotwarden.feedback.labels import LABELS, TRIAGE_STATES, TriageTable
from iotwarden.feedback.ranker import MIN_LABELS, AlertRanker, RankerStatus, alert_features
from iotwarden.feedback.suppressions import (
    DEFAULT_FALSE_POSITIVE_TTL,
    SuppressionRecord,
    SuppressionSync,
    SuppressionTable,
    load_suppressions,
)

__all__ = [
    "DEFAULT_FALSE_POSITIVE_TTL",
    "LABELS",
    "MIN_LABELS",
    "TRIAGE_STATES",
    "AlertRanker",
    "RankerStatus",
    "SuppressionRecord",
    "SuppressionSync",
    "SuppressionTable",
    "TriageTable",
    "alert_features",
    "load_suppressions",
]
