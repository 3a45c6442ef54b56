"""Notifications: a signed JSON webhook and RFC 5424 syslog over UDP.

Both send one message per ``notify`` action and have nothing to revert.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from datetime import datetime, timezone
from typing import Any

from iotwarden.response.actuators.base import ActionRequest, Actuator, ActuatorError, http_json

__all__ = ["WebhookNotifier", "SyslogNotifier", "sign_webhook", "SIGNATURE_HEADER", "TIMESTAMP_HEADER"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Iotwarden-Signature"
TIMESTAMP_HEADER = "X-Iotwarden-Timestamp"


def sign_webhook(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the signature header value: ``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body``.

    Signing the timestamp with the body lets a receiver reject replays of old
    messages by checking the timestamp header against its clock.
    """
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


class WebhookNotifier(Actuator):
    """POST the notification as JSON, signed with HMAC-SHA256.

    Args:
        name: The actuator's name in the policy file.
        url: The receiver's URL.
        secret: Shared secret of the HMAC.
        timeout: Seconds the request may take.
    """

    kinds = frozenset({"notify"})
    one_shot = True

    def __init__(self, name: str, *, url: str, secret: str, timeout: float = 5.0) -> None:
        super().__init__(name)
        self.url = url
        self.secret = secret.encode()
        self.timeout = timeout

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        body = json.dumps(request.params.get("notification", {}), sort_keys=True, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign_webhook(self.secret, timestamp, body)}
        status, _, _ = http_json("POST", self.url, raw_body=body, headers=headers, timeout=self.timeout, actuator=self.name)
        return {"status": status}

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        return None


_FACILITIES = {
    "kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "authpriv": 10, "audit": 13,
    **{f"local{n}": 16 + n for n in range(8)},
}
# Alert severities to syslog severities (RFC 5424 table 2).
_SEVERITIES = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
_ENTERPRISE_ID = "32473"  # example enterprise number reserved for documentation (RFC 5612)


class SyslogNotifier(Actuator):
    """Send the notification as one RFC 5424 message over UDP.

    Args:
        name: The actuator's name in the policy file.
        host, port: The syslog receiver.
        facility: Facility name (``local0`` ... ``local7``, ``auth``, ``daemon``, ...).
        app_name: The APP-NAME field.
    """

    kinds = frozenset({"notify"})
    one_shot = True

    def __init__(self, name: str, *, host: str = "127.0.0.1", port: int = 514, facility: str = "local0", app_name: str = "iotwarden") -> None:
        super().__init__(name)
        if facility not in _FACILITIES:
            raise ActuatorError(f"{name}: unknown syslog facility {facility!r}; choose from {', '.join(_FACILITIES)}", retryable=False)
        self.host = host
        self.port = port
        self.facility = _FACILITIES[facility]
        self.app_name = app_name

    def format(self, request: ActionRequest) -> bytes:
        """Return the RFC 5424 message for a notify request."""
        notification = request.params.get("notification", {})
        severity = _SEVERITIES.get(str(notification.get("severity", "")), 5)
        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        hostname = socket.gethostname() or "-"
        fields = {
            "device": request.target.device,
            "action": request.id,
            "policy": notification.get("policy", ""),
            "alert": notification.get("alert_id", ""),
            "category": notification.get("category", ""),
        }
        structured = "[iotwarden@" + _ENTERPRISE_ID + "".join(f' {key}="{_sd_escape(str(value))}"' for key, value in fields.items()) + "]"
        message = str(notification.get("message") or request.reason)
        header = f"<{self.facility * 8 + severity}>1 {stamp} {hostname[:255]} {self.app_name} - containment {structured} "
        return header.encode() + b"\xef\xbb\xbf" + message.encode()

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        data = self.format(request)
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, (self.host, self.port))
        except OSError as error:
            raise ActuatorError(f"{self.name}: cannot send syslog to {self.host}:{self.port}: {error}") from error
        return {"bytes": len(data)}

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        return None


def _sd_escape(value: str) -> str:
    """Escape a structured-data parameter value (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
