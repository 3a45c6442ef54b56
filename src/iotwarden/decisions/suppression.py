"""Suppressions and maintenance windows: alerts that analysts chose not to see.

A suppression matches alerts by any combination of device, cohort (device
group), metric and category, during a time window in event time. A
false-positive label creates one scoped to what raised the alert; a
maintenance window is one with a start and an end. A matched alert is still
tracked by the engine (so it does not reopen at every point of its episode)
but is not reported, and it records the suppression's id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from iotwarden.decisions.alerts import Alert

__all__ = ["Suppression", "SuppressionSet"]


@dataclass(frozen=True, slots=True)
class Suppression:
    """One suppression; a field left None matches anything.

    ``start`` and ``end`` are epoch seconds of event time; ``end`` None
    means it never expires.
    """

    id: str
    device: str | None = None
    cohort: str | None = None
    metric: str | None = None
    category: str | None = None
    start: float = -math.inf
    end: float | None = None
    reason: str = ""

    def matches(self, alert: Alert) -> bool:
        """Whether this suppression covers ``alert``."""
        if self.device is not None and alert.device != self.device:
            return False
        if self.cohort is not None and alert.cohort != self.cohort:
            return False
        if self.category is not None and alert.category != self.category:
            return False
        if self.metric is not None and all(c.metric != self.metric for c in alert.metrics[:1]):
            return False
        if alert.time < self.start:
            return False
        return self.end is None or alert.time < self.end


class SuppressionSet:
    """The suppressions in force, indexed by device for quick matching."""

    def __init__(self, suppressions: Iterable[Suppression] = ()) -> None:
        self.replace(suppressions)

    def replace(self, suppressions: Iterable[Suppression]) -> None:
        """Swap in a new list (for example after an analyst added one)."""
        self._by_device: dict[str | None, list[Suppression]] = {}
        for suppression in suppressions:
            self._by_device.setdefault(suppression.device, []).append(suppression)

    def __len__(self) -> int:
        return sum(len(group) for group in self._by_device.values())

    def match(self, alert: Alert) -> Suppression | None:
        """Return the first suppression that covers ``alert``, if any."""
        for key in (alert.device, None):
            for suppression in self._by_device.get(key, ()):
                if suppression.matches(alert):
                    return suppression
        return None
