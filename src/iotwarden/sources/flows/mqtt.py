"""Count MQTT control packets in the client-to-broker byte stream of TCP connections.

A client may put many MQTT packets into one TCP segment, and a sender with
segmentation offload or a capture with receive offload shows segments of
tens of kilobytes. Packets per second then do not measure how many
messages a client sends. :class:`MqttStreams` follows each connection's
byte stream by TCP sequence number and splits it at the MQTT fixed headers
(MQTT 3.1.1 and 5.0: a type and flags byte, then the remaining length in
one to four bytes), counting PUBLISH packets.

A stream stops being counted until its next SYN when it cannot be framed:
a gap in the sequence numbers (a segment the capture missed or truncated),
or a byte that is not a valid client-to-broker fixed header. A capture that
starts in the middle of a connection is framed from its first segment,
which usually starts an MQTT packet. When it does not, the header checks
stop the stream, usually within a few packets.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import dpkt

__all__ = ["PUBLISH", "MqttStreams"]

logger = logging.getLogger(__name__)

PUBLISH = 3
_SEQ_MODULUS = 1 << 32
# Control packet types a client sends, with the flags their first byte must
# carry (None for PUBLISH, whose flags are DUP, QoS and RETAIN). CONNACK,
# SUBACK, UNSUBACK and PINGRESP only come from the broker. Type 0 is reserved,
# and 15 is AUTH in MQTT 5.0.
_CLIENT_TYPES: dict[int, int | None] = {1: 0, 3: None, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 10: 2, 12: 0, 14: 0, 15: 0}


@dataclass
class _Stream:
    next_seq: int
    remaining: int = 0  # bytes of the current packet's variable header and payload still to skip
    header: bytearray = field(default_factory=bytearray)  # fixed header bytes read so far
    broken: bool = False


class MqttStreams:
    """Frame the client-to-broker direction of MQTT connections and count PUBLISH packets.

    Args:
        max_streams: Maximum streams followed at once. Beyond it the least
            recently active is dropped, and counting on it resumes at its next SYN.
    """

    def __init__(self, max_streams: int = 4096) -> None:
        self.max_streams = max_streams
        self.streams: OrderedDict[tuple[str, int, str, int], _Stream] = OrderedDict()
        self.unframed = 0

    def add(self, src: str, sport: int, dst: str, dport: int, seq: int, flags: int, payload: bytes) -> int:
        """Add one TCP segment sent by the client; return the PUBLISH packets whose fixed header ends in it."""
        key = (src, sport, dst, dport)
        if flags & dpkt.tcp.TH_SYN:
            self._store(key, _Stream(next_seq=(seq + 1) % _SEQ_MODULUS))
            return 0
        stream = self.streams.get(key)
        if stream is None:
            if not payload:
                return 0
            stream = self._store(key, _Stream(next_seq=seq))  # joined mid-connection
        else:
            self.streams.move_to_end(key)
        published = self._frame(key, stream, seq, payload) if payload and not stream.broken else 0
        if flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            del self.streams[key]
        return published

    def _store(self, key: tuple[str, int, str, int], stream: _Stream) -> _Stream:
        self.streams[key] = stream
        self.streams.move_to_end(key)
        if len(self.streams) > self.max_streams:
            self.streams.popitem(last=False)
        return stream

    def _frame(self, key: tuple[str, int, str, int], stream: _Stream, seq: int, payload: bytes) -> int:
        offset = (seq - stream.next_seq) % _SEQ_MODULUS
        if offset >= _SEQ_MODULUS // 2:
            offset -= _SEQ_MODULUS  # negative: the segment starts before the expected byte
        if offset > 0:
            self._break(key, stream, f"{offset} bytes missing from the capture")
            return 0
        if -offset >= len(payload):
            return 0  # a retransmission of bytes already framed
        data = payload[-offset:]
        stream.next_seq = (stream.next_seq + len(data)) % _SEQ_MODULUS

        published = 0
        index = 0
        while index < len(data):
            if stream.remaining:
                step = min(stream.remaining, len(data) - index)
                stream.remaining -= step
                index += step
                continue
            byte = data[index]
            index += 1
            header = stream.header
            header.append(byte)
            if len(header) == 1:
                packet_type, packet_flags = byte >> 4, byte & 0x0F
                if packet_type not in _CLIENT_TYPES:
                    self._break(key, stream, f"packet type {packet_type} is not sent by clients")
                    return published
                expected = _CLIENT_TYPES[packet_type]
                invalid_publish = expected is None and packet_flags & 0x06 == 0x06  # QoS 3
                if invalid_publish or (expected is not None and packet_flags != expected):
                    self._break(key, stream, f"invalid flags {packet_flags:#x} for packet type {packet_type}")
                    return published
                continue
            if byte & 0x80:
                if len(header) == 5:
                    self._break(key, stream, "remaining length longer than 4 bytes")
                    return published
                continue
            stream.remaining = sum((b & 0x7F) << (7 * i) for i, b in enumerate(header[1:]))
            if header[0] >> 4 == PUBLISH:
                published += 1
            header.clear()
        return published

    def _break(self, key: tuple[str, int, str, int], stream: _Stream, reason: str) -> None:
        stream.broken = True
        self.unframed += 1
        logger.debug("stopped counting MQTT packets from %s:%d to %s:%d: %s", *key, reason)
