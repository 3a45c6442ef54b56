"""Mosquitto dynamic security actuator against a private broker with the plugin loaded."""

from __future__ import annotations

import threading
import time
import pytest

from test_response_lab import MosquittoLab, dynsec_plugin, missing_tools

from iotwarden.response.actuators import ActionRequest, ActuatorError, MosquittoDynsecActuator, Target

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")


@pytest.fixture
def broker():
    missing = missing_tools("mosquitto", "mosquitto_ctrl")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian packages mosquitto and mosquitto-clients)")
    if dynsec_plugin() is None:
        pytest.skip("mosquitto_dynamic_security.so is not installed")
    lab = MosquittoLab()
    yield lab
    lab.close()


class Device:
    """An MQTT client of one device that records its disconnections."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.disconnected = threading.Event()
        self.reason: object = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.on_disconnect = self._on_disconnect
        self.port = port

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.reason = reason
        self.disconnected.set()

    def connect(self) -> object:
        """Connect once; return the CONNACK reason code."""
        result = {}
        done = threading.Event()

        def on_connect(client, userdata, flags, reason, properties) -> None:
            result["reason"] = reason
            done.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        done.wait(5)
        return result.get("reason")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_disable_disconnects_and_enable_readmits(broker: MosquittoLab) -> None:
    broker.add_device("dev-001", "devpw")
    actuator = MosquittoDynsecActuator("broker", port=broker.port, username=broker.admin, password=broker.password)
    request = ActionRequest("a-mqtt", "disable_mqtt", Target("dev-001", {"mqtt_username": "dev-001"}))

    device = Device(broker.port, "dev-001", "devpw")
    assert not device.connect().is_failure
    handle = actuator.apply(request)
    assert device.disconnected.wait(2)
    assert "administrative" in str(device.reason).lower()
    device.close()

    refused = Device(broker.port, "dev-001", "devpw")
    reason = refused.connect()
    refused.close()
    assert reason is not None and reason.is_failure
    assert "not authorized" in str(reason).lower()

    actuator.apply(request)  # disabling twice is harmless
    actuator.revert(request, handle)
    readmitted = Device(broker.port, "dev-001", "devpw")
    assert not readmitted.connect().is_failure
    readmitted.close()


def test_unknown_client_is_not_retryable(broker: MosquittoLab) -> None:
    actuator = MosquittoDynsecActuator("broker", port=broker.port, username=broker.admin, password=broker.password)
    with pytest.raises(ActuatorError) as caught:
        actuator.apply(ActionRequest("a-x", "disable_mqtt", Target("ghost")))
    assert "not found" in str(caught.value).lower()
    assert not caught.value.retryable


def test_wrong_admin_password(broker: MosquittoLab) -> None:
    actuator = MosquittoDynsecActuator("broker", port=broker.port, username=broker.admin, password="wrong", timeout=2)
    with pytest.raises(ActuatorError, match="rejected the admin login"):
        actuator.apply(ActionRequest("a-y", "disable_mqtt", Target("dev-001")))


def test_broker_down_is_retryable(broker: MosquittoLab) -> None:
    port = broker.port
    broker.close()
    actuator = MosquittoDynsecActuator("broker", port=port, username="a", password="b", timeout=1)
    started = time.monotonic()
    with pytest.raises(ActuatorError) as caught:
        actuator.apply(ActionRequest("a-z", "disable_mqtt", Target("dev-001")))
    assert caught.value.retryable
    assert time.monotonic() - started < 5
