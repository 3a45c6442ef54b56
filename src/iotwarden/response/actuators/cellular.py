"""Cellular connectivity platforms: suspend a SIM and lock it to its device's IMEI.

:class:`CellularActuator` is a generic REST adapter whose requests are
templates in the policy file. :class:`EmnifyActuator` fills in the emnify
REST API (https://docs.emnify.com/developers):

- ``POST /api/v1/authenticate`` with ``{"application_token": ...}`` returns
  ``{"auth_token": ...}``, sent as ``Authorization: Bearer``;
- ``PATCH /api/v1/sim/{sim_id}`` with ``{"status": {"id": 2}}`` suspends the
  SIM and ``{"status": {"id": 1}}`` activates it again (HTTP 204);
- ``PATCH /api/v1/endpoint/{endpoint_id}`` with ``{"imei": ..., "imei_lock":
  true}`` locks the endpoint to that IMEI, and ``{"imei_lock": false}``
  unlocks it.
"""

from __future__ import annotations

import logging
import string
import threading
from dataclasses import dataclass
from typing import Any

from iotwarden.response.actuators.base import ActionRequest, Actuator, ActuatorError, http_json

__all__ = ["CellularActuator", "EmnifyActuator", "RequestTemplate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """One HTTP request with ``{placeholders}`` filled from the device's attributes.

    Placeholders are the device's attributes (``sim``, ``iccid``, ``imei``,
    ``endpoint``, ...) and ``device``. They are substituted in the path and in
    every string value of the JSON body.
    """

    method: str
    path: str
    body: Any = None

    def render(self, values: dict[str, Any]) -> tuple[str, str, Any]:
        return self.method, _fill(self.path, values), _fill_json(self.body, values)

    def placeholders(self) -> set[str]:
        names: set[str] = set()
        for text in [self.path, *_strings(self.body)]:
            names.update(name for _, name, _, _ in string.Formatter().parse(text) if name)
        return names


class CellularActuator(Actuator):
    """Suspend and reactivate SIMs, lock and unlock IMEIs, through a platform's REST API.

    Args:
        name: The actuator's name in the policy file.
        url: Base URL of the platform's API.
        requests: Templates keyed ``suspend``, ``reactivate``, ``imei_lock``
            and ``imei_unlock``; a missing pair disables that action kind.
        token: A static bearer token, if the platform uses one.
        timeout: Seconds one HTTP request may take.
    """

    def __init__(self, name: str, *, url: str, requests: dict[str, RequestTemplate], token: str = "", timeout: float = 10.0) -> None:
        super().__init__(name)
        self.url = url.rstrip("/")
        self.templates = requests
        self.token = token
        self.timeout = timeout
        kinds = set()
        if {"suspend", "reactivate"} <= requests.keys():
            kinds.add("suspend_sim")
        if {"imei_lock", "imei_unlock"} <= requests.keys():
            kinds.add("imei_lock")
        self.kinds = frozenset(kinds)  # type: ignore[misc]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _send(self, template_name: str, request: ActionRequest) -> None:
        template = self.templates.get(template_name)
        if template is None:
            raise ActuatorError(f"{self.name}: no {template_name!r} request is configured", retryable=False)
        values = {"device": request.target.device, **request.target.attributes}
        for name in template.placeholders() - {"device"}:
            request.target.require(name, self.name)
        method, path, body = template.render(values)
        try:
            http_json(method, self.url + path, body, headers=self._headers(), timeout=self.timeout, actuator=self.name)
        except ActuatorError as error:
            if "HTTP 401" in str(error) and self._refresh_token():
                http_json(method, self.url + path, body, headers=self._headers(), timeout=self.timeout, actuator=self.name)
            else:
                raise

    def _refresh_token(self) -> bool:
        """Get a new token after HTTP 401; return False when the adapter has no way to."""
        return False

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        if request.kind == "suspend_sim":
            self._send("suspend", request)
        elif request.kind == "imei_lock":
            self._send("imei_lock", request)
        else:
            raise ActuatorError(f"{self.name}: cannot perform {request.kind!r}", retryable=False)
        return {}

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        if request.kind == "suspend_sim":
            self._send("reactivate", request)
        elif request.kind == "imei_lock":
            self._send("imei_unlock", request)
        else:
            raise ActuatorError(f"{self.name}: cannot revert {request.kind!r}", retryable=False)


EMNIFY_REQUESTS = {
    "suspend": RequestTemplate("PATCH", "/api/v1/sim/{sim}", {"status": {"id": 2}}),
    "reactivate": RequestTemplate("PATCH", "/api/v1/sim/{sim}", {"status": {"id": 1}}),
    "imei_lock": RequestTemplate("PATCH", "/api/v1/endpoint/{endpoint}", {"imei": "{imei}", "imei_lock": True}),
    "imei_unlock": RequestTemplate("PATCH", "/api/v1/endpoint/{endpoint}", {"imei_lock": False}),
}


class EmnifyActuator(CellularActuator):
    """The emnify REST API: SIM status and endpoint IMEI lock.

    Devices need ``sim`` (the emnify SIM id) for ``suspend_sim``, and
    ``endpoint`` (the emnify endpoint id) and ``imei`` for ``imei_lock``.

    Args:
        name: The actuator's name in the policy file.
        application_token: An emnify application token; the actuator
            exchanges it for an auth token and renews that on HTTP 401.
        url: Base URL of the API.
        timeout: Seconds one HTTP request may take.
    """

    def __init__(self, name: str, *, application_token: str, url: str = "https://cdn.emnify.net", timeout: float = 10.0) -> None:
        super().__init__(name, url=url, requests=EMNIFY_REQUESTS, timeout=timeout)
        self.application_token = application_token
        self._lock = threading.Lock()

    def _headers(self) -> dict[str, str]:
        with self._lock:
            if not self.token:
                self._authenticate()
        return super()._headers()

    def _authenticate(self) -> None:
        _, body, _ = http_json(
            "POST", self.url + "/api/v1/authenticate", {"application_token": self.application_token},
            timeout=self.timeout, actuator=self.name,
        )
        token = body.get("auth_token") if isinstance(body, dict) else None
        if not token:
            raise ActuatorError(f"{self.name}: /api/v1/authenticate returned no auth_token")
        self.token = token

    def _refresh_token(self) -> bool:
        with self._lock:
            self.token = ""
            self._authenticate()
        return True


def _fill(text: str, values: dict[str, Any]) -> str:
    return text.format_map({key: str(value) for key, value in values.items()})


def _fill_json(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _fill(value, values)
    if isinstance(value, list):
        return [_fill_json(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill_json(item, values) for key, item in value.items()}
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    return []
