"""Network-server events (ChirpStack v3 and v4, The Things Stack v3, Helium) as one model.

:func:`decode_event` recognises the shape of one event and returns a
:class:`LorawanEvent`, or None for a recognised event that carries nothing
to watch (ChirpStack ``ack``, ``txack``, ``log`` and ``location``, for
example). Shapes are recognised by their identifying fields:

========================  ============================================
network server            device identifier
========================  ============================================
ChirpStack v4             ``deviceInfo.devEui``
ChirpStack v3             ``devEUI`` (hex, or base64 as v3's JSON marshaller writes bytes)
The Things Stack v3       ``end_device_ids.dev_eui``
Helium console            ``dev_eui``
========================  ============================================

The event type comes from the MQTT topic (``.../event/up``, ``.../up``,
``.../join``) when there is one, else from the fields present. The device
id is the DevEUI in lower-case hex, whatever its encoding.

Event time is the gateway's reception time when a gateway gives one (and
it is within 10 minutes of the event's own time, so a gateway with a wrong
clock is ignored), else
the event's own time (``time`` in ChirpStack v4, ``publishedAt`` in v3,
``received_at`` in The Things Stack, ``reported_at`` in Helium), else the
receive time a recorder added (``recv_at`` of a ``{topic, payload}`` wrapper,
or ``_date`` / ``_timestamp`` that the CampusIoT logger adds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iotwarden.sources.payload import RecordError
from iotwarden.sources.timeparse import TimeParser

__all__ = ["EventKind", "LorawanEvent", "Reception", "decode_event", "normalise_eui"]

_HEX = re.compile(r"[0-9a-fA-F]*")
_SPREADING = re.compile(r"SF(\d+)", re.IGNORECASE)
_TIME_PARSER = TimeParser(None)
_TOPIC_EVENT = re.compile(r"/(?:event/)?(up|join|status|error|ack|txack|log|location|integration)$")
# Largest difference, in seconds, between a gateway's reception time and the
# event's own time for the gateway time to be trusted.
_GATEWAY_CLOCK_TOLERANCE = 600.0
# ChirpStack event types that carry no uplink, join or status.
_IGNORED_EVENTS = frozenset({"ack", "txack", "log", "location", "integration"})


class EventKind:
    """Kinds of :class:`LorawanEvent`."""

    UPLINK = "uplink"
    JOIN = "join"  # a join accepted by the network server
    JOIN_REQUEST = "join_request"  # a join-request seen on air (packet forwarder)
    STATUS = "status"
    ERROR = "error"


@dataclass(slots=True)
class Reception:
    """One gateway's reception of a frame; RSSI in dBm, SNR in dB, time in epoch seconds."""

    gateway: str
    rssi: float | None = None
    snr: float | None = None
    time: float | None = None


@dataclass(slots=True)
class LorawanEvent:
    """One network-server event or on-air frame, whatever its source format.

    Attributes:
        kind: One of :class:`EventKind`.
        dialect: ``chirpstack-v4``, ``chirpstack-v3``, ``tts``, ``helium`` or
            ``semtech`` (a packet-forwarder frame).
        device: DevEUI in lower-case hex; for a data frame seen on air, where
            only the DevAddr is known, the DevAddr in lower-case hex.
        time: Event time in epoch seconds (see the module documentation).
        fcnt: Uplink frame counter, or None.
        fcnt_bits: 32 when ``fcnt`` is the counter a network server
            reconstructed, 16 when it is the value carried on air.
        fingerprint: A digest of the frame's content: payload and FPort, or
            the decoded fields when the payload is absent. It tells a copy of
            a frame from a different frame with the same counter. None when
            the event has no content.
        payload_size: Application payload size in bytes, or None.
        mac_only: True for a frame with FPort 0 or no payload: MAC commands
            only, no application data.
        decoded: The network server's decoded payload, or None.
        stale_seconds: For on-air frames, how much older the gateway's own
            reception time is than the moment the gateway forwarded it.
    """

    kind: str
    dialect: str
    device: str
    time: float
    topic: str | None = None
    name: str | None = None
    dev_addr: str | None = None
    fcnt: int | None = None
    fcnt_bits: int = 32
    fport: int | None = None
    confirmed: bool | None = None
    fingerprint: str | None = None
    payload_size: int | None = None
    mac_only: bool = False
    receptions: list[Reception] = field(default_factory=list)
    data_rate: int | None = None
    spreading_factor: int | None = None
    frequency: float | None = None
    decoded: dict[str, Any] | None = None
    battery_level: float | None = None
    margin: float | None = None
    dev_nonce: int | None = None
    join_eui: str | None = None
    error: str | None = None
    stale_seconds: float | None = None


def normalise_eui(value: Any, *, size: int = 8) -> str | None:
    """Return an EUI (or a DevAddr with ``size=4``) as lower-case hex, or None if it is neither hex nor base64.

    Hex of ``2 * size`` digits is taken in any case, with ``-`` or ``:``
    separators allowed. Otherwise base64 text that decodes to ``size`` bytes
    is accepted, as ChirpStack v3 writes byte fields.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    compact = text.replace("-", "").replace(":", "")
    if len(compact) == 2 * size and _HEX.fullmatch(compact):
        return compact.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) == size:
        return raw.hex()
    return None


def decode_event(topic: str | None, obj: Mapping[str, Any], *, received: Any = None) -> LorawanEvent | None:
    """Recognise one network-server event and return it in the common model.

    Returns None for recognised events that carry nothing to watch.

    Raises:
        RecordError: the shape is unknown, or a recognised event lacks or
            garbles its device id, its time or its frame counter. The message
            names the topic and the missing fields.
    """
    if "end_device_ids" in obj:
        return _tts(topic, obj, received)
    device_info = obj.get("deviceInfo")
    if isinstance(device_info, Mapping) and "devEui" in device_info:
        return _chirpstack_v4(topic, obj, device_info, received)
    if "devEUI" in obj:
        return _chirpstack_v3(topic, obj, received)
    if "dev_eui" in obj:
        return _helium(topic, obj, received)
    keys = ", ".join(sorted(str(key) for key in obj)[:12]) or "none"
    where = f"topic {topic!r}" if topic else "this record"
    raise RecordError(
        f"unknown LoRaWAN event shape on {where}: missing the device identifier "
        "(deviceInfo.devEui for ChirpStack v4, devEUI for ChirpStack v3, end_device_ids.dev_eui "
        f"for The Things Stack, dev_eui for Helium); fields present: {keys}",
        code="unknown_shape",
    )


# ChirpStack v4 -------------------------------------------------------------------


def _chirpstack_v4(topic: str | None, obj: Mapping[str, Any], info: Mapping[str, Any], received: Any) -> LorawanEvent | None:
    kind = _kind_from_topic(topic) or _kind_from_fields(obj)
    if kind in _IGNORED_EVENTS:
        return None
    device = _device(info.get("devEui"), "deviceInfo.devEui", topic)
    receptions = _receptions(obj.get("rxInfo"), id_key="gatewayId", snr_key="snr")
    event = LorawanEvent(
        kind=kind,
        dialect="chirpstack-v4",
        device=device,
        time=_event_time(receptions, obj, ("time",), received, topic),
        topic=topic,
        name=_text(info.get("deviceName")),
        dev_addr=normalise_eui(obj.get("devAddr"), size=4),
        receptions=receptions,
    )
    if kind == EventKind.UPLINK:
        event.data_rate = _integer(obj.get("dr"))
        tx = _mapping(obj.get("txInfo"))
        event.frequency = _number(tx.get("frequency"))
        lora = _mapping(_mapping(tx.get("modulation")).get("lora"))
        event.spreading_factor = _integer(lora.get("spreadingFactor"))
        event.confirmed = obj.get("confirmed") if isinstance(obj.get("confirmed"), bool) else None
        _uplink_frame(event, obj, fcnt_key="fCnt", port_key="fPort", topic=topic)
        _set_payload(event, obj.get("data"), event.fport)
        decoded = obj.get("object")
        event.decoded = dict(decoded) if isinstance(decoded, Mapping) else None
        _fingerprint_decoded(event)
    elif kind == EventKind.STATUS:
        _status(event, obj)
    elif kind == EventKind.ERROR:
        event.error = _text(obj.get("type")) or _text(obj.get("error")) or "error"
        event.fcnt = _integer(obj.get("fCnt"))
    return event


# ChirpStack v3 -------------------------------------------------------------------


def _chirpstack_v3(topic: str | None, obj: Mapping[str, Any], received: Any) -> LorawanEvent | None:
    kind = _kind_from_topic(topic) or _kind_from_fields(obj)
    if kind in _IGNORED_EVENTS:
        return None
    device = _device(obj.get("devEUI"), "devEUI", topic)
    receptions = _receptions(obj.get("rxInfo"), id_key="gatewayID", snr_key="loRaSNR")
    event = LorawanEvent(
        kind=kind,
        dialect="chirpstack-v3",
        device=device,
        time=_event_time(receptions, obj, ("publishedAt",), received, topic),
        topic=topic,
        name=_text(obj.get("deviceName")),
        dev_addr=normalise_eui(obj.get("devAddr"), size=4),
        receptions=receptions,
    )
    if kind == EventKind.UPLINK:
        tx = _mapping(obj.get("txInfo"))
        event.data_rate = _integer(obj.get("dr", tx.get("dr")))
        event.frequency = _number(tx.get("frequency"))
        lora = _mapping(tx.get("loRaModulationInfo"))
        event.spreading_factor = _integer(lora.get("spreadingFactor"))
        event.confirmed = obj.get("confirmedUplink") if isinstance(obj.get("confirmedUplink"), bool) else None
        _uplink_frame(event, obj, fcnt_key="fCnt", port_key="fPort", topic=topic)
        _set_payload(event, obj.get("data"), event.fport)
        decoded = obj.get("object")
        if not isinstance(decoded, Mapping) and isinstance(obj.get("objectJSON"), str) and obj["objectJSON"].strip():
            try:
                decoded = json.loads(obj["objectJSON"])
            except json.JSONDecodeError as exc:
                raise RecordError(
                    f"objectJSON is not valid JSON ({exc.msg}, char {exc.pos}){_on(topic)}",
                    code="invalid_json",
                    field="objectJSON",
                ) from None
        event.decoded = dict(decoded) if isinstance(decoded, Mapping) else None
        _fingerprint_decoded(event)
    elif kind == EventKind.STATUS:
        _status(event, obj)
    elif kind == EventKind.ERROR:
        event.error = _text(obj.get("type")) or _text(obj.get("error")) or "error"
        event.fcnt = _integer(obj.get("fCnt"))
    return event


# The Things Stack v3 -------------------------------------------------------------


def _tts(topic: str | None, obj: Mapping[str, Any], received: Any) -> LorawanEvent | None:
    ids = _mapping(obj.get("end_device_ids"))
    if "uplink_message" in obj:
        kind = EventKind.UPLINK
        message = _mapping(obj.get("uplink_message"))
    elif "join_accept" in obj:
        kind = EventKind.JOIN
        message = _mapping(obj.get("join_accept"))
    elif "uplink_normalized" in obj or "downlink_ack" in obj or "downlink_sent" in obj or "downlink_queued" in obj:
        return None
    else:
        keys = ", ".join(sorted(str(key) for key in obj)[:12])
        raise RecordError(
            f"The Things Stack message{_on(topic)} has neither uplink_message nor join_accept; fields present: {keys}",
            code="unknown_shape",
        )
    device = _device(ids.get("dev_eui"), "end_device_ids.dev_eui", topic)
    receptions = _receptions(message.get("rx_metadata"), id_key="gateway_ids", snr_key="snr")
    event = LorawanEvent(
        kind=kind,
        dialect="tts",
        device=device,
        time=_event_time(receptions, obj, ("received_at",), received, topic),
        topic=topic,
        name=_text(ids.get("device_id")),
        dev_addr=normalise_eui(ids.get("dev_addr"), size=4),
        receptions=receptions,
    )
    if kind == EventKind.UPLINK:
        settings = _mapping(message.get("settings"))
        lora = _mapping(_mapping(settings.get("data_rate")).get("lora"))
        event.spreading_factor = _integer(lora.get("spreading_factor"))
        event.data_rate = _integer(settings.get("data_rate_index"))
        event.frequency = _number(settings.get("frequency"))
        event.confirmed = message.get("confirmed") if isinstance(message.get("confirmed"), bool) else None
        # The Things Stack leaves out f_cnt when it is 0 (protobuf JSON omits zero values).
        _uplink_frame(event, message, fcnt_key="f_cnt", port_key="f_port", topic=topic, fcnt_default=0)
        _set_payload(event, message.get("frm_payload"), event.fport)
        decoded = message.get("decoded_payload")
        event.decoded = dict(decoded) if isinstance(decoded, Mapping) else None
        _fingerprint_decoded(event)
        battery = _mapping(message.get("last_battery_percentage"))
        event.battery_level = _number(battery.get("value"))
    return event


# Helium ------------------------------------------------------------------------------


def _helium(topic: str | None, obj: Mapping[str, Any], received: Any) -> LorawanEvent | None:
    declared = _text(obj.get("type"))
    if declared == "join":
        kind = EventKind.JOIN
    elif declared in (None, "uplink", "uplink_confirmed", "uplink_unconfirmed"):
        kind = EventKind.UPLINK
    else:
        return None
    device = _device(obj.get("dev_eui"), "dev_eui", topic)
    receptions: list[Reception] = []
    spreading = None
    frequency = None
    hotspots = obj.get("hotspots")
    if isinstance(hotspots, list):
        for hotspot in hotspots:
            if not isinstance(hotspot, Mapping):
                continue
            gateway = _text(hotspot.get("id")) or _text(hotspot.get("name"))
            if gateway is None:
                continue
            receptions.append(
                Reception(gateway, _number(hotspot.get("rssi")), _number(hotspot.get("snr")), _time_or_none(hotspot.get("reported_at")))
            )
            match = _SPREADING.match(str(hotspot.get("spreading") or ""))
            if match and spreading is None:
                spreading = int(match.group(1))
            if frequency is None:
                megahertz = _number(hotspot.get("frequency"))
                frequency = None if megahertz is None else megahertz * 1e6
    event = LorawanEvent(
        kind=kind,
        dialect="helium",
        device=device,
        time=_event_time(receptions, obj, ("reported_at",), received, topic),
        topic=topic,
        name=_text(obj.get("name")),
        dev_addr=normalise_eui(obj.get("devaddr"), size=4),
        receptions=receptions,
        spreading_factor=spreading,
        frequency=frequency,
    )
    if kind == EventKind.UPLINK:
        _uplink_frame(event, obj, fcnt_key="fcnt", port_key="port", topic=topic)
        _set_payload(event, obj.get("payload"), event.fport)
        if event.payload_size is None:
            event.payload_size = _integer(obj.get("payload_size"))
            event.mac_only = event.fport == 0 or event.payload_size == 0
        decoded = _mapping(obj.get("decoded")).get("payload")
        event.decoded = dict(decoded) if isinstance(decoded, Mapping) else None
        _fingerprint_decoded(event)
    return event


# Shared pieces -----------------------------------------------------------------------


def _kind_from_topic(topic: str | None) -> str | None:
    if not topic:
        return None
    match = _TOPIC_EVENT.search(topic)
    if match is None:
        return None
    name = match.group(1)
    return {"up": EventKind.UPLINK, "join": EventKind.JOIN, "status": EventKind.STATUS, "error": EventKind.ERROR}.get(name, name)


def _kind_from_fields(obj: Mapping[str, Any]) -> str:
    if "margin" in obj or "batteryLevel" in obj:
        return EventKind.STATUS
    if "error" in obj and "type" in obj:
        return EventKind.ERROR
    if "fCnt" in obj or "rxInfo" in obj or "fPort" in obj:
        return EventKind.UPLINK
    if "devAddr" in obj:
        return EventKind.JOIN
    if "acknowledged" in obj:
        return "ack"
    if "location" in obj:
        return "location"
    return EventKind.UPLINK


def _device(value: Any, name: str, topic: str | None) -> str:
    device = normalise_eui(value)
    if device is None:
        raise RecordError(
            f"{name} {value!r}{_on(topic)} is not a DevEUI: expected 16 hex digits or base64 of 8 bytes",
            code="invalid_device",
            field=name,
        )
    return device


def _receptions(value: Any, *, id_key: str, snr_key: str) -> list[Reception]:
    if not isinstance(value, list):
        return []
    receptions = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        raw_id = item.get(id_key)
        if isinstance(raw_id, Mapping):  # The Things Stack: gateway_ids {gateway_id, eui}
            gateway = _text(raw_id.get("eui")) or _text(raw_id.get("gateway_id"))
            gateway = normalise_eui(gateway) or gateway
        else:
            gateway = normalise_eui(raw_id) or _text(raw_id)
        if gateway is None:
            continue
        rssi = _number(item.get("rssi"))
        if rssi is None:
            rssi = _number(item.get("channel_rssi"))
        receptions.append(Reception(gateway, rssi, _number(item.get(snr_key)), _time_or_none(item.get("time"))))
    return receptions


def _event_time(
    receptions: list[Reception], obj: Mapping[str, Any], own_keys: tuple[str, ...], received: Any, topic: str | None
) -> float:
    own = None
    for key in (*own_keys, "_date", "_timestamp"):
        own = _time_or_none(obj.get(key))
        if own is not None:
            break
    if own is None:
        own = _time_or_none(received)
    for reception in receptions:
        if reception.time is None:
            continue
        # A gateway without GPS or NTP may report a time years off; the event's own time wins then.
        if own is None or abs(reception.time - own) <= _GATEWAY_CLOCK_TOLERANCE:
            return reception.time
    if own is not None:
        return own
    raise RecordError(
        f"no event time{_on(topic)}: no gateway time and no {' or '.join(own_keys)} field",
        code="missing_time",
        field=own_keys[0],
    )


def _uplink_frame(
    event: LorawanEvent, obj: Mapping[str, Any], *, fcnt_key: str, port_key: str, topic: str | None, fcnt_default: int | None = None
) -> None:
    raw = obj.get(fcnt_key, fcnt_default)
    fcnt = _integer(raw)
    if fcnt is None or fcnt < 0 or fcnt > 0xFFFFFFFF:
        raise RecordError(
            f"uplink{_on(topic)} has no valid frame counter {fcnt_key!r} (got {raw!r}): expected an integer 0..2^32-1",
            code="missing_fcnt",
            field=fcnt_key,
        )
    event.fcnt = fcnt
    event.fport = _integer(obj.get(port_key))


def _set_payload(event: LorawanEvent, data: Any, fport: int | None) -> None:
    payload = _payload_bytes(data)
    if payload is not None:
        event.payload_size = len(payload)
        event.fingerprint = _digest(fport, payload)
    event.mac_only = fport == 0 or (fport is None and not payload)


def _payload_bytes(data: Any) -> bytes | None:
    """Decode ``data``: base64 as network servers send it, or hex as some loggers rewrite it.

    A string of hex digits with an even length is read as hex: binary data
    in base64 practically never uses only the characters 0-9 and a-f.
    """
    if not isinstance(data, str):
        return None
    text = data.strip()
    if not text:
        return b""
    if len(text) % 2 == 0 and _HEX.fullmatch(text):
        return bytes.fromhex(text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _fingerprint_decoded(event: LorawanEvent) -> None:
    """Fingerprint frames that carry only decoded fields (Helium, some integrations)."""
    if event.fingerprint is not None or event.decoded is None:
        return
    content = json.dumps([event.fport, event.payload_size, event.decoded], sort_keys=True, default=str)
    event.fingerprint = hashlib.blake2b(content.encode(), digest_size=12).hexdigest()


def _digest(fport: int | None, payload: bytes) -> str:
    return hashlib.blake2b(bytes([255 if fport is None else fport]) + payload, digest_size=12).hexdigest()


def _status(event: LorawanEvent, obj: Mapping[str, Any]) -> None:
    event.margin = _number(obj.get("margin"))
    unavailable = obj.get("batteryLevelUnavailable") is True or obj.get("externalPowerSource") is True
    if not unavailable:
        event.battery_level = _number(obj.get("batteryLevel"))


def _time_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, str):
            return _TIME_PARSER.parse(value) if value.strip() else None
        if isinstance(value, (int, float)):
            return _TIME_PARSER.parse_number(value)
    except ValueError:
        return None
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _on(topic: str | None) -> str:
    return f" on topic {topic!r}" if topic else ""
