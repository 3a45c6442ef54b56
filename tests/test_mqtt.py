"""Unit tests of the MQTT source pieces and the service configuration (no broker needed)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from iotwarden.errors import InvalidConfigError
from iotwarden.service.config import build_service_config, load_service_config
from iotwarden.observation import Rejection
from iotwarden.service.intake import MessageQueue
from iotwarden.service.receiver import MessageDecoder
from iotwarden.service.traffic import BrokerTraffic, MosquittoLogFollower, parse_mosquitto_line
from iotwarden.sources.mqtt import BufferedSocket, RecentMessages, TopicTemplate, payload_digest


def test_topic_template_filter_and_match() -> None:
    template = TopicTemplate("fleet/{device}/telemetry")
    assert template.filter == "fleet/+/telemetry"
    assert template.match("fleet/dev-1/telemetry") == {"device": "dev-1"}
    assert template.match("fleet/dev-1/status") is None
    assert template.match("fleet/dev-1/telemetry/extra") is None
    assert template.match("fleet//telemetry") is None


def test_topic_template_extra_placeholders() -> None:
    template = TopicTemplate("site/{device_type}/{device}/#")
    assert template.filter == "site/+/+/#"
    assert template.match("site/meter/m-7/a/b") == {"device_type": "meter", "device": "m-7"}
    assert template.match("site/meter") is None


@pytest.mark.parametrize("text", ["", "a/{device}x/b", "a/#/b", "a/{device}/{device}"])
def test_topic_template_invalid(text: str) -> None:
    with pytest.raises(InvalidConfigError):
        TopicTemplate(text)


def test_minimal_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text(
        f"store: {tmp_path / 'iotwarden.db'}\n"
        "sources:\n"
        "  - type: mqtt\n"
        "    host: 127.0.0.1\n"
        "    port: 1883\n"
        '    topic: "fleet/{device}/telemetry"\n'
    )
    config = load_service_config(path)
    assert config.store == tmp_path / "iotwarden.db"
    assert config.dead_letter == tmp_path / "iotwarden.deadletter.jsonl"
    assert config.sources[0].settings.topics == ("fleet/{device}/telemetry",)
    assert config.sources[0].settings.qos == 1
    assert config.sources[0].settings.client_id.startswith("iotwarden-")


def test_default_config_without_file(isolated_home: Path) -> None:
    config = load_service_config(None)
    assert config.store == isolated_home / "iotwarden.db"
    assert config.state == isolated_home / "service-state.npz"
    assert config.sources[0].settings.host == "127.0.0.1"
    assert config.sources[0].settings.port == 1883
    assert config.sources[0].settings.topics == ("+/{device}/telemetry",)


def test_client_id_default_is_stable(tmp_path: Path) -> None:
    data = {"state": str(tmp_path / "s.npz")}
    first = build_service_config(data, "a.yaml").sources[0].settings.client_id
    second = build_service_config(data, "a.yaml").sources[0].settings.client_id
    assert first == second


@pytest.mark.parametrize(
    ("data", "key", "value"),
    [
        ({"sources": [{"type": "mqtt", "port": "abc"}]}, "sources[0].port", "'abc'"),
        ({"sources": [{"type": "mqtt", "port": 70000}]}, "sources[0].port", "70000"),
        ({"sources": [{"type": "kafka"}]}, "sources[0].type", "'kafka'"),
        ({"sources": [{"type": "mqtt", "topic": "a/{device}x"}]}, "sources[0].topic", "'a/{device}x'"),
        ({"overflow": "spill"}, "overflow", "'spill'"),
        ({"flush_interval": -1}, "flush_interval", "-1"),
        ({"sources": []}, "sources", "[]"),
    ],
)
def test_config_error_names_file_key_value(data: dict, key: str, value: str) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        build_service_config(data, "/etc/iotwarden.yaml")
    message = str(caught.value)
    assert "/etc/iotwarden.yaml" in message
    assert f"'{key}'" in message
    assert value in message


def test_config_unknown_key_named() -> None:
    with pytest.raises(InvalidConfigError, match=r"'sources\[0\]\.hots'"):
        build_service_config({"sources": [{"type": "mqtt", "hots": "x"}]}, "c.yaml")


def test_config_engine_settings_validated() -> None:
    config = build_service_config({"engine": {"sensitivity": "high"}}, "c.yaml")
    assert config.engine.sensitivity == "high"
    with pytest.raises(InvalidConfigError, match="c.yaml: key 'engine'"):
        build_service_config({"engine": {"sensitivity": "extreme"}}, "c.yaml")


def test_config_mosquitto_log_needs_device_group() -> None:
    with pytest.raises(InvalidConfigError, match="group named 'device'"):
        build_service_config(
            {"sources": [{"type": "mqtt"}, {"type": "mosquitto_log", "path": "/x.log", "client_device": "^a"}]}, "c.yaml"
        )


def _message(number: int, size: int = 10) -> tuple:
    return (0, "t", b"x" * size, size, False, False, float(number))


def _put(queue: MessageQueue, message: tuple) -> bool:
    return queue.put(message, len(message[2]))


def test_queue_drop_newest_counts() -> None:
    queue = MessageQueue(2, 10_000, "drop_newest")
    results = [_put(queue, _message(i)) for i in range(4)]
    assert results == [True, True, False, False]
    assert queue.dropped == 2
    assert [m[6] for m in queue.take(10, 0)] == [0.0, 1.0]


def test_queue_drop_oldest_counts() -> None:
    queue = MessageQueue(2, 10_000, "drop_oldest")
    for i in range(4):
        assert _put(queue, _message(i))
    assert queue.dropped == 2
    assert [m[6] for m in queue.take(10, 0)] == [2.0, 3.0]


def test_queue_bounded_by_bytes() -> None:
    queue = MessageQueue(100, 25, "drop_newest")
    assert _put(queue, _message(0))
    assert _put(queue, _message(1))
    assert not _put(queue, _message(2))
    assert queue.queued_bytes == 20


def test_queue_block_waits_then_drops() -> None:
    queue = MessageQueue(1, 10_000, "block", block_timeout=0.2)
    assert _put(queue, _message(0))
    started = time.monotonic()
    assert not _put(queue, _message(1))
    assert time.monotonic() - started >= 0.19
    assert queue.dropped == 1


def test_queue_block_resumes_when_consumer_takes() -> None:
    queue = MessageQueue(1, 10_000, "block", block_timeout=5)
    _put(queue, _message(0))
    threading.Timer(0.1, lambda: queue.take(1, 0)).start()
    assert _put(queue, _message(1))
    assert queue.dropped == 0


def test_recent_messages_bounded() -> None:
    recent = RecentMessages(3)
    for number in range(5):
        recent.add(("d", float(number), b"k"))
    assert len(recent) == 3
    assert ("d", 0.0, b"k") not in recent
    assert ("d", 4.0, b"k") in recent
    copy = RecentMessages(3)
    copy.restore(recent.snapshot())
    assert ("d", 4.0, b"k") in copy


# Lines as Mosquitto 2.0.11 writes them with connection_messages on.
MOSQUITTO_LINES = [
    ("1796418685: New client connected from 127.0.0.1:53885 as dev-7 (p2, c1, k60, u'alice').", ("broker_connects", "dev-7")),
    ("1796418685: Client dev-7 disconnected.", ("broker_disconnects", "dev-7")),
    ("1796418687: Client dev-9 closed its connection.", ("broker_disconnects", "dev-9")),
    ("1796418687: Socket error on client dev-9, disconnecting.", ("broker_disconnects", "dev-9")),
    ("1796418687: Client dev-9 has exceeded timeout, disconnecting.", ("broker_disconnects", "dev-9")),
    ("1796418685: Sending CONNACK to 127.0.0.1 (0, 5)", ("broker_auth_failures", "127.0.0.1")),
    ("1796418685: Sending CONNACK to dev-7 (0, 0)", None),
    ("1796418685: Client <unknown> disconnected, not authorised.", None),
    ("1796418685: No will message specified.", None),
]


@pytest.mark.parametrize(("line", "expected"), MOSQUITTO_LINES)
def test_parse_mosquitto_line(line: str, expected: tuple[str, str] | None) -> None:
    assert parse_mosquitto_line(line) == expected


def test_broker_traffic_features() -> None:
    traffic = BrokerTraffic(60.0, "@broker", with_events=True)
    traffic.count_message("d1", "a/d1/t", 100)
    traffic.count_message("d1", "a/d1/s", 300)
    traffic.count_message("d1", "a/d1/s", 50, rejected=True)
    traffic.count_event("d1", "broker_connects")
    traffic.count_event("10.0.0.9", "broker_auth_failures")
    rows = {row.device: row for row in traffic.collect(1000.0)}
    metrics = rows["d1@broker"].metrics
    assert metrics["mqtt_messages"] == 3
    assert metrics["mqtt_bytes"] == 450
    assert metrics["mqtt_payload_bytes_max"] == 300
    assert metrics["mqtt_payload_bytes_mean"] == 150
    assert metrics["mqtt_topics"] == 2
    assert metrics["mqtt_rejected"] == 1
    assert metrics["broker_connects"] == 1
    assert metrics["broker_disconnects"] == 0
    assert rows["10.0.0.9@broker"].metrics["broker_auth_failures"] == 1
    assert rows["d1@broker"].time == 1000.0
    assert traffic.collect(1060.0) == []


def test_log_follower_counts_appended_lines(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    log.write_text("1796418600: Client old-1 disconnected.\n")
    traffic = BrokerTraffic(60.0, "@broker", with_events=True)
    follower = MosquittoLogFollower(log, traffic, ignore_clients=frozenset({"iotwarden-x"}))
    follower.POLL_SECONDS = 0.05
    follower.start()
    try:
        time.sleep(0.2)
        with log.open("a") as handle:
            handle.write("1796418685: New client connected from 127.0.0.1:1 as dev-7 (p2, c1, k60).\n")
            handle.write("1796418685: New client connected from 127.0.0.1:2 as iotwarden-x (p2, c0, k60).\n")
            handle.write("1796418685: Sending CONNACK to 127.0.0.1 (0, 5)\n")
        deadline = time.monotonic() + 5
        while follower.events < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        follower.stop()
    rows = {row.device: row.metrics for row in traffic.collect(0.0)}
    assert set(rows) == {"dev-7@broker", "127.0.0.1@broker"}
    assert rows["dev-7@broker"]["broker_connects"] == 1
    assert rows["127.0.0.1@broker"]["broker_auth_failures"] == 1


def test_buffered_socket_serves_reads_from_buffer() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    buffered = BufferedSocket(left)
    try:
        right.sendall(b"\x30\x05hello\x40\x02")
        time.sleep(0.05)
        assert buffered.recv(1) == b"\x30"
        assert buffered.pending() == 8
        assert buffered.recv(1) == b"\x05"
        assert buffered.recv(5) == b"hello"
        # A request larger than the buffer returns what is buffered, without a socket read.
        assert buffered.recv(10) == b"\x40\x02"
        assert buffered.pending() == 0
        with pytest.raises(BlockingIOError):
            buffered.recv(1)
        assert buffered.fileno() == left.fileno()
        right.close()
        time.sleep(0.05)
        assert buffered.recv(1) == b""
    finally:
        left.close()
        right.close()


def _decoder(tmp_path: Path, **source: object) -> MessageDecoder:
    data = {"state": str(tmp_path / "s.npz"), "sources": [{"type": "mqtt", **source}]}
    return MessageDecoder(build_service_config(data, "c.yaml").sources[0])


def test_decoder_maps_topic_and_payload(tmp_path: Path) -> None:
    decoder = _decoder(tmp_path, topic="site/{device_type}/{device}/telemetry")
    payload = json.dumps({"ts": 1714557600, "temperature": 21.5, "fw": "v1.2"}).encode()
    entry = decoder.decode((0, "site/meter/m-7/telemetry", payload, len(payload), True, False, 1714557601.0))
    index, topic, size, retain, dup, received, line, topic_device, digest, parsed = entry
    assert (index, topic, size, retain, dup, received, line) == (0, "site/meter/m-7/telemetry", len(payload), True, False, 1714557601.0, 1)
    assert topic_device == "m-7"
    assert digest == payload_digest(payload)
    assert parsed == ("m-7", 1714557600.0, {"temperature": 21.5}, {"fw": "v1.2", "device_type": "meter"})


def test_decoder_keeps_issues_and_rejections(tmp_path: Path) -> None:
    decoder = _decoder(tmp_path, topic="fleet/{device}/telemetry", time_fallback="reject", max_payload_bytes=64)
    bad = b'{"temperature": 20'
    entry = decoder.decode((0, "fleet/d1/telemetry", bad, len(bad), False, False, 1.0))
    assert entry[6] == 1
    assert len(entry[9]) == 1
    assert type(entry[9][0]) is Rejection
    assert entry[9][0].source == "mqtt://127.0.0.1:1883/fleet/d1/telemetry"

    untimed = b'{"temperature": 20}'
    rejected = decoder.decode((0, "fleet/d1/telemetry", untimed, len(untimed), False, False, 1.0))[9]
    assert "missing time" in rejected[0].reason

    oversize = decoder.decode((0, "fleet/d2/telemetry", None, 100_000, False, False, 1.0))
    assert oversize[6] == 3
    assert oversize[7] == "d2"
    assert oversize[8] is None
    assert oversize[9] is None
