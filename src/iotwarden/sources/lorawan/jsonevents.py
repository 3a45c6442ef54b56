"""Read network-server events from JSON-lines files and MQTT messages.

Each line contains one event, bare or wrapped as ``{"topic": ..., "payload":
...}`` (``payload_b64`` for raw bytes, ``recv_at`` for the receive time) as
MQTT recorders write it. Files may be gzip-compressed (found by the magic
bytes); ``-`` reads standard input.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from iotwarden.errors import IotwardenError
from iotwarden.observation import Rejection
from iotwarden.sources.files import open_binary
from iotwarden.sources.lorawan.events import decode_event
from iotwarden.sources.lorawan.monitor import Item, LorawanMonitor, MonitorConfig
from iotwarden.sources.payload import DEFAULT_MAX_PAYLOAD_BYTES, RecordError, decode_json_object, unwrap_envelope

__all__ = ["DIALECTS", "parse_event", "read_event_lines"]

logger = logging.getLogger(__name__)

# The event dialects that each file format accepts.
DIALECTS: dict[str, frozenset[str]] = {
    "chirpstack": frozenset({"chirpstack-v3", "chirpstack-v4"}),
    "tts": frozenset({"tts"}),
    "helium": frozenset({"helium"}),
}
_FORMAT_OF_DIALECT = {"chirpstack-v3": "chirpstack", "chirpstack-v4": "chirpstack", "tts": "tts", "helium": "helium"}
_EXPIRE_EVERY = 256  # events between checks for finished episodes and gateways to evaluate


def parse_event(
    topic: str | None,
    payload: bytes | str | Mapping[str, Any],
    *,
    source: str = "",
    line: int | None = None,
    monitor: LorawanMonitor | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[Item | Rejection]:
    """Parse one network-server event, as received on MQTT or read from a line.

    With a ``monitor`` the event goes through its per-device state, so the
    result contains whatever the event completes: usually the observation of
    the device's previous uplink and any finished alerts, and nothing while
    copies of a frame may still come (call ``monitor.expire`` on a timer).
    Without one, the event is converted on its own: one observation with
    the features of this event alone (no frame loss, interval or rules).

    Returns a one-item list with a :class:`~iotwarden.observation.Rejection`
    when the payload is not JSON or the event's shape is unknown; the
    rejection names the topic and the missing identifying fields.
    """
    where = source
    if topic:
        where = f"{source}#{topic}" if source else f"mqtt:{topic}"
    try:
        obj = payload if isinstance(payload, Mapping) else decode_json_object(payload, max_bytes=max_payload_bytes)
        envelope = unwrap_envelope(obj, max_bytes=max_payload_bytes)
        received = None
        if envelope is not None:
            topic = envelope.topic
            received = envelope.received
            where = f"{source}#{topic}" if source else f"mqtt:{topic}"
            inner = envelope.payload
            obj = inner if isinstance(inner, Mapping) else decode_json_object(inner, max_bytes=max_payload_bytes)
        event = decode_event(topic, obj, received=received)
    except RecordError as exc:
        return [Rejection(where, line, exc.field, exc.reason, _raw(payload))]
    if event is None:
        return []
    if monitor is not None:
        return list(monitor.push(event, source=where, line=line))
    single = LorawanMonitor()
    return [*single.push(event, source=where, line=line), *single.finish()]


def read_event_lines(
    paths: list[str],
    *,
    dialects: Collection[str] | None = None,
    format_name: str = "",
    config: MonitorConfig | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Iterator[Item | Rejection]:
    """Read JSON-lines event files through one :class:`LorawanMonitor` and yield its items.

    Events of a dialect outside ``dialects`` are rejected with a pointer to
    the right format. The monitor spans all ``paths``, so a device's state
    carries over from one file to the next.
    """
    monitor = LorawanMonitor(config)
    count = 0
    for path in paths:
        source = "<stdin>" if path == "-" else path
        rejected = 0
        with open_binary(path) as stream:
            try:
                for number, raw in enumerate(stream, start=1):
                    if not raw.strip():
                        continue
                    items = _parse_line(raw, source, number, monitor, dialects, format_name, max_payload_bytes)
                    for item in items:
                        if isinstance(item, Rejection):
                            rejected += 1
                    yield from items
                    count += 1
                    if count % _EXPIRE_EVERY == 0:
                        yield from monitor.expire(monitor.clock)
            except (OSError, EOFError) as exc:
                raise IotwardenError(f"{source}: failed to read the file: {exc}") from exc
        if rejected:
            logger.warning("read %s: %d events rejected (see the dead-letter file)", source, rejected)
    yield from monitor.finish()


def _parse_line(
    raw: bytes,
    source: str,
    line: int,
    monitor: LorawanMonitor,
    dialects: Collection[str] | None,
    format_name: str,
    max_payload_bytes: int,
) -> list[Item | Rejection]:
    where = source
    try:
        obj = decode_json_object(raw, max_bytes=max_payload_bytes)
        envelope = unwrap_envelope(obj, max_bytes=max_payload_bytes)
        topic = None
        received = None
        if envelope is not None:
            topic = envelope.topic
            received = envelope.received
            where = f"{source}#{topic}"
            inner = envelope.payload
            obj = inner if isinstance(inner, Mapping) else decode_json_object(inner, max_bytes=max_payload_bytes)
        event = decode_event(topic, obj, received=received)
    except RecordError as exc:
        return [Rejection(where, line, exc.field, exc.reason, _raw(raw))]
    if event is None:
        return []
    if dialects is not None and event.dialect not in dialects:
        expected = _FORMAT_OF_DIALECT[event.dialect]
        return [
            Rejection(
                where, line, None,
                f"a {event.dialect} event in input read as {format_name or 'another format'}: read it with --format {expected}",
                _raw(raw),
            )
        ]
    return list(monitor.push(event, source=where, line=line))


def _raw(payload: bytes | str | Mapping[str, Any]) -> str:
    if isinstance(payload, bytes):
        return payload[:8192].decode("utf-8", errors="replace").rstrip("\n")
    if isinstance(payload, str):
        return payload[:8192]
    try:
        return json.dumps(payload, default=str)[:8192]
    except (TypeError, ValueError):
        return repr(payload)[:8192]
