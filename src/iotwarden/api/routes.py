"""The REST resources: alerts, incidents, devices, actions, suppressions, ledger, ranker, tokens."""


from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from iotwarden.api.auth import require
from iotwarden.api.backend import ApiError, Backend
from iotwarden.api.models import (
    ActionCommand,
    LabelRequest,
    MaintenanceCreate,
    NoteRequest,
    SuppressionCreate,
    SuppressionUpdate,
    TokenCreate,
)
from iotwarden.api.timeutil import iso, parse_when
from iotwarden.api.tokens import TokenInfo
from iotwarden.feedback.suppressions import new_record
from iotwarden.ledger.errors import LedgerError

__all__ = ["router"]

router = APIRouter(prefix="/api")

Viewer = Annotated[TokenInfo, Depends(require("viewer"))]
Analyst = Annotated[TokenInfo, Depends(require("analyst"))]
Admin = Annotated[TokenInfo, Depends(require("admin"))]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Items to skip")]
Text = Annotated[str | None, Query(max_length=200)]
TimeQuery = Annotated[str | None, Query(max_length=64, description="ISO 8601 time or epoch seconds")]


def backend(request: Request) -> Backend:
    return request.app.state.backend


def publish(request: Request, kind: str, data: dict[str, Any]) -> None:
    request.app.state.hub.publish(kind, data)


def _time(value: str | None, field: str) -> float | None:
    try:
        return parse_when(value, field)
    except ValueError as error:
        raise ApiError(422, str(error), field=field) from None


# Session and overview -------------------------------------------------------------


@router.get("/session", tags=["session"], summary="The calling token's id, name and role")
def session(token: Viewer) -> dict[str, Any]:
    data = token.to_dict()
    data["created_at"] = iso(token.created_at)
    data["last_used_at"] = iso(token.last_used_at)
    return data


@router.get("/overview", tags=["overview"], summary="Fleet overview: riskiest devices, open incidents, actions awaiting approval, rates")
def overview(request: Request, token: Viewer) -> dict[str, Any]:
    return backend(request).overview()


# Alerts -------------------------------------------------------------------------------


@router.get("/alerts", tags=["alerts"], summary="List alerts with their triage state and rank")
def list_alerts(
    request: Request,
    token: Viewer,
    device: Text = None,
    category: Text = None,
    severity: Literal["info", "low", "medium", "high", "critical"] | None = None,
    state: Literal["new", "acknowledged", "resolved"] | None = None,
    label: Literal["true_positive", "false_positive", "unlabelled"] | None = None,
    incident: Text = None,
    open: bool | None = Query(None, description="true: only alerts still open; false: only closed ones"),
    since: TimeQuery = None,
    until: TimeQuery = None,
    order: Literal["time", "score", "rank"] = Query("time", description="rank: by the ranker's true-positive probability (score while it is off)"),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    items, total = backend(request).query_alerts(
        device=device, category=category, severity=severity, state=state, label=label, incident=incident, is_open=open,
        since=_time(since, "since"), until=_time(until, "until"), order=order, limit=limit, offset=offset,
    )
    return {"total": total, "items": items}


@router.get("/alerts/{alert_id}", tags=["alerts"], summary="One alert with its evidence, triage and suppressions")
def get_alert(request: Request, alert_id: str, token: Viewer) -> dict[str, Any]:
    return backend(request).get_alert(alert_id)


@router.post("/alerts/{alert_id}/acknowledge", tags=["alerts"], summary="Acknowledge an alert (analyst)")
def acknowledge_alert(request: Request, alert_id: str, body: NoteRequest, token: Analyst) -> dict[str, Any]:
    alert = backend(request).set_state(alert_id, "acknowledged", body.note, token.actor)
    publish(request, "triage", {"id": alert_id, "state": "acknowledged"})
    return alert


@router.post("/alerts/{alert_id}/resolve", tags=["alerts"], summary="Resolve an alert (analyst)")
def resolve_alert(request: Request, alert_id: str, body: NoteRequest, token: Analyst) -> dict[str, Any]:
    alert = backend(request).set_state(alert_id, "resolved", body.note, token.actor)
    publish(request, "triage", {"id": alert_id, "state": "resolved"})
    return alert


@router.post("/alerts/{alert_id}/label", tags=["alerts"], summary="Label an alert true or false positive (analyst); a false positive suppresses its pattern")
def label_alert(request: Request, alert_id: str, body: LabelRequest, token: Analyst) -> dict[str, Any]:
    alert = backend(request).set_label(alert_id, body.label, body.note, token.actor, suppress=body.suppress, ttl=body.ttl)
    publish(request, "triage", {"id": alert_id, "label": body.label})
    if alert["triage"]["suppression_id"] or body.label == "true_positive":
        publish(request, "suppressions", {"alert_id": alert_id})
    return alert


# Incidents ------------------------------------------------------------------------------


@router.get("/incidents", tags=["incidents"], summary="List incidents: alerts of one device close in time")
def list_incidents(
    request: Request,
    token: Viewer,
    device: Text = None,
    category: Text = None,
    state: Literal["new", "acknowledged", "resolved"] | None = None,
    since: TimeQuery = None,
    until: TimeQuery = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    items, total = backend(request).query_incidents(
        device=device, category=category, state=state, since=_time(since, "since"), until=_time(until, "until"), limit=limit, offset=offset
    )
    return {"total": total, "items": items}


@router.get("/incidents/{incident_id}", tags=["incidents"], summary="One incident with its alerts")
def get_incident(request: Request, incident_id: str, token: Viewer) -> dict[str, Any]:
    return backend(request).get_incident(incident_id)


@router.post("/incidents/{incident_id}/acknowledge", tags=["incidents"], summary="Acknowledge every alert of an incident (analyst)")
def acknowledge_incident(request: Request, incident_id: str, body: NoteRequest, token: Analyst) -> dict[str, Any]:
    api = backend(request)
    for alert_id in api.incident_alert_ids(incident_id):
        api.set_state(alert_id, "acknowledged", body.note, token.actor)
    publish(request, "triage", {"incident": incident_id, "state": "acknowledged"})
    return api.get_incident(incident_id)


@router.post("/incidents/{incident_id}/resolve", tags=["incidents"], summary="Resolve every alert of an incident (analyst)")
def resolve_incident(request: Request, incident_id: str, body: NoteRequest, token: Analyst) -> dict[str, Any]:
    api = backend(request)
    for alert_id in api.incident_alert_ids(incident_id):
        api.set_state(alert_id, "resolved", body.note, token.actor)
    publish(request, "triage", {"incident": incident_id, "state": "resolved"})
    return api.get_incident(incident_id)


@router.post("/incidents/{incident_id}/label", tags=["incidents"], summary="Label every alert of an incident (analyst)")
def label_incident(request: Request, incident_id: str, body: LabelRequest, token: Analyst) -> dict[str, Any]:
    api = backend(request)
    for alert_id in api.incident_alert_ids(incident_id):
        api.set_label(alert_id, body.label, body.note, token.actor, suppress=body.suppress, ttl=body.ttl)
    publish(request, "triage", {"incident": incident_id, "label": body.label})
    publish(request, "suppressions", {"incident": incident_id})
    return api.get_incident(incident_id)


# Devices ---------------------------------------------------------------------------------


@router.get("/devices", tags=["devices"], summary="Devices ranked by risk")
def list_devices(request: Request, token: Viewer, limit: Limit = 1000, offset: Offset = 0) -> dict[str, Any]:
    devices = backend(request).devices()
    return {"total": len(devices), "items": devices[offset : offset + limit]}


# Device ids may contain "/" (MQTT topic levels, site/device names), so the
# id is a path parameter, and the series route comes first to claim the
# "/series" suffix.
@router.get("/devices/{device:path}/series", tags=["devices"], summary="Recorded observations with the baseline band, and alert markers")
def device_series(
    request: Request, device: str, token: Viewer, since: TimeQuery = None, until: TimeQuery = None,
    limit: Annotated[int, Query(ge=1, le=50000)] = 5000,
) -> dict[str, Any]:
    return backend(request).device_series(device, since=_time(since, "since"), until=_time(until, "until"), limit=limit)


@router.get("/devices/{device:path}", tags=["devices"], summary="One device: risk, learned baseline per metric (with --state), actions")
def get_device(request: Request, device: str, token: Viewer) -> dict[str, Any]:
    return backend(request).device(device)


# Actions -----------------------------------------------------------------------------------


@router.get("/actions", tags=["actions"], summary="Response actions, newest first")
def list_actions(
    request: Request,
    token: Viewer,
    state: Literal["dry_run", "awaiting_approval", "pending", "active", "releasing", "released", "expired", "rejected", "done", "failed"] | None = None,
    device: Text = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    api = backend(request)
    with api.lock:
        items = [action.to_dict() for action in api.responder.list_actions(state=state, device=device, limit=limit)]
    return {"items": items, "can_execute": api.can_execute}


@router.get("/actions/{action_id}", tags=["actions"], summary="One response action")
def get_action(request: Request, action_id: str, token: Viewer) -> dict[str, Any]:
    api = backend(request)
    with api.lock:
        action = api.response_tables.action(action_id)
    if action is None:
        raise ApiError(404, f"action {action_id!r} not found", field="action_id")
    return action.to_dict()


def _action_route(command: str, summary: str) -> None:
    def handler(request: Request, action_id: str, body: ActionCommand, token: Analyst) -> dict[str, Any]:
        action = backend(request).action_command(action_id, command, token.actor, body.reason)
        publish(request, "action", {"id": action_id, "state": action["state"], "device": action["device"], "kind": action["kind"]})
        return action

    handler.__name__ = f"{command}_action"
    router.add_api_route(f"/actions/{{action_id}}/{command}", handler, methods=["POST"], tags=["actions"], summary=summary)


_action_route("approve", "Approve an action awaiting approval, or retry a failed one (analyst)")
_action_route("reject", "Reject an action awaiting approval (analyst)")
_action_route("release", "Release a containment or cancel one not yet applied (analyst)")
_action_route("confirm", "Keep an active containment past its time to live (analyst)")


# Suppressions and maintenance windows ------------------------------------------------------------


def _suppression_routes(path: str, kind: str, scope: str | None, create_model: type[SuppressionCreate], label: str) -> None:
    """Add the CRUD routes; ``scope`` limits reads and changes to one kind (None: every kind)."""

    def list_handler(request: Request, token: Viewer, device: Text = None, include_deleted: bool = False) -> dict[str, Any]:
        return {"items": backend(request).list_suppressions(kind=scope, device=device, include_deleted=include_deleted)}

    def create_handler(request: Request, body: create_model, token: Analyst) -> dict[str, Any]:  # type: ignore[valid-type]
        fields = body.model_dump()
        try:
            record = new_record(kind=kind, actor=token.actor, **fields)
        except ValueError as error:
            field = str(error).split(":", 1)[0]
            raise ApiError(422, str(error), field=field) from None
        created = backend(request).create_suppression(record, token.actor)
        publish(request, "suppressions", {"id": record.id, "change": "created"})
        return created

    def get_handler(request: Request, suppression_id: str, token: Viewer) -> dict[str, Any]:
        api = backend(request)
        with api.lock:
            record = api.get_suppression(suppression_id, scope)
        from iotwarden.api.backend import _suppression_out

        return _suppression_out(record.to_dict())

    def update_handler(request: Request, suppression_id: str, body: SuppressionUpdate, token: Analyst) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        updated = backend(request).update_suppression(suppression_id, changes, token.actor, scope)
        publish(request, "suppressions", {"id": suppression_id, "change": "updated"})
        return updated

    def delete_handler(request: Request, suppression_id: str, token: Analyst, reason: Annotated[str, Query(max_length=2000)] = "") -> dict[str, Any]:
        deleted = backend(request).delete_suppression(suppression_id, token.actor, reason, scope)
        publish(request, "suppressions", {"id": suppression_id, "change": "deleted"})
        return deleted

    name = kind
    for handler, verb in ((list_handler, "list"), (create_handler, "create"), (get_handler, "get"), (update_handler, "update"), (delete_handler, "delete")):
        handler.__name__ = f"{verb}_{name}"
    router.add_api_route(path, list_handler, methods=["GET"], tags=[label], summary=f"List {label}, newest first (deleted ones with include_deleted)")
    router.add_api_route(path, create_handler, methods=["POST"], tags=[label], summary=f"Create one of the {label} (analyst)", status_code=201)
    router.add_api_route(path + "/{suppression_id}", get_handler, methods=["GET"], tags=[label], summary=f"One of the {label}")
    router.add_api_route(path + "/{suppression_id}", update_handler, methods=["PATCH"], tags=[label], summary=f"Change one of the {label} (analyst)")
    router.add_api_route(path + "/{suppression_id}", delete_handler, methods=["DELETE"], tags=[label], summary=f"Delete (undo) one of the {label} (analyst); it stays listed as deleted")


_suppression_routes("/suppressions", "suppression", None, SuppressionCreate, "suppressions")
_suppression_routes("/maintenance-windows", "maintenance", "maintenance", MaintenanceCreate, "maintenance windows")


# Ledger -------------------------------------------------------------------------------------


@router.get("/ledger", tags=["ledger"], summary="Ledger size, root hash and latest signed tree head")
def ledger_status(request: Request, token: Viewer) -> dict[str, Any]:
    api = backend(request)
    with api.lock:
        ledger = api.store.ledger
        size = ledger.size
        head = ledger.latest_tree_head()
        return {
            "size": size,
            "root_hash": ledger.root_hash().hex(),
            "latest_tree_head": None if head is None else {
                "size": head.size, "root_hash": head.root_hash.hex(), "timestamp": iso(head.timestamp_ms / 1000.0),
                "key_id": head.key_id.hex(), "signature": head.signature.hex(),
            },
        }


@router.get("/ledger/entries", tags=["ledger"], summary="Ledger entries, newest first")
def ledger_entries(
    request: Request, token: Viewer, limit: Limit = 50,
    before: Annotated[int | None, Query(ge=0, le=2**62, description="Only entries with an index below this")] = None,
) -> dict[str, Any]:
    api = backend(request)
    with api.lock:
        ledger = api.store.ledger
        stop = min(ledger.size, before if before is not None else ledger.size)
        entries = list(ledger.entries(max(0, stop - limit), stop))
    return {"items": [
        {"index": entry.index, "kind": entry.kind, "actor": entry.actor, "time": iso(entry.time), "payload": entry.payload,
         "leaf_hash": entry.leaf_hash.hex()}
        for entry in reversed(entries)
    ]}


@router.get("/ledger/proof/{index}", tags=["ledger"], summary="Inclusion proof (RFC 9162 audit path) of one entry")
def ledger_proof(
    request: Request, index: Annotated[int, Path(ge=0, le=2**62)], token: Viewer,
    size: Annotated[int | None, Query(ge=1, le=2**62, description="Tree size; default: the whole ledger")] = None,
) -> dict[str, Any]:
    api = backend(request)
    with api.lock:
        ledger = api.store.ledger
        try:
            tree_size = ledger.size if size is None else size
            path = ledger.inclusion_proof(index, tree_size)
            return {
                "index": index, "tree_size": tree_size, "leaf_hash": ledger.leaf_hash(index).hex(),
                "root_hash": ledger.root_hash(tree_size).hex(), "audit_path": [node.hex() for node in path],
            }
        except LedgerError as error:
            field = "size" if "size" in str(error) and size is not None else "index"
            raise ApiError(404 if field == "index" else 422, str(error), field=field) from None


@router.get("/ledger/verify", tags=["ledger"], summary="Recompute the whole ledger and check every hash and signature")
def ledger_verify(request: Request, token: Viewer) -> dict[str, Any]:
    api = backend(request)
    with api.lock:
        report = api.store.ledger.verify()
    return {
        "ok": bool(report.ok),
        "report": report.summary(),
        "size": report.size,
        "signed_size": report.signed_size,
        "tree_heads_checked": report.tree_heads_checked,
        "first_bad_index": report.first_bad_index,
        "reason": report.reason,
        "root_hash": report.root_hash.hex() if report.root_hash is not None else None,
    }


# Ranker and tokens -------------------------------------------------------------------------


@router.get("/ranker", tags=["feedback"], summary="The alert ranker: on or off and why, cross-validated precision and recall")
def ranker(request: Request, token: Viewer) -> dict[str, Any]:
    return backend(request).ranker_status(force=True).to_dict()


@router.get("/tokens", tags=["tokens"], summary="List API tokens without their secrets (admin)")
def list_tokens(request: Request, token: Admin) -> dict[str, Any]:
    api = backend(request)
    with api.lock:
        items = [item.to_dict() for item in api.tokens.list()]
    for item in items:
        for name in ("created_at", "last_used_at", "revoked_at"):
            item[name] = iso(item[name])
    return {"items": items}


@router.post("/tokens", tags=["tokens"], status_code=201, summary="Create a token (admin); the secret is returned only here")
def create_token(request: Request, body: TokenCreate, token: Admin) -> dict[str, Any]:
    api = backend(request)
    with api.write():
        info, secret = api.tokens.create(body.role, body.name, token.actor)
        api.ledger("token_created", {"id": info.id, "name": info.name, "role": info.role}, token.actor)
    return {"id": info.id, "name": info.name, "role": info.role, "token": secret}


@router.delete("/tokens/{token_id}", tags=["tokens"], summary="Revoke a token (admin)")
def revoke_token(request: Request, token_id: str, token: Admin) -> dict[str, Any]:
    api = backend(request)
    with api.write():
        info = api.tokens.revoke(token_id, token.actor)
        if info is None:
            raise ApiError(404, f"token {token_id!r} not found", field="token_id")
        api.ledger("token_revoked", {"id": info.id, "name": info.name}, token.actor)
    return {"id": info.id, "revoked_at": iso(info.revoked_at)}
