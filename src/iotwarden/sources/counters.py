"""Data-quality counters shared by every source."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["SourceCounters"]


@dataclass
class SourceCounters:
    """Counts of what a source read, accepted and dropped.

    Pass one instance to a reader to collect its counts; readers add to it,
    so one instance can gather several files or a whole run.

    Attributes:
        records: Records read: CSV rows, JSON lines or messages, not counting
            blank lines and the header.
        observations: Observations produced.
        rejections: Rejected records by reason code, for example
            ``field_count``, ``invalid_json``, ``missing_time``.
        field_issues: Dropped metric values by field name.
    """

    records: int = 0
    observations: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    field_issues: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        """Total number of rejected records."""
        return sum(self.rejections.values())

    def update(self, other: SourceCounters) -> None:
        """Add the counts of ``other`` to this instance."""
        self.records += other.records
        self.observations += other.observations
        self.rejections.update(other.rejections)
        self.field_issues.update(other.field_issues)
