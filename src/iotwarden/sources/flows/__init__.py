"""Network flows: Zeek conn logs, CSV flow exports and packet captures.

Readers turn their input into :class:`Flow` records; :class:`FlowWindows`
aggregates flows into one observation per internal host per window and
raises rule alerts (scan, brute force, DDoS, MQTT flood, exfiltration,
beaconing, unsolicited inbound attempts).
:mod:`iotwarden.sources.flows.formats` registers the ``zeek``,
``flows-csv`` and ``pcap`` formats of ``iotwarden detect``.
"""

from iotwarden.sources.flows.afterimage import AfterImage, DampedStat
from iotwarden.sources.flows.csvflows import read_flow_csv
from iotwarden.sources.flows.records import FAILED_STATES, Flow, InternalHosts
from iotwarden.sources.flows.windows import WINDOW_METRICS, FlowRules, FlowWindows, RuleFiring
from iotwarden.sources.flows.zeek import read_zeek_conn

__all__ = [
    "FAILED_STATES",
    "WINDOW_METRICS",
    "AfterImage",
    "DampedStat",
    "Flow",
    "FlowRules",
    "FlowWindows",
    "InternalHosts",
    "RuleFiring",
    "read_flow_csv",
    "read_zeek_conn",
]
