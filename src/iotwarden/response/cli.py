"""The ``iotwarden actions`` command group: list, approve, reject, release and confirm actions.

Register it with ``cli.add_command(actions)``. Commands that change an
action also carry it out when they can build its actuator: from
``--policies``, else from the policy file that the responder last recorded
in the store. With ``--no-execute`` (or when that file cannot be loaded) the
action only changes state, and the running responder carries it out on its
next tick.
"""

from __future__ import annotations

import getpass
import json
import logging
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from iotwarden.errors import IotwardenError
from iotwarden.observation import format_time
from iotwarden.paths import default_store_path
from iotwarden.response.policy import load_policies
from iotwarden.response.responder import Responder
from iotwarden.response.store import STATES, Action, ResponseTables
from iotwarden.store import AlertStore

__all__ = ["actions"]

logger = logging.getLogger(__name__)
console = Console(highlight=False)

_STATE_STYLE = {
    "active": "bold red", "pending": "yellow", "awaiting_approval": "bold yellow", "releasing": "cyan",
    "failed": "bold magenta", "dry_run": "dim", "released": "green", "expired": "green", "rejected": "dim", "done": "dim",
}

store_option = click.option("--store", "store_path", type=click.Path(dir_okay=False), help="SQLite store; default: iotwarden.db in the user data directory.")
analyst_option = click.option("--analyst", default=None, help="Name recorded in the ledger as the analyst; default: the login name.")
policies_option = click.option("--policies", "policy_path", type=click.Path(exists=True, dir_okay=False), help="Policy file that defines the actuators; default: the one the responder last used with this store.")
execute_option = click.option("--execute/--no-execute", default=True, show_default=True, help="Call the actuator now, or leave that to the running responder's next tick.")


@click.group()
def actions() -> None:
    """Review and control containment actions taken by response policies."""


def _open_store(store_path: str | None) -> AlertStore:
    path = Path(store_path) if store_path else default_store_path()
    if not path.exists():
        raise IotwardenError(f"no store at {path}: pass --store")
    return AlertStore(path)


def _responder(store: AlertStore, policy_path: str | None, execute: bool) -> tuple[Responder, bool]:
    """Return a responder with actuators when possible, and whether it can execute."""
    if not execute:
        return Responder(store), False
    path = policy_path or ResponseTables(store.connection).meta("policy_file")
    if not path:
        click.echo("no policy file given or recorded in the store: the action only changes state (pass --policies to carry it out now)", err=True)
        return Responder(store), False
    try:
        return Responder(store, load_policies(path)), True
    except IotwardenError as error:
        if policy_path:
            raise
        click.echo(f"cannot load the recorded policy file ({error}); the action only changes state", err=True)
        return Responder(store), False


def _analyst(name: str | None) -> str:
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _describe(action: Action) -> str:
    text = f"{action.id}: {action.kind} of {action.device} via {action.actuator} is {action.state}"
    if action.expires_at is not None and action.state == "active":
        text += f" until {format_time(action.expires_at)}"
    if action.last_error:
        text += f" (last error: {action.last_error})"
    return text


@actions.command("list")
@store_option
@click.option("--state", type=click.Choice(STATES), help="Only actions in this state.")
@click.option("--device", help="Only this device.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many actions, newest first.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format; json prints one object per line.")
def list_command(store_path: str | None, state: str | None, device: str | None, limit: int, output_format: str) -> None:
    """List actions, newest first, with their state, trigger and last error."""
    with _open_store(store_path) as store:
        found = Responder(store).list_actions(state=state, device=device, limit=limit)
    if output_format == "json":
        for action in found:
            click.echo(json.dumps(action.to_dict()))
        return
    table = Table()
    for column in ("id", "created", "device", "action", "via", "policy", "state", "expires", "attempts", "trigger / last error"):
        table.add_column(column, overflow="fold")
    for action in found:
        style = _STATE_STYLE.get(action.state, "")
        expires = ""
        if action.state == "active" and action.expires_at:
            expires = format_time(action.expires_at)
        elif action.state == "active" and action.confirmed_by:
            expires = "confirmed"
        note = action.last_error or f"alert {action.alert_id}" + (f" (+{len(action.trigger_alerts) - 1})" if len(action.trigger_alerts) > 1 else "")
        table.add_row(
            action.id, format_time(action.created_at), action.device, action.kind, action.actuator, action.policy,
            f"[{style}]{action.state}[/{style}]", expires, str(action.attempts), note,
        )
    console.print(table)
    console.print(f"{len(found)} actions", markup=False)


@actions.command("approve")
@click.argument("action_id")
@store_option
@analyst_option
@policies_option
@execute_option
def approve_command(action_id: str, store_path: str | None, analyst: str | None, policy_path: str | None, execute: bool) -> None:
    """Approve an action that waits for approval (or retry a failed one)."""
    with _open_store(store_path) as store:
        responder, can_execute = _responder(store, policy_path, execute)
        action = responder.approve(action_id, _analyst(analyst), execute=can_execute)
        responder.close()
    click.echo(_describe(action))


@actions.command("reject")
@click.argument("action_id")
@store_option
@analyst_option
@click.option("--reason", default="", help="Why the action is declined (kept in the ledger).")
def reject_command(action_id: str, store_path: str | None, analyst: str | None, reason: str) -> None:
    """Decline an action that waits for approval."""
    with _open_store(store_path) as store:
        action = Responder(store).reject(action_id, _analyst(analyst), reason)
    click.echo(_describe(action))


@actions.command("release")
@click.argument("action_id")
@store_option
@analyst_option
@policies_option
@execute_option
@click.option("--reason", default="", help="Why the containment ends (kept in the ledger).")
def release_command(action_id: str, store_path: str | None, analyst: str | None, policy_path: str | None, execute: bool, reason: str) -> None:
    """Undo a containment now (or cancel one not yet applied)."""
    with _open_store(store_path) as store:
        responder, can_execute = _responder(store, policy_path, execute)
        action = responder.release(action_id, _analyst(analyst), reason, execute=can_execute)
        responder.close()
    click.echo(_describe(action))


@actions.command("confirm")
@click.argument("action_id")
@store_option
@analyst_option
@policies_option
@execute_option
def confirm_command(action_id: str, store_path: str | None, analyst: str | None, policy_path: str | None, execute: bool) -> None:
    """Keep an active containment beyond its time to live, until released."""
    with _open_store(store_path) as store:
        responder, can_execute = _responder(store, policy_path, execute)
        action = responder.confirm(action_id, _analyst(analyst), execute=can_execute)
        responder.close()
    click.echo(_describe(action))
