"""A supervised ranker that orders the alert queue by how likely an alert is a true positive.

It learns from analyst labels (true or false positive) with a logistic
regression over one-hot categorical features (category, detector, severity,
cohort, lead metric, baseline) and scaled numeric ones (score, duration,
number of metrics). Its precision and recall are measured by stratified
cross-validation at a probability threshold of 0.5. With fewer than
``MIN_LABELS`` labels, or without both classes, it stays off and
``status.reason`` says why.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["MIN_LABELS", "AlertRanker", "RankerStatus", "alert_features"]

logger = logging.getLogger(__name__)

MIN_LABELS = 20
CATEGORICAL = ("category", "detector", "severity", "cohort", "metric", "baseline")
NUMERIC = ("score", "log_duration", "open", "n_metrics")


def alert_features(alert: dict[str, Any]) -> dict[str, Any]:
    """Return the ranker's features of an alert given as stored data (epoch-second times).

    ``alert`` needs ``category``, ``detector``, ``severity``, ``cohort``,
    ``baseline``, ``score``, ``time``, ``end_time`` and ``metrics`` (a list
    of dicts with ``metric``). An open alert has duration 0 and ``open`` 1.
    """
    metrics = alert.get("metrics") or []
    end = alert.get("end_time")
    duration = 0.0 if end is None else max(float(end) - float(alert["time"]), 0.0)
    return {
        "category": str(alert.get("category", "")),
        "detector": str(alert.get("detector", "")),
        "severity": str(alert.get("severity", "")),
        "cohort": str(alert.get("cohort", "")),
        "metric": str(metrics[0]["metric"]) if metrics else "",
        "baseline": str(alert.get("baseline", "")),
        "score": float(alert.get("score", 0.0)) if math.isfinite(float(alert.get("score", 0.0))) else 0.0,
        "log_duration": math.log1p(duration),
        "open": 1.0 if end is None else 0.0,
        "n_metrics": float(len(metrics)),
    }


@dataclass
class RankerStatus:
    """Whether the ranker is on, why not, and its cross-validated quality."""

    enabled: bool
    reason: str
    labels: int = 0
    true_positives: int = 0
    false_positives: int = 0
    min_labels: int = MIN_LABELS
    precision: float | None = None
    recall: float | None = None
    folds: int | None = None
    model: str = "logistic regression"
    trained_at: float | None = None
    features: list[str] = field(default_factory=lambda: [*CATEGORICAL, *NUMERIC])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertRanker:
    """Train on labelled alerts and return true-positive probabilities for others."""

    def __init__(self, min_labels: int = MIN_LABELS) -> None:
        self.min_labels = min_labels
        self.model: Any = None
        self.status = RankerStatus(False, "not trained yet", min_labels=min_labels)

    def train(self, alerts: Sequence[dict[str, Any]], labels: Sequence[bool]) -> RankerStatus:
        """Fit on alerts with labels (True for a true positive) and measure precision by cross-validation."""
        positives = int(sum(bool(label) for label in labels))
        negatives = len(labels) - positives
        base = {"labels": len(labels), "true_positives": positives, "false_positives": negatives, "min_labels": self.min_labels}
        self.model = None
        if len(labels) < self.min_labels:
            self.status = RankerStatus(False, f"needs at least {self.min_labels} labelled alerts, has {len(labels)}", **base)
            return self.status
        if positives == 0 or negatives == 0:
            missing = "true positives" if positives == 0 else "false positives"
            self.status = RankerStatus(False, f"needs both true and false positives; no {missing} are labelled yet", **base)
            return self.status
        minority = min(positives, negatives)
        if minority < 2:
            self.status = RankerStatus(False, "needs at least 2 labels of each class to cross-validate", **base)
            return self.status

        from sklearn.metrics import precision_score, recall_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        rows = [alert_features(alert) for alert in alerts]
        y = np.array([1 if label else 0 for label in labels])
        folds = min(5, minority)
        with warnings.catch_warnings():
            # Tiny folds may see a category only once; that is expected here.
            warnings.simplefilter("ignore")
            predicted = cross_val_predict(
                _pipeline(), _frame(rows), y, cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
            )
            model = _pipeline().fit(_frame(rows), y)
        precision = float(precision_score(y, predicted, zero_division=0))
        recall = float(recall_score(y, predicted, zero_division=0))
        self.model = model
        self.status = RankerStatus(
            True, "trained on analyst labels", precision=precision, recall=recall, folds=folds, trained_at=time.time(), **base
        )
        logger.info("alert ranker trained on %d labels: precision %.2f, recall %.2f (%d-fold)", len(labels), precision, recall, folds)
        return self.status

    def predict(self, alerts: Sequence[dict[str, Any]]) -> list[float] | None:
        """Return the true-positive probability of each alert, or None while the ranker is off."""
        if self.model is None or not alerts:
            return None if self.model is None else []
        frame = _frame([alert_features(alert) for alert in alerts])
        return [float(p) for p in self.model.predict_proba(frame)[:, 1]]


def _frame(rows: list[dict[str, Any]]) -> np.ndarray:
    """Return an object array: categorical columns first, then numeric ones."""
    names = [*CATEGORICAL, *NUMERIC]
    return np.array([[row[name] for name in names] for row in rows], dtype=object).reshape(len(rows), len(names))


def _pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(range(len(CATEGORICAL)))),
            ("numeric", StandardScaler(), list(range(len(CATEGORICAL), len(CATEGORICAL) + len(NUMERIC)))),
        ]
    )
    return Pipeline([("features", columns), ("model", LogisticRegression(class_weight="balanced", max_iter=1000))])
