"""LoRaWAN sources: network-server events and packet-forwarder captures.

* :func:`parse_event` parses one ChirpStack v3/v4, The Things Stack v3 or
  Helium event (an MQTT message or a JSON line).
* :class:`LorawanMonitor` keeps per-device state. It collapses copies of a
  frame heard by several gateways, accounts frame counters and turns each
  uplink into an observation. Its rules raise replay, counter, join-flood,
  gateway-change and jamming alerts.
* :mod:`~iotwarden.sources.lorawan.semtech` reads Semtech UDP packet
  forwarder captures; :mod:`~iotwarden.sources.lorawan.frames` decodes
  LoRaWAN 1.0.x PHYPayloads.
* :mod:`~iotwarden.sources.lorawan.formats` registers the ``chirpstack``,
  ``tts``, ``helium`` and ``semtech-pcap`` input formats.
"""

from iotwarden.sources.lorawan.events import EventKind, LorawanEvent, Reception, decode_event, normalise_eui
from iotwarden.sources.lorawan.frames import DataFrame, JoinRequest, parse_phy_payload
from iotwarden.sources.lorawan.jsonevents import parse_event, read_event_lines
from iotwarden.sources.lorawan.monitor import LINK_METRICS, LorawanMonitor, MonitorConfig
from iotwarden.sources.lorawan.semtech import parse_push_data, read_semtech_pcap

__all__ = [
    "DataFrame",
    "EventKind",
    "JoinRequest",
    "LINK_METRICS",
    "LorawanEvent",
    "LorawanMonitor",
    "MonitorConfig",
    "Reception",
    "decode_event",
    "normalise_eui",
    "parse_event",
    "parse_phy_payload",
    "parse_push_data",
    "read_event_lines",
    "read_semtech_pcap",
]
