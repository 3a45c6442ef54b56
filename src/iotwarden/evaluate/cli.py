"""``iotwarden evaluate nab|skab|ton-iot PATH [--json]``: score the engine on a public benchmark."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from iotwarden.errors import IotwardenError
from iotwarden.evaluate.nab import VARIANT_DESCRIPTIONS, NabReport, find_nab_files, run_nab
from iotwarden.evaluate.skab import SkabReport, find_skab_files, run_skab, summarise
from iotwarden.evaluate.ton_iot import (
    CONTROL_ROWS,
    MAX_NORMAL_FLAGGED,
    MIN_EPISODES_DETECTED,
    TonReport,
    find_ton_files,
    run_ton_iot,
)

__all__ = ["evaluate"]

Report = TypeVar("Report")

PATH_ARGUMENT = click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")


@click.group()
def evaluate() -> None:
    """Score the detection engine on a public benchmark dataset.

    PATH is the dataset folder: a NAB checkout (data/, labels/, config/), a
    SKAB checkout (data/<group>/<n>.csv) or the folder of TON_IoT telemetry
    CSV files.
    """


@evaluate.command("nab")
@PATH_ARGUMENT
@JSON_OPTION
def nab_command(path: Path, as_json: bool) -> None:
    """Compute NAB scores for the three profiles beside the published scoreboard."""
    n_files = _count(lambda: find_nab_files(path))
    report = _run_with_progress("NAB", n_files, lambda on_file: run_nab(path, on_file=on_file), as_json)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_nab(report)


@evaluate.command("skab")
@PATH_ARGUMENT
@JSON_OPTION
def skab_command(path: Path, as_json: bool) -> None:
    """Compute point and episode precision, recall and F1 of the engine's alerts on SKAB."""
    n_files = _count(lambda: find_skab_files(path))
    report = _run_with_progress("SKAB", n_files, lambda on_file: run_skab(path, on_file=on_file), as_json)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_skab(report)


@evaluate.command("ton-iot")
@PATH_ARGUMENT
@JSON_OPTION
def ton_iot_command(path: Path, as_json: bool) -> None:
    """Score each TON_IoT attack episode and the false alarms on normal rows."""
    n_files = _count(lambda: find_ton_files(path))
    report = _run_with_progress("TON_IoT", n_files, lambda on_file: run_ton_iot(path, on_file=on_file), as_json)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_ton(report)


def _count(find: Callable[[], list[object]]) -> int:
    try:
        return len(find())
    except IotwardenError as err:
        raise click.ClickException(str(err)) from err


def _run_with_progress(label: str, n_files: int, run: Callable[[Callable[[str], None]], Report], quiet: bool) -> Report:
    """Run a benchmark with a progress bar on standard error, which keeps ``--json`` output clean."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=quiet and not console.is_terminal) as progress:
        task = progress.add_task(f"{label}: replaying files", total=n_files)

        def on_file(name: str) -> None:
            progress.update(task, advance=1, description=f"{label}: {name}")

        try:
            return run(on_file)
        except IotwardenError as err:
            raise click.ClickException(str(err)) from err
        except ImportError as err:
            raise click.ClickException(f"the detection engine cannot be imported: {err}") from err


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _print_nab(report: NabReport) -> None:
    console = Console()
    profiles = list(report.results)
    table = Table(title=f"NAB: {report.n_files} files, {report.n_rows} rows, {report.n_windows} windows")
    table.add_column("detector")
    for name in profiles:
        table.add_column(name, justify="right")
    for index, (variant, results) in enumerate(report.variants.items()):
        label = f"iotwarden ({variant})"
        if index == 0:
            table.add_row(f"[bold]{label}[/bold]", *(f"[bold]{results[name].score:.1f}[/bold]" for name in profiles))
        else:
            table.add_row(label, *(f"{results[name].score:.1f}" for name in profiles))
    ranked = sorted(report.scoreboard.items(), key=lambda item: -item[1].get("standard", 0.0))
    for detector, scores in ranked:
        table.add_row(detector, *(_number(scores.get(name), 1) for name in profiles))
    table.caption = "; ".join(
        f"iotwarden ({variant}): {VARIANT_DESCRIPTIONS.get(variant, variant)}" for variant in report.variants
    ) + ". The first row is the headline score; the rows below iotwarden's are the published scoreboard."
    console.print(table)

    details = Table(
        title=f"iotwarden per profile ({next(iter(report.variants))}): threshold in surprise, TP and FN count windows"
    )
    details.add_column("profile", no_wrap=True)
    for column in ("threshold", "raw", "null", "perfect", "TP", "FN", "FP rows"):
        details.add_column(column, justify="right")
    for name, result in report.results.items():
        values = result.to_dict()
        details.add_row(
            name,
            _number(result.threshold, 2),
            _number(result.raw, 2),
            _number(result.null, 1),
            _number(result.perfect, 1),
            str(values["true_positives"]),
            str(values["false_negatives"]),
            str(values["false_positives"]),
        )
    console.print(details)


def _print_skab(report: SkabReport) -> None:
    console = Console()
    summary = summarise(report.files)
    point = summary["point"]
    episode = summary["episode"]
    table = Table(title=f"SKAB: {summary['n_files']} files, {summary['rows']} rows (online, no training split)")
    for column in ("level", "precision", "recall", "F1", "detail"):
        table.add_column(column, justify="left" if column in ("level", "detail") else "right")
    table.add_row("point", _number(point["precision"]), _number(point["recall"]), _number(point["f1"]),
                  f"TP {point['tp']}, FP {point['fp']}, FN {point['fn']}")
    table.add_row("episode", _number(episode["precision"]), _number(episode["recall"]), _number(episode["f1"]),
                  f"{episode['detected']}/{episode['episodes']} episodes, "
                  f"{episode['alert_runs_on_episode']}/{episode['alert_runs']} alert runs on an episode")
    console.print(table)
    console.print(f"mean detection delay: {_number(summary['mean_detection_delay_s'], 1)} s; "
                  f"normal rows flagged: {summary['normal_rows_flagged_fraction']:.2%}; "
                  f"anomaly-free file flagged: {_percent(summary['anomaly_free_flagged_fraction'])}")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _print_ton(report: TonReport) -> None:
    console = Console()
    table = Table(title="TON_IoT: attack episodes (all normal rows, then one attack type, time-shifted)")
    for column in ("device", "episode", "rows", "blocks", "detected", "flagged", "carried over", "first flag"):
        left = column in ("device", "episode", "detected")
        table.add_column(column, justify="left" if left else "right", no_wrap=column in ("device", "episode"))
    for outcome in report.files:
        for episode in [*outcome.episodes, outcome.control]:
            delay = "-" if episode.first_flag_delay_s is None else f"{episode.first_flag_delay_s:.0f} s"
            table.add_row(outcome.device, episode.attack, str(episode.rows), str(episode.chunks),
                          "yes" if episode.detected else "no", f"{episode.flagged_fraction:.1%}",
                          str(episode.carried_over_rows), delay)
    console.print(table)
    console.print(
        "flagged: share of the episode's rows with an alert open; carried over: leading rows covered by an "
        "alert already open at the last normal row, which do not count as detection; control: the last "
        f"{CONTROL_ROWS} normal rows spliced in like an episode"
    )

    normal = Table(title="TON_IoT: normal rows")
    for column in ("device", "normal rows", "flagged", "share", "not ready"):
        normal.add_column(column, justify="left" if column == "device" else "right")
    for outcome in report.files:
        share = outcome.normal_flagged / outcome.normal_rows if outcome.normal_rows else 0.0
        normal.add_row(outcome.device, str(outcome.normal_rows), str(outcome.normal_flagged), f"{share:.2%}",
                       str(outcome.normal_not_ready))
    console.print(normal)

    episodes = report.episodes
    verdict = "[green]met[/green]" if report.floors_met else "[red]not met[/red]"
    console.print(
        f"episodes detected: {sum(e.detected for e in episodes)}/{len(episodes)} ({report.detection_rate:.1%}, "
        f"floor {MIN_EPISODES_DETECTED:.0%}); normal rows flagged: {report.normal_flagged_fraction:.2%} "
        f"(floor < {MAX_NORMAL_FLAGGED:.0%}); floors {verdict}"
    )
