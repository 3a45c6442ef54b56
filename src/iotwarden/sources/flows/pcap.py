"""Read packet captures (pcap and pcapng) into flows, packet volumes and damped statistics.

Each IPv4 or IPv6 packet (Ethernet with VLAN tags, Linux cooked capture v1
and v2, raw IP, BSD loopback) updates :class:`~iotwarden.sources.flows.afterimage.AfterImage`
and counts toward its hosts' window volumes. A small connection tracker
turns TCP and UDP packets into :class:`~iotwarden.sources.flows.records.Flow`
records with a Zeek-like ``conn_state``, so the same window rules run on
captures as on Zeek logs. It also reads MQTT CONNACK packets (first payload
byte 0x20 from port 1883 or 8883 without TLS) and marks the connection's
login as refused when the return code is not 0. PUBLISH packets that
clients send to port 1883 are counted with
:class:`~iotwarden.sources.flows.mqtt.MqttStreams` for the MQTT flood rule.

Packets that cannot be decoded, and non-IP frames, are counted and skipped:
a capture has no lines, so they are not rejections. A truncated file ends
the capture with one :class:`~iotwarden.observation.Rejection`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import dpkt

from iotwarden.decisions.alerts import Alert
from iotwarden.errors import InvalidConfigError
from iotwarden.observation import Observation, Rejection
from iotwarden.sources.flows.afterimage import AfterImage
from iotwarden.sources.flows.mqtt import MqttStreams
from iotwarden.sources.flows.records import Flow
from iotwarden.sources.flows.windows import FlowWindows

__all__ = ["ConnectionTracker", "Packet", "decode_packets", "read_pcap"]

logger = logging.getLogger(__name__)

_MQTT_PORTS = (1883,)
_TCP_IDLE = 300.0  # seconds without a packet after which a TCP connection is logged (Zeek's default inactivity timeout)
_UDP_IDLE = 60.0
_HANDSHAKE_TIMEOUT = 5.0  # a SYN unanswered this long is logged as S0
_CLOSE_LINGER = 1.0  # seconds after FIN+FIN or RST before a connection is logged


@dataclass(slots=True)
class Packet:
    """One decoded IP packet."""

    time: float
    src: str
    sport: int
    dst: str
    dport: int
    proto: str
    size: int
    flags: int = 0
    payload: bytes = b""
    number: int = 0
    seq: int = 0


def decode_packets(path: str, stats: dict[str, int] | None = None) -> Iterator[Packet | Rejection]:
    """Yield the IP packets of the capture ``path``; undecodable frames are counted in ``stats``."""
    counts = stats if stats is not None else {}
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InvalidConfigError(f"input file not found: {path}") from None
    except OSError as exc:
        raise InvalidConfigError(f"cannot open input file {path}: {exc.strerror or exc}") from None
    with handle:
        reader = _open_reader(path, handle)
        decode = _link_decoder(path, reader.datalink())
        number = 0
        try:
            for timestamp, frame in reader:
                number += 1
                try:
                    packet = decode(frame)
                except (dpkt.UnpackError, ValueError, IndexError, OSError):
                    counts["undecodable"] = counts.get("undecodable", 0) + 1
                    continue
                if packet is None:
                    counts["not_ip"] = counts.get("not_ip", 0) + 1
                    continue
                packet.time = float(timestamp)
                packet.number = number
                yield packet
        except (dpkt.NeedData, dpkt.UnpackError, ValueError) as exc:
            yield Rejection(path, number + 1, None, f"capture truncated or corrupt after packet {number}: {exc}")


def _open_reader(path: str, handle) -> dpkt.pcap.Reader | dpkt.pcapng.Reader:  # type: ignore[no-untyped-def]
    magic = handle.read(4)
    handle.seek(0)
    try:
        if magic == b"\x0a\x0d\x0d\x0a":
            return dpkt.pcapng.Reader(handle)
        return dpkt.pcap.Reader(handle)
    except (ValueError, dpkt.NeedData, dpkt.UnpackError) as exc:
        raise InvalidConfigError(f"{path}: not a pcap or pcapng capture ({exc})") from None


def _link_decoder(path: str, datalink: int):  # type: ignore[no-untyped-def]
    if datalink == dpkt.pcap.DLT_EN10MB:
        layer = dpkt.ethernet.Ethernet
    elif datalink == dpkt.pcap.DLT_LINUX_SLL:
        layer = dpkt.sll.SLL
    elif datalink == 276:  # DLT_LINUX_SLL2
        layer = dpkt.sll2.SLL2
    elif datalink in (dpkt.pcap.DLT_RAW, 12, 101, 228, 229):  # raw IP; 228 IPv4 only, 229 IPv6 only
        layer = None
    elif datalink in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        layer = dpkt.loopback.Loopback
    else:
        raise InvalidConfigError(f"{path}: unsupported link type {datalink}; expected Ethernet, Linux cooked capture, raw IP or loopback")

    def decode(frame: bytes) -> Packet | None:
        if layer is None:
            ip = dpkt.ip6.IP6(frame) if frame and frame[0] >> 4 == 6 else dpkt.ip.IP(frame)
        else:
            ip = layer(frame).data
        return _from_ip(ip)

    return decode


def _from_ip(ip: object) -> Packet | None:
    if isinstance(ip, dpkt.ip.IP):
        src, dst, size = socket.inet_ntop(socket.AF_INET, ip.src), socket.inet_ntop(socket.AF_INET, ip.dst), ip.len
    elif isinstance(ip, dpkt.ip6.IP6):
        src, dst, size = socket.inet_ntop(socket.AF_INET6, ip.src), socket.inet_ntop(socket.AF_INET6, ip.dst), ip.plen + 40
    else:
        return None
    transport = ip.data
    if isinstance(transport, dpkt.tcp.TCP):
        return Packet(0.0, src, transport.sport, dst, transport.dport, "tcp", size, transport.flags, bytes(transport.data), seq=transport.seq)
    if isinstance(transport, dpkt.udp.UDP):
        return Packet(0.0, src, transport.sport, dst, transport.dport, "udp", size)
    if isinstance(transport, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
        return Packet(0.0, src, 0, dst, transport.type, "icmp", size)
    return Packet(0.0, src, 0, dst, 0, str(getattr(ip, "p", getattr(ip, "nxt", 0))), size)


class _Connection:
    __slots__ = ("auth_failed", "dst", "dport", "dst_bytes", "dst_packets", "fin_dst", "fin_src", "first", "last",
                 "number", "proto", "rst_dst", "rst_src", "sport", "src", "src_bytes", "src_packets",
                 "syn_src", "synack_dst", "closed_at")

    def __init__(self, packet: Packet) -> None:
        self.src, self.sport, self.dst, self.dport, self.proto = packet.src, packet.sport, packet.dst, packet.dport, packet.proto
        # A SYN-ACK seen first means the capture missed the SYN: keep the originator the SYN's sender.
        if packet.proto == "tcp" and packet.flags & dpkt.tcp.TH_SYN and packet.flags & dpkt.tcp.TH_ACK:
            self.src, self.sport, self.dst, self.dport = packet.dst, packet.dport, packet.src, packet.sport
        self.first = self.last = packet.time
        self.number = packet.number
        self.src_bytes = self.dst_bytes = 0
        self.src_packets = self.dst_packets = 0
        self.syn_src = self.synack_dst = self.fin_src = self.fin_dst = self.rst_src = self.rst_dst = False
        self.auth_failed: bool | None = None
        self.closed_at: float | None = None

    def state(self) -> str:
        """Zeek-like conn_state (a subset: S0, S1, SF, REJ, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH)."""
        if self.proto != "tcp":
            return "SF" if self.dst_packets else "S0"
        if not self.syn_src:
            if self.synack_dst:
                return "RSTRH" if self.rst_dst else "SHR"
            return "OTH"
        if not self.synack_dst:
            if self.rst_dst:
                return "REJ"
            if self.rst_src:
                return "RSTOS0"
            return "SH" if self.fin_src else "S0"
        if self.rst_src:
            return "RSTO"
        if self.rst_dst:
            return "RSTR"
        if self.fin_src and self.fin_dst:
            return "SF"
        return "S1"

    def to_flow(self, source: str) -> Flow:
        service = "mqtt" if self.dport in _MQTT_PORTS else ""
        return Flow(
            time=self.first, src=self.src, sport=self.sport, dst=self.dst, dport=self.dport, proto=self.proto,
            duration=self.last - self.first, src_bytes=float(self.src_bytes), dst_bytes=float(self.dst_bytes),
            src_packets=float(self.src_packets), dst_packets=float(self.dst_packets), state=self.state(),
            service=service, auth_failed=self.auth_failed, source=source, line=self.number,
        )


class ConnectionTracker:
    """Turn TCP and UDP packets into flows, logged when a connection ends or times out."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.connections: dict[tuple, _Connection] = {}
        self._last_sweep = float("-inf")

    def add(self, packet: Packet) -> Iterator[Flow]:
        """Add one packet; yield flows that ended by its time."""
        if packet.time - self._last_sweep >= 1.0:
            yield from self.expire(packet.time)
            self._last_sweep = packet.time
        if packet.proto not in ("tcp", "udp"):
            return
        forward = (packet.proto, packet.src, packet.sport, packet.dst, packet.dport)
        backward = (packet.proto, packet.dst, packet.dport, packet.src, packet.sport)
        key = forward if forward in self.connections else backward if backward in self.connections else None
        if key is not None and self.connections[key].closed_at is not None and packet.flags & dpkt.tcp.TH_SYN and not packet.flags & dpkt.tcp.TH_ACK:
            yield self.connections.pop(key).to_flow(self.source)  # a new connection reuses the closed one's ports
            key = None
        if key is None:
            connection = _Connection(packet)
            key = (packet.proto, connection.src, connection.sport, connection.dst, connection.dport)
            self.connections[key] = connection
        connection = self.connections[key]
        self._update(connection, packet)

    def _update(self, connection: _Connection, packet: Packet) -> None:
        from_src = packet.src == connection.src and packet.sport == connection.sport
        connection.last = max(connection.last, packet.time)
        payload = len(packet.payload) if packet.proto == "tcp" else max(0, packet.size - 28)
        if from_src:
            connection.src_bytes += payload
            connection.src_packets += 1
        else:
            connection.dst_bytes += payload
            connection.dst_packets += 1
        if packet.proto != "tcp":
            return
        flags = packet.flags
        if flags & dpkt.tcp.TH_SYN:
            if flags & dpkt.tcp.TH_ACK:
                connection.synack_dst |= not from_src
            else:
                connection.syn_src |= from_src
        if flags & dpkt.tcp.TH_FIN:
            connection.fin_src |= from_src
            connection.fin_dst |= not from_src
        if flags & dpkt.tcp.TH_RST:
            connection.rst_src |= from_src
            connection.rst_dst |= not from_src
        if (flags & dpkt.tcp.TH_RST) or (connection.fin_src and connection.fin_dst):
            connection.closed_at = packet.time if connection.closed_at is None else connection.closed_at
        if not from_src and connection.sport not in _MQTT_PORTS and connection.dport in _MQTT_PORTS:
            _read_connack(connection, packet.payload)

    def expire(self, time: float) -> Iterator[Flow]:
        """Yield and forget connections that ended or went idle by ``time``."""
        done = []
        for key, connection in self.connections.items():
            if connection.closed_at is not None:
                if time - connection.closed_at >= _CLOSE_LINGER:
                    done.append(key)
            elif connection.proto == "tcp" and not connection.synack_dst and time - connection.first >= _HANDSHAKE_TIMEOUT and not connection.dst_packets:
                done.append(key)
            elif time - connection.last >= (_TCP_IDLE if connection.proto == "tcp" else _UDP_IDLE):
                done.append(key)
        for key in done:
            yield self.connections.pop(key).to_flow(self.source)

    def flush(self) -> Iterator[Flow]:
        """Yield every connection still tracked (end of capture)."""
        connections, self.connections = self.connections, {}
        for connection in sorted(connections.values(), key=lambda c: c.first):
            yield connection.to_flow(self.source)


def _read_connack(connection: _Connection, payload: bytes) -> None:
    # MQTT fixed header 0x20, remaining length 2 (3.1.1) or more (5.0), then
    # flags and the return (3.1.1) or reason (5.0) code; 0 means accepted.
    if len(payload) >= 4 and payload[0] == 0x20 and payload[1] >= 2:
        connection.auth_failed = payload[3] != 0


def read_pcap(
    paths: list[str],
    windows: FlowWindows,
    afterimage: AfterImage,
    *,
    fast_decay: float = 1.0,
    stats: dict[str, int] | None = None,
) -> Iterator[Observation | Alert | Rejection]:
    """Run the packets of ``paths`` through ``afterimage``, a connection tracker and ``windows``.

    ``windows.extra_metrics`` should be set by the caller (see
    :func:`iotwarden.sources.flows.formats.pcap_metrics`). ``fast_decay`` is
    the decay rate whose channel packet rate feeds the DDoS rule. MQTT
    PUBLISH packets that clients send to port 1883 feed the MQTT flood rule.
    """
    fast = afterimage.decay_index(fast_decay)
    for path in paths:
        tracker = ConnectionTracker(path)
        mqtt = MqttStreams()
        windows.source = path
        for packet in decode_packets(path, stats):
            if isinstance(packet, Rejection):
                yield packet
                break
            afterimage.update(packet.time, packet.src, packet.sport, packet.dst, packet.dport, packet.size)
            channel, _ = afterimage.channel(packet.src, packet.dst)
            channel_pps = channel.rate(fast) if channel is not None else 0.0
            yield from windows.add_packet(packet.time, packet.src, packet.dst, packet.size, channel_pps)
            if packet.proto == "tcp" and packet.dport in _MQTT_PORTS and packet.sport not in _MQTT_PORTS:
                published = mqtt.add(packet.src, packet.sport, packet.dst, packet.dport, packet.seq, packet.flags, packet.payload)
                if published:
                    yield from windows.add_mqtt_publishes(packet.time, packet.src, packet.dst, published)
            for flow in tracker.add(packet):
                yield from windows.add_flow(flow, count_volume=False)
        for flow in tracker.flush():
            yield from windows.add_flow(flow, count_volume=False)
        if mqtt.unframed:
            logger.info("%s: stopped counting MQTT messages on %d client streams (missed segments or not MQTT)", path, mqtt.unframed)
    yield from windows.finish()
