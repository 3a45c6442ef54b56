"""Read flow exports in CSV (NetFlow/IPFIX collectors, Argus, CICFlowMeter-like tools).

Columns are found by name, case-insensitively, from the aliases in
:data:`COLUMN_ALIASES`; the first alias present wins. Required: a start
time, a source and a destination address. Byte and packet counts may be
given per direction (``src_bytes``/``dst_bytes``) or as one total
(``bytes``), which is then counted as sent by the source, as one-way
NetFlow records are. The duration is read directly or computed from an end
time. Protocol numbers 1, 6 and 17 become ``icmp``, ``tcp`` and ``udp``.
Times are ISO 8601 or epoch numbers (see :mod:`iotwarden.sources.timeparse`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from typing import TextIO

from iotwarden.errors import InvalidConfigError, InvalidRecordError
from iotwarden.observation import Rejection
from iotwarden.sources.flows.records import ZEEK_STATES, Flow
from iotwarden.sources.files import open_text
from iotwarden.sources.timeparse import TimeParser

__all__ = ["COLUMN_ALIASES", "read_flow_csv"]

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("ts", "time", "timestamp", "start", "start_time", "stime", "first_seen", "flow_start", "te"),
    "end": ("end", "end_time", "etime", "last_seen", "flow_end"),
    "src": ("src", "src_ip", "srcip", "srcaddr", "src_addr", "saddr", "source", "sa", "id.orig_h"),
    "dst": ("dst", "dst_ip", "dstip", "dstaddr", "dst_addr", "daddr", "destination", "da", "id.resp_h"),
    "sport": ("sport", "src_port", "srcport", "sp", "id.orig_p"),
    "dport": ("dport", "dst_port", "dstport", "dp", "id.resp_p"),
    "proto": ("proto", "protocol", "pr"),
    "duration": ("duration", "dur", "td"),
    "src_bytes": ("src_bytes", "orig_bytes", "sbytes", "bytes_out", "out_bytes", "ibyt"),
    "dst_bytes": ("dst_bytes", "resp_bytes", "dbytes", "bytes_in", "in_bytes", "obyt"),
    "bytes": ("bytes", "totbytes", "tot_bytes", "octets", "byt"),
    "src_packets": ("src_pkts", "src_packets", "orig_pkts", "spkts", "pkts_out", "out_pkts", "ipkt"),
    "dst_packets": ("dst_pkts", "dst_packets", "resp_pkts", "dpkts", "pkts_in", "in_pkts", "opkt"),
    "packets": ("packets", "pkts", "totpkts", "tot_pkts", "pkt"),
    "state": ("conn_state", "state", "flags"),
    "label": ("label", "detailedlabel", "attack", "class"),
}
_REQUIRED = ("time", "src", "dst")
_PROTOCOL_NUMBERS = {"1": "icmp", "6": "tcp", "17": "udp", "58": "ipv6-icmp"}


def read_flow_csv(path: str, *, keep_labels: bool = False, time_format: str | None = None) -> Iterator[Flow | Rejection]:
    """Yield a :class:`Flow` per row of the CSV flow export ``path`` and a Rejection per bad row.

    Raises:
        InvalidConfigError: the file has no header or lacks a required column.
    """
    parser = TimeParser(time_format)
    with open_text(path) as stream:
        yield from _read(path, stream, parser, keep_labels)


def _read(path: str, stream: TextIO, parser: TimeParser, keep_labels: bool) -> Iterator[Flow | Rejection]:
    header_text = stream.readline().lstrip("\ufeff")
    if not header_text.strip():
        raise InvalidConfigError(f"{path}: empty file, expected a CSV header naming at least {', '.join(_REQUIRED)}")
    delimiter = max(",;\t|", key=header_text.count)
    header = [name.strip() for name in next(csv.reader([header_text], delimiter=delimiter))]
    columns = _map_columns(path, header)
    reader = csv.reader(stream, delimiter=delimiter)
    for number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield Rejection(path, number, None, f"expected {len(header)} columns, found {len(row)}", raw=delimiter.join(row))
            continue
        try:
            yield _flow(row, columns, parser, path, number, keep_labels)
        except InvalidRecordError as exc:
            yield Rejection(path, number, exc.field, exc.reason, raw=delimiter.join(row))


def _map_columns(path: str, header: list[str]) -> dict[str, tuple[int, str]]:
    lowered = {name.lower(): index for index, name in enumerate(header)}
    columns: dict[str, tuple[int, str]] = {}
    for role, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                columns[role] = (lowered[alias], header[lowered[alias]])
                break
    missing = [role for role in _REQUIRED if role not in columns]
    if missing:
        expected = "; ".join(f"{role}: one of {', '.join(COLUMN_ALIASES[role])}" for role in missing)
        raise InvalidConfigError(f"{path}: missing flow column(s) {', '.join(missing)} ({expected})")
    return columns


def _flow(row: list[str], columns: dict[str, tuple[int, str]], parser: TimeParser, path: str, line: int, keep_labels: bool) -> Flow:
    def text(role: str) -> str:
        entry = columns.get(role)
        return row[entry[0]].strip() if entry is not None else ""

    def number(role: str) -> float:
        value = text(role)
        if value in ("", "-"):
            return 0.0
        try:
            parsed = float(value)
        except ValueError:
            raise InvalidRecordError(f"invalid number {value!r}", field=columns[role][1]) from None
        if not math.isfinite(parsed) or parsed < 0:
            raise InvalidRecordError(f"invalid number {value!r}: expected a finite value >= 0", field=columns[role][1])
        return parsed

    def moment(role: str) -> float:
        try:
            return parser.parse(text(role))
        except ValueError as exc:
            raise InvalidRecordError(f"invalid time: {exc}", field=columns[role][1]) from None

    start = moment("time")
    duration = number("duration")
    if "duration" not in columns and "end" in columns and text("end"):
        duration = max(0.0, moment("end") - start)
    src, dst = text("src"), text("dst")
    if not src:
        raise InvalidRecordError("missing source address", field=columns["src"][1])
    if not dst:
        raise InvalidRecordError("missing destination address", field=columns["dst"][1])
    src_bytes = number("src_bytes") if "src_bytes" in columns else number("bytes")
    src_packets = number("src_packets") if "src_packets" in columns else number("packets")
    proto = text("proto").lower()
    return Flow(
        time=start,
        src=src,
        sport=int(number("sport")),
        dst=dst,
        dport=int(number("dport")),
        proto=_PROTOCOL_NUMBERS.get(proto, proto),
        duration=duration,
        src_bytes=src_bytes,
        dst_bytes=number("dst_bytes"),
        src_packets=src_packets,
        dst_packets=number("dst_packets"),
        state=_zeek_state(text("state")),
        source=path,
        line=line,
        label=(text("label") or None) if keep_labels else None,
    )


def _zeek_state(text: str) -> str:
    upper = text.upper()
    return upper if upper in ZEEK_STATES else text
