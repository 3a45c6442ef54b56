"""HTTP actuators against local servers: ONOS flow API, emnify API, signed webhook; and syslog over UDP."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from iotwarden.response.actuators import (
    ActionRequest, ActuatorError, CellularActuator, EmnifyActuator, OnosActuator, RequestTemplate, SyslogNotifier,
    Target, WebhookNotifier,
)
from iotwarden.response.actuators.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 whose handler calls ``route(method, path, headers, body)``."""

    def __init__(self, route) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                status, payload, headers = route(self.command, self.path, self.headers, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                if data:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator:
    servers: list[LocalServer] = []

    def start(route) -> LocalServer:
        server = LocalServer(route)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# ONOS ----------------------------------------------------------------------------------


class FakeOnos:
    """The part of ONOS's flow API the actuator uses: POST and DELETE of flow rules, basic auth."""

    def __init__(self) -> None:
        self.flows: dict[str, dict[str, Any]] = {}
        self.next_id = 1000

    def __call__(self, method: str, path: str, headers, body: bytes):
        import base64

        if headers.get("Authorization") != "Basic " + base64.b64encode(b"onos:rocks").decode():
            return 401, {"code": 401, "message": "Unauthorized"}, None
        match = re.fullmatch(r"/onos/v1/flows/([^/?]+)(?:/(\d+))?(?:\?appId=(.+))?", path)
        if not match:
            return 404, {"code": 404, "message": "not found"}, None
        device, flow_id, app_id = match.groups()
        device = device.replace("%3A", ":")
        if method == "POST" and flow_id is None:
            rule = json.loads(body)
            assert rule["deviceId"] == device
            assert rule["selector"]["criteria"]
            self.next_id += 1
            self.flows[str(self.next_id)] = {**rule, "appId": app_id}
            return 201, None, {"Location": f"http://127.0.0.1/onos/v1/flows/{device}/{self.next_id}"}
        if method == "DELETE" and flow_id is not None:
            if self.flows.pop(flow_id, None) is None:
                return 404, {"code": 404, "message": "Flow not found"}, None
            return 204, None, None
        return 405, None, None


def test_onos_quarantine_and_release(serve) -> None:
    onos = FakeOnos()
    server = serve(onos)
    actuator = OnosActuator("onos", url=server.url, device_id="of:0000000000000001", username="onos", password="rocks")
    request = ActionRequest("a-onos", "quarantine", Target("cam", {"mac": "02:00:00:00:0A:01"}), ttl=600)
    handle = actuator.apply(request)
    assert len(handle["flow_ids"]) == 2
    criteria = [rule["selector"]["criteria"] for rule in onos.flows.values()]
    assert criteria == [[{"type": "ETH_SRC", "mac": "02:00:00:00:0a:01"}], [{"type": "ETH_DST", "mac": "02:00:00:00:0a:01"}]]
    assert all(rule["treatment"] == {"instructions": [{"type": "NOACTION"}]} for rule in onos.flows.values())
    assert all(rule["appId"] == "org.iotwarden.response" for rule in onos.flows.values())
    actuator.revert(request, handle)
    assert onos.flows == {}
    actuator.revert(request, handle)  # flows already gone: still succeeds


def test_onos_ip_match_and_bad_password(serve) -> None:
    onos = FakeOnos()
    server = serve(onos)
    OnosActuator("onos", url=server.url, device_id="of:01", username="onos", password="rocks").apply(
        ActionRequest("a-ip", "quarantine", Target("cam", {"ip": "10.9.8.7"}))
    )
    assert list(onos.flows.values())[0]["selector"]["criteria"] == [{"type": "ETH_TYPE", "ethType": "0x800"}, {"type": "IPV4_SRC", "ip": "10.9.8.7/32"}]
    with pytest.raises(ActuatorError) as caught:
        OnosActuator("onos", url=server.url, device_id="of:01", username="onos", password="wrong").apply(ActionRequest("a-ip", "quarantine", Target("cam", {"ip": "10.9.8.7"})))
    assert "HTTP 401" in str(caught.value)
    assert not caught.value.retryable


def test_controller_down_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    actuator = OnosActuator("onos", url=f"http://127.0.0.1:{port}", device_id="of:01", timeout=1)
    with pytest.raises(ActuatorError) as caught:
        actuator.apply(ActionRequest("a-down", "quarantine", Target("cam", {"ip": "10.9.8.7"})))
    assert caught.value.retryable
    assert "refused" in str(caught.value).lower()


# emnify -----------------------------------------------------------------------------------


class FakeEmnify:
    """emnify's documented contract: authenticate, PATCH sim status, PATCH endpoint IMEI lock."""

    def __init__(self) -> None:
        self.sims = {"4711": {"status": {"id": 1}}}
        self.endpoints = {"99": {"imei": None, "imei_lock": False}}
        self.tokens: set[str] = set()
        self.logins = 0

    def __call__(self, method: str, path: str, headers, body: bytes):
        if method == "POST" and path == "/api/v1/authenticate":
            if json.loads(body).get("application_token") != "app-token":
                return 401, {"error_code": 401, "error_token": "unauthorized"}, None
            self.logins += 1
            token = f"jwt-{self.logins}"
            self.tokens.add(token)
            return 200, {"auth_token": token}, None
        if headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return 401, {"error_code": 401, "error_token": "token expired"}, None
        data = json.loads(body) if body else {}
        if match := re.fullmatch(r"/api/v1/sim/(\w+)", path):
            sim = self.sims.get(match.group(1))
            if sim is None:
                return 404, {"error_code": 1101, "error_token": "sim not found"}, None
            current, wanted = sim["status"]["id"], data["status"]["id"]
            if {current, wanted} - {1, 2}:
                return 422, {"error_code": 1100, "error_token": "invalid status transition"}, None
            sim["status"] = {"id": wanted}
            return 204, None, None
        if match := re.fullmatch(r"/api/v1/endpoint/(\w+)", path):
            endpoint = self.endpoints.get(match.group(1))
            if endpoint is None:
                return 404, {"error_code": 1201, "error_token": "endpoint not found"}, None
            endpoint.update({key: data[key] for key in ("imei", "imei_lock") if key in data})
            return 204, None, None
        return 404, None, None


def test_emnify_suspend_and_imei_lock(serve) -> None:
    emnify = FakeEmnify()
    server = serve(emnify)
    actuator = EmnifyActuator("sims", application_token="app-token", url=server.url)
    target = Target("meter-7", {"sim": "4711", "endpoint": "99", "imei": "35000000000000"})
    suspend = ActionRequest("a-sim", "suspend_sim", target)
    actuator.apply(suspend)
    assert emnify.sims["4711"]["status"] == {"id": 2}
    lock = ActionRequest("a-imei", "imei_lock", target)
    actuator.apply(lock)
    assert emnify.endpoints["99"] == {"imei": "35000000000000", "imei_lock": True}
    # The auth token expires: the actuator logs in again and carries on.
    emnify.tokens.clear()
    actuator.revert(suspend, {})
    assert emnify.sims["4711"]["status"] == {"id": 1}
    assert emnify.logins == 2
    actuator.revert(lock, {})
    assert emnify.endpoints["99"]["imei_lock"] is False


def test_emnify_missing_attribute_and_unknown_sim(serve) -> None:
    server = serve(FakeEmnify())
    actuator = EmnifyActuator("sims", application_token="app-token", url=server.url)
    with pytest.raises(ActuatorError, match="has no 'imei'") as caught:
        actuator.apply(ActionRequest("a-1", "imei_lock", Target("meter-7", {"endpoint": "99"})))
    assert not caught.value.retryable
    with pytest.raises(ActuatorError, match="HTTP 404"):
        actuator.apply(ActionRequest("a-2", "suspend_sim", Target("meter-8", {"sim": "999"})))


def test_generic_cellular_templates(serve) -> None:
    calls = []

    def route(method, path, headers, body):
        calls.append((method, path, headers.get("Authorization"), json.loads(body) if body else None))
        return 200, {"ok": True}, None

    server = serve(route)
    actuator = CellularActuator(
        "carrier", url=server.url, token="static",
        requests={
            "suspend": RequestTemplate("POST", "/sims/{iccid}/suspend", {"reason": "iotwarden {device}"}),
            "reactivate": RequestTemplate("POST", "/sims/{iccid}/activate"),
        },
    )
    assert actuator.kinds == {"suspend_sim"}
    request = ActionRequest("a-g", "suspend_sim", Target("tracker-1", {"iccid": "8988"}))
    actuator.apply(request)
    actuator.revert(request, {})
    assert calls == [
        ("POST", "/sims/8988/suspend", "Bearer static", {"reason": "iotwarden tracker-1"}),
        ("POST", "/sims/8988/activate", "Bearer static", None),
    ]


# Notifications --------------------------------------------------------------------------------


def test_webhook_signature_verifies(serve) -> None:
    secret = b"shared-secret"
    verified: list[dict[str, Any]] = []

    def route(method, path, headers, body):
        timestamp = headers[TIMESTAMP_HEADER]
        expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers[SIGNATURE_HEADER]):
            return 401, {"error": "bad signature"}, None
        verified.append(json.loads(body))
        return 204, None, None

    server = serve(route)
    notification = {"device": "cam-1", "policy": "contain", "message": "cam-1 quarantined"}
    request = ActionRequest("a-hook", "notify", Target("cam-1"), params={"notification": notification})
    WebhookNotifier("hook", url=server.url + "/hook", secret=secret.decode()).apply(request)
    assert verified == [notification]
    with pytest.raises(ActuatorError, match="HTTP 401"):
        WebhookNotifier("hook", url=server.url + "/hook", secret="other").apply(request)


def test_syslog_rfc5424_over_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        notification = {"policy": "contain", "alert_id": "abc", "category": "scan", "severity": "high", "message": 'cam "1" quarantined'}
        request = ActionRequest("a-sys", "notify", Target('cam]"1'), params={"notification": notification})
        SyslogNotifier("syslog", port=port, facility="local3").apply(request)
        data, _ = listener.recvfrom(4096)
    pattern = rb'^<155>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ iotwarden - containment \[iotwarden@32473 device="cam\\]\\"1" action="a-sys" policy="contain" alert="abc" category="scan"\] \xef\xbb\xbfcam "1" quarantined$'
    assert re.match(pattern, data), data


def test_syslog_unknown_facility() -> None:
    with pytest.raises(ActuatorError, match="unknown syslog facility 'local9'"):
        SyslogNotifier("syslog", facility="local9")
