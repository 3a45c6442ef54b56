"""The ``iotwarden`` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from iotwarden import __version__
from iotwarden.config import load_engine_config
from iotwarden.decisions.alerts import Alert
from iotwarden.engine import Engine
from iotwarden.errors import IotwardenError
from iotwarden.observation import format_time, parse_time
from iotwarden.paths import data_dir, dead_letter_path, default_store_path
from iotwarden.api.history import ObservationRecorder
from iotwarden.feedback.suppressions import SuppressionSync
from iotwarden.observation import Observation
from iotwarden.pipeline import Replay, ReplaySummary
from iotwarden.response import attach_policies
from iotwarden.sources.deadletter import DeadLetterWriter
from iotwarden.sources.files import read_records
from iotwarden.sources.formats import FILE_FORMATS, format_names, read_format
from iotwarden.store import AlertStore

__all__ = ["cli", "main"]

logger = logging.getLogger(__name__)
console = Console(stderr=False, highlight=False)
error_console = Console(stderr=True, highlight=False)

_SEVERITY_STYLE = {"info": "dim", "low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="iotwarden")
@click.option("-v", "--verbose", count=True, help="More log output (-v: info, -vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors in the log output.")
def cli(verbose: int, quiet: bool) -> None:
    """Watch IoT device fleets: learn each device's normal behaviour and flag what deviates."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = RichHandler(console=error_console, show_path=False, rich_tracebacks=False, markup=False)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", datefmt="%H:%M:%S", handlers=[handler], force=True)


def main() -> None:
    """Entry point: run the CLI, turning package errors into one line and exit 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except IotwardenError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(0)


# detect ---------------------------------------------------------------------


def attach_console_feeds(replay: Replay, store: Any) -> ObservationRecorder:
    """Feed the console from a replay: suppressions in force, and a thinned history for its charts.

    Analysts' suppressions apply from the start and again whenever they
    change. After each batch the recorder keeps one observation per device
    every 5 minutes of event time with its baseline band, written in
    transactions of about 50,000 rows or every 5 s. Call ``flush()`` on the
    returned recorder when the replay stops.
    """
    suppressions = SuppressionSync(store, replay.engine)
    suppressions.refresh()
    recorder = ObservationRecorder(store, replay.engine, min_interval=300.0, flush_rows=50_000, flush_seconds=5.0)

    def after_batch(batch: list[Observation]) -> None:
        recorder.record(batch)
        suppressions.refresh()

    def after_columns(devices: list[str], times: Any, values: Any, metric_names: list[str]) -> None:
        recorder.record_columns(devices, times, values, metric_names)
        suppressions.refresh()

    replay.after_batch = after_batch
    replay.after_columns = after_columns
    return recorder


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--format", "input_format", help="Input format: csv, jsonl, mqtt, or a source format such as chirpstack or zeek (docs/formats.md lists them); default: csv or jsonl from the file name or content.")
@click.option("--device-column", help="Column or JSON field holding the device id.")
@click.option("--device", help="Device id for every record (files of a single device).")
@click.option("--time-column", help="Column of the event time; DATE,TIME for a date and a time column.")
@click.option("--time-format", help="'iso', 'epoch', 'epoch_ms' or a strptime format such as '%d.%m.%Y %H:%M:%S'; default: detected.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of times written without an offset.")
@click.option("--metrics", help="Comma-separated metric columns; default: every numeric column.")
@click.option("--ignore-columns", help="Comma-separated columns that the detector must not see, such as labels.")
@click.option("--delimiter", help="CSV delimiter; default: detected.")
@click.option("--decimal", default=".", show_default=True, help="Decimal separator of CSV numbers.")
@click.option("--thousands", help="Thousands separator of CSV numbers.")
@click.option("--day-first", is_flag=True, help="Read dates such as 01/05/2024 as day first.")
@click.option("--sensitivity", type=click.Choice(["low", "medium", "high"]), help="Alert sensitivity for every device and metric [default: medium].")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML or JSON file of engine settings.")
@click.option("--lateness", type=click.FloatRange(min=0), default=300.0, show_default=True, help="Seconds a record may arrive behind its device's latest time and still be put in order.")
@click.option("--store", "store_path", type=click.Path(dir_okay=False), help="SQLite store of alerts; default: iotwarden.db in the user data directory.")
@click.option("--alerts-out", type=click.Path(dir_okay=False, allow_dash=True), help="Also write the alerts as JSON lines to this file ('-' for standard output).")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), help="Engine state file: resumed from if it exists, saved on stop.")
@click.option("--stop-after", type=click.IntRange(min=1), help="Stop after this many input records and save --state.")
@click.option("--show-alerts/--no-show-alerts", default=False, help="Print each alert as it opens.")
@click.option("--policies", "policy_path", type=click.Path(exists=True, dir_okay=False), help="Response policy file (YAML) to run on each alert; see docs/policies.md.")
def detect(
    inputs: tuple[str, ...],
    input_format: str | None,
    device_column: str | None,
    device: str | None,
    time_column: str | None,
    time_format: str | None,
    timezone: str,
    metrics: str | None,
    ignore_columns: str | None,
    delimiter: str | None,
    decimal: str,
    thousands: str | None,
    day_first: bool,
    sensitivity: str | None,
    config_path: str | None,
    lateness: float,
    store_path: str | None,
    alerts_out: str | None,
    state_path: str | None,
    stop_after: int | None,
    show_alerts: bool,
    policy_path: str | None,
) -> None:
    """Replay recorded files (CSV or JSON lines, gzip too, '-' for stdin) through the detector."""
    if stop_after is not None and state_path is None:
        raise click.BadParameter("--stop-after needs --state FILE to save where the replay stopped", param_hint="--stop-after")
    time_spec: str | tuple[str, str] | None = time_column
    if time_column and "," in time_column:
        date_part, time_part = (part.strip() for part in time_column.split(",", 1))
        time_spec = (date_part, time_part)

    if input_format is not None and input_format not in FILE_FORMATS:
        if input_format not in format_names():
            raise click.BadParameter(f"unknown format {input_format!r}; choose from {', '.join(format_names())}", param_hint="--format")
        items = read_format(input_format, list(inputs), device=device)
    else:
        items = read_records(
            list(inputs),
            format=input_format,  # type: ignore[arg-type]
            device_column=device_column,
            device=device,
            time_column=time_spec,
            time_format=time_format,
            timezone=timezone,
            metrics=_split(metrics),
            ignore_columns=_split(ignore_columns) or (),
            delimiter=delimiter,
            decimal=decimal,
            thousands=thousands,
            day_first=day_first,
        )
    overrides = {"sensitivity": sensitivity} if sensitivity else {}
    config = load_engine_config(config_path, **overrides)
    store_file = Path(store_path) if store_path else default_store_path()

    with AlertStore(store_file) as store, DeadLetterWriter(dead_letter_path(store_file)) as dead_letters, _alert_sink(alerts_out) as sink:
        def on_alert(alert: Alert) -> None:
            sink(alert)
            if show_alerts:
                _print_alert(alert)

        responder = None
        if policy_path:
            on_alert, responder = attach_policies(store, policy_path, on_alert=on_alert)

        options: dict[str, Any] = {"store": store, "dead_letters": dead_letters, "lateness": lateness, "on_alert": on_alert}
        resumed_after = 0
        if state_path and Path(state_path).exists():
            replay = Replay.resume(state_path, **options)
            resumed_after = replay.consumed
            logger.info("resuming from %s after %d records", state_path, replay.consumed)
        else:
            replay = Replay(Engine(config), **options)

        recorder = attach_console_feeds(replay, store)
        run_id = store.start_run("detect " + " ".join(inputs))
        total = _input_size(inputs)
        with _progress(total) as advance, _stop_on_sigterm():
            try:
                summary = replay.run(items, stop_after=stop_after, progress=advance)
            except KeyboardInterrupt:
                summary = replay.summary
                if state_path is None:
                    raise
            finally:
                recorder.flush()
        if state_path:
            replay.save_state(state_path)
        if responder is not None:
            responder.tick()
            responder.close()
        store.finish_run(run_id, summary.to_dict())
        _print_summary(summary, store_file, dead_letters.path, state_path, resumed_after)


@contextmanager
def _alert_sink(path: str | None) -> Iterator[Any]:
    if path is None:
        yield lambda alert: None
        return
    stream = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")
    try:
        yield lambda alert: stream.write(json.dumps(alert.to_dict()) + "\n")
    finally:
        if stream is not sys.stdout:
            stream.close()


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so a stopped replay saves its state."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread, as under some test runners
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _input_size(inputs: tuple[str, ...]) -> int | None:
    try:
        return sum(Path(path).stat().st_size for path in inputs if path != "-")
    except OSError:
        return None


@contextmanager
def _progress(total_bytes: int | None) -> Iterator[Any]:
    # NOTE: records, not bytes, are counted: gzip input hides how far into a file the reader is.
    """A progress line on standard error, counting records."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        TextColumn("{task.completed:,} records"),
        TimeElapsedColumn(),
        console=error_console,
        transient=True,
        disable=not error_console.is_terminal,
    )
    with progress:
        task = progress.add_task("replaying", total=None)
        yield lambda count: progress.update(task, completed=count)


def _print_alert(alert: Alert) -> None:
    style = _SEVERITY_STYLE.get(alert.severity, "")
    console.print(
        f"[{style}]{format_time(alert.time)}  {alert.severity:<8} {alert.category:<13}[/{style}] {alert.device}: {alert.explanation}",
        markup=True,
        soft_wrap=True,
    )


def _print_summary(
    summary: ReplaySummary, store: Path, dead_letters: Path, state_path: str | None, resumed_after: int = 0
) -> None:
    """Print the replay's counts; a resumed replay's counts include the runs before it."""
    title = "Replay summary" if summary.completed else "Replay summary (stopped early)"
    if resumed_after:
        title += f"\nresumed after {resumed_after:,} records; the counts include them"
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("records read", f"{summary.records:,}")
    table.add_row("observations scored", f"{summary.observations:,}")
    table.add_row("devices", f"{summary.devices:,}")
    rejected = sum(summary.rejected.values())
    names = {"rejected": "invalid or too late", "duplicate": "exact duplicates"}
    detail = ", ".join(f"{count:,} {names.get(kind, kind)}" for kind, count in sorted(summary.rejected.items()))
    table.add_row("records not scored", f"{rejected:,}" + (f" ({detail})" if detail else ""))
    table.add_row("fields dropped as invalid", f"{summary.field_issues:,}")
    table.add_row("alerts", f"{summary.alerts:,}")
    for category, count in sorted(summary.alerts_by_category.items()):
        table.add_row(f"  {category}", f"{count:,}")
    for severity in ("critical", "high", "medium", "low", "info"):
        if summary.alerts_by_severity.get(severity):
            table.add_row(f"  severity {severity}", f"{summary.alerts_by_severity[severity]:,}")
    console.print(table)
    console.print(f"alerts stored in {store}", markup=False)
    if rejected or summary.field_issues:
        console.print(f"rejected records and dropped fields in {dead_letters}", markup=False)
    if state_path:
        console.print(f"engine state saved to {state_path}", markup=False)


# alerts ---------------------------------------------------------------------


@cli.command("alerts")
@click.option("--store", "store_path", type=click.Path(dir_okay=False), help="SQLite store; default: iotwarden.db in the user data directory.")
@click.option("--device", help="Only this device.")
@click.option("--since", help="Only alerts active at or after this ISO 8601 time.")
@click.option("--category", help="Only this category (spike, dip, drift, stuck, silence, multivariate, ...).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many alerts.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format; json prints one JSON object per line.")
def alerts_command(store_path: str | None, device: str | None, since: str | None, category: str | None, limit: int | None, output_format: str) -> None:
    """List stored alerts with their explanations."""
    store_file = Path(store_path) if store_path else default_store_path()
    if not store_file.exists():
        raise IotwardenError(f"no store at {store_file}: run 'iotwarden detect' first or pass --store")
    since_time = None
    if since is not None:
        try:
            since_time = parse_time(since.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"invalid ISO 8601 time {since!r}; expected for example 2024-05-01T10:00:00Z", param_hint="--since") from None
    with AlertStore(store_file) as store:
        found = store.alerts(device=device, since=since_time, category=category, limit=limit)
    if output_format == "json":
        for alert in found:
            click.echo(json.dumps(alert.to_dict()))
        return
    table = Table(show_lines=False)
    for column in ("time", "end", "device", "category", "severity", "score", "explanation"):
        table.add_column(column, overflow="fold")
    for alert in found:
        style = _SEVERITY_STYLE.get(alert.severity, "")
        table.add_row(
            format_time(alert.time),
            "open" if alert.end_time is None else format_time(alert.end_time),
            alert.device,
            alert.category,
            f"[{style}]{alert.severity}[/{style}]",
            f"{alert.score:.1f}",
            alert.explanation,
        )
    console.print(table)
    console.print(f"{len(found)} alert{'' if len(found) == 1 else 's'}", markup=False)


# demo -----------------------------------------------------------------------


@cli.command()
@click.option("--devices", type=click.IntRange(min=5), default=40, show_default=True, help="Number of simulated devices.")
@click.option("--hours", type=click.FloatRange(min=12), default=48.0, show_default=True, help="Simulated hours of telemetry.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed of the simulation.")
@click.option("--store", "store_path", type=click.Path(dir_okay=False), help="SQLite store of the demo's alerts; default: demo.db in the user data directory (replaced on each run).")
def demo(devices: int, hours: float, seed: int, store_path: str | None) -> None:
    """Simulate a small fleet with injected incidents and detect them, no setup needed."""
    from iotwarden.demo import run_demo

    if store_path:
        store_file = Path(store_path)
    else:
        store_file = data_dir() / "demo.db"
        for stale in (store_file, dead_letter_path(store_file)):
            stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="iotwarden-demo-") as folder:
        run_demo(devices=devices, hours=hours, seed=seed, folder=Path(folder), store_path=store_file, console=console)


def _register_optional_commands() -> None:
    from iotwarden.api.cli import serve, token
    from iotwarden.evaluate.cli import evaluate
    from iotwarden.ledger.cli import ledger
    from iotwarden.response.cli import actions
    from iotwarden.service.cli import run
    from iotwarden.simulate.cli import simulate

    cli.add_command(run)
    cli.add_command(serve)
    cli.add_command(token)
    cli.add_command(simulate)
    cli.add_command(evaluate)
    cli.add_command(ledger)
    cli.add_command(actions)


_register_optional_commands()
