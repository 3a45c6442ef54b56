"""SDN controllers: drop flows and meters through os-ken/Ryu ``ofctl_rest`` and ONOS.

os-ken and Ryu (app ``ofctl_rest``) take OpenFlow 1.3 flow and meter entries
as JSON on ``/stats/flowentry/add`` and ``/stats/meterentry/add``. A
quarantine installs high-priority flows with no actions (drop) for the
device's MAC address as source and destination, or for its IPv4 address when
no MAC is known. Every flow of one action carries a cookie derived from the
action id, so release deletes exactly those flows. The OpenFlow hard timeout
is the containment's time to live (capped at 65535 s, the field's maximum).

ONOS takes flow rules on ``POST /onos/v1/flows/{deviceId}`` and returns the
new rule's URL in the ``Location`` header. Release deletes those URLs.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import math
import urllib.parse
from typing import Any

from iotwarden.response.actuators.base import ActionRequest, Actuator, ActuatorError, http_json

__all__ = ["OsKenActuator", "OnosActuator"]

logger = logging.getLogger(__name__)

MAX_HARD_TIMEOUT = 65535  # 16-bit field in OpenFlow 1.3
COOKIE_MASK_ALL = 2**64 - 1  # os-ken 1.4.1 returns HTTP 500 for cookie_mask -1


def action_cookie(action_id: str) -> int:
    """Return a 63-bit OpenFlow cookie for an action id (stable across restarts)."""
    return int(hashlib.sha256(action_id.encode()).hexdigest()[:16], 16) >> 1


def _device_matches(request: ActionRequest, actuator: str) -> list[dict[str, Any]]:
    """Return one OpenFlow match per direction, by MAC when known, else by IP address."""
    attributes = request.target.attributes
    mac = attributes.get("mac")
    if mac:
        return [{"eth_src": str(mac).lower()}, {"eth_dst": str(mac).lower()}]
    value = request.target.require("ip", actuator)
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise ActuatorError(f"device {request.target.device!r}: invalid ip {value!r}", retryable=False) from None
    if address.version == 4:
        return [{"eth_type": 2048, "ipv4_src": str(address)}, {"eth_type": 2048, "ipv4_dst": str(address)}]
    return [{"eth_type": 34525, "ipv6_src": str(address)}, {"eth_type": 34525, "ipv6_dst": str(address)}]


def _hard_timeout(ttl: float | None) -> int:
    if ttl is None:
        return 0
    return min(MAX_HARD_TIMEOUT, max(1, math.ceil(ttl)))


class OsKenActuator(Actuator):
    """Quarantine and rate limits through the os-ken or Ryu ``ofctl_rest`` application.

    Args:
        name: The actuator's name in the policy file.
        url: Base URL of the REST API, such as ``http://127.0.0.1:8080``.
        dpid: Datapath id of the switch the device is attached to; a device's
            ``dpid`` attribute overrides it.
        priority: Priority of the drop flows (above the forwarding flows).
        table_id: The flow table.
        output: Where a rate-limited device's packets go after the meter
            (``NORMAL`` for the switch's own L2 forwarding).
        timeout: Seconds one HTTP request may take.
    """

    kinds = frozenset({"quarantine", "rate_limit"})

    def __init__(self, name: str, *, url: str, dpid: int = 1, priority: int = 60000, table_id: int = 0, output: str | int = "NORMAL", timeout: float = 5.0) -> None:
        super().__init__(name)
        self.url = url.rstrip("/")
        self.dpid = dpid
        self.priority = priority
        self.table_id = table_id
        self.output = output
        self.timeout = timeout

    def _post(self, path: str, body: dict[str, Any]) -> None:
        http_json("POST", self.url + path, body, timeout=self.timeout, actuator=self.name)

    def _dpid(self, request: ActionRequest) -> int:
        return int(request.target.attributes.get("dpid", self.dpid))

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        dpid = self._dpid(request)
        cookie = action_cookie(request.id)
        base = {"dpid": dpid, "table_id": self.table_id, "cookie": cookie, "hard_timeout": _hard_timeout(request.ttl)}
        matches = _device_matches(request, self.name)
        if request.kind == "quarantine":
            for match in matches:
                # Same match and priority replaces an earlier flow (OFPFC_ADD), so repeats do not stack.
                self._post("/stats/flowentry/add", {**base, "priority": self.priority, "match": match, "actions": []})
            return {"dpid": dpid, "cookie": cookie}
        if request.kind == "rate_limit":
            meter_id = 1 + cookie % 0xFFFF  # NOTE: two actions may map to one meter id (1 in 65535 chance).
            self._post("/stats/meterentry/add", {"dpid": dpid, "meter_id": meter_id, **_meter(request.params)})
            actions = [{"type": "METER", "meter_id": meter_id}, {"type": "OUTPUT", "port": self.output}]
            for match in matches:
                self._post("/stats/flowentry/add", {**base, "priority": self.priority - 1, "match": match, "actions": actions})
            return {"dpid": dpid, "cookie": cookie, "meter_id": meter_id}
        raise ActuatorError(f"{self.name}: os-ken cannot perform {request.kind!r}", retryable=False)

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        dpid = int(handle.get("dpid", self._dpid(request)))
        cookie = int(handle.get("cookie", action_cookie(request.id)))
        self._post("/stats/flowentry/delete", {"dpid": dpid, "table_id": self.table_id, "cookie": cookie, "cookie_mask": COOKIE_MASK_ALL})
        if handle.get("meter_id"):
            self._post("/stats/meterentry/delete", {"dpid": dpid, "meter_id": int(handle["meter_id"])})

    def switches(self) -> list[int]:
        """Return the datapath ids connected to the controller."""
        _, body, _ = http_json("GET", self.url + "/stats/switches", timeout=self.timeout, actuator=self.name)
        return list(body or [])


def _meter(params: dict[str, Any]) -> dict[str, Any]:
    rate = params.get("rate")
    unit = params.get("unit", "pps")
    if not isinstance(rate, (int, float)) or rate <= 0:
        raise ActuatorError(f"rate_limit needs a positive rate, got {rate!r}", retryable=False)
    if unit not in ("pps", "kbps"):
        raise ActuatorError(f"rate_limit unit must be pps or kbps, got {unit!r}", retryable=False)
    flag = "PKTPS" if unit == "pps" else "KBPS"
    band: dict[str, Any] = {"type": "DROP", "rate": max(1, round(rate))}
    flags = [flag]
    if params.get("burst"):
        band["burst_size"] = int(params["burst"])
        flags.append("BURST")
    return {"flags": flags, "bands": [band]}


class OnosActuator(Actuator):
    """Quarantine through the ONOS flow rule REST API.

    Args:
        name: The actuator's name in the policy file.
        url: Base URL such as ``http://controller:8181`` (``/onos/v1`` is appended).
        device_id: ONOS device id of the switch, such as ``of:0000000000000001``;
            a device's ``onos_device`` attribute overrides it.
        username, password: HTTP basic authentication.
        app_id: Application id the flow rules are filed under.
        priority: Priority of the drop rules.
        timeout: Seconds one HTTP request may take.
    """

    kinds = frozenset({"quarantine"})

    def __init__(
        self,
        name: str,
        *,
        url: str,
        device_id: str,
        username: str = "",
        password: str = "",
        app_id: str = "org.iotwarden.response",
        priority: int = 60000,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(name)
        self.url = url.rstrip("/")
        self.device_id = device_id
        self.app_id = app_id
        self.priority = priority
        self.timeout = timeout
        self._headers = {}
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        if request.kind != "quarantine":
            raise ActuatorError(f"{self.name}: ONOS cannot perform {request.kind!r}", retryable=False)
        device_id = str(request.target.attributes.get("onos_device", self.device_id))
        quoted = urllib.parse.quote(device_id, safe="")
        rules = []
        for match in _device_matches(request, self.name):
            body = {
                "priority": self.priority,
                # NOTE: permanent, so the rule ends only through the responder's tick (no
                # hard timeout as with os-ken). Tested against a local server, not a live ONOS.
                "isPermanent": True,
                "timeout": 0,
                "deviceId": device_id,
                # A treatment without output instructions drops the packet.
                "treatment": {"instructions": [{"type": "NOACTION"}]},
                "selector": {"criteria": _onos_criteria(match)},
            }
            status, _, headers = http_json(
                "POST", f"{self.url}/onos/v1/flows/{quoted}?appId={urllib.parse.quote(self.app_id)}", body,
                headers=self._headers, timeout=self.timeout, actuator=self.name,
            )
            location = headers.get("Location") or headers.get("location")
            if not location:
                raise ActuatorError(f"{self.name}: ONOS responded with HTTP {status} but no Location header for the new flow rule")
            rules.append(urllib.parse.urlsplit(location).path.rsplit("/", 1)[-1])
        return {"device_id": device_id, "flow_ids": rules}

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        device_id = urllib.parse.quote(str(handle.get("device_id", self.device_id)), safe="")
        for flow_id in handle.get("flow_ids", []):
            try:
                http_json("DELETE", f"{self.url}/onos/v1/flows/{device_id}/{flow_id}", headers=self._headers, timeout=self.timeout, actuator=self.name)
            except ActuatorError as error:
                if "HTTP 404" not in str(error):  # already gone: the revert's goal is met
                    raise


def _onos_criteria(match: dict[str, Any]) -> list[dict[str, Any]]:
    criteria: list[dict[str, Any]] = []
    if "eth_type" in match:
        criteria.append({"type": "ETH_TYPE", "ethType": hex(match["eth_type"])})
    names = {
        "eth_src": ("ETH_SRC", "mac", None),
        "eth_dst": ("ETH_DST", "mac", None),
        "ipv4_src": ("IPV4_SRC", "ip", "/32"),
        "ipv4_dst": ("IPV4_DST", "ip", "/32"),
        "ipv6_src": ("IPV6_SRC", "ip", "/128"),
        "ipv6_dst": ("IPV6_DST", "ip", "/128"),
    }
    for key, (kind, field_name, suffix) in names.items():
        if key in match:
            criteria.append({"type": kind, field_name: match[key] + (suffix or "")})
    return criteria
