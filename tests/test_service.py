"""``iotwarden run`` against real Mosquitto brokers.

Tests use the broker on 127.0.0.1:1883 when it accepts connections and a
private ``mosquitto`` on a free port otherwise; tests that need their own
broker configuration or a broker restart always start a private one. Every
test uses its own topic prefix and client ids.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from iotwarden.engine import Engine  # noqa: E402
from iotwarden.service.config import build_service_config  # noqa: E402
from iotwarden.service import receiver as receiver_module  # noqa: E402
from iotwarden.service.receiver import MessageDecoder, Receiver, ReceiverError  # noqa: E402
from iotwarden.service.runner import Service, sidecar_path  # noqa: E402
from iotwarden.simulate import simulate_fleet  # noqa: E402
from iotwarden.store import AlertStore  # noqa: E402

BASE_TIME = 1714557600.0  # 2024-05-01T10:00:00Z


# Brokers --------------------------------------------------------------------


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateBroker:
    """A mosquitto process on a free loopback port, with persistence in its own folder."""

    def __init__(self, folder: Path, extra: list[str] | None = None) -> None:
        if shutil.which("mosquitto") is None:
            pytest.skip("mosquitto binary not found on PATH")
        self.folder = folder
        self.port = _free_port()
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {folder}/",
            *(extra or []),
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not _accepts(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"private mosquitto did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Callable[..., PrivateBroker]]:
    started: list[PrivateBroker] = []

    def start(extra: list[str] | None = None) -> PrivateBroker:
        folder = tmp_path / f"broker{len(started)}"
        folder.mkdir()
        broker = PrivateBroker(folder, extra)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def broker_port(private_broker: Callable[..., PrivateBroker]) -> int:
    """Port of the shared broker on 1883, or of a private one when 1883 refuses connections."""
    if _accepts(1883):
        return 1883
    return private_broker().port


@pytest.fixture
def prefix() -> str:
    return f"iwtest-{uuid.uuid4().hex[:10]}"


# Helpers --------------------------------------------------------------------


class Publisher:
    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, messages: list[tuple[str, bytes]], *, retain: bool = False, chunk: int = 100) -> None:
        """Publish with QoS 1, waiting for the acks of each chunk so the broker's queue never overflows."""
        for start in range(0, len(messages), chunk):
            infos = [self.client.publish(topic, payload, qos=1, retain=retain) for topic, payload in messages[start : start + chunk]]
            for info in infos:
                info.wait_for_publish(timeout=10)
            time.sleep(0.01)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _config(tmp_path: Path, port: int, prefix: str, **overrides: Any) -> dict[str, Any]:
    source = {
        "type": "mqtt",
        "port": port,
        "topic": f"{prefix}/{{device}}/telemetry",
        "client_id": f"{prefix}-service",
        "reconnect_min": 0.5,
        "reconnect_max": 2,
    }
    source.update(overrides.pop("source", {}))
    data = {
        "store": str(tmp_path / "iotwarden.db"),
        "state": str(tmp_path / "state.npz"),
        "clock": "event",
        "flush_interval": 0.05,
        "sources": [source],
        # Broker traffic rows add observations of their own at minute
        # boundaries; tests that count telemetry keep them off.
        "traffic": {"enabled": False},
    }
    data.update(overrides)
    return data


class RunningService:
    """A Service running on a thread of the test process; ``error`` is what its run raised."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.service = Service(build_service_config(data, "test.yaml"))
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert self.service.sources[0].wait_connected(15), "service did not connect to the broker"
        time.sleep(0.3)  # the subscription is sent right after CONNACK

    def _run(self) -> None:
        try:
            self.service.run(self.stop_event)
        except BaseException as error:  # noqa: BLE001 - kept for the test to check
            self.error = error

    def wait_messages(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.service.counters.messages < count or self.service.receiver.queue_depth:
            assert time.monotonic() < deadline, f"received {self.service.counters.messages} of {count} messages"
            time.sleep(0.05)
        time.sleep(0.2)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def _reading(prefix: str, device: str, when: float, **metrics: float) -> tuple[str, bytes]:
    return f"{prefix}/{device}/telemetry", json.dumps({"ts": when, **metrics}).encode()


def _dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# End to end -----------------------------------------------------------------


def test_stream_with_spike_stored_as_alert(tmp_path: Path, broker_port: int, prefix: str) -> None:
    simulation = simulate_fleet(6, 5, seed=3, attacks=[])
    rows = list(simulation.rows())
    target = rows[0][1]
    times = sorted(when for when, device, _, _ in rows if device == target)
    spike_time = times[-20]
    messages = []
    for when, device, _device_type, metrics in rows:
        values = dict(metrics)
        if device == target and when == spike_time:
            name = next(iter(values))
            values[name] = values[name] * 50 + 1000
        messages.append(_reading(prefix, device, when, **values))

    running = RunningService(_config(tmp_path, broker_port, prefix))
    publisher = Publisher(broker_port)
    try:
        publisher.send(messages)
        running.wait_messages(len(messages))
    finally:
        publisher.close()
        running.stop()

    assert running.service.counters.rejected == 0
    with AlertStore(tmp_path / "iotwarden.db") as store:
        alerts = store.alerts(device=target)
    assert any(alert.time == spike_time for alert in alerts), [(a.time, a.category) for a in alerts]


def test_bad_messages_dead_lettered_stream_goes_on(tmp_path: Path, broker_port: int, prefix: str, cases_dir: Path) -> None:
    messages: list[tuple[str, bytes]] = []
    for name in ("case-01.mqtt.txt", "case-02.mqtt.txt"):
        for line in (cases_dir / name).read_text().splitlines():
            topic, _, payload = line.partition(" ")
            messages.append((topic.replace("fleet", prefix, 1), payload.encode()))
    for line in (cases_dir / "case-20.jsonl").read_text().splitlines():
        wrapper = json.loads(line)
        encoded = wrapper["payload_b64"]
        if encoded.startswith("GENERATE:oversize:"):
            size = int(encoded.rsplit(":", 1)[1])
            payload = json.dumps({"device_id": "dev-202", "ts": "2024-05-01T10:01:30Z", "blob": "x" * size}).encode()
        else:
            payload = base64.b64decode(encoded)
        messages.append((wrapper["topic"].replace("fleet", prefix, 1), payload))

    config = _config(tmp_path, broker_port, prefix, source={"time_fallback": "reject"})
    running = RunningService(config)
    publisher = Publisher(broker_port)
    try:
        publisher.send(messages, chunk=1)
        running.wait_messages(len(messages))
    finally:
        publisher.close()
        running.stop()

    service = running.service
    entries = _dead_letters(tmp_path / "iotwarden.deadletter.jsonl")
    rejected = [entry for entry in entries if entry["kind"] == "rejected"]
    reasons = " | ".join(entry["reason"] for entry in rejected)
    assert len(rejected) == 6, reasons
    assert all("/dev-201/" in entry["source"] or "/dev-202/" in entry["source"] for entry in rejected)
    assert "not valid UTF-8" in reasons
    assert "JSON array" in reasons
    assert "JSON string" in reasons
    assert "missing time" in reasons
    assert "larger than max_payload_bytes" in reasons
    assert service.counters.rejected == 6

    issues = {(entry["source"].rsplit("/", 2)[-2], entry["field"]) for entry in entries if entry["kind"] == "field_issue"}
    assert ("dev-002", "temperature") in issues
    assert ("dev-003", "temperature") in issues
    assert ("dev-011", "co2") in issues
    assert ("dev-011", "rh") in issues

    # Every accepted message reached the engine or waits in the reorderer,
    # including dev-201's last reading, which came after all the bad ones.
    accepted = len(messages) - 6
    assert service.engine.observations + service.reorderer.pending_count == accepted
    state = service.reorderer.snapshot()["devices"]["dev-201"]
    assert state["latest"] == BASE_TIME + 120


def test_broker_restart_loses_nothing(tmp_path: Path, private_broker: Callable[..., PrivateBroker], prefix: str) -> None:
    broker = private_broker()
    config = _config(tmp_path, broker.port, prefix, source={"reconnect_min": 6, "reconnect_max": 8})
    first = [_reading(prefix, "dev-1", BASE_TIME + 60 * i, temperature=20.0 + i % 3) for i in range(50)]
    second = [_reading(prefix, "dev-1", BASE_TIME + 60 * (50 + i), temperature=20.0 + i % 3) for i in range(50)]

    running = RunningService(config)
    try:
        publisher = Publisher(broker.port)
        publisher.send(first)
        publisher.close()
        running.wait_messages(50)

        broker.stop()
        broker.start()
        # iotwarden waits at least reconnect_min (6 s) before it reconnects.
        assert not running.service.sources[0].connected
        publisher = Publisher(broker.port)
        publisher.send(second)
        publisher.close()
        assert not running.service.sources[0].connected, "published after iotwarden had reconnected"
        running.wait_messages(100)
    finally:
        running.stop()

    service = running.service
    assert service.sources[0].connects == 2
    assert service.counters.messages == 100
    assert service.counters.duplicates == 0
    assert service.engine.observations + service.reorderer.pending_count == 100


def _start_subprocess(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "iotwarden.service", "-v", "run", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=log_path.open("ab"),
    )


def _wait_status(path: Path, condition: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            status = {}
        if status and condition(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"status never met the condition; last status: {status}")


def _saved_count(state: Path) -> int:
    engine = Engine.load(state)
    sidecar = json.loads(sidecar_path(state).read_text())
    held = sum(len(device["pending"]) for device in sidecar["reorderer"]["devices"].values())
    return engine.observations + held


def _service_files(tmp_path: Path, broker_port: int, prefix: str) -> tuple[Path, Path, Path]:
    """Write a service configuration that reports its status often; return the status, config and log paths."""
    status = tmp_path / "status.json"
    data = _config(tmp_path, broker_port, prefix, status_file=str(status), stats_interval=0.2)
    config_path = tmp_path / "service.yaml"
    config_path.write_text(json.dumps(data))
    return status, config_path, tmp_path / "service.log"


def test_sigterm_saves_state_and_restart_resumes(tmp_path: Path, broker_port: int, prefix: str) -> None:
    status, config_path, log_path = _service_files(tmp_path, broker_port, prefix)
    state = tmp_path / "state.npz"

    first = [_reading(prefix, f"dev-{d}", BASE_TIME + 60 * i, temperature=20.0 + (i * d) % 3) for i in range(20) for d in range(2)]
    second = [_reading(prefix, f"dev-{d}", BASE_TIME + 60 * (20 + i), temperature=20.0 + i % 3) for i in range(15) for d in range(2)]

    process = _start_subprocess(config_path, log_path)
    try:
        _wait_status(status, lambda s: all(source["connected"] for source in s["sources"]))
        publisher = Publisher(broker_port)
        publisher.send(first)
        publisher.close()
        _wait_status(status, lambda s: s["messages"] >= len(first))
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 0, log_path.read_text()
    assert stdout == b""
    assert state.exists()
    after_first = _saved_count(state)
    assert after_first == len(first)

    # Published while iotwarden is down: the broker keeps them in the session.
    publisher = Publisher(broker_port)
    publisher.send(second)
    publisher.close()

    status.unlink()
    process = _start_subprocess(config_path, log_path)
    try:
        _wait_status(status, lambda s: s["messages"] >= len(second))
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0, log_path.read_text()
    log = log_path.read_text()
    assert "resumed engine state" in log
    assert "received SIGTERM" in log
    assert _saved_count(state) == len(first) + len(second)
    assert Engine.load(state).observations > after_first - 2


def test_retained_message_not_scored_twice(tmp_path: Path, broker_port: int, prefix: str) -> None:
    topic, payload = _reading(prefix, "dev-r", BASE_TIME, temperature=21.0)
    untimed_topic = f"{prefix}/dev-u/telemetry"
    publisher = Publisher(broker_port)
    try:
        publisher.send([(topic, payload), (untimed_topic, b'{"temperature": 5.0}')], retain=True)
        config = _config(tmp_path, broker_port, prefix)
        first = RunningService(config)
        first.wait_messages(2)
        first.stop()
        assert first.service.counters.retained_without_time == 1
        assert first.service.counters.duplicates == 0

        # The restart re-subscribes, so the broker sends the retained copies again.
        second = RunningService(config)
        second.wait_messages(2)
        second.stop()
    finally:
        publisher.send([(topic, b""), (untimed_topic, b"")], retain=True)
        publisher.close()
    assert second.service.counters.duplicates == 1
    assert second.service.counters.retained_without_time == 1
    assert second.service.engine.observations + second.service.reorderer.pending_count == 1


def test_redelivered_dup_not_scored_twice(tmp_path: Path) -> None:
    config = build_service_config(_config(tmp_path, 1, "dup"), "test.yaml")
    service = Service(config)
    decoder = MessageDecoder(config.sources[0])
    topic, payload = _reading("dup", "dev-1", BASE_TIME, temperature=21.0)
    service._ingest(decoder.decode((0, topic, payload, len(payload), False, False, time.time())))
    service._ingest(decoder.decode((0, topic, payload, len(payload), False, True, time.time())))
    untimed = b'{"temperature": 5.0}'
    service._ingest(decoder.decode((0, "dup/dev-2/telemetry", untimed, len(untimed), False, False, time.time())))
    service._ingest(decoder.decode((0, "dup/dev-2/telemetry", untimed, len(untimed), False, True, time.time() + 1)))
    service._ingest(decoder.decode((0, "dup/dev-2/telemetry", untimed, len(untimed), False, False, time.time() + 2)))
    assert service.counters.duplicates == 2
    # dev-2's first and third messages (no DUP flag, new receive times) wait.
    # dev-1's one reading was released as quiet, because dev-2's receive times moved the stream on.
    assert service.reorderer.pending_count == 2
    assert service.reorderer.counters.quiet == 1
    service.store.close()
    service.dead_letters.close()


def test_traffic_features_reach_engine(tmp_path: Path) -> None:
    data = _config(tmp_path, 1, "tr", clock="wall", traffic={"enabled": True, "interval": 1})
    config = build_service_config(data, "test.yaml")
    service = Service(config)
    decoder = MessageDecoder(config.sources[0])
    now = time.time()
    for number in range(3):
        payload = json.dumps({"ts": now + number, "temperature": 20.0}).encode()
        service._ingest(decoder.decode((0, "tr/dev-1/telemetry", payload, len(payload), False, False, now)))
    service.traffic.window_end = 0.0
    service._release_and_flush()
    assert "dev-1@broker" in service.engine.device_index
    assert "mqtt_messages" in service.engine.metric_index
    assert service.counters.traffic_observations == 1
    service.store.close()
    service.dead_letters.close()


def test_run_command_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iotwarden.service", "run", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "--config" in result.stdout


def test_run_rejects_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  - type: mqtt\n    port: nope\n")
    result = subprocess.run(
        [sys.executable, "-m", "iotwarden.service", "run", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert f"{path}: key 'sources[0].port'" in result.stderr


# The receiver process ---------------------------------------------------------


def _wait_until(condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.05)


def _process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_killed_receiver_restarted_without_loss(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    broker = private_broker()
    readings = [_reading(prefix, "dev-1", BASE_TIME + 60 * i, temperature=20.0 + i % 3) for i in range(60)]
    running = RunningService(_config(tmp_path, broker.port, prefix))
    publisher = Publisher(broker.port)
    try:
        publisher.send(readings[:20])
        running.wait_messages(20)
        receiver = running.service.receiver
        pid = receiver.pid
        assert pid is not None

        # SIGTERM to the whole process group must not stop the receiver on its own.
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        assert not _process_gone(pid)

        os.kill(pid, signal.SIGKILL)
        # Published while no receiver runs: the broker keeps them in the session.
        publisher.send(readings[20:40])
        _wait_until(
            lambda: receiver.restarts == 1 and running.service.sources[0].connected,
            20,
            lambda: f"receiver not restarted: restarts {receiver.restarts}",
        )
        publisher.send(readings[40:])
        running.wait_messages(60)
    finally:
        publisher.close()
        running.stop()

    service = running.service
    assert running.error is None
    assert service.receiver.pid != pid
    assert service.counters.messages == 60
    assert service.engine.observations + service.reorderer.pending_count == 60
    assert f"the MQTT receiver process (pid {pid}) was killed by SIGKILL" in caplog.text
    assert "restarting the MQTT receiver process" in caplog.text
    # Records logged in the receiver process reach this process's loggers.
    receiver_records = [record for record in caplog.records if record.name == "iotwarden.sources.mqtt"]
    assert any("subscribed to" in record.getMessage() for record in receiver_records)


def test_receiver_dying_repeatedly_stops_with_error(
    tmp_path: Path, broker_port: int, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receiver_module, "MAX_RESTARTS", 1)
    monkeypatch.setattr(receiver_module, "RESTART_DELAY", 0.1)
    running = RunningService(_config(tmp_path, broker_port, prefix))
    publisher = Publisher(broker_port)
    try:
        publisher.send([_reading(prefix, "dev-1", BASE_TIME + 60 * i, temperature=20.0) for i in range(5)])
        running.wait_messages(5)
        receiver = running.service.receiver
        os.kill(receiver.pid, signal.SIGKILL)
        _wait_until(lambda: receiver.restarts == 1 and receiver.alive, 20, lambda: "receiver not restarted")
        os.kill(receiver.pid, signal.SIGKILL)
        running.thread.join(timeout=30)
    finally:
        publisher.close()
        running.stop()

    assert isinstance(running.error, ReceiverError)
    assert "died 2 times" in str(running.error)
    # The engine state is saved before the error is raised.
    assert _saved_count(tmp_path / "state.npz") == 5


def _receiver_config(tmp_path: Path, port: int, prefix: str, **overrides: Any) -> Any:
    return build_service_config(_config(tmp_path, port, prefix, **overrides), "test.yaml")


def _drain(receiver: Receiver, until: Callable[[list[Any]], bool], timeout: float = 30) -> list[Any]:
    entries: list[Any] = []
    deadline = time.monotonic() + timeout
    while not until(entries):
        assert time.monotonic() < deadline, f"got {len(entries)} entries, {receiver.dropped} dropped"
        entries.extend(receiver.take(5000, 0.1))
    return entries


def _stop_receiver(receiver: Receiver) -> None:
    receiver.request_stop()
    deadline = time.monotonic() + 30
    while not receiver.finished:
        assert time.monotonic() < deadline, "receiver process did not stop"
        receiver.take(5000, 0.1)
    receiver.close()


def _flood(
    receiver: Receiver, broker: PrivateBroker, prefix: str, total: int, done: Callable[[list[Any]], bool]
) -> list[Any]:
    """Publish ``total`` readings of one device while the receiver is not read, then drain it until ``done``."""
    readings = [_reading(prefix, "dev-1", BASE_TIME + i, n=float(i)) for i in range(total)]
    receiver.start()
    try:
        _drain(receiver, lambda entries: receiver.sources[0].connected)
        publisher = Publisher(broker.port)
        publisher.send(readings, chunk=2000)
        publisher.close()
        # Nothing is read for a while: the pipe fills, then the queue, then the overflow policy acts.
        time.sleep(2)
        return _drain(receiver, done)
    finally:
        _stop_receiver(receiver)


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
def test_receiver_overflow_drops_counted(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker], prefix: str, overflow: str
) -> None:
    broker = private_broker(["max_queued_messages 0"])
    total = 40_000
    receiver = Receiver(_receiver_config(tmp_path, broker.port, prefix, queue_size=20, overflow=overflow))
    entries = _flood(receiver, broker, prefix, total, lambda entries: len(entries) + receiver.dropped >= total)

    assert receiver.sources[0].messages == total
    numbers = [int(entry[9][2]["n"]) for entry in entries]
    assert receiver.dropped > 0
    assert len(entries) + receiver.dropped == total
    assert numbers == sorted(set(numbers))
    # At the end of the stream the pipe and the queue are full, so newest
    # messages are dropped. The forwarder may free a slot just as the very
    # last one arrives, so the check looks at the last 1,000.
    if overflow == "drop_newest":
        assert numbers[0] == 0
        assert not set(range(total - 1000, total)) <= set(numbers)
    else:
        assert numbers[-20:] == list(range(total - 20, total))


def test_receiver_block_policy_waits_without_drops(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker], prefix: str
) -> None:
    broker = private_broker(["max_queued_messages 0"])
    total = 40_000
    config = _receiver_config(tmp_path, broker.port, prefix, queue_size=20, overflow="block", block_timeout=30)
    receiver = Receiver(config)
    entries = _flood(receiver, broker, prefix, total, lambda entries: len(entries) >= total)

    assert receiver.dropped == 0
    assert [int(entry[9][2]["n"]) for entry in entries] == list(range(total))


def test_sigterm_while_publishing_loses_nothing(
    tmp_path: Path, private_broker: Callable[..., PrivateBroker], prefix: str
) -> None:
    broker = private_broker(["max_queued_messages 0"])
    status = tmp_path / "status.json"
    data = _config(tmp_path, broker.port, prefix, status_file=str(status), stats_interval=0.2)
    config_path = tmp_path / "service.yaml"
    config_path.write_text(json.dumps(data))
    log_path = tmp_path / "service.log"
    total = 2000
    readings = [
        _reading(prefix, f"dev-{i % 4}", BASE_TIME + 60 * (i // 4), temperature=20.0 + i % 5) for i in range(total)
    ]

    def publish() -> None:
        publisher = Publisher(broker.port)
        try:
            publisher.send(readings, chunk=20)
        finally:
            publisher.close()

    process = _start_subprocess(config_path, log_path)
    try:
        _wait_status(status, lambda s: all(source["connected"] for source in s["sources"]))
        publishing = threading.Thread(target=publish)
        publishing.start()
        _wait_status(status, lambda s: s["messages"] >= 200)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0, log_path.read_text()
    first = json.loads(status.read_text())
    assert first["messages"] < total, "the stream ended before the stop; nothing was published across it"

    status.unlink()
    process = _start_subprocess(config_path, log_path)
    try:
        publishing.join(timeout=60)
        assert not publishing.is_alive()
        _wait_status(
            status, lambda s: s["messages"] - s["duplicates"] >= total - first["messages"] + first["duplicates"], timeout=60
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0, log_path.read_text()
    assert _saved_count(tmp_path / "state.npz") == total


def test_receiver_exits_when_service_killed(tmp_path: Path, broker_port: int, prefix: str) -> None:
    status, config_path, log_path = _service_files(tmp_path, broker_port, prefix)
    process = _start_subprocess(config_path, log_path)
    try:
        current = _wait_status(status, lambda s: s["receiver"]["alive"] and s["sources"][0]["connected"])
    finally:
        process.kill()
        process.communicate(timeout=30)
    child = current["receiver"]["pid"]
    _wait_until(lambda: _process_gone(child), 10, lambda: f"receiver process {child} still runs after the service was killed")
