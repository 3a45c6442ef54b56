"""The ``iotwarden serve`` command and the ``iotwarden token`` group.

Register both with ``cli.add_command(serve)`` and ``cli.add_command(token)``.
"""

from __future__ import annotations

import getpass
import json
import logging
from pathlib import Path

import click

from iotwarden.errors import IotwardenError
from iotwarden.paths import default_store_path
from iotwarden.store.sqlite import write_transaction

__all__ = ["serve", "token"]

logger = logging.getLogger(__name__)

store_option = click.option("--store", "store_path", type=click.Path(dir_okay=False), help="SQLite store; default: iotwarden.db in the user data directory.")


def _store_file(store_path: str | None, *, must_exist: bool) -> Path:
    path = Path(store_path) if store_path else default_store_path()
    if must_exist and not path.exists():
        raise IotwardenError(f"no store at {path}: run 'iotwarden detect' first or pass --store")
    return path


@click.command()
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; anything but loopback exposes the API to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="TCP port to listen on.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), help="Engine state file (from 'detect --state') for learned baselines on device pages.")
@click.option("--policies", "policy_path", type=click.Path(exists=True, dir_okay=False), help="Policy file whose actuators carry out approvals and releases; default: the one the responder recorded in the store.")
@click.option("--false-positive-ttl", type=click.FloatRange(min=1), default=7 * 86400.0, show_default=True, help="Seconds of event time that a false-positive label suppresses the alert's pattern.")
def serve(store_path: str | None, host: str, port: int, state_path: str | None, policy_path: str | None, false_positive_ttl: float) -> None:
    """Serve the REST API and the analyst console (at /) for a store."""
    import uvicorn

    from iotwarden.api.app import create_app

    store_file = _store_file(store_path, must_exist=False)
    app = create_app(store_file, state_path=state_path, policy_path=policy_path, false_positive_ttl=false_positive_ttl)
    with app.state.backend.lock:
        has_tokens = bool(app.state.backend.tokens.list())
    if not has_tokens:
        click.echo(f"no API tokens yet: create one with 'iotwarden token create --role analyst --store {store_file}'", err=True)
    _check_port_free(host, port)
    click.echo(f"serving {store_file} at http://{host}:{port}/", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        app.state.backend.close()


@click.group()
def token() -> None:
    """Create, list and revoke API tokens of the REST API and console."""


@token.command("create")
@store_option
@click.option("--role", type=click.Choice(["viewer", "analyst", "admin"]), required=True, help="viewer reads; analyst also triages, labels, decides on actions and suppressions; admin also manages tokens.")
@click.option("--name", help="Who or what uses the token, recorded in the ledger with each change; default: the login name.")
def create_token(store_path: str | None, role: str, name: str | None) -> None:
    """Create a token and print it once; only its SHA-256 is stored."""
    from iotwarden.api.tokens import TokenTable
    from iotwarden.store import AlertStore

    creator = getpass.getuser()
    with AlertStore(_store_file(store_path, must_exist=False)) as store:
        tokens = TokenTable(store.connection)
        with write_transaction(store.connection):
            info, secret = tokens.create(role, name or creator, f"cli:{creator}")
            store.ledger.append_many([("token_created", {"id": info.id, "name": info.name, "role": info.role}, f"cli:{creator}")])
    click.echo(f"created token {info.id} ({info.role}) for {info.name}; it is shown only now:", err=True)
    click.echo(secret)


@token.command("list")
@store_option
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format.")
def list_tokens(store_path: str | None, output_format: str) -> None:
    """List tokens without their secrets."""
    from iotwarden.api.timeutil import iso
    from iotwarden.api.tokens import TokenTable
    from iotwarden.store import AlertStore

    with AlertStore(_store_file(store_path, must_exist=True)) as store:
        items = TokenTable(store.connection).list()
    for info in items:
        if output_format == "json":
            click.echo(json.dumps(info.to_dict()))
        else:
            state = f"revoked {iso(info.revoked_at)}" if info.revoked_at else "active"
            click.echo(f"{info.id}  {info.role:<8} {info.name}  created {iso(info.created_at)}  {state}")


@token.command("revoke")
@store_option
@click.argument("token_id")
def revoke_token(store_path: str | None, token_id: str) -> None:
    """Revoke a token by id (see 'iotwarden token list')."""
    from iotwarden.api.tokens import TokenTable
    from iotwarden.store import AlertStore

    actor = f"cli:{getpass.getuser()}"
    with AlertStore(_store_file(store_path, must_exist=True)) as store:
        with write_transaction(store.connection):
            info = TokenTable(store.connection).revoke(token_id, actor)
            if info is None:
                raise IotwardenError(f"no token with id {token_id!r}; see 'iotwarden token list'")
            store.ledger.append_many([("token_revoked", {"id": info.id, "name": info.name}, actor)])
    click.echo(f"revoked token {token_id}")


@click.group()
def api_cli() -> None:
    """The serve and token commands alone, for 'python -m iotwarden.api' before they are registered in the main CLI."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")


api_cli.add_command(serve)
api_cli.add_command(token)


def _check_port_free(host: str, port: int) -> None:
    """Fail with a clear message before start-up if ``host:port`` is taken."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise IotwardenError(f"cannot listen on {host}:{port}: {error.strerror}; choose another --port") from error
