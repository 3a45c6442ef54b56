"""The ``simulate`` command: write a simulated fleet and its labels to CSV files.

The main command line registers it with ``cli.add_command(simulate)``.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import click

from iotwarden.simulate.fleet import simulate_fleet
from iotwarden.simulate.incidents import ATTACKS
from iotwarden.simulate.output import write_csv

__all__ = ["simulate"]


def _parse_attacks(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """Parse ``exfiltration,stuck`` into a tuple. ``all`` or no value gives None (all kinds), ``none`` an empty tuple."""
    if value is None or value.strip().lower() == "all":
        return None
    if value.strip().lower() == "none":
        return ()
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        raise click.BadParameter(
            f"invalid attack name(s) {', '.join(unknown)}. Allowed: {', '.join(ATTACKS)}, or 'all' or 'none'."
        )
    if not names:
        raise click.BadParameter(f"empty attack list. Allowed: {', '.join(ATTACKS)}, or 'all' or 'none'.")
    return tuple(names)


def _parse_start(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"invalid ISO 8601 time {value!r}. Expected for example 2024-03-04T00:00:00Z."
        ) from None


@click.command()
@click.option("--devices", type=click.IntRange(min=1), required=True, help="Number of devices in the fleet.")
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="Simulated time span in hours.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="Data CSV to write; gzip-compressed when the name ends in .gz.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option(
    "--attacks",
    callback=_parse_attacks,
    metavar="LIST",
    help=f"Comma-separated incident kinds to inject, 'all' (the default) or 'none'. Kinds: {', '.join(ATTACKS)}.",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Labels CSV to write. Default: <out stem>.labels.csv beside --out.",
)
@click.option(
    "--start",
    callback=_parse_start,
    metavar="ISO",
    help="Start of the span as ISO 8601, for example 2024-03-04T00:00:00Z. A time without an offset is UTC. "
    "Default: 2024-03-04T00:00:00Z.",
)
def simulate(
    devices: int,
    hours: float,
    out: Path,
    seed: int,
    attacks: tuple[str, ...] | None,
    labels: Path | None,
    start: datetime | None,
) -> None:
    """Simulate an IoT fleet with labelled incidents and write it as CSV.

    Incident labels go to a separate file, never into the data CSV.
    """
    began = time.perf_counter()
    simulation = simulate_fleet(devices, hours, seed=seed, attacks=attacks, start=start)
    data_path, labels_path = write_csv(simulation, out, labels=labels)
    elapsed = time.perf_counter() - began
    click.echo(
        f"Wrote {len(simulation):,} rows from {devices:,} devices with {len(simulation.incidents)} incidents "
        f"to {data_path} and {labels_path} in {elapsed:.1f} s."
    )
