"""Live updates for server-sent events: new alerts and changed actions, found by polling the store.

The detector runs in another process (``iotwarden detect`` or ``run``), so
the server learns of new rows by polling: new alert rows by SQLite rowid,
changed actions by ``updated_at``. The poll uses its own read-only
connection, so it never waits for the API's lock. Changes made through the
API itself (labels, suppressions) are published directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from iotwarden.api.timeutil import iso

__all__ = ["EventHub", "StorePoller"]

logger = logging.getLogger(__name__)

MAX_QUEUED = 1000


class EventHub:
    """Fan events out to every connected client; a client that falls behind loses its oldest events."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=MAX_QUEUED)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send an event to every client; safe to call from any thread."""
        event = {"event": kind, "data": data}
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: dict[str, Any]) -> None:
        self.published += 1
        for queue in list(self._queues):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)


def format_event(event: dict[str, Any]) -> str:
    """Return one event in the text/event-stream format."""
    return f"event: {event['event']}\ndata: {json.dumps(event['data'], separators=(',', ':'))}\n\n"


class StorePoller:
    """Find alerts and action changes written since the last poll."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
        # Polls run in worker threads and the server may close the poller while
        # one is running: closing SQLite under a running statement can crash
        # the process, so both take this lock.
        self._lock = threading.Lock()
        self._closed = False
        self.last_rowid = self._scalar("SELECT COALESCE(MAX(rowid), 0) FROM alerts")
        self.last_action_update = float(self._scalar("SELECT COALESCE(MAX(updated_at), 0) FROM response_actions") or 0.0)

    def _scalar(self, sql: str) -> Any:
        try:
            return self.connection.execute(sql).fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    def close(self) -> None:
        """Close the connection, once any poll in progress has finished."""
        with self._lock:
            self._closed = True
            self.connection.close()

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        """Return ``(event, data)`` pairs for new alerts and changed actions (none once closed)."""
        with self._lock:
            if self._closed:
                return []
            return self._poll()

    def _poll(self) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        try:
            rows = self.connection.execute(
                "SELECT rowid, id, device, time, category, severity, score, explanation FROM alerts WHERE rowid > ? ORDER BY rowid LIMIT 500",
                (self.last_rowid,),
            ).fetchall()
            for rowid, alert_id, device, when, category, severity, score, explanation in rows:
                self.last_rowid = max(self.last_rowid, rowid)
                found.append(("alert", {"id": alert_id, "device": device, "time": iso(when), "category": category,
                                        "severity": severity, "score": score, "explanation": explanation}))
            actions = self.connection.execute(
                "SELECT id, device, kind, state, policy, updated_at FROM response_actions WHERE updated_at > ? ORDER BY updated_at LIMIT 500",
                (self.last_action_update,),
            ).fetchall()
            for action_id, device, kind, state, policy, updated in actions:
                self.last_action_update = max(self.last_action_update, float(updated))
                found.append(("action", {"id": action_id, "device": device, "kind": kind, "state": state, "policy": policy}))
        except sqlite3.OperationalError as error:
            # The detector may hold a lock for a moment, or have not created a table yet.
            logger.debug("store poll skipped: %s", error)
        return found
