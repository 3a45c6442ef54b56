"""Alerts and the evidence that explains them."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from iotwarden.observation import format_time, parse_time

__all__ = ["Alert", "Contribution", "SEVERITIES", "SEVERITY_SCORES", "severity_for"]

SEVERITIES = ("info", "low", "medium", "high", "critical")

# Rules give no probability, so a rule alert's score follows its severity, on
# the scale that severity_for uses at the default threshold of 6.
SEVERITY_SCORES = {"info": 0.0, "low": 6.0, "medium": 9.0, "high": 12.0, "critical": 18.0}


@dataclass(slots=True)
class Contribution:
    """One metric's part in an alert: what was seen against what was expected.

    ``low`` and ``high`` bound the expected range (about three standard
    deviations of the learned baseline); either may be None when the detector
    has no range, for example for a silence.
    """

    metric: str
    value: float | None
    expected: float | None
    low: float | None
    high: float | None
    surprise: float

    def describe(self) -> str:
        """Return one line in words, for tables and logs."""
        if self.value is None:
            return f"{self.metric} (surprise {self.surprise:.1f})"
        if self.low is None or self.high is None:
            return f"{self.metric}={_fmt(self.value)} (surprise {self.surprise:.1f})"
        return (
            f"{self.metric}={_fmt(self.value)}, expected {_fmt(self.low)}..{_fmt(self.high)}"
            f" (surprise {self.surprise:.1f})"
        )


@dataclass(slots=True)
class Alert:
    """An anomaly episode of one device, raised by one detector.

    An alert opens at ``time`` and closes at ``end_time`` (None while open).
    ``score`` is the peak calibrated surprise (``-log10`` tail probability,
    corrected for the number of metrics tested); ``baseline`` says whether the
    device's own baseline or its cohort's was used.
    """

    device: str
    time: float
    category: str
    severity: str
    score: float
    detector: str
    metrics: list[Contribution]
    explanation: str
    cohort: str = "*"
    baseline: str = "device"
    end_time: float | None = None
    close_reason: str | None = None
    incident_id: str = ""
    id: str = ""
    source: str = ""
    line: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            key = f"{self.device}\x1f{self.detector}\x1f{self.category}\x1f{self.time!r}\x1f"
            key += "\x1f".join(c.metric for c in self.metrics)
            self.id = hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def is_open(self) -> bool:
        return self.end_time is None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible mapping with ISO 8601 times."""
        data = asdict(self)
        data["time"] = format_time(self.time)
        data["end_time"] = None if self.end_time is None else format_time(self.end_time)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """Rebuild an alert from :meth:`to_dict` output."""
        values = dict(data)
        values["time"] = parse_time(values["time"])
        if values.get("end_time") is not None:
            values["end_time"] = parse_time(values["end_time"])
        values["metrics"] = [Contribution(**c) for c in values.get("metrics", [])]
        return cls(**values)


def severity_for(surprise: float, threshold: float) -> str:
    """Map a surprise to a severity: each step is about 1000x less likely."""
    excess = surprise - threshold
    if excess < 0:
        return "info"
    if excess < 3:
        return "low"
    if excess < 6:
        return "medium"
    if excess < 12:
        return "high"
    return "critical"


def _fmt(value: float) -> str:
    if value != value:  # NaN never reaches here from data; kept for safety in messages.
        return "nan"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude >= 1e6 or magnitude < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}"
