"""Prometheus metrics of the API server and of the store it serves."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ApiMetrics"]

logger = logging.getLogger(__name__)


class ApiMetrics:
    """A registry of its own (not the process-global one), so several apps in one process do not clash."""

    def __init__(self, backend: Any, hub: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "iotwarden_api_requests", "HTTP requests served, by method, route template and status code.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "iotwarden_api_request_seconds", "Time to serve an HTTP request, by route template.", ["route"], registry=self.registry,
        )
        self.registry.register(_StoreCollector(backend, hub))


class _StoreCollector(Collector):
    def __init__(self, backend: Any, hub: Any) -> None:
        self.backend = backend
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        backend = self.backend
        with backend.lock:
            connection = backend.store.connection
            alerts = GaugeMetricFamily("iotwarden_alerts", "Stored alerts by triage state.", labels=["state"])
            for state, count in connection.execute(
                "SELECT COALESCE(t.state, 'new'), COUNT(*) FROM alerts a LEFT JOIN api_alert_triage t ON t.alert_id = a.id GROUP BY 1"
            ):
                alerts.add_metric([state], count)
            yield alerts
            labels = GaugeMetricFamily("iotwarden_alert_labels", "Analyst labels by label.", labels=["label"])
            for label, count in connection.execute("SELECT label, COUNT(*) FROM api_alert_triage WHERE label IS NOT NULL GROUP BY label"):
                labels.add_metric([label], count)
            yield labels
            actions = GaugeMetricFamily("iotwarden_actions", "Response actions by state.", labels=["state"])
            for state, count in connection.execute("SELECT state, COUNT(*) FROM response_actions GROUP BY state"):
                actions.add_metric([state], count)
            yield actions
            suppressions = GaugeMetricFamily("iotwarden_suppressions", "Suppressions and maintenance windows not deleted, by kind.", labels=["kind"])
            for kind, count in connection.execute("SELECT kind, COUNT(*) FROM api_suppressions WHERE deleted_at IS NULL GROUP BY kind"):
                suppressions.add_metric([kind], count)
            yield suppressions
            yield GaugeMetricFamily("iotwarden_ledger_entries", "Entries in the tamper-evident ledger.", value=backend.store.ledger.size)
            tokens = connection.execute("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL").fetchone()[0]
            yield GaugeMetricFamily("iotwarden_api_tokens", "API tokens that are not revoked.", value=tokens)
            status = backend.ranker.status
            yield GaugeMetricFamily("iotwarden_ranker_enabled", "1 when the alert ranker is trained and ordering the queue.", value=1 if status.enabled else 0)
            if status.precision is not None:
                yield GaugeMetricFamily("iotwarden_ranker_precision", "Cross-validated precision of the alert ranker.", value=status.precision)
        yield GaugeMetricFamily("iotwarden_api_event_subscribers", "Clients connected to the live event stream.", value=self.hub.subscribers)
