"""Explanations in words for each alert category."""

from __future__ import annotations

from iotwarden.decisions.alerts import Contribution, _fmt

__all__ = ["describe_drift", "describe_multivariate", "describe_range", "describe_silence", "describe_spike", "describe_stuck"]


def _where_from(cohort: str | None) -> str:
    return f"its cohort {cohort!r}" if cohort is not None else "this device's baseline"


def describe_spike(main: Contribution, others: list[Contribution], cohort: str | None) -> str:
    assert main.value is not None and main.low is not None and main.high is not None
    verb = "rose to" if main.value > (main.expected or 0.0) else "fell to"
    text = f"{main.metric} {verb} {_fmt(main.value)}, outside the expected {_fmt(main.low)}..{_fmt(main.high)} of {_where_from(cohort)}"
    if others:
        text += "; also unusual: " + ", ".join(c.describe() for c in others)
    return text


def describe_drift(main: Contribution, recent: float, cohort: str | None) -> str:
    assert main.expected is not None
    direction = "up" if recent > main.expected else "down"
    return (
        f"{main.metric} drifted {direction}: its recent level {_fmt(recent)} has moved away from the"
        f" long-term level {_fmt(main.expected)} (normal range {_fmt(main.low or 0.0)}..{_fmt(main.high or 0.0)})"
    )


def describe_stuck(main: Contribution, run: int, longest: int) -> str:
    return (
        f"{main.metric} repeated the value {_fmt(main.value or 0.0)} {run} times in a row;"
        f" the longest normal run of this metric was {longest}"
    )


def describe_range(main: Contribution) -> str:
    return (
        f"{main.metric}={_fmt(main.value or 0.0)} is outside the configured physical range"
        f" {_fmt(main.low or 0.0)}..{_fmt(main.high or 0.0)}"
    )


def describe_multivariate(first: Contribution, second: Contribution, rho: float, u_first: float, u_second: float) -> str:
    relation = "move together" if rho > 0 else "move in opposite directions"
    return (
        f"{first.metric} and {second.metric} usually {relation} (correlation {rho:.2f}), but now"
        f" {first.metric}={_fmt(first.value or 0.0)} ({u_first:+.1f} sd) and"
        f" {second.metric}={_fmt(second.value or 0.0)} ({u_second:+.1f} sd)"
    )


def describe_silence(gap: float, typical: float, threshold: float, ongoing: bool) -> str:
    """Explain a silence: one still going on when it was found, or one already over (``gap`` is then its length).

    For an ongoing silence ``gap`` is the time without a report when the
    engine checked, which in a replay can be long after the silence began.
    """
    if ongoing:
        return (
            f"device stopped reporting: no report for more than {_duration(threshold)}"
            f" (typical interval {_duration(typical)}); {_duration(gap)} without a report when checked"
        )
    return (
        f"device did not report for {_duration(gap)} (typical interval {_duration(typical)},"
        f" silence after {_duration(threshold)})"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
