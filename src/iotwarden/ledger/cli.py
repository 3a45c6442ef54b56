"""``iotwarden ledger`` commands: verify, proof, checkpoint and export-key.

The main command line registers the group with ``cli.add_command(ledger)``.
Errors are raised as :class:`~iotwarden.errors.IotwardenError` subclasses for
the main command line to print. ``verify`` instead prints its failure and exits
with status 1, because a failed verification is a result, not an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from iotwarden.ledger.errors import LedgerError
from iotwarden.ledger.keys import read_checkpoint
from iotwarden.ledger.log import Ledger
from iotwarden.ledger.proofs import verify_inclusion
from iotwarden.paths import default_store_path

__all__ = ["ledger"]

_store_option = click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite store that contains the ledger. Default: iotwarden.db in the data directory.",
)


def _open_existing(store_path: Path | None) -> Ledger:
    path = store_path if store_path is not None else default_store_path()
    if not path.is_file():
        raise LedgerError(f"store not found: {path} (pass --store PATH)")
    return Ledger.open(path, create=False)


@click.group("ledger")
def ledger() -> None:
    """Verify and inspect the tamper-evident ledger of alerts."""


@ledger.command("verify")
@_store_option
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Checkpoint file from 'ledger checkpoint'; also prove that the log only grew since.",
)
def verify_command(store_path: Path | None, checkpoint_path: Path | None) -> None:
    """Recompute the ledger from its entries and check every hash and signature.

    Exits with status 0 and a one-line summary when the ledger is intact, or
    with status 1 and the first bad entry otherwise.
    """
    checkpoint = read_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    with _open_existing(store_path) as log:
        report = log.verify(checkpoint)
    if report.ok:
        click.echo(report.summary())
        return
    click.echo(report.summary(), err=True)
    raise SystemExit(1)


@ledger.command("proof")
@click.argument("entry_id", type=int)
@_store_option
@click.option("--size", "tree_size", type=int, default=None, help="Tree size to prove against. Default: the current size.")
def proof_command(entry_id: int, store_path: Path | None, tree_size: int | None) -> None:
    """Print the inclusion proof of entry ENTRY_ID (0-based) as JSON."""
    with _open_existing(store_path) as log:
        size = log.size if tree_size is None else tree_size
        path = log.inclusion_proof(entry_id, size)
        leaf = log.leaf_hash(entry_id)
        root = log.root_hash(size)
    if not verify_inclusion(leaf, entry_id, size, path, root):
        raise LedgerError(f"inclusion proof of entry {entry_id} does not verify; run 'iotwarden ledger verify'")
    document = {
        "index": entry_id,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "audit_path": [node.hex() for node in path],
        "root_hash": root.hex(),
    }
    click.echo(json.dumps(document, indent=2))


@ledger.command("checkpoint")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File to write the checkpoint JSON to. Keep it where the ledger's writers cannot change it.",
)
@_store_option
def checkpoint_command(out_path: Path, store_path: Path | None) -> None:
    """Sign the current tree head and write it to a checkpoint file."""
    with _open_existing(store_path) as log:
        head = log.checkpoint(out_path)
    click.echo(f"checkpoint at size {head.size}, root {head.root_hash.hex()}, written to {out_path}")


@ledger.command("export-key")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write the public key PEM to. Default: standard output.",
)
@_store_option
def export_key_command(out_path: Path | None, store_path: Path | None) -> None:
    """Print or write the public half of the ledger's signing key as PEM.

    The key file sits beside the store (<store>.ledger-key.pem) and is created
    if it does not exist yet.
    """
    with _open_existing(store_path) as log:
        pem = log.public_key_pem()
    if out_path is None:
        click.echo(pem, nl=False)
        return
    try:
        out_path.write_text(pem, encoding="ascii")
    except OSError as exc:
        raise LedgerError(f"cannot write public key to {out_path}: {exc.strerror}") from exc
    click.echo(f"public key of {log.key_path} written to {out_path}")
