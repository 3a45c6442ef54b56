"""The console end to end: a real server, headless Chromium, a simulated attack, an approved quarantine.

The quarantine goes through the os-ken actuator to a small HTTP server on
loopback that stands in for the controller's ofctl_rest API, and the
notification goes to a UDP listener as syslog, so nothing outside this test
is touched. Chromium is Debian's (/usr/bin/chromium); Playwright never
downloads a browser here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (run .ci/console-setup.sh)", allow_module_level=True)

from iotwarden.pipeline import Replay  # noqa: E402
from iotwarden.engine import Engine, EngineConfig  # noqa: E402
from iotwarden.response import attach_policies  # noqa: E402
from iotwarden.simulate import simulate_fleet  # noqa: E402
from iotwarden.store import AlertStore  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeController(BaseHTTPRequestHandler):
    """Answers the ofctl_rest calls of the os-ken actuator with 200 and records them."""

    calls: list[tuple[str, str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        FakeController.calls.append(("POST", self.path, json.loads(body or b"{}")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[1]")

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def controller() -> Iterator[int]:
    FakeController.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeController)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def syslog_listener() -> Iterator[tuple[int, list[bytes]]]:
    received: list[bytes] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                received.append(sock.recv(65535))
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    yield sock.getsockname()[1], received
    stop.set()
    thread.join(2)
    sock.close()


def write_policy(path: Path, device: str, controller_port: int, syslog_port: int) -> None:
    path.write_text(f"""
devices:
  {device}: {{ip: 10.20.0.5, mac: "02:00:00:00:00:05"}}
guards:
  max_alert_age: null
actuators:
  controller: {{type: osken, url: "http://127.0.0.1:{controller_port}"}}
  log: {{type: syslog, host: 127.0.0.1, port: {syslog_port}}}
policies:
  - name: review-camera
    mode: approval
    ttl: 1h
    when: {{devices: [{device}], min_severity: medium}}
    actions:
      - {{type: quarantine, via: controller}}
      - {{type: notify, via: log}}
""")


def cli_command() -> list[str]:
    """Return the command that runs serve and token: the main CLI once they are registered there."""
    from iotwarden.cli import cli

    if "serve" in cli.commands and "token" in cli.commands:
        return [sys.executable, "-m", "iotwarden"]
    return [sys.executable, "-m", "iotwarden.api"]


@pytest.fixture
def server(tmp_path: Path, controller: int, syslog_listener: tuple[int, list[bytes]]) -> Iterator[dict]:
    simulation = simulate_fleet(6, 18, seed=1, attacks=["scanning"])
    device = simulation.incidents[0].device_id
    store = tmp_path / "console.db"
    policy = tmp_path / "policies.yaml"
    write_policy(policy, device, controller, syslog_listener[0])
    env = {**os.environ, "IOTWARDEN_HOME": str(tmp_path / "home")}
    created = subprocess.run([*cli_command(), "token", "create", "--role", "analyst", "--name", "alice", "--store", str(store)],
                             capture_output=True, text=True, env=env, check=True, timeout=60)
    token = created.stdout.strip()
    port = free_port()
    process = subprocess.Popen([*cli_command(), "serve", "--store", str(store), "--port", str(port), "--policies", str(policy)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(base + "/api/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            process.kill()
            pytest.fail("iotwarden serve did not start: " + (process.stdout.read() if process.stdout else ""))
        yield {"base": base, "token": token, "store": store, "policy": policy, "simulation": simulation, "device": device,
               "syslog": syslog_listener[1]}
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def replay_with_policy(store_path: Path, policy: Path, simulation) -> None:
    with AlertStore(store_path) as store:
        on_alert, responder = attach_policies(store, policy)
        Replay(Engine(EngineConfig()), store=store, on_alert=on_alert).run(simulation.observations())
        responder.close()


def test_console_triage_and_quarantine(server: dict, tmp_path: Path) -> None:
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
        )
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.on("dialog", lambda dialog: dialog.accept("false alarm after review"))
            page.goto(server["base"] + "/")
            page.fill("#token", server["token"])
            page.click("#login button[type=submit]")
            page.wait_for_selector("#open-incidents")
            assert page.inner_text("#who") == "alice (analyst)"

            page.goto(server["base"] + "/#/alerts?state=new&order=time")
            page.wait_for_selector("#alert-table")
            assert page.locator("tr[data-alert-id]").count() == 0

            # The detector runs in this process while the page is open; the alert reaches it over the event stream.
            worker = threading.Thread(target=replay_with_policy, args=(server["store"], server["policy"], server["simulation"]))
            worker.start()
            row = page.locator("tr[data-alert-id]", has_text=server["device"]).first
            row.wait_for()
            worker.join(120)
            assert not worker.is_alive()

            row = page.locator("tr[data-alert-id]", has_text=server["device"]).first
            alert_id = row.get_attribute("data-alert-id")
            row.click()
            page.wait_for_selector("#explanation")
            assert page.locator("#alert-detail svg.evidence").count() == 1
            page.fill("#note", "port scan confirmed")
            page.locator("#alert-detail button", has_text="True positive").click()
            page.wait_for_selector(f"tr[data-alert-id='{alert_id}'] td.label:text-is('true positive')")
            labelled = api_get(server, f"/api/alerts/{alert_id}")
            assert labelled["triage"]["label"] == "true_positive"
            assert labelled["triage"]["note"] == "port scan confirmed"

            page.goto(server["base"] + "/#/actions")
            waiting = page.locator("tr[data-action-id]", has_text="awaiting_approval").first
            waiting.wait_for()
            action_id = waiting.get_attribute("data-action-id")
            waiting.locator("button", has_text="Approve").click()
            page.wait_for_selector(f"tr[data-action-id='{action_id}'] td.state:text-is('active')")
            assert any(path == "/stats/flowentry/add" for _, path, _ in FakeController.calls)

            page.locator(f"tr[data-action-id='{action_id}'] button", has_text="Release").click()
            page.wait_for_selector(f"tr[data-action-id='{action_id}'] td.state:text-is('released')")
            assert any(path == "/stats/flowentry/delete" for _, path, _ in FakeController.calls)
        finally:
            context.close()

    action = api_get(server, f"/api/actions/{action_id}")
    assert action["approved_by"].startswith("alice")
    assert action["release_reason"] == "false alarm after review"
    assert any(b"review-camera" in message for message in server["syslog"])
    kinds = [entry["kind"] for entry in api_get(server, "/api/ledger/entries?limit=200")["items"]]
    assert "alert_labelled" in kinds


def api_get(server: dict, path: str) -> dict:
    request = urllib.request.Request(server["base"] + path, headers={"Authorization": f"Bearer {server['token']}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
