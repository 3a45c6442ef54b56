"""REST API against a real SQLite store filled by a simulated replay."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from iotwarden.api.app import create_app  # noqa: E402
from iotwarden.api.history import ObservationRecorder  # noqa: E402
from iotwarden.api.tokens import TokenTable  # noqa: E402
from iotwarden.engine import Engine, EngineConfig  # noqa: E402
from iotwarden.ledger import ledger_key_path  # noqa: E402
from iotwarden.observation import Observation  # noqa: E402
from iotwarden.pipeline import Replay  # noqa: E402
from iotwarden.simulate import simulate_fleet  # noqa: E402
from iotwarden.store import AlertStore  # noqa: E402


def record_observations(engine: Engine, recorder: ObservationRecorder) -> None:
    """Call the recorder after every batch, as a detector wired for the console does."""
    process = engine.process_batch

    def process_and_record(batch: Any, silence_clock: float | None = None) -> Any:
        result = process(batch, silence_clock)
        recorder.record(batch)
        return result

    engine.process_batch = process_and_record  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("api-store")
    path = folder / "fleet.db"
    simulation = simulate_fleet(10, 30, seed=5)
    with AlertStore(path) as store:
        engine = Engine(EngineConfig())
        record_observations(engine, ObservationRecorder(store, engine, min_interval=300.0))
        replay = Replay(engine, store=store)
        replay.run(simulation.observations())
        replay.save_state(folder / "engine.npz")
    return path


@pytest.fixture
def store_copy(filled_store: Path, tmp_path: Path) -> Path:
    target = tmp_path / "fleet.db"
    shutil.copy(filled_store, target)
    for suffix in ("-wal", "-shm"):
        source = filled_store.with_name(filled_store.name + suffix)
        if source.exists():
            shutil.copy(source, target.with_name(target.name + suffix))
    shutil.copy(ledger_key_path(filled_store), ledger_key_path(target))
    shutil.copy(filled_store.parent / "engine.npz", tmp_path / "engine.npz")
    return target


def make_tokens(path: Path) -> dict[str, str]:
    tokens = {}
    with AlertStore(path) as store:
        table = TokenTable(store.connection)
        for role in ("viewer", "analyst", "admin"):
            _, secret = table.create(role, f"test-{role}", "test")
            tokens[role] = secret
    return tokens


@pytest.fixture
def client(store_copy: Path) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    secrets = make_tokens(store_copy)
    app = create_app(store_copy, state_path=store_copy.parent / "engine.npz", poll_interval=0.2)
    headers = {role: {"Authorization": f"Bearer {secret}"} for role, secret in secrets.items()}
    with TestClient(app) as test_client:
        yield test_client, headers
    app.state.backend.close()


def first_alert(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get("/api/alerts", params={"limit": 1, "order": "score"}, headers=headers)
    assert response.status_code == 200
    return response.json()["items"][0]


def ledger_size(client: TestClient, headers: dict[str, str]) -> int:
    return client.get("/api/ledger", headers=headers).json()["size"]


def test_health_needs_no_token(client) -> None:
    test_client, _ = client
    response = test_client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("path", ["/api/alerts", "/api/devices", "/api/overview", "/api/ledger", "/metrics", "/api/events"])
def test_reads_need_a_token(client, path: str) -> None:
    test_client, _ = client
    assert test_client.get(path).status_code == 401
    assert test_client.get(path, headers={"Authorization": "Bearer iwt_not-a-real-token"}).status_code == 401


def test_viewer_reads_but_cannot_change(client) -> None:
    test_client, headers = client
    alert = first_alert(test_client, headers["viewer"])
    before = ledger_size(test_client, headers["viewer"])
    for path, body in (
        (f"/api/alerts/{alert['id']}/acknowledge", {}),
        (f"/api/alerts/{alert['id']}/label", {"label": "false_positive"}),
        ("/api/suppressions", {"device": alert["device"]}),
        ("/api/actions/act-x/approve", {}),
    ):
        response = test_client.post(path, json=body, headers=headers["viewer"])
        assert response.status_code == 403, path
        assert "analyst" in response.json()["detail"]
    assert test_client.post("/api/alerts/x/acknowledge", json={}).status_code == 401
    assert ledger_size(test_client, headers["viewer"]) == before


def test_only_admin_manages_tokens(client) -> None:
    test_client, headers = client
    assert test_client.get("/api/tokens", headers=headers["analyst"]).status_code == 403
    created = test_client.post("/api/tokens", json={"role": "viewer", "name": "dashboard"}, headers=headers["admin"])
    assert created.status_code == 201
    secret = created.json()["token"]
    assert test_client.get("/api/session", headers={"Authorization": f"Bearer {secret}"}).json()["role"] == "viewer"
    listed = test_client.get("/api/tokens", headers=headers["admin"]).json()["items"]
    assert all("token" not in item and "token_hash" not in item for item in listed)
    revoked = test_client.delete(f"/api/tokens/{created.json()['id']}", headers=headers["admin"])
    assert revoked.status_code == 200
    assert test_client.get("/api/session", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_tokens_stored_only_as_hashes(client, store_copy: Path) -> None:
    test_client, headers = client
    secret = headers["admin"]["Authorization"].split()[1]
    data = store_copy.read_bytes() + store_copy.with_name(store_copy.name + "-wal").read_bytes()
    assert secret.encode() not in data


def test_alert_filters(client) -> None:
    test_client, headers = client
    everything = test_client.get("/api/alerts", params={"limit": 1000}, headers=headers["viewer"]).json()
    assert everything["total"] > 0
    alert = everything["items"][0]
    by_device = test_client.get("/api/alerts", params={"device": alert["device"], "limit": 1000}, headers=headers["viewer"]).json()
    assert by_device["total"] >= 1
    assert {item["device"] for item in by_device["items"]} == {alert["device"]}
    by_category = test_client.get("/api/alerts", params={"category": alert["category"]}, headers=headers["viewer"]).json()
    assert {item["category"] for item in by_category["items"]} == {alert["category"]}
    late = test_client.get("/api/alerts", params={"since": alert["time"], "limit": 1000}, headers=headers["viewer"]).json()
    assert late["total"] <= everything["total"]
    assert all((item["end_time"] or item["time"]) >= alert["time"] for item in late["items"])
    assert test_client.get("/api/alerts", params={"state": "resolved"}, headers=headers["viewer"]).json()["total"] == 0


def test_acknowledge_resolve_and_ledger(client) -> None:
    test_client, headers = client
    alert = first_alert(test_client, headers["viewer"])
    before = ledger_size(test_client, headers["viewer"])
    acknowledged = test_client.post(f"/api/alerts/{alert['id']}/acknowledge", json={"note": "looking"}, headers=headers["analyst"])
    assert acknowledged.status_code == 200
    assert acknowledged.json()["triage"]["state"] == "acknowledged"
    resolved = test_client.post(f"/api/alerts/{alert['id']}/resolve", json={}, headers=headers["analyst"])
    assert resolved.json()["triage"]["state"] == "resolved"
    assert ledger_size(test_client, headers["viewer"]) == before + 2
    entries = test_client.get("/api/ledger/entries", params={"limit": 2}, headers=headers["viewer"]).json()["items"]
    assert [entry["kind"] for entry in entries] == ["alert_resolved", "alert_acknowledged"]
    assert entries[0]["actor"].startswith("test-analyst")
    listed = test_client.get("/api/alerts", params={"state": "resolved"}, headers=headers["viewer"]).json()
    assert [item["id"] for item in listed["items"]] == [alert["id"]]


def test_false_positive_label_creates_suppression(client) -> None:
    test_client, headers = client
    alert = first_alert(test_client, headers["viewer"])
    labelled = test_client.post(f"/api/alerts/{alert['id']}/label", json={"label": "false_positive", "note": "backup job"}, headers=headers["analyst"])
    assert labelled.status_code == 200
    suppression_id = labelled.json()["triage"]["suppression_id"]
    assert suppression_id
    suppression = test_client.get(f"/api/suppressions/{suppression_id}", headers=headers["viewer"]).json()
    assert suppression["device"] == alert["device"]
    assert suppression["category"] == alert["category"]
    assert suppression["metric"] == alert["metrics"][0]["metric"]
    assert suppression["alert_id"] == alert["id"]
    assert suppression["start"] == alert["time"]

    relabelled = test_client.post(f"/api/alerts/{alert['id']}/label", json={"label": "true_positive"}, headers=headers["analyst"])
    assert relabelled.json()["triage"]["suppression_id"] is None
    listed = test_client.get("/api/suppressions", params={"include_deleted": True}, headers=headers["viewer"]).json()["items"]
    undone = next(item for item in listed if item["id"] == suppression_id)
    assert undone["deleted_at"] is not None
    assert test_client.get("/api/suppressions", headers=headers["viewer"]).json()["items"] == []


def test_suppression_crud(client) -> None:
    test_client, headers = client
    created = test_client.post(
        "/api/suppressions", json={"cohort": "camera", "metric": "bytes_out", "start": "2024-03-04T00:00:00Z", "end": 1709600000},
        headers=headers["analyst"],
    )
    assert created.status_code == 201, created.text
    item = created.json()
    assert item["start"] == "2024-03-04T00:00:00Z"
    changed = test_client.patch(f"/api/suppressions/{item['id']}", json={"reason": "firmware rollout"}, headers=headers["analyst"])
    assert changed.json()["reason"] == "firmware rollout"
    deleted = test_client.delete(f"/api/suppressions/{item['id']}", headers=headers["analyst"])
    assert deleted.json()["deleted_at"] is not None
    assert test_client.patch(f"/api/suppressions/{item['id']}", json={"reason": "x"}, headers=headers["analyst"]).status_code == 409


def test_maintenance_window_needs_start_and_end(client) -> None:
    test_client, headers = client
    missing = test_client.post("/api/maintenance-windows", json={"device": "pump-1", "start": "2024-03-04T00:00:00Z"}, headers=headers["analyst"])
    assert missing.status_code == 422
    assert missing.json()["field"] == "end"
    created = test_client.post(
        "/api/maintenance-windows", json={"device": "pump-1", "start": "2024-03-04T00:00:00Z", "end": "2024-03-04T02:00:00Z"},
        headers=headers["analyst"],
    )
    assert created.status_code == 201
    assert created.json()["kind"] == "maintenance"
    assert test_client.get(f"/api/suppressions/{created.json()['id']}", headers=headers["viewer"]).status_code == 200
    assert test_client.get("/api/maintenance-windows", headers=headers["viewer"]).json()["items"][0]["device"] == "pump-1"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/suppressions", {}, "scope"),
        ("/api/suppressions", {"device": "d", "start": "yesterday"}, "start"),
        ("/api/suppressions", {"device": "d", "start": 100, "end": 50}, "end"),
        ("/api/suppressions", {"device": "d", "end": 1e300}, "end"),
        ("/api/suppressions", '{"device": "\\ud800"}', "device"),
        ("/api/suppressions", '{"device": "a\\u0000b"}', "device"),
        ("/api/suppressions", "{not json", "body"),
        ("/api/suppressions", {"device": "d", "colour": "red"}, "colour"),
        ("/api/tokens", {"role": "root", "name": "x"}, "role"),
    ],
)
def test_bad_input_names_the_field(client, path: str, body: dict[str, Any] | str, field: str) -> None:
    test_client, headers = client
    before = ledger_size(test_client, headers["viewer"])
    if isinstance(body, str):  # raw JSON text, for what a client library would refuse to encode
        response = test_client.post(path, content=body.encode(), headers={**headers["admin"], "Content-Type": "application/json"})
    else:
        response = test_client.post(path, json=body, headers=headers["admin"])
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert ledger_size(test_client, headers["viewer"]) == before


def test_bad_query_and_unknown_ids(client) -> None:
    test_client, headers = client
    response = test_client.get("/api/alerts", params={"since": "not a time"}, headers=headers["viewer"])
    assert response.status_code == 422
    assert response.json()["field"] == "since"
    response = test_client.get("/api/alerts", params={"limit": 0}, headers=headers["viewer"])
    assert response.json()["field"] == "limit"
    assert test_client.get("/api/alerts/nope", headers=headers["viewer"]).status_code == 404
    assert test_client.post("/api/alerts/nope/label", json={"label": "true_positive"}, headers=headers["analyst"]).status_code == 404
    assert test_client.get("/api/ledger/proof/999999", headers=headers["viewer"]).status_code == 404
    assert test_client.post("/api/actions/nope/approve", json={}, headers=headers["analyst"]).status_code == 404


def test_incidents_group_alerts(client) -> None:
    test_client, headers = client
    incidents = test_client.get("/api/incidents", headers=headers["viewer"]).json()
    assert incidents["total"] > 0
    incident = incidents["items"][0]
    detail = test_client.get(f"/api/incidents/{incident['id']}", headers=headers["viewer"]).json()
    assert len(detail["alerts"]) == incident["alerts"]
    acknowledged = test_client.post(f"/api/incidents/{incident['id']}/acknowledge", json={}, headers=headers["analyst"]).json()
    assert acknowledged["state"] == "acknowledged"
    assert test_client.get("/api/incidents", params={"state": "acknowledged"}, headers=headers["viewer"]).json()["total"] == 1


def test_devices_risk_baseline_and_series(client) -> None:
    test_client, headers = client
    devices = test_client.get("/api/devices", headers=headers["viewer"]).json()["items"]
    assert len(devices) == 10
    assert devices == sorted(devices, key=lambda item: -item["risk"])
    device = test_client.get(f"/api/devices/{devices[0]['device']}", headers=headers["viewer"]).json()
    assert device["baseline"]
    band = next(iter(device["baseline"].values()))
    assert band["low"] <= band["mean"] <= band["high"]
    series = test_client.get(f"/api/devices/{devices[0]['device']}/series", headers=headers["viewer"]).json()
    assert series["series"]
    points = next(iter(series["series"].values()))
    assert len(points) > 50
    assert test_client.get("/api/devices/nope", headers=headers["viewer"]).status_code == 404


def test_ledger_status_and_proof(client) -> None:
    test_client, headers = client
    status = test_client.get("/api/ledger", headers=headers["viewer"]).json()
    assert status["size"] > 0
    proof = test_client.get("/api/ledger/proof/0", headers=headers["viewer"]).json()
    assert proof["root_hash"] == status["root_hash"]
    from iotwarden.ledger.proofs import verify_inclusion

    path = [bytes.fromhex(node) for node in proof["audit_path"]]
    assert verify_inclusion(bytes.fromhex(proof["leaf_hash"]), 0, status["size"], path, bytes.fromhex(status["root_hash"]))
    assert test_client.get("/api/ledger/verify", headers=headers["viewer"]).json()["ok"] is True


def test_ranker_off_with_few_labels(client) -> None:
    test_client, headers = client
    status = test_client.get("/api/ranker", headers=headers["viewer"]).json()
    assert status["enabled"] is False
    assert "at least 20" in status["reason"]


def test_metrics_exposition(client) -> None:
    test_client, headers = client
    test_client.get("/api/alerts", headers=headers["viewer"])
    text = test_client.get("/metrics", headers=headers["viewer"]).text
    assert "iotwarden_api_requests_total" in text
    assert 'iotwarden_alerts{state="new"}' in text
    assert "iotwarden_ledger_entries" in text


def test_overview(client) -> None:
    test_client, headers = client
    overview = test_client.get("/api/overview", headers=headers["viewer"]).json()
    assert overview["devices"] == 10
    assert len(overview["rates"]["alerts"]) == 25
    assert sum(overview["rates"]["observations"]) > 0


def test_console_served_with_csp(client) -> None:
    test_client, _ = client
    response = test_client.get("/")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert test_client.get("/console/app.js").status_code == 200


def test_device_id_with_slash(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    device = "site-a/pump-1"
    observations = [Observation(device, 60.0 * i, {"flow": 10.0 + (i % 5) * 0.1}) for i in range(200)]
    observations.append(Observation(device, 60.0 * 200, {"flow": 500.0}))
    with AlertStore(path) as store:
        Replay(Engine(EngineConfig()), store=store).run(observations)
    secrets = make_tokens(path)
    headers = {"Authorization": f"Bearer {secrets['viewer']}"}
    app = create_app(path, poll_interval=0.2)
    with TestClient(app) as test_client:
        listed = test_client.get("/api/devices", headers=headers).json()["items"]
        assert [item["device"] for item in listed] == [device]
        encoded = "site-a%2Fpump-1"
        detail = test_client.get(f"/api/devices/{encoded}", headers=headers)
        assert detail.status_code == 200
        assert detail.json()["device"] == device
        series = test_client.get(f"/api/devices/{encoded}/series", headers=headers)
        assert series.status_code == 200
        assert test_client.get("/api/devices/site-a%2Fnope", headers=headers).status_code == 404
    app.state.backend.close()
