"""Group repeated findings of one rule on one device into one alert.

A replayed join-request sent 200 times is one attack, not 200 alerts: each
finding extends the open episode of its (device, category) while findings
come closer together than ``gap`` seconds. An episode becomes a finished
:class:`~iotwarden.decisions.alerts.Alert` when a later finding comes after
the gap, when the stream clock passed to :meth:`EpisodeBook.expire` is past the gap,
or at :meth:`EpisodeBook.finish`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iotwarden.decisions.alerts import SEVERITIES, SEVERITY_SCORES, Alert, Contribution

__all__ = ["DETECTOR", "EpisodeBook", "SEVERITY_SCORES", "describe_duration"]

DETECTOR = "lorawan"



@dataclass(slots=True)
class _Episode:
    device: str
    category: str
    severity: str
    first_time: float
    last_time: float
    summary: str
    source: str
    line: int | None
    metric: Contribution
    details: dict[str, Any]
    count: int = 1


class EpisodeBook:
    """Open episodes by (device, category); finished alerts come out of :meth:`note`, :meth:`expire` and :meth:`finish`."""

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.open: dict[tuple[str, str], _Episode] = {}

    def note(
        self,
        device: str,
        category: str,
        time: float,
        *,
        severity: str,
        summary: str,
        metric: Contribution,
        details: dict[str, Any],
        source: str = "",
        line: int | None = None,
    ) -> list[Alert]:
        """Record one finding; return the alert of an earlier episode it ended, if any."""
        key = (device, category)
        finished: list[Alert] = []
        episode = self.open.get(key)
        if episode is not None and time - episode.last_time > self.gap:
            finished.append(self._close(self.open.pop(key)))
            episode = None
        if episode is None:
            self.open[key] = _Episode(device, category, severity, time, time, summary, source, line, metric, dict(details))
            return finished
        episode.count += 1
        episode.last_time = max(episode.last_time, time)
        # The explanation describes the worst finding: the highest severity, then the largest value.
        rank = SEVERITIES.index(severity) - SEVERITIES.index(episode.severity)
        if rank > 0 or (rank == 0 and _larger(metric, episode.metric)):
            episode.severity = severity
            episode.summary = summary
            episode.metric = metric
            episode.details = dict(details)
        return finished

    def expire(self, clock: float) -> list[Alert]:
        """Finish the episodes with no finding for more than the gap before ``clock``."""
        stale = [key for key, episode in self.open.items() if clock - episode.last_time > self.gap]
        return [self._close(self.open.pop(key)) for key in stale]

    def finish(self) -> list[Alert]:
        """Finish every open episode, oldest first (end of input)."""
        episodes = sorted(self.open.values(), key=lambda episode: (episode.first_time, episode.device, episode.category))
        self.open.clear()
        return [self._close(episode) for episode in episodes]

    def _close(self, episode: _Episode) -> Alert:
        explanation = episode.summary
        if episode.count > 1:
            span = describe_duration(episode.last_time - episode.first_time)
            explanation += f" Seen {episode.count} times over {span}."
        details = dict(episode.details)
        details["occurrences"] = episode.count
        return Alert(
            device=episode.device,
            time=episode.first_time,
            category=episode.category,
            severity=episode.severity,
            score=SEVERITY_SCORES[episode.severity],
            detector=DETECTOR,
            metrics=[episode.metric],
            explanation=explanation,
            end_time=episode.last_time,
            close_reason="episode ended",
            source=episode.source,
            line=episode.line,
            details=details,
        )


def _larger(candidate: Contribution, current: Contribution) -> bool:
    return candidate.value is not None and (current.value is None or candidate.value > current.value)


def describe_duration(seconds: float) -> str:
    """Format a duration in the largest sensible unit, for explanations."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
