"""MQTT broker: disable a device's client through Mosquitto's dynamic security plugin.

The actuator connects as an administrative user, publishes a
``disableClient`` command to ``$CONTROL/dynamic-security/v1`` and waits for
the plugin's reply on ``$CONTROL/dynamic-security/v1/response``. Mosquitto
(2.0, plugin ``mosquitto_dynamic_security.so``) disconnects the client at
once and rejects its reconnections with "not authorized" until
``enableClient``. The broker keeps the client disabled across restarts
because the plugin saves its state to its JSON file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from typing import Any

from iotwarden.response.actuators.base import ActionRequest, Actuator, ActuatorError

__all__ = ["MosquittoDynsecActuator"]

logger = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"


class MosquittoDynsecActuator(Actuator):
    """Disable and enable MQTT clients with dynamic security commands.

    Args:
        name: The actuator's name in the policy file.
        host, port: The broker.
        username, password: An account with the dynamic security admin role.
        timeout: Seconds to wait for the connection and for each reply.
        tls: Connect with TLS using the system's certificate store.
    """

    kinds = frozenset({"disable_mqtt"})

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str,
        password: str,
        timeout: float = 5.0,
        tls: bool = False,
    ) -> None:
        super().__init__(name)
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.timeout = timeout
        self.tls = tls

    def apply(self, request: ActionRequest) -> dict[str, Any]:
        username = str(request.target.attributes.get("mqtt_username") or request.target.device)
        self.command({"command": "disableClient", "username": username})
        return {"username": username}

    def revert(self, request: ActionRequest, handle: dict[str, Any]) -> None:
        username = handle.get("username") or str(request.target.attributes.get("mqtt_username") or request.target.device)
        self.command({"command": "enableClient", "username": username})

    def command(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one dynamic security command and return its response; raise on error or timeout."""
        try:
            import paho.mqtt.client as mqtt
        except ImportError as error:
            raise ActuatorError(f"{self.name}: the MQTT actuator needs paho-mqtt (pip install 'paho-mqtt>=2.1')", retryable=False) from error

        correlation = uuid.uuid4().hex
        message = dict(command, correlationData=correlation)
        connected = threading.Event()
        answered = threading.Event()
        outcome: dict[str, Any] = {}

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"iotwarden-{os.getpid()}-{correlation[:8]}", protocol=mqtt.MQTTv311)
        client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set()

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            outcome["connect"] = reason
            if not reason.is_failure:
                client.subscribe(RESPONSE_TOPIC, qos=1)
            connected.set()

        def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
            client.publish(CONTROL_TOPIC, json.dumps({"commands": [message]}), qos=1)

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            try:
                responses = json.loads(msg.payload).get("responses", [])
            except (ValueError, AttributeError):
                return
            for response in responses:
                if response.get("correlationData") == correlation:
                    outcome["response"] = response
                    answered.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        target = f"{self.host}:{self.port}"
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as error:
            raise ActuatorError(f"{self.name}: cannot connect to the MQTT broker at {target}: {error}") from error
        client.loop_start()
        try:
            if not connected.wait(self.timeout):
                raise ActuatorError(f"{self.name}: no CONNACK from the MQTT broker at {target} within {self.timeout} s")
            reason = outcome["connect"]
            if reason.is_failure:
                raise ActuatorError(f"{self.name}: the MQTT broker at {target} rejected the admin login {self.username!r}: {reason}", retryable=False)
            if not answered.wait(self.timeout):
                raise ActuatorError(f"{self.name}: no dynamic security reply to {command['command']} within {self.timeout} s from {target}")
        finally:
            client.disconnect()
            client.loop_stop()

        response = outcome["response"]
        if response.get("error"):
            error = str(response["error"])
            raise ActuatorError(f"{self.name}: {command['command']} {command.get('username', '')} failed: {error}", retryable="not found" not in error.lower())
        logger.info("%s: %s %s done", self.name, command["command"], command.get("username", ""))
        return response
