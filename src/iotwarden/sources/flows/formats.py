"""The ``zeek``, ``flows-csv`` and ``pcap`` input formats of ``iotwarden detect``.

Each reader takes the input paths and keyword options and yields window
observations (one per internal host per window), rule alerts and
rejections. Options (all optional; unknown ones such as ``device`` are
ignored, because a flow names its own hosts):

* ``window``, ``grace`` and every other field of
  :class:`~iotwarden.sources.flows.windows.FlowRules`;
* ``internal_networks``: CIDR blocks of the monitored devices (a list or
  a comma-separated string); default: see
  :class:`~iotwarden.sources.flows.records.InternalHosts`;
* ``decays`` (``pcap`` only): AfterImage decay rates in 1/s.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from iotwarden.decisions.alerts import Alert
from iotwarden.errors import InvalidConfigError
from iotwarden.observation import Observation, Rejection
from iotwarden.sources.flows.afterimage import DEFAULT_DECAYS, AfterImage
from iotwarden.sources.flows.csvflows import read_flow_csv
from iotwarden.sources.flows.pcap import read_pcap
from iotwarden.sources.flows.records import Flow, InternalHosts
from iotwarden.sources.flows.windows import FlowRules, FlowWindows
from iotwarden.sources.flows.zeek import read_zeek_conn
from iotwarden.sources.formats import register

__all__ = ["PCAP_METRICS", "flow_windows", "pcap_metrics", "read_flow_csv_format", "read_pcap_format", "read_zeek_format"]

logger = logging.getLogger(__name__)

PCAP_METRICS = ("pkt_rate", "pkt_size_mean", "pkt_size_std")
"""Metrics that ``pcap`` adds to each window: the host's sent-packet rate (packets/s),
mean and standard deviation of its packet sizes (bytes), damped with a 10 s half-life, at the window's end."""

_RULE_FIELDS = {f.name for f in dataclasses.fields(FlowRules)}
Item = Observation | Alert | Rejection


def flow_windows(options: dict[str, Any], *, record_firings: bool = False) -> FlowWindows:
    """Build the window aggregator from reader options, ignoring options it does not know."""
    rules_options = {name: options[name] for name in _RULE_FIELDS if options.get(name) is not None}
    networks = options.get("internal_networks")
    if isinstance(networks, str):
        networks = [part.strip() for part in networks.split(",") if part.strip()]
    try:
        internal = InternalHosts(networks)
    except ValueError as exc:
        raise InvalidConfigError(f"invalid internal_networks {networks!r}: {exc}") from None
    return FlowWindows(FlowRules(**rules_options), internal=internal, record_firings=record_firings)


def _read_flows(paths: list[str], read: Callable[[str], Iterable[Flow | Rejection]], windows: FlowWindows) -> Iterator[Item]:
    for path in paths:
        windows.source = path
        for item in read(path):
            if isinstance(item, Rejection):
                yield item
            else:
                yield from windows.add_flow(item)
    yield from windows.finish()
    if windows.late_flows:
        logger.info("%d flows arrived after their window closed and were counted in the next open one", windows.late_flows)


def read_zeek_format(paths: list[str], **options: Any) -> Iterator[Item]:
    """Read Zeek conn.log files (TSV or JSON lines) into window observations and rule alerts."""
    return _read_flows(list(paths), read_zeek_conn, flow_windows(options))


def read_flow_csv_format(paths: list[str], **options: Any) -> Iterator[Item]:
    """Read CSV flow exports into window observations and rule alerts."""
    time_format = options.get("time_format")
    return _read_flows(list(paths), lambda path: read_flow_csv(path, time_format=time_format), flow_windows(options))


def pcap_metrics(afterimage: AfterImage, decay: float = 0.1) -> Callable[[str, float], dict[str, float]]:
    """Return the ``extra_metrics`` hook that adds :data:`PCAP_METRICS` from ``afterimage``."""
    index = afterimage.decay_index(decay)

    def metrics(device: str, time: float) -> dict[str, float]:
        stat = afterimage.hosts.streams.get(device)
        if stat is None:
            return {"pkt_rate": 0.0}
        stat.decay_to(time)
        return {"pkt_rate": stat.rate(index), "pkt_size_mean": stat.mean(index), "pkt_size_std": stat.std(index)}

    return metrics


def read_pcap_format(paths: list[str], **options: Any) -> Iterator[Item]:
    """Read pcap or pcapng captures into window observations and rule alerts."""
    decays = options.get("decays") or DEFAULT_DECAYS
    try:
        afterimage = AfterImage(decays)
    except ValueError as exc:
        raise InvalidConfigError(str(exc)) from None
    windows = flow_windows(options)
    windows.extra_metrics = pcap_metrics(afterimage)
    stats: dict[str, int] = {}

    def run() -> Iterator[Item]:
        yield from read_pcap(list(paths), windows, afterimage, stats=stats)
        if stats:
            logger.info("skipped frames: %s", ", ".join(f"{count} {kind}" for kind, count in sorted(stats.items())))

    return run()


register("zeek", read_zeek_format, "Zeek conn.log (TSV or JSON lines): per-host window features and flow rules")
register("flows-csv", read_flow_csv_format, "CSV flow exports (src, dst, ports, proto, bytes, packets, duration)")
register("pcap", read_pcap_format, "pcap/pcapng captures: per-host window features, damped packet statistics and flow rules")
