"""Per-device broker traffic features, and the Mosquitto log follower that adds connection events.

What a broker exposes per client, for Mosquitto 2.0: ``$SYS`` topics carry
only broker-wide totals, and the dynamic-security plugin manages clients
and roles but reports no activity. What is available is (1) the messages
themselves, as the subscriber sees them, and (2) the broker's log file,
which with ``connection_messages true`` (the default) names every client
that connects or disconnects and every refused connection.

Features, per device and per ``traffic.interval`` seconds, observed as the
pseudo-device ``<device><device_suffix>`` (``dev-1@broker``) with
``device_type`` ``mqtt-client``:

* ``mqtt_messages``, ``mqtt_bytes``: messages and payload bytes received.
* ``mqtt_payload_bytes_max``, ``mqtt_payload_bytes_mean``: payload sizes.
* ``mqtt_topics``: distinct topics used (counted up to 1000 per interval).
* ``mqtt_rejected``: messages of the device that were rejected.
* ``broker_connects``, ``broker_disconnects``, ``broker_auth_failures``:
  from a Mosquitto log; present only when a ``mosquitto_log`` source is
  configured, so that 0 means "none in the log" and not "not watched".

A separate pseudo-device keeps these interval rows, stamped with the
service clock, apart from the device's own event-time clock and its
``msg_rate`` and silence tracking. A refused connection names no client id
in the Mosquitto 2.0 log, only the remote address, so authentication
failures without a client id are counted for the pseudo-device
``<address><device_suffix>``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iotwarden.observation import Observation

__all__ = ["BrokerTraffic", "MosquittoLogFollower", "parse_mosquitto_line"]

logger = logging.getLogger(__name__)

_MAX_TOPICS_PER_INTERVAL = 1000
_DEVICE_TYPE = "mqtt-client"
_EVENT_METRICS = ("broker_connects", "broker_disconnects", "broker_auth_failures")

# Mosquitto 2.0 log lines, after the "<epoch seconds>: " prefix.
_CONNECTED = re.compile(r"^New client connected from (?P<address>\S+) as (?P<client>.+?) \(")
_DISCONNECTED = re.compile(
    r"^(?:Client (?P<client>.+?) (?:disconnected\.|closed its connection\.|has exceeded timeout, disconnecting\.)"
    r"|Socket error on client (?P<socket_client>.+?), disconnecting\.)$"
)
_CONNACK = re.compile(r"^Sending CONNACK to (?P<target>\S+) \((?P<present>\d+), (?P<code>\d+)\)$")
_TIMESTAMP = re.compile(r"^(?P<epoch>\d{9,11}): (?P<rest>.*)$")
# CONNACK return codes that mean a refused login: MQTT 3.1.1 uses 4 (bad
# user name or password) and 5 (not authorised), MQTT 5 uses 134 and 135.
_AUTH_FAILURE_CODES = frozenset({4, 5, 134, 135})
_ADDRESS = re.compile(r"^[0-9a-fA-F:.]+$")


@dataclass
class _DeviceTraffic:
    messages: int = 0
    bytes: int = 0
    max_size: int = 0
    rejected: int = 0
    topics: set[str] = field(default_factory=set)
    events: dict[str, int] = field(default_factory=dict)


class BrokerTraffic:
    """Accumulate per-device traffic for one interval, then emit it as observations.

    ``count_message`` is called by the engine thread, ``count_event`` by log
    follower threads; a lock guards the shared table.
    """

    def __init__(self, interval: float, device_suffix: str, *, with_events: bool) -> None:
        self.interval = interval
        self.device_suffix = device_suffix
        self.with_events = with_events
        self._devices: dict[str, _DeviceTraffic] = {}
        self._lock = threading.Lock()
        self.window_end = (time.time() // interval + 1) * interval

    def count_message(self, device: str, topic: str, size: int, rejected: bool = False) -> None:
        """Count one message of ``device``."""
        with self._lock:
            entry = self._devices.get(device)
            if entry is None:
                entry = self._devices[device] = _DeviceTraffic()
            entry.messages += 1
            entry.bytes += size
            if size > entry.max_size:
                entry.max_size = size
            if rejected:
                entry.rejected += 1
            if len(entry.topics) < _MAX_TOPICS_PER_INTERVAL:
                entry.topics.add(topic)

    def count_event(self, device: str, metric: str) -> None:
        """Count one connection event (one of ``broker_connects``, ``broker_disconnects``, ``broker_auth_failures``)."""
        with self._lock:
            entry = self._devices.get(device)
            if entry is None:
                entry = self._devices[device] = _DeviceTraffic()
            entry.events[metric] = entry.events.get(metric, 0) + 1

    def due(self, now: float) -> bool:
        """True when the current interval has ended by wall-clock time ``now``."""
        return now >= self.window_end

    def collect(self, stamp: float) -> list[Observation]:
        """Return one observation per device active in the interval, at event time ``stamp``, and start a new interval."""
        with self._lock:
            devices, self._devices = self._devices, {}
            self.window_end = (time.time() // self.interval + 1) * self.interval
        observations = []
        for device, entry in devices.items():
            metrics = {
                "mqtt_messages": float(entry.messages),
                "mqtt_bytes": float(entry.bytes),
                "mqtt_topics": float(len(entry.topics)),
                "mqtt_rejected": float(entry.rejected),
            }
            if entry.messages:
                metrics["mqtt_payload_bytes_max"] = float(entry.max_size)
                metrics["mqtt_payload_bytes_mean"] = entry.bytes / entry.messages
            if self.with_events:
                for name in _EVENT_METRICS:
                    metrics[name] = float(entry.events.get(name, 0))
            observations.append(
                Observation(
                    device + self.device_suffix,
                    stamp,
                    metrics,
                    {"device_type": _DEVICE_TYPE},
                    source="broker-traffic",
                )
            )
        return observations


def parse_mosquitto_line(line: str) -> tuple[str, str] | None:
    """Return ``(metric, client id or remote address)`` for a connection event line, else None."""
    stamped = _TIMESTAMP.match(line.rstrip("\r\n"))
    text = stamped.group("rest") if stamped else line.rstrip("\r\n")
    match = _CONNECTED.match(text)
    if match:
        return "broker_connects", match.group("client")
    match = _DISCONNECTED.match(text)
    if match:
        return "broker_disconnects", match.group("client") or match.group("socket_client")
    match = _CONNACK.match(text)
    if match and int(match.group("code")) in _AUTH_FAILURE_CODES:
        return "broker_auth_failures", match.group("target")
    return None


class MosquittoLogFollower:
    """Follow a Mosquitto log file like ``tail -F`` and count connection events per device.

    Rotation is noticed when the path names a new file or the file shrinks;
    reading then starts at the beginning of the new file.

    Args:
        path: The log file.
        traffic: Where events are counted.
        client_device: Regex with a group ``device`` that maps a client id to
            a device id; None uses the client id itself. Client ids that do
            not match are ignored.
        ignore_clients: Client ids never counted (the service's own).
        from_start: Read the file from its beginning the first time instead
            of from its end.
    """

    POLL_SECONDS = 0.5

    def __init__(
        self,
        path: Path,
        traffic: BrokerTraffic,
        *,
        client_device: re.Pattern[str] | None = None,
        ignore_clients: frozenset[str] = frozenset(),
        from_start: bool = False,
    ) -> None:
        self.path = Path(path)
        self.traffic = traffic
        self.client_device = client_device
        self.ignore_clients = ignore_clients
        self.from_start = from_start
        self.events = 0
        self.position: tuple[int, int] | None = None  # (inode, byte offset), saved with the service state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mosquitto-log:{self.path.name}", daemon=True)

    def start(self) -> None:
        logger.info("following Mosquitto log %s for connection events", self.path)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        logger.info("stopped following Mosquitto log %s after %d connection events", self.path, self.events)

    def snapshot(self) -> dict[str, Any]:
        return {"path": str(self.path), "position": list(self.position) if self.position else None}

    def restore(self, saved: dict[str, Any]) -> None:
        if saved.get("path") == str(self.path) and saved.get("position"):
            inode, offset = saved["position"]
            self.position = (int(inode), int(offset))

    def _run(self) -> None:
        handle = None
        warned = False
        while not self._stop.is_set():
            if handle is None:
                handle = self._open()
                if handle is None:
                    if not warned:
                        logger.warning("cannot open Mosquitto log %s; retrying every %g s", self.path, self.POLL_SECONDS)
                        warned = True
                    self._stop.wait(self.POLL_SECONDS)
                    continue
                warned = False
            line = handle.readline()
            if line.endswith(b"\n"):
                self.position = (os.fstat(handle.fileno()).st_ino, handle.tell())
                self._handle_line(line.decode("utf-8", errors="replace"))
                continue
            if line:
                # A partial last line: read it again once it is complete.
                handle.seek(handle.tell() - len(line))
            if self._rotated(handle):
                logger.info("Mosquitto log %s was rotated; reading the new file", self.path)
                handle.close()
                handle = None
                self.position = None
                self.from_start = True
                continue
            self._stop.wait(self.POLL_SECONDS)
        if handle is not None:
            handle.close()

    def _open(self) -> Any:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed in _run
        except OSError:
            return None
        status = os.fstat(handle.fileno())
        if self.position is not None and self.position[0] == status.st_ino and self.position[1] <= status.st_size:
            handle.seek(self.position[1])
        elif not self.from_start:
            handle.seek(0, os.SEEK_END)
        self.position = (status.st_ino, handle.tell())
        return handle

    def _rotated(self, handle: Any) -> bool:
        try:
            current = os.stat(self.path)
        except OSError:
            return False
        opened = os.fstat(handle.fileno())
        return current.st_ino != opened.st_ino or current.st_size < handle.tell()

    def _handle_line(self, line: str) -> None:
        event = parse_mosquitto_line(line)
        if event is None:
            return
        metric, who = event
        if who in self.ignore_clients or who == "<unknown>":
            return
        if metric == "broker_auth_failures" and _ADDRESS.match(who):
            device = who
        elif self.client_device is not None:
            match = self.client_device.search(who)
            if match is None:
                return
            device = match.group("device")
        else:
            device = who
        self.events += 1
        if metric == "broker_auth_failures":
            logger.info("Mosquitto log: authentication failure for %s", device)
        else:
            logger.debug("Mosquitto log: %s for %s", metric, device)
        self.traffic.count_event(device, metric)
