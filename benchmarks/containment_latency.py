"""Time from an alert to containment in force, per actuator, on real components.

For each actuator the script builds the component (needs root, and the
packages and os-ken venv that .ci/containment-setup.sh installs), attaches an
automatic policy through ``Responder`` and, per repetition, calls
``on_alert`` with a fresh alert at t0 and then measures:

- firewall (nftables in a gateway namespace) and sdn (os-ken 1.4.1 + OVS
  userspace datapath): a UDP probe stream from the device namespace to a
  peer every 2 ms; containment is in force at the send time of the first
  probe after t0 that never arrives (resolution: the probe interval);
- broker (Mosquitto 2 with dynamic security): the device's own paho-mqtt
  client records when the broker disconnects it.

Each repetition is released before the next. Prints a Markdown section (or
JSON with --json) with the machine and the date.

    sudo python benchmarks/containment_latency.py [--repetitions 5] [--only firewall,sdn,broker]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_response_lab import MosquittoLab, RoutedLab, SdnLab, probe  # noqa: E402

from iotwarden.decisions.alerts import Alert  # noqa: E402
from iotwarden.response import Responder, parse_policies  # noqa: E402
from iotwarden.store import AlertStore  # noqa: E402

INTERVAL = 0.002


def make_alert(device: str) -> Alert:
    return Alert(device=device, time=time.time(), category="scan", severity="high", score=12.0, detector="bench", metrics=[], explanation="benchmark")


def policy(actuator_yaml: str, device_yaml: str, kind: str) -> str:
    return f"""
devices:
  {device_yaml}
guards: {{default_ttl: 10m}}
actuators:
  {actuator_yaml}
policies:
  - name: bench
    mode: automatic
    when: {{category: scan}}
    actions: [{{type: {kind}}}]
"""


def traffic_latency(responder: Responder, device: str, sender_ns: str, receiver_ns: str, target_ip: str) -> tuple[float, float]:
    """Return (seconds from alert to first lost probe, seconds on_alert took)."""
    marks: dict[str, float] = {}

    def contain() -> None:
        time.sleep(0.4)
        marks["t0"] = time.time()
        action = responder.on_alert(make_alert(device))[0]
        marks["returned"] = time.time()
        marks["action"] = action.id  # type: ignore[assignment]
        if action.state != "active":
            raise RuntimeError(f"containment did not apply: {action.state} {action.last_error}")

    sent, received = probe(sender_ns, receiver_ns, target_ip, 1.2, interval=INTERVAL, during=contain)
    responder.release(str(marks["action"]), "benchmark")
    t0 = marks["t0"]
    before = [seq for seq, sent_at in sent.items() if sent_at < t0]
    if not before or any(seq not in received for seq in before[-50:-5]):
        raise RuntimeError("probes were lost before the alert: the path was not clean")
    lost = sorted(seq for seq, sent_at in sent.items() if sent_at >= t0 and seq not in received)
    if not lost:
        raise RuntimeError("no probe was lost after the alert: containment not observed")
    return sent[lost[0]] - t0, marks["returned"] - t0


def bench_firewall(repetitions: int, folder: Path) -> list[tuple[float, float]]:
    lab = RoutedLab()
    try:
        text = policy(f"gateway: {{type: nftables, netns: {lab.gateway_ns}}}", f"dev-1: {{ip: {lab.device_ip}}}", "quarantine")
        with AlertStore(folder / "firewall.db") as store:
            responder = Responder(store, parse_policies(text))
            return [traffic_latency(responder, "dev-1", lab.device_ns, lab.peer_ns, lab.peer_ip) for _ in range(repetitions)]
    finally:
        lab.close()


def bench_sdn(repetitions: int, folder: Path) -> list[tuple[float, float]]:
    lab = SdnLab(folder / "sdn")
    try:
        lab.ping(count=2)  # let the learning switch install its forwarding flows
        text = policy(f"sdn: {{type: osken, url: '{lab.url}', dpid: {lab.dpid}}}", f"dev-1: {{mac: '{lab.macs[0]}'}}", "quarantine")
        with AlertStore(folder / "sdn.db") as store:
            responder = Responder(store, parse_policies(text))
            return [traffic_latency(responder, "dev-1", lab.namespaces[0], lab.namespaces[1], lab.ips[1]) for _ in range(repetitions)]
    finally:
        lab.close()


def bench_broker(repetitions: int, folder: Path) -> list[tuple[float, float]]:
    import paho.mqtt.client as mqtt

    lab = MosquittoLab()
    try:
        lab.add_device("dev-1", "devpw")
        os.environ["IW_BENCH_MQTT_PASSWORD"] = lab.password
        text = policy(
            f"broker: {{type: mosquitto, port: {lab.port}, username: {lab.admin}, password_env: IW_BENCH_MQTT_PASSWORD}}",
            "dev-1: {mqtt_username: dev-1}", "disable_mqtt",
        )
        results = []
        with AlertStore(folder / "broker.db") as store:
            responder = Responder(store, parse_policies(text))
            for _ in range(repetitions):
                connected, disconnected = threading.Event(), threading.Event()
                seen: dict[str, float] = {}
                client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-1", protocol=mqtt.MQTTv5)
                client.username_pw_set("dev-1", "devpw")
                client.on_connect = lambda c, u, f, reason, p: connected.set()

                def on_disconnect(c, u, f, reason, p, seen=seen, event=disconnected) -> None:
                    seen["at"] = time.time()
                    event.set()

                client.on_disconnect = on_disconnect
                client.connect("127.0.0.1", lab.port)
                client.loop_start()
                if not connected.wait(5):
                    raise RuntimeError("the device client could not connect")
                time.sleep(0.2)
                t0 = time.time()
                action = responder.on_alert(make_alert("dev-1"))[0]
                returned = time.time()
                if not disconnected.wait(5):
                    raise RuntimeError("the device was not disconnected")
                client.loop_stop()
                results.append((seen["at"] - t0, returned - t0))
                responder.release(action.id, "benchmark")
        return results
    finally:
        lab.close()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5, help="Alerts per actuator.")
    parser.add_argument("--only", default="firewall,sdn,broker", help="Comma-separated actuators to measure.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of Markdown.")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: network namespaces, nftables and OVS")

    runners = {"firewall": bench_firewall, "sdn": bench_sdn, "broker": bench_broker}
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="iw-bench-") as folder:
        for name in args.only.split(","):
            results[name] = runners[name](args.repetitions, Path(folder))

    machine = f"{cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    if args.json:
        print(json.dumps({"machine": machine, "date": date, "results": {k: [list(r) for r in v] for k, v in results.items()}}))
        return
    what = {
        "firewall": "nftables set element, gateway namespace; first UDP probe dropped",
        "sdn": "os-ken 1.4.1 ofctl_rest drop flow, OVS 3.1 userspace datapath; first UDP probe dropped",
        "broker": "Mosquitto 2.0 dynamic security disableClient; device client sees the disconnect",
    }
    print("## Containment latency\n")
    print(f"Time from `Responder.on_alert` to containment in force, {args.repetitions} alerts per actuator, each released before the next.")
    print(f"Probe streams send one UDP packet every {INTERVAL * 1000:.0f} ms, so traffic numbers are upper bounds within that step.\n")
    print("| actuator | what is measured | median ms | min ms | max ms | on_alert returned, median ms |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        latencies = [row[0] * 1000 for row in rows]
        returned = [row[1] * 1000 for row in rows]
        print(f"| {name} | {what[name]} | {statistics.median(latencies):.1f} | {min(latencies):.1f} | {max(latencies):.1f} | {statistics.median(returned):.1f} |")
    print(f"\nCommand: `sudo python benchmarks/containment_latency.py --repetitions {args.repetitions}`  ")
    print(f"Machine: {machine}  ")
    print(f"Date: {date}")


if __name__ == "__main__":
    main()
