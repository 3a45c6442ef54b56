"""Feedback that changes detection: false-positive labels suppress, labels train the ranker."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sklearn")
from fastapi.testclient import TestClient  # noqa: E402

from iotwarden.api.app import create_app  # noqa: E402
from iotwarden.api.tokens import TokenTable  # noqa: E402
from iotwarden.decisions.alerts import Alert  # noqa: E402
from iotwarden.engine import Engine, EngineConfig  # noqa: E402
from iotwarden.feedback import AlertRanker, SuppressionSync, load_suppressions  # noqa: E402
from iotwarden.pipeline import Replay  # noqa: E402
from iotwarden.simulate import Simulation, simulate_fleet  # noqa: E402
from iotwarden.store import AlertStore  # noqa: E402

# An alert counts for an incident when it opens on the incident's device from
# 10 minutes before its start to an hour after its end (as iotwarden.demo does).
MATCH_BEFORE = 600.0
MATCH_AFTER = 3600.0


def replay(simulation: Simulation, store_path: Path, suppressions_from: Path | None = None) -> list[Alert]:
    alerts: list[Alert] = []
    with AlertStore(store_path) as store:
        engine = Engine(EngineConfig())
        if suppressions_from is not None:
            with AlertStore(suppressions_from) as labelled:
                SuppressionSync(labelled, engine).refresh()
        Replay(engine, store=store, on_alert=alerts.append).run(simulation.observations())
    return [alert for alert in alerts if alert.severity != "info"]


def caught_incidents(simulation: Simulation, alerts: list[Alert]) -> tuple[set[str], list[Alert]]:
    caught: set[str] = set()
    used: set[str] = set()
    for incident in simulation.incidents:
        for alert in alerts:
            if alert.device == incident.device_id and incident.start - MATCH_BEFORE <= alert.time <= incident.end + MATCH_AFTER:
                caught.add(incident.incident_id)
                used.add(alert.id)
    return caught, [alert for alert in alerts if alert.id not in used]


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate_fleet(20, 36, seed=3)


def test_false_positive_labels_reduce_false_alerts(simulation: Simulation, tmp_path: Path) -> None:
    first_store = tmp_path / "first.db"
    first = replay(simulation, first_store)
    caught_first, false_first = caught_incidents(simulation, first)
    assert caught_first, "the first replay should find some injected attacks"
    assert len(false_first) >= 10

    with AlertStore(first_store) as store:
        _, secret = TokenTable(store.connection).create("analyst", "feedback-test", "test")
    headers = {"Authorization": f"Bearer {secret}"}
    false_ids = {alert.id for alert in false_first}
    with TestClient(create_app(first_store)) as client:
        for alert in first:
            label = "false_positive" if alert.id in false_ids else "true_positive"
            response = client.post(f"/api/alerts/{alert.id}/label", json={"label": label, "note": "from the simulator's labels"}, headers=headers)
            assert response.status_code == 200, response.text
        suppressions = client.get("/api/suppressions", headers=headers).json()["items"]
        ranker = client.get("/api/ranker", headers=headers).json()
    assert len(suppressions) == len(false_ids)
    assert ranker["enabled"] is True
    assert 0.0 <= ranker["precision"] <= 1.0
    assert ranker["labels"] == len(first)

    second = replay(simulation, tmp_path / "second.db", suppressions_from=first_store)
    caught_second, false_second = caught_incidents(simulation, second)
    print(f"false alerts {len(false_first)} -> {len(false_second)}; attacks caught {len(caught_first)} -> {len(caught_second)}; "
          f"ranker precision {ranker['precision']:.2f} recall {ranker['recall']:.2f}")
    assert len(false_second) < len(false_first)
    assert caught_first <= caught_second


def test_load_suppressions_skips_deleted(tmp_path: Path) -> None:
    from iotwarden.feedback.suppressions import SuppressionTable, new_record

    with AlertStore(tmp_path / "s.db") as store:
        table = SuppressionTable(store.connection)
        kept = new_record(kind="suppression", actor="a", device="cam-1", metric="bytes_out")
        gone = new_record(kind="maintenance", actor="a", cohort="pumps", start=0.0, end=10.0)
        gone.deleted_at = 1.0
        table.insert(kept)
        table.insert(gone)
        assert [item.id for item in load_suppressions(store)] == [kept.id]


def test_suppression_sync_reloads_only_on_change(tmp_path: Path) -> None:
    from iotwarden.feedback.suppressions import SuppressionTable, new_record

    with AlertStore(tmp_path / "s.db") as store:
        engine = Engine(EngineConfig())
        sync = SuppressionSync(store, engine)
        assert sync.refresh() is True
        assert sync.refresh() is False
        SuppressionTable(store.connection).insert(new_record(kind="suppression", actor="a", device="cam-1"))
        assert sync.refresh() is True
        assert len(engine.book.suppressions) == 1


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ([True] * 5 + [False] * 5, "at least 20"),
        ([True] * 25, "no false positives"),
        ([False] * 25, "no true positives"),
    ],
)
def test_ranker_stays_off(labels: list[bool], reason: str) -> None:
    alerts = [{"category": "spike", "detector": "baseline", "severity": "low", "cohort": "*", "baseline": "device", "score": 5.0,
               "time": 0.0, "end_time": 60.0, "metrics": [{"metric": "x"}]} for _ in labels]
    ranker = AlertRanker()
    status = ranker.train(alerts, labels)
    assert status.enabled is False
    assert reason in status.reason
    assert ranker.predict(alerts) is None


def test_ranker_learns_separable_labels() -> None:
    alerts = []
    labels = []
    for index in range(30):
        true_positive = index % 3 == 0
        alerts.append({"category": "scan" if true_positive else "spike", "detector": "baseline", "severity": "high" if true_positive else "low",
                       "cohort": "camera", "baseline": "device", "score": 20.0 + index % 5 if true_positive else 6.0 + index % 4,
                       "time": 0.0, "end_time": 600.0, "metrics": [{"metric": "bytes_out"}]})
        labels.append(true_positive)
    ranker = AlertRanker()
    status = ranker.train(alerts, labels)
    assert status.enabled is True
    assert status.precision == pytest.approx(1.0)
    scores = ranker.predict(alerts)
    assert min(s for s, label in zip(scores, labels) if label) > max(s for s, label in zip(scores, labels) if not label)
