"""Throughput of ``iotwarden run`` from MQTT against a bare paho-mqtt subscriber.

Both consumers drain the same backlog from the same broker: each first
connects once with a persistent session (QoS 1) and disconnects, then the
stream is published, then the consumer connects again and the time from its
first message to its last processed one is measured. The publisher's speed
therefore does not limit either consumer.

* ceiling: a paho-mqtt 2.x client whose message callback only counts.
* iotwarden: one ``iotwarden run`` (``python -m iotwarden.service``, which
  starts its receiver process), clock ``event``, defaults otherwise; the time
  is taken from its status file (first message received to last
  micro-batch scored).

The broker is a private Mosquitto started by this script on a free loopback
port, with ``max_queued_messages 0`` so the whole backlog is kept.
``--repeat N`` measures N pairs, each on a new broker, and reports every
pair and the pair with the median ratio (the higher of the two middle ones
for an even N). The 1-minute load average before each pair shows how busy
the machine was.

Usage::

    python benchmarks/mqtt_throughput.py [--json] [--messages N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from iotwarden.simulate import simulate_fleet

TOPIC_PREFIX = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="Messages in the stream (default 100000).")
    parser.add_argument("--devices", type=int, default=200, help="Simulated devices (default 200).")
    parser.add_argument("--repeat", type=int, default=1, help="Pairs of measurements, each on a new broker (default 1).")
    parser.add_argument("--json", action="store_true", help="Print the result as one JSON object.")
    args = parser.parse_args()

    if shutil.which("mosquitto") is None:
        sys.exit("mosquitto not found on PATH; install it (Debian: apt-get install mosquitto)")
    payloads = _stream(args.messages, args.devices)
    runs = []
    for _ in range(args.repeat):
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="iotwarden-bench-") as folder:
            work = Path(folder)
            port = _free_port()
            broker = _start_broker(work, port)
            try:
                ceiling = _bare_subscriber(port, payloads)
                service = _service(work, port, payloads)
            finally:
                broker.terminate()
                broker.wait(timeout=10)
        runs.append(
            {
                "load_average_1min": round(load, 2),
                "ceiling_msg_per_s": round(ceiling),
                "iotwarden_obs_per_s": round(service),
                "ratio": round(service / ceiling, 3),
            }
        )
    median = sorted(runs, key=lambda run: run["ratio"])[len(runs) // 2]

    result = {
        "messages": len(payloads),
        "devices": args.devices,
        "payload_bytes_mean": round(sum(len(p[1]) for p in payloads) / len(payloads), 1),
        "ceiling_msg_per_s": median["ceiling_msg_per_s"],
        "iotwarden_obs_per_s": median["iotwarden_obs_per_s"],
        "ratio": median["ratio"],
        "runs": runs,
        "python": platform.python_version(),
        "paho_mqtt": _version("paho-mqtt"),
        "mosquitto": subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0],
        "cpus": os.cpu_count(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:22} {value}")


def _stream(count: int, devices: int) -> list[tuple[str, bytes]]:
    """Return ``count`` (topic, JSON payload) pairs from a simulated fleet, in time order."""
    hours = max(1.0, count / devices / 60 + 1)
    simulation = simulate_fleet(devices, hours, seed=7, attacks=[])
    payloads = []
    for when, device, device_type, metrics in simulation.rows():
        body = {"ts": when, **{name: round(value, 3) for name, value in metrics.items()}}
        payloads.append((f"{TOPIC_PREFIX}/{device}/telemetry", json.dumps(body).encode()))
        if len(payloads) == count:
            break
    return payloads


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_broker(work: Path, port: int) -> subprocess.Popen[bytes]:
    config = work / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 0", "persistence false"]
    if os.geteuid() == 0:
        lines.append("user root")
    config.write_text("\n".join(lines) + "\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return broker
        except OSError:
            time.sleep(0.05)
    broker.terminate()
    sys.exit(f"mosquitto did not start on port {port}")


def _publish(port: int, payloads: list[tuple[str, bytes]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    # Chunks keep paho's outgoing queue short; a long one fails with ERR_QUEUE_SIZE.
    for start in range(0, len(payloads), 5000):
        infos = [client.publish(topic, payload, qos=1) for topic, payload in payloads[start : start + 5000]]
        infos[-1].wait_for_publish(timeout=300)
    client.disconnect()
    client.loop_stop()


def _bare_subscriber(port: int, payloads: list[tuple[str, bytes]]) -> float:
    """Return messages/s of a paho subscriber that only counts, draining the backlog."""
    received = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        nonlocal received, first, last
        received += 1
        now = time.perf_counter()
        if received == 1:
            first = now
        last = now
        if received == len(payloads):
            done.set()

    def on_connect(client: paho.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        client.subscribe(f"{TOPIC_PREFIX}/+/telemetry", qos=1)

    def session() -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False)
        client.on_connect = on_connect
        client.on_message = on_message
        client.connect("127.0.0.1", port)
        return client

    client = session()
    client.loop_start()
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    _publish(port, payloads)
    client = session()
    client.loop_start()
    if not done.wait(timeout=600):
        sys.exit(f"bare subscriber received {received} of {len(payloads)} messages")
    client.disconnect()
    client.loop_stop()
    return (len(payloads) - 1) / (last - first)


def _service(work: Path, port: int, payloads: list[tuple[str, bytes]]) -> float:
    """Return observations/s of one ``iotwarden run`` process draining the backlog."""
    status = work / "status.json"
    config = work / "service.yaml"
    config.write_text(
        json.dumps(
            {
                "store": str(work / "bench.db"),
                "state": str(work / "state.npz"),
                "status_file": str(status),
                "stats_interval": 0.2,
                "clock": "event",
                "sources": [{"type": "mqtt", "port": port, "topic": f"{TOPIC_PREFIX}/{{device}}/telemetry", "client_id": "bench-iotwarden"}],
            }
        )
    )

    def start() -> subprocess.Popen[bytes]:
        status.unlink(missing_ok=True)
        return subprocess.Popen(
            [sys.executable, "-m", "iotwarden.service", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def read_status() -> dict | None:
        try:
            return json.loads(status.read_text())
        except (OSError, ValueError):
            return None

    process = start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = read_status()
        if current and all(source["connected"] for source in current["sources"]):
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)

    _publish(port, payloads)
    process = start()
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            current = read_status()
            if current and current["messages"] >= len(payloads) and current["queue_depth"] == 0:
                time.sleep(0.5)
                current = read_status()
                break
            time.sleep(0.1)
        else:
            sys.exit(f"iotwarden run processed {current and current['messages']} of {len(payloads)} messages")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return current["observations"] / (current["last_batch_at"] - current["first_message_at"])


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
