"""The interface every actuator implements, and the errors it raises."""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, ClassVar

from iotwarden.errors import IotwardenError

__all__ = ["Actuator", "ActuatorError", "ActionRequest", "Target", "http_json"]

logger = logging.getLogger(__name__)


class ActuatorError(IotwardenError):
    """An actuator could not apply or revert an action.

    ``retryable`` is False for errors that a retry cannot fix, such as a
    device without the address the actuator needs; the responder still keeps
    the action, but marks it failed instead of retrying it.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Target:
    """A device and the identifiers that control points know it by.

    ``attributes`` comes from the policy file's ``devices`` section: ``ip``,
    ``mac``, ``mqtt_username``, ``sim`` (the platform's SIM id), ``iccid``,
    ``imei``, ``endpoint`` and so on. Each actuator reads the keys it needs.
    """

    device: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def require(self, key: str, actuator: str) -> Any:
        """Return attribute ``key`` or raise a non-retryable error naming it."""
        value = self.attributes.get(key)
        if value in (None, ""):
            raise ActuatorError(
                f"device {self.device!r} has no {key!r} in the policy file's devices section, which actuator {actuator!r} needs",
                retryable=False,
            )
        return value


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One action for an actuator to apply or revert.

    ``ttl`` is in seconds, or None for a containment without expiry (after an
    analyst confirmed it). Actuators that can make a rule lapse by itself
    (nftables set timeouts, OpenFlow hard timeouts) use it as a fail-safe, so
    containment ends even if iotwarden is not running when it expires.
    """

    id: str
    kind: str
    target: Target
    params: dict[str, Any] = field(default_factory=dict)
    ttl: float | None = None
    reason: str = ""


class Actuator:
    """A control point that can contain a device and release it again.

    Subclasses set ``kinds`` (the action kinds they perform) and implement
    :meth:`apply` and :meth:`revert`. Both must be idempotent: applying an
    action that is already in force replaces it without stacking a second
    rule, and reverting one that is gone succeeds. Both raise
    :class:`ActuatorError` on failure.
    """

    kinds: ClassVar[frozenset[str]] = frozenset()
    one_shot: ClassVar[bool] = False  # True for notifications: nothing to revert

    def __init__(self, name: str) -> None:
        self.name = name

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        """Put the action in force and return details needed to revert it (stored as JSON)."""
        raise NotImplementedError

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        """Undo an action applied earlier; ``handle`` is what :meth:`apply` returned."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections the actuator holds."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    actuator: str = "",
    raw_body: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """Send one HTTP request with a JSON body and return (status, decoded JSON or text, headers).

    Raises ActuatorError for connection errors, timeouts and status codes of
    400 and above; 4xx errors other than 408 and 429 are not retryable.
    """
    data = raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    label = f"{actuator}: {method} {url}" if actuator else f"{method} {url}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            status = response.status
            response_headers = dict(response.headers.items())
    except urllib.error.HTTPError as error:
        detail = error.read()[:300].decode(errors="replace")
        retryable = error.code >= 500 or error.code in (408, 429)
        raise ActuatorError(f"{label} failed with HTTP {error.code}: {detail}", retryable=retryable) from error
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise ActuatorError(f"{label} failed: {reason}") from error
    text = payload.decode(errors="replace")
    try:
        decoded: Any = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        decoded = text
    return status, decoded, response_headers
