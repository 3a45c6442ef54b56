"""Polling the store for server-sent events while the server shuts down."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from iotwarden.api.events import StorePoller
from iotwarden.store import AlertStore


def test_close_waits_for_running_poll(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    AlertStore(path).close()
    poller = StorePoller(path)
    started = threading.Event()
    finished: list[float] = []
    poll = poller._poll

    def slow_poll() -> list:
        started.set()
        time.sleep(0.3)
        result = poll()
        finished.append(time.monotonic())
        return result

    poller._poll = slow_poll  # type: ignore[method-assign]
    worker = threading.Thread(target=poller.poll)
    worker.start()
    assert started.wait(5.0)
    poller.close()
    closed_at = time.monotonic()
    worker.join(5.0)
    assert finished
    assert finished[0] <= closed_at


def test_poll_after_close_finds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    AlertStore(path).close()
    poller = StorePoller(path)
    poller.close()
    assert poller.poll() == []
