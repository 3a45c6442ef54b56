"""The LoRaWAN input formats of ``iotwarden detect --format``.

Importing this module registers ``chirpstack``, ``tts``, ``helium`` and
``semtech-pcap``. Each reader takes the input paths and yields observations,
field issues, rejections and finished rule alerts. Options other than
``config`` (a :class:`~iotwarden.sources.lorawan.monitor.MonitorConfig`) and,
for captures, ``port`` are accepted and ignored: the command line passes
``device=``, but a LoRaWAN event names its device itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from iotwarden.observation import Rejection
from iotwarden.sources.formats import register
from iotwarden.sources.lorawan.jsonevents import DIALECTS, read_event_lines
from iotwarden.sources.lorawan.monitor import Item, MonitorConfig
from iotwarden.sources.lorawan.semtech import SEMTECH_PORT, read_semtech_pcap

__all__ = ["read_chirpstack", "read_helium", "read_semtech", "read_tts"]

logger = logging.getLogger(__name__)


def read_chirpstack(paths: list[str], *, config: MonitorConfig | None = None, **options: Any) -> Iterator[Item | Rejection]:
    """Read ChirpStack v3 and v4 integration events (JSON lines)."""
    _ignore(options)
    return read_event_lines(list(paths), dialects=DIALECTS["chirpstack"], format_name="chirpstack", config=config)


def read_tts(paths: list[str], *, config: MonitorConfig | None = None, **options: Any) -> Iterator[Item | Rejection]:
    """Read The Things Stack v3 uplink and join messages (JSON lines)."""
    _ignore(options)
    return read_event_lines(list(paths), dialects=DIALECTS["tts"], format_name="tts", config=config)


def read_helium(paths: list[str], *, config: MonitorConfig | None = None, **options: Any) -> Iterator[Item | Rejection]:
    """Read Helium console integration events (JSON lines)."""
    _ignore(options)
    return read_event_lines(list(paths), dialects=DIALECTS["helium"], format_name="helium", config=config)


def read_semtech(
    paths: list[str], *, config: MonitorConfig | None = None, port: int = SEMTECH_PORT, **options: Any
) -> Iterator[Item | Rejection]:
    """Read Semtech UDP packet-forwarder captures (pcap or pcapng)."""
    _ignore(options)
    return read_semtech_pcap(list(paths), port=port, config=config)


def _ignore(options: dict[str, Any]) -> None:
    given = {name: value for name, value in options.items() if value is not None}
    if given:
        logger.info("LoRaWAN readers take the device from each event; ignoring %s", ", ".join(sorted(given)))


register("chirpstack", read_chirpstack, "ChirpStack v3/v4 integration events, JSON lines (bare or {topic, payload})")
register("tts", read_tts, "The Things Stack v3 uplink and join messages, JSON lines")
register("helium", read_helium, "Helium console integration events, JSON lines")
register("semtech-pcap", read_semtech, "Semtech UDP packet-forwarder captures (pcap, UDP port 1700); needs dpkt")
