"""Semtech UDP packet-forwarder captures (pcap) as LoRaWAN events.

The packet forwarder sends ``PUSH_DATA`` datagrams to the network server
(UDP port 1700 by default): protocol version (1 byte), random token (2),
identifier 0x00, gateway EUI (8), then a JSON object whose ``rxpk`` list
contains the received radio frames. Each ``rxpk`` carries the PHYPayload in
base64 (``data``), the CRC status (``stat``: 1 good, -1 bad, 0 none), RSSI
(``rssi``), SNR (``lsnr``), data rate (``datr``, such as ``SF7BW125``),
frequency in MHz (``freq``) and the gateway's own reception time (``time``).

The event time of a frame is the capture time of its datagram. The
gateway's ``time`` field is kept as evidence: a frame whose reception time
is much older than the moment it was forwarded was recorded and injected
again. Frames with a bad CRC are skipped, since no field of them can be
trusted. Data frames identify the device only by DevAddr, so their device
id is the DevAddr; join-requests carry the DevEUI.

Packets are read with dpkt (``pip install dpkt``); classic pcap and pcapng
files with Ethernet, Linux cooked (SLL), raw IP or BSD loopback link
layers are supported.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Iterator
from typing import Any

from iotwarden.errors import InvalidConfigError, IotwardenError
from iotwarden.observation import Rejection
from iotwarden.sources.lorawan.events import EventKind, LorawanEvent, Reception
from iotwarden.sources.lorawan.frames import DataFrame, FrameError, JoinRequest, parse_phy_payload
from iotwarden.sources.lorawan.monitor import Item, LorawanMonitor, MonitorConfig
from iotwarden.sources.timeparse import TimeParser

__all__ = ["PUSH_DATA", "SEMTECH_PORT", "parse_push_data", "read_semtech_pcap"]

logger = logging.getLogger(__name__)

SEMTECH_PORT = 1700
PUSH_DATA = 0x00
_HEADER_LENGTH = 12  # version, token (2), identifier, gateway EUI (8)
_SPREADING = re.compile(r"SF(\d+)", re.IGNORECASE)
_TIME_PARSER = TimeParser(None)
# pcap link types of bare IP packets: LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6 and BSD DLT_RAW values.
_RAW_IP_LINK_TYPES = (101, 228, 229, 12, 14)
_STALE_TOLERANCE = 5.0  # seconds of clock difference between gateway and capture host that are ignored


def read_semtech_pcap(
    paths: list[str], *, port: int = SEMTECH_PORT, config: MonitorConfig | None = None
) -> Iterator[Item | Rejection]:
    """Read packet-forwarder captures through one :class:`LorawanMonitor` and yield its items.

    Raises:
        InvalidConfigError: dpkt is not installed, or a file is missing or
            not a pcap or pcapng capture.
    """
    dpkt = _import_dpkt()
    monitor = LorawanMonitor(config)
    for path in paths:
        skipped_crc = 0
        for number, timestamp, datagram in _udp_payloads(dpkt, path, port):
            events, rejections, bad_crc = parse_push_data(datagram, timestamp, source=path, line=number)
            skipped_crc += bad_crc
            yield from rejections
            for event in events:
                yield from monitor.push(event, source=path, line=number)
        if skipped_crc:
            logger.info("read %s: skipped %d frames with a bad CRC", path, skipped_crc)
    yield from monitor.finish()


def parse_push_data(
    datagram: bytes, capture_time: float, *, source: str = "", line: int | None = None
) -> tuple[list[LorawanEvent], list[Rejection], int]:
    """Decode one forwarder datagram into events.

    Returns the events, rejections for unreadable frames, and the number of
    frames skipped for a bad CRC. Datagrams other than ``PUSH_DATA`` (pulls,
    acknowledgements, downlinks) give nothing.
    """
    if len(datagram) < _HEADER_LENGTH or datagram[3] != PUSH_DATA:
        return [], [], 0
    gateway = datagram[4:12].hex()
    try:
        message = json.loads(datagram[_HEADER_LENGTH:])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [], [Rejection(source, line, None, f"PUSH_DATA from gateway {gateway} is not valid JSON: {exc}", _text(datagram))], 0
    if not isinstance(message, dict):
        return [], [Rejection(source, line, None, f"PUSH_DATA from gateway {gateway} is not a JSON object", _text(datagram))], 0
    events: list[LorawanEvent] = []
    rejections: list[Rejection] = []
    bad_crc = 0
    packets = message.get("rxpk")
    for index, packet in enumerate(packets if isinstance(packets, list) else []):
        if not isinstance(packet, dict):
            continue
        if packet.get("stat") == -1:
            bad_crc += 1
            continue
        try:
            event = _event(packet, gateway, capture_time)
        except (FrameError, ValueError) as exc:
            rejections.append(Rejection(source, line, f"rxpk[{index}].data", f"frame from gateway {gateway}: {exc}", json.dumps(packet)[:8192]))
            continue
        if event is not None:
            events.append(event)
    return events, rejections, bad_crc


def _event(packet: dict[str, Any], gateway: str, capture_time: float) -> LorawanEvent | None:
    encoded = packet.get("data")
    if not isinstance(encoded, str):
        raise ValueError("rxpk has no base64 'data' field")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"'data' is not valid base64 ({exc})") from None
    frame = parse_phy_payload(raw)
    if frame is None:
        return None
    stale = _stale_seconds(packet.get("time"), capture_time)
    reception = Reception(gateway, _number(packet.get("rssi")), _number(packet.get("lsnr")), capture_time)
    match = _SPREADING.match(str(packet.get("datr") or ""))
    spreading = int(match.group(1)) if match else None
    megahertz = _number(packet.get("freq"))
    frequency = None if megahertz is None else megahertz * 1e6

    if isinstance(frame, JoinRequest):
        return LorawanEvent(
            kind=EventKind.JOIN_REQUEST,
            dialect="semtech",
            device=frame.dev_eui,
            time=capture_time,
            receptions=[reception],
            spreading_factor=spreading,
            frequency=frequency,
            dev_nonce=frame.dev_nonce,
            join_eui=frame.join_eui,
            fingerprint=frame.raw.hex(),
            stale_seconds=stale,
        )
    assert isinstance(frame, DataFrame)
    if not frame.uplink:
        return None
    return LorawanEvent(
        kind=EventKind.UPLINK,
        dialect="semtech",
        device=frame.dev_addr,
        time=capture_time,
        dev_addr=frame.dev_addr,
        fcnt=frame.fcnt16,
        fcnt_bits=16,
        fport=frame.fport,
        confirmed=frame.confirmed,
        # The whole PHYPayload, MIC included: copies and retransmissions are bit-identical.
        fingerprint=frame.raw.hex(),
        payload_size=len(frame.frm_payload),
        mac_only=frame.mac_only,
        receptions=[reception],
        spreading_factor=spreading,
        frequency=frequency,
        stale_seconds=stale,
    )


def _udp_payloads(dpkt: Any, path: str, port: int) -> Iterator[tuple[int, float, bytes]]:
    """Yield (packet number, capture time, UDP payload) of datagrams to or from ``port``."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InvalidConfigError(f"input file not found: {path}") from None
    except OSError as exc:
        raise InvalidConfigError(f"cannot open input file {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            reader = dpkt.pcap.UniversalReader(handle)
        except ValueError as exc:
            raise InvalidConfigError(f"{path} is not a pcap or pcapng capture: {exc}") from None
        link = reader.datalink()
        number = 0
        try:
            for timestamp, buffer in reader:
                number += 1
                udp = _udp(dpkt, link, buffer)
                if udp is not None and port in (udp.sport, udp.dport):
                    yield number, float(timestamp), bytes(udp.data)
        except (dpkt.NeedData, dpkt.UnpackError, ValueError) as exc:
            raise IotwardenError(f"{path}: failed to read packet {number + 1}: {exc}") from exc


def _udp(dpkt: Any, link: int, buffer: bytes) -> Any:
    try:
        if link == dpkt.pcap.DLT_EN10MB:
            network = dpkt.ethernet.Ethernet(buffer).data
        elif link == dpkt.pcap.DLT_LINUX_SLL:
            network = dpkt.sll.SLL(buffer).data
        elif link in (dpkt.pcap.DLT_RAW, *_RAW_IP_LINK_TYPES):
            network = dpkt.ip.IP(buffer) if buffer[:1] and buffer[0] >> 4 == 4 else dpkt.ip6.IP6(buffer)
        elif link in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            network = dpkt.loopback.Loopback(buffer).data
        else:
            return None
    except (dpkt.NeedData, dpkt.UnpackError):
        return None
    transport = getattr(network, "data", None)
    return transport if isinstance(transport, dpkt.udp.UDP) else None


def _stale_seconds(value: Any, capture_time: float) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        reception_time = _TIME_PARSER.parse(value)
    except ValueError:
        return None
    age = capture_time - reception_time
    return age if age > _STALE_TOLERANCE else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(datagram: bytes) -> str:
    return datagram[:8192].decode("utf-8", errors="replace")


def _import_dpkt() -> Any:
    try:
        import dpkt
    except ImportError:
        raise InvalidConfigError("reading packet-forwarder captures needs dpkt: pip install 'dpkt>=1.9.8'") from None
    return dpkt
