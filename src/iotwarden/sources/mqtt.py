"""Live MQTT subscription with paho-mqtt 2.x.

:class:`MqttSource` subscribes to the topic filters derived from topic
templates and hands every message, as a :data:`RawMessage` tuple, to a
callback that runs on paho's network thread. It does no parsing. In
``iotwarden run`` the sources run in a separate receiver process
(:mod:`iotwarden.service.receiver`), which decodes the messages and hands
them to the engine process in batches.

Delivery guarantees, with the defaults:

* QoS 1 subscriptions and a persistent session: a stable client id and
  ``clean_session=False`` (MQTT 3.1.1), or ``clean_start=False`` with a
  session expiry interval (MQTT 5). While the client is away the broker
  queues QoS 1 messages for it, within the broker's own limits (Mosquitto:
  ``max_queued_messages``, 1000 by default, and ``max_queued_bytes``), and
  keeps the session across its own restarts only with ``persistence true``.
* paho sends PUBACK when the message callback returns, so a message is
  acknowledged once the callback has queued it, not once it is scored.
  What a crash loses is described in docs/config.md (Delivery and
  duplicates).
* Reconnection is paho's: the delay starts at ``reconnect_min`` seconds and
  doubles up to ``reconnect_max``. Every connect re-subscribes, and the log
  records whether the broker still had the session.

A payload larger than ``max_payload_bytes`` is not queued: the callback
receives ``None`` in its place and the size, so the service rejects it
without holding the bytes.

paho-mqtt 2.2 reads each packet with three or more ``recv`` calls (one
byte of packet type, one call per byte of the remaining length, then the
rest). :class:`BufferedSocket` serves those calls from reads of up to
64 KiB, and the client then acknowledges all messages of one read
together. With the 115-byte messages of benchmarks/mqtt_throughput.py this
cut a bare subscriber's CPU time from about 25 to 15 µs per message (2-core
machine, paho-mqtt 2.2.0, Mosquitto 2.0.11).
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from iotwarden.errors import InvalidConfigError

__all__ = [
    "BufferedSocket",
    "DEFAULT_TOPIC",
    "MqttSettings",
    "MqttSource",
    "RawMessage",
    "RecentMessages",
    "TopicTemplate",
    "payload_digest",
]

logger = logging.getLogger(__name__)

DEFAULT_TOPIC = "+/{device}/telemetry"

# (source index, topic, payload or None when too large, payload size in
# bytes, retain flag, DUP flag, receive time in epoch seconds). A tuple,
# because one is built per message on the network thread.
RawMessage = tuple[int, str, "bytes | None", int, bool, bool, float]

_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class TopicTemplate:
    """A topic pattern whose ``{name}`` segments capture values.

    ``fleet/{device}/telemetry`` subscribes to ``fleet/+/telemetry`` and
    takes the device id from the second segment. Other ``{name}`` segments
    become string attributes of the observation (``{device_type}`` gives the
    cohort). Plain ``+`` and a final ``#`` are allowed and capture nothing.

    Raises:
        InvalidConfigError: the template is empty, a placeholder is not a
            whole segment, a name repeats or ``#`` is not last.
    """

    def __init__(self, template: str) -> None:
        if not isinstance(template, str) or not template:
            raise InvalidConfigError(f"invalid topic template {template!r}: expected a non-empty string")
        self.template = template
        segments = template.split("/")
        filter_parts: list[str] = []
        self._captures: list[tuple[int, str]] = []
        self._literals: list[tuple[int, str]] = []
        self._multi_level = False
        for position, segment in enumerate(segments):
            placeholder = _PLACEHOLDER.match(segment)
            if placeholder is not None:
                name = placeholder.group(1)
                if any(name == known for _, known in self._captures):
                    raise InvalidConfigError(f"invalid topic template {template!r}: placeholder {{{name}}} appears twice")
                self._captures.append((position, name))
                filter_parts.append("+")
            elif segment == "#":
                if position != len(segments) - 1:
                    raise InvalidConfigError(f"invalid topic template {template!r}: '#' must be the last segment")
                self._multi_level = True
                filter_parts.append("#")
            elif segment == "+":
                filter_parts.append("+")
            elif "{" in segment or "}" in segment or "+" in segment or "#" in segment:
                raise InvalidConfigError(
                    f"invalid topic template {template!r}: segment {segment!r} mixes a placeholder or wildcard "
                    "with text; a placeholder must be a whole segment such as {device}"
                )
            else:
                self._literals.append((position, segment))
                filter_parts.append(segment)
        self.filter = "/".join(filter_parts)
        self._length = len(segments) - 1 if self._multi_level else len(segments)
        self.names = tuple(name for _, name in self._captures)

    @property
    def has_device(self) -> bool:
        """True when the template names the device (``{device}``)."""
        return "device" in self.names

    def match(self, topic: str) -> dict[str, str] | None:
        """Return the captured segments of ``topic``, or None when it does not fit the template."""
        parts = topic.split("/")
        if self._multi_level:
            if len(parts) < self._length:
                return None
        elif len(parts) != self._length:
            return None
        for position, literal in self._literals:
            if parts[position] != literal:
                return None
        captured = {}
        for position, name in self._captures:
            value = parts[position]
            if not value:
                return None
            captured[name] = value
        return captured

    def __repr__(self) -> str:
        return f"TopicTemplate({self.template!r})"


@dataclass(frozen=True)
class MqttSettings:
    """Connection and subscription settings of one MQTT source.

    See docs/config.md for every key; durations are seconds.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    topics: tuple[str, ...] = (DEFAULT_TOPIC,)
    client_id: str = "iotwarden"
    qos: int = 1
    protocol: str = "3.1.1"
    session_expiry: int = 7 * 86400
    keepalive: int = 60
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    max_payload_bytes: int = 256 * 1024

    @property
    def address(self) -> str:
        """``mqtt://host:port``, the prefix of every message's source name."""
        return f"mqtt://{self.host}:{self.port}"


_READ_SIZE = 64 * 1024


class BufferedSocket:
    """A plain TCP socket whose ``recv`` calls are served from reads of up to 64 KiB.

    It has a ``pending()`` method like a TLS socket, so paho-mqtt processes
    buffered bytes without waiting in ``select``. Every other attribute is
    the wrapped socket's.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._offset = 0

    def pending(self) -> int:
        """Return the number of received bytes not yet returned by :meth:`recv`."""
        return len(self._buffer) - self._offset

    def recv(self, size: int) -> bytes:
        """Return up to ``size`` bytes, from the buffer when it has any, else from one socket read.

        Raises what ``socket.recv`` raises (``BlockingIOError`` when nothing
        has arrived) only when the buffer is empty.
        """
        offset = self._offset
        available = len(self._buffer) - offset
        if available <= 0:
            data = self._sock.recv(max(size, _READ_SIZE))
            if len(data) <= size:
                return data
            self._buffer = data
            offset = 0
            available = len(data)
        end = offset + min(size, available)
        self._offset = end
        return self._buffer[offset:end]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_client_class: type | None = None


def _paho_client_class() -> type:
    """Return a paho-mqtt ``Client`` subclass that reads through :class:`BufferedSocket`.

    NOTE: it overrides ``Client._create_socket``, a private method of
    paho-mqtt 2.1 and 2.2, and uses the private attributes ``_sock`` and
    ``_sockpairW``. When ``_create_socket`` or ``_sockpairW`` is missing, the
    plain ``Client`` is returned.
    """
    global _client_class
    if _client_class is not None:
        return _client_class
    import paho.mqtt.client as paho
    from paho.mqtt.enums import MQTTErrorCode

    probe = paho.Client(paho.CallbackAPIVersion.VERSION2)
    if not callable(getattr(paho.Client, "_create_socket", None)) or not hasattr(probe, "_sockpairW"):
        logger.info("this paho-mqtt has no Client._create_socket or _sockpairW; MQTT sources read without a buffer")
        _client_class = paho.Client
        return _client_class

    class BufferedClient(paho.Client):  # type: ignore[misc]
        def _create_socket(self) -> Any:
            sock = super()._create_socket()
            # Only a plain TCP socket is wrapped: a TLS socket has its own
            # buffer and pending(), and a websocket wrapper frames its reads.
            return BufferedSocket(sock) if type(sock) is socket.socket else sock

        def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
            # paho reads one packet per call; read on while the buffer has
            # bytes, so the acknowledgements of a whole read go out together.
            # paho wakes its own select() for every packet it queues (a byte
            # on _sockpairW). This thread is that select's caller, and its
            # next loop iteration writes the queued acknowledgements, so the
            # wake-ups are skipped while it reads.
            wake, self._sockpairW = self._sockpairW, None
            try:
                result = super().loop_read(max_packets)
                while result == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    sock = self._sock
                    if not isinstance(sock, BufferedSocket) or sock.pending() == 0:
                        break
                    result = super().loop_read(max_packets)
            finally:
                self._sockpairW = wake
            return result

    _client_class = BufferedClient
    return _client_class


class MqttSource:
    """One paho-mqtt client: connect, subscribe, reconnect and deliver raw messages.

    Args:
        settings: Connection and subscription settings.
        deliver: Called on paho's network thread with each message. It may
            block to apply back-pressure; while it blocks, paho reads
            nothing more from the socket and sends no keep-alive pings.
        index: Number of this source, placed first in every RawMessage.
    """

    def __init__(self, settings: MqttSettings, deliver: Callable[[RawMessage], Any], index: int = 0) -> None:
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        client_class = _paho_client_class()
        self.settings = settings
        self.index = index
        self.templates = [TopicTemplate(topic) for topic in settings.topics]
        self._deliver = deliver
        self._connected = threading.Event()
        self.connects = 0
        self.disconnects = 0
        self.connected_since: float | None = None
        self.messages = 0
        self.oversize = 0

        if settings.protocol == "5":
            self._client = client_class(
                CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=MQTTProtocolVersion.MQTTv5
            )
        else:
            self._client = client_class(
                CallbackAPIVersion.VERSION2,
                client_id=settings.client_id,
                clean_session=False,
                protocol=MQTTProtocolVersion.MQTTv311,
            )
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        self._client.reconnect_delay_set(settings.reconnect_min, settings.reconnect_max)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        """True while the client has a connection accepted by the broker."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; return whether there is one."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Start paho's network thread, which connects and keeps reconnecting."""
        settings = self.settings
        logger.info(
            "MQTT source %s: connecting as client id %r, topics %s, QoS %d",
            settings.address, settings.client_id, [t.filter for t in self.templates], settings.qos,
        )
        if settings.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = settings.session_expiry
            self._client.connect_async(
                settings.host, settings.port, settings.keepalive, clean_start=False, properties=properties
            )
        else:
            self._client.connect_async(settings.host, settings.port, settings.keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect (the broker keeps the session) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        logger.info("MQTT source %s: stopped after %d messages", self.settings.address, self.messages)

    # paho callbacks, on the network thread --------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        address = self.settings.address
        if reason_code.is_failure:
            logger.error("MQTT source %s: connection rejected by the broker: %s", address, reason_code)
            return
        self.connects += 1
        self.connected_since = time.time()
        self._connected.set()
        if self.connects == 1:
            logger.info("MQTT source %s: connected (session present: %s)", address, flags.session_present)
        elif flags.session_present:
            logger.info("MQTT source %s: reconnected; the broker kept the session", address)
        else:
            logger.warning(
                "MQTT source %s: reconnected but the broker had no session for client id %r; "
                "messages published while disconnected are lost (is broker persistence on?)",
                address, self.settings.client_id,
            )
        client.subscribe([(template.filter, self.settings.qos) for template in self.templates])

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if not was_connected:
            return
        self.disconnects += 1
        if reason_code.is_failure:
            logger.warning(
                "MQTT source %s: disconnected (%s); reconnecting in %g s to %g s",
                self.settings.address, reason_code, self.settings.reconnect_min, self.settings.reconnect_max,
            )
        else:
            logger.info("MQTT source %s: disconnected", self.settings.address)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        logger.warning("MQTT source %s: connection failed; retrying with exponential backoff", self.settings.address)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Sequence[Any], properties: Any) -> None:
        for template, code in zip(self.templates, reason_codes):
            if code.is_failure:
                logger.error("MQTT source %s: subscription to %r rejected: %s", self.settings.address, template.filter, code)
            else:
                logger.info("MQTT source %s: subscribed to %r (granted QoS %d)", self.settings.address, template.filter, code.value)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.messages += 1
        payload = message.payload
        size = len(payload)
        if size > self.settings.max_payload_bytes:
            self.oversize += 1
            payload = None
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", errors="replace")
        self._deliver((self.index, topic, payload, size, bool(message.retain), bool(message.dup), time.time()))


def payload_digest(payload: bytes) -> bytes:
    """Return an 8-byte BLAKE2b digest of a payload, the content part of a dedupe key."""
    return hashlib.blake2b(payload, digest_size=8).digest()


class RecentMessages:
    """The last ``capacity`` message keys, to recognise redeliveries; the oldest is forgotten first.

    A key is ``(device, event time or None, payload digest)``. Memory is
    bounded by ``capacity`` keys (about 200 bytes each).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise InvalidConfigError(f"invalid dedupe capacity {capacity!r}: expected an integer >= 0")
        self.capacity = capacity
        self._keys: dict[tuple[str, float | None, bytes], None] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: tuple[str, float | None, bytes]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, float | None, bytes]) -> None:
        """Remember ``key``, forgetting the oldest key when full."""
        if self.capacity == 0:
            return
        keys = self._keys
        if key in keys:
            return
        keys[key] = None
        if len(keys) > self.capacity:
            del keys[next(iter(keys))]

    def snapshot(self) -> list[list[Any]]:
        """Return the keys, oldest first, as JSON-serialisable lists."""
        return [[device, when, digest.hex()] for device, when, digest in self._keys]

    def restore(self, saved: Sequence[Sequence[Any]]) -> None:
        """Replace the keys with ones returned by :meth:`snapshot`."""
        self._keys = {}
        for device, when, digest in saved:
            self.add((str(device), None if when is None else float(when), bytes.fromhex(digest)))

