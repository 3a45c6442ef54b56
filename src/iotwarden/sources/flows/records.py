"""The flow record that every flow reader produces, and who counts as a device.

A :class:`Flow` is one connection summary in the shape of a Zeek conn.log
row: the originator (``src``) opened it to the responder (``dst``). Readers
of Zeek logs, CSV flow exports and packet captures all produce flows, and
:class:`~iotwarden.sources.flows.windows.FlowWindows` turns them into
per-device observations and rule-based alerts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["FAILED_STATES", "UNANSWERED_STATES", "ZEEK_STATES", "Flow", "InternalHosts", "parse_address"]

# Zeek conn_state values that count as a failed or rejected connection:
# S0 (SYN without answer), REJ (answered by RST), RSTO/RSTR (reset before or
# after the handshake, by originator or responder), RSTOS0 (originator sent
# SYN then RST), RSTRH (responder SYN-ACK then RST, no originator SYN seen),
# SH/SHR (half-open: only one side's SYN or SYN-ACK then FIN), and OTH (no
# SYN seen, midstream traffic). SF, S1, S2, S3 are established connections.
FAILED_STATES = frozenset({"S0", "REJ", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"})

# States where the responder never completed a handshake: the port was
# closed, filtered or the host absent. Scanning and brute-force rules count
# these; RSTO and RSTR after a completed handshake are counted as failed only.
UNANSWERED_STATES = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR"})

ZEEK_STATES = FAILED_STATES | {"SF", "S1", "S2", "S3"}


@dataclass(slots=True)
class Flow:
    """One connection summary.

    Attributes:
        time: Start of the connection, epoch seconds UTC.
        src: Originator address (Zeek ``id.orig_h``).
        sport: Originator port; 0 when the protocol has none.
        dst: Responder address (``id.resp_h``).
        dport: Responder port, or the ICMP type for ICMP.
        proto: ``tcp``, ``udp``, ``icmp`` or another lower-case name.
        duration: Seconds from first to last packet; 0 when unknown.
        src_bytes: Payload bytes sent by the originator; 0 when unknown.
        dst_bytes: Payload bytes sent by the responder.
        src_packets: Packets sent by the originator; 0 when unknown.
        dst_packets: Packets sent by the responder.
        state: Zeek ``conn_state`` or an equivalent (see :data:`FAILED_STATES`);
            empty when unknown.
        service: Application protocol if known (``dns``, ``http``, ``mqtt``).
        local_src: Whether the originator is internal, from Zeek
            ``local_orig``; None when the log does not say.
        local_dst: Whether the responder is internal (``local_resp``).
        auth_failed: The application refused the login (an MQTT CONNACK
            with a non-zero return code); None when unknown.
        source: File the flow came from.
        line: Line (or first packet number, for captures) in ``source``.
        label: Ground-truth label kept for scoring only; readers fill it only
            when asked and it never reaches an observation.
    """

    time: float
    src: str
    sport: int
    dst: str
    dport: int
    proto: str
    duration: float = 0.0
    src_bytes: float = 0.0
    dst_bytes: float = 0.0
    src_packets: float = 0.0
    dst_packets: float = 0.0
    state: str = ""
    service: str = ""
    local_src: bool | None = None
    local_dst: bool | None = None
    auth_failed: bool | None = None
    source: str = ""
    line: int | None = None
    label: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the connection failed or was rejected (see :data:`FAILED_STATES`)."""
        return self.state in FAILED_STATES or bool(self.auth_failed)

    @property
    def unanswered(self) -> bool:
        """Whether the responder never completed a handshake (see :data:`UNANSWERED_STATES`)."""
        return self.state in UNANSWERED_STATES


class InternalHosts:
    """Decide which addresses are the monitored devices.

    With ``networks`` given, an address is internal exactly when it lies in
    one of them. Without, a flow's Zeek ``local_orig``/``local_resp`` flags
    decide when the log has them, and otherwise private, link-local,
    loopback and unique-local addresses (RFC 1918, RFC 3927, RFC 4193) are
    internal. Multicast and broadcast destinations are never devices.
    """

    def __init__(self, networks: Iterable[str] | None = None) -> None:
        self.networks = None if networks is None else tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def devices(self, flow: Flow) -> tuple[bool, bool]:
        """Return whether the originator and the responder are monitored devices."""
        if self.networks is not None:
            return self._in_networks(flow.src), self._in_networks(flow.dst)
        src_local = flow.local_src if flow.local_src is not None else _is_private(flow.src)
        dst_local = flow.local_dst if flow.local_dst is not None else _is_private(flow.dst)
        return src_local and not _is_group(flow.src), dst_local and not _is_group(flow.dst)

    def _in_networks(self, address: str) -> bool:
        parsed = parse_address(address)
        if parsed is None or _is_group(address):
            return False
        assert self.networks is not None
        return any(parsed.version == net.version and parsed in net for net in self.networks)


@lru_cache(maxsize=65536)
def parse_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _is_private(address: str) -> bool:
    parsed = parse_address(address)
    if parsed is None:
        return False
    return parsed.is_private and not parsed.is_unspecified


@lru_cache(maxsize=65536)
def _is_group(address: str) -> bool:
    parsed = parse_address(address)
    if parsed is None:
        return True
    if parsed.is_multicast or parsed.is_unspecified:
        return True
    # NOTE: without the netmask, an IPv4 address ending in .255 is taken to be
    # a directed broadcast; a host with such an address in a wider network is missed.
    return parsed.version == 4 and (address == "255.255.255.255" or address.endswith(".255"))
