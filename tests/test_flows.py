"""Flow readers, window features and rules on inline fixtures."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import dpkt
import pytest

from iotwarden.decisions.alerts import Alert
from iotwarden.observation import Observation, Rejection
from iotwarden.sources.flows import AfterImage, Flow, FlowRules, FlowWindows, InternalHosts, read_flow_csv, read_zeek_conn
from iotwarden.sources.flows.afterimage import DampedStat
from iotwarden.sources.flows.mqtt import MqttStreams
from iotwarden.sources.formats import format_names, read_format

ZEEK_HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\t"
    "conn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\tlabel\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\tstring\n"
)


def zeek_line(ts: float, src: str, dst: str, dport: int, state: str = "SF", duration: str = "0.5", orig: str = "100", resp: str = "200", label: str = "Benign") -> str:
    return f"{ts}\tC1\t{src}\t40000\t{dst}\t{dport}\ttcp\t-\t{duration}\t{orig}\t{resp}\t{state}\t-\t-\t0\tS\t2\t180\t2\t280\t(empty)\t{label}\n"


def run(windows: FlowWindows, flows: list[Flow]) -> list[object]:
    items: list[object] = []
    for flow in flows:
        items.extend(windows.add_flow(flow))
    items.extend(windows.finish())
    return items


def test_zeek_tsv_reads_unset_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "conn.log"
    path.write_text(ZEEK_HEADER + zeek_line(10.0, "192.168.1.5", "8.8.8.8", 53, duration="-", orig="-", resp="-", label="Malicious"))
    flows = list(read_zeek_conn(str(path), keep_labels=True))
    assert len(flows) == 1
    flow = flows[0]
    assert isinstance(flow, Flow)
    assert flow.duration == 0.0
    assert flow.src_bytes == 0.0
    assert flow.label == "Malicious"
    assert list(read_zeek_conn(str(path)))[0].label is None


def test_zeek_bad_line_names_field(tmp_path: Path) -> None:
    path = tmp_path / "conn.log"
    path.write_text(ZEEK_HEADER + zeek_line(10.0, "192.168.1.5", "8.8.8.8", 53, orig="lots") + "1.0\tshort\n")
    items = list(read_zeek_conn(str(path)))
    assert isinstance(items[0], Rejection)
    assert items[0].field == "orig_bytes"
    assert items[0].line == 8
    assert isinstance(items[1], Rejection)
    assert "fields" in items[1].reason


def test_zeek_json_gzip(tmp_path: Path) -> None:
    path = tmp_path / "conn.json.gz"
    rows = [{"ts": 1.0, "id.orig_h": "10.0.0.2", "id.orig_p": 5, "id.resp_h": "10.0.0.3", "id.resp_p": 22, "proto": "tcp", "conn_state": "REJ"},
            {"ts": 2.0, "id": {"orig_h": "10.0.0.2", "orig_p": 6, "resp_h": "not-an-ip", "resp_p": 22}}]
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    items = list(read_zeek_conn(str(path)))
    assert isinstance(items[0], Flow) and items[0].state == "REJ"
    assert isinstance(items[1], Rejection) and items[1].field == "id.resp_h"


def test_flow_csv_aliases(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text("start_time,srcaddr,dstaddr,sport,dport,protocol,bytes,packets,end_time\n"
                    "2024-05-01T10:00:00Z,10.1.1.1,1.2.3.4,5000,443,6,1500,3,2024-05-01T10:00:02Z\n"
                    "2024-05-01T10:00:01Z,10.1.1.1,1.2.3.4,5000,443,6,-5,3,2024-05-01T10:00:02Z\n")
    items = list(read_flow_csv(str(path)))
    flow = items[0]
    assert isinstance(flow, Flow)
    assert flow.proto == "tcp"
    assert flow.src_bytes == 1500
    assert flow.duration == 2.0
    assert isinstance(items[1], Rejection) and items[1].field == "bytes"


def test_port_scan_alerts_once_per_episode() -> None:
    flows = [Flow(60.0 + i * 0.2, "10.0.0.9", 40000, "10.0.0.20", port, "tcp", state="S0") for i, port in enumerate(range(1, 200))]
    items = run(FlowWindows(), flows)
    alerts = [i for i in items if isinstance(i, Alert)]
    by_device = {a.device: a.category for a in alerts}
    assert len(alerts) == 2
    assert by_device["10.0.0.9"] == "scan"
    assert by_device["10.0.0.20"] == "scanned"


def test_telnet_fan_out_is_scan() -> None:
    flows = [Flow(100.0 + i, "192.168.0.7", 40000, f"93.184.113.{i}", 23, "tcp", state="S0") for i in range(6)]
    alerts = [i for i in run(FlowWindows(), flows) if isinstance(i, Alert)]
    assert [a.details["peer"] for a in alerts] == ["telnet"]


def test_brute_force_on_mqtt() -> None:
    starts = [120.0, 121.0, 125.5, 126.0, 131.0, 138.0, 139.5, 144.0, 150.0, 151.0, 158.0, 160.0]
    flows = [Flow(starts[i], "192.168.1.90", 50000 + i, "192.168.1.91", 1883, "tcp", duration=0.1, state="SF", auth_failed=True) for i in range(12)]
    alerts = [i for i in run(FlowWindows(), flows) if isinstance(i, Alert)]
    assert {a.category for a in alerts} == {"brute_force"}
    assert {a.device for a in alerts} == {"192.168.1.90", "192.168.1.91"}


def test_beaconing_needs_regular_intervals() -> None:
    regular = [Flow(1000.0 + 30 * i, "10.0.0.4", 40000, "93.184.100.7", 1177, "tcp", state="S0") for i in range(12)]
    alerts = [i for i in run(FlowWindows(), regular) if isinstance(i, Alert)]
    assert [a.category for a in alerts] == ["beaconing"]
    irregular = [Flow(1000.0 + t, "10.0.0.4", 40000, "93.184.100.7", 1177, "tcp") for t in (0, 5, 90, 100, 400, 420, 700, 1300, 1310, 2000, 2100, 2900)]
    assert not [i for i in run(FlowWindows(), irregular) if isinstance(i, Alert)]


def test_exfiltration_to_new_destination() -> None:
    warm = [Flow(60.0 * k + (7 * k) % 23, "10.0.0.5", 40000, "93.184.100.1", 440 + k, "tcp", src_bytes=1000, src_packets=5) for k in range(1, 10)]
    burst = [Flow(620.0, "10.0.0.5", 40001, "93.184.113.50", 443, "tcp", src_bytes=8e6, src_packets=3000)]
    alerts = [i for i in run(FlowWindows(), warm + burst + [Flow(800.0, "10.0.0.5", 1, "93.184.100.1", 443, "tcp")]) if isinstance(i, Alert)]
    assert [a.category for a in alerts] == ["exfiltration"]
    assert alerts[0].details["peer"] == "93.184.113.50"


def test_window_metrics_and_partial_windows() -> None:
    flows = [Flow(30.0 + 60 * k, "10.0.0.5", 40000, "93.184.100.1", 443, "tcp", src_bytes=100, dst_bytes=50, src_packets=2, dst_packets=1) for k in range(5)]
    observations = [i for i in run(FlowWindows(FlowRules(grace=0)), flows) if isinstance(i, Observation)]
    # The first window starts before the first flow and the last ends after the input: neither is emitted.
    assert [o.time for o in observations] == [60.0, 120.0, 180.0]
    assert observations[0].metrics["bytes_out"] == 100
    assert observations[0].metrics["new_dsts"] == 0
    assert "label" not in observations[0].metrics


def test_internal_hosts_networks() -> None:
    internal = InternalHosts(["147.32.0.0/16"])
    flow = Flow(0.0, "147.32.81.167", 1, "8.8.8.8", 53, "udp")
    assert internal.devices(flow) == (True, False)
    assert InternalHosts().devices(Flow(0.0, "192.168.1.2", 1, "224.0.0.252", 5355, "udp")) == (True, False)


def test_damped_stat_rate_settles() -> None:
    stat = DampedStat((1.0,))
    for i in range(2000):
        stat.update(i * 0.1, 100.0)
    assert stat.rate(0) == pytest.approx(10.0, rel=0.05)
    assert stat.mean(0) == pytest.approx(100.0)
    assert stat.std(0) == pytest.approx(0.0, abs=1e-3)


def test_afterimage_host_features() -> None:
    image = AfterImage((1.0, 0.1))
    image.update(0.0, "a", 1, "b", 2, 100)
    image.update(1.0, "a", 1, "b", 2, 300)
    features = image.host_features("a", 1.0)
    assert features["size_mean_l0.1"] == pytest.approx(200.0, rel=0.05)
    assert image.host_features("zzz", 1.0)["size_w_l1"] == 0.0


def test_formats_registered() -> None:
    names = format_names()
    for name in ("zeek", "pcap", "flows-csv", "sim"):
        assert name in names


def test_zeek_format_ignores_device_and_drops_labels(tmp_path: Path) -> None:
    path = tmp_path / "conn.log"
    lines = [zeek_line(60.0 * k + 1, "192.168.1.5", "8.8.8.8", 53, label="Malicious") for k in range(4)]
    path.write_text(ZEEK_HEADER + "".join(lines))
    items = list(read_format("zeek", [str(path)], device="ignored", unknown_option=1))
    observations = [i for i in items if isinstance(i, Observation)]
    assert observations
    assert all("label" not in o.metrics and "label" not in o.attributes for o in observations)


def publish(topic: bytes, payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + payload
    length = len(body)
    encoded = bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([0x30]) + bytes(encoded) + body


def test_mqtt_streams_frame_across_segments() -> None:
    packets = [publish(b"t", b"x" * size) for size in (5, 200, 20000, 1)]  # remaining lengths of 1, 2, 3 and 1 bytes
    stream = b"".join(packets) + b"\xc0\x00"  # PINGREQ last
    streams = MqttStreams()
    assert streams.add("10.0.0.2", 40000, "10.0.0.3", 1883, 999, dpkt.tcp.TH_SYN, b"") == 0
    # Cut inside the second packet's remaining length, then just before the last PUBLISH and inside its fixed header.
    last = len(stream) - 2 - len(packets[3])
    cuts = [0, len(packets[0]) + 2, last - 1, last + 1, len(stream)]
    counts = [streams.add("10.0.0.2", 40000, "10.0.0.3", 1883, 1000 + a, dpkt.tcp.TH_ACK, stream[a:b]) for a, b in zip(cuts, cuts[1:])]
    assert counts == [1, 2, 0, 1]
    assert streams.add("10.0.0.2", 40000, "10.0.0.3", 1883, 1000, dpkt.tcp.TH_ACK, stream[:9]) == 0  # retransmission
    assert streams.unframed == 0


def test_mqtt_streams_stop_on_gap_or_broker_packet() -> None:
    streams = MqttStreams()
    message = publish(b"t", b"hello")
    assert streams.add("10.0.0.2", 40000, "10.0.0.3", 1883, 5000, dpkt.tcp.TH_ACK, message) == 1
    assert streams.add("10.0.0.2", 40000, "10.0.0.3", 1883, 5000 + 2 * len(message), dpkt.tcp.TH_ACK, message) == 0
    assert streams.unframed == 1
    assert streams.add("10.0.0.2", 40000, "10.0.0.3", 1883, 5000 + 3 * len(message), dpkt.tcp.TH_ACK, message) == 0
    # A CONNACK (type 2) only comes from brokers, so a client stream containing one is not MQTT or is misaligned.
    assert streams.add("10.0.0.2", 40001, "10.0.0.3", 1883, 7, dpkt.tcp.TH_ACK, b"\x20\x02\x00\x00" + message) == 0
    assert streams.unframed == 2
    # A new connection on the same ports is framed again.
    streams.add("10.0.0.2", 40000, "10.0.0.3", 1883, 100, dpkt.tcp.TH_SYN, b"")
    assert streams.add("10.0.0.2", 40000, "10.0.0.3", 1883, 101, dpkt.tcp.TH_ACK, message * 3) == 3


def publish_alerts(windows: FlowWindows, bursts: list[tuple[float, int]]) -> list[Alert]:
    items: list[object] = []
    for time, count in bursts:
        items.extend(windows.add_mqtt_publishes(time, "192.168.1.100", "192.168.1.10", count))
    items.extend(windows.finish())
    return [i for i in items if isinstance(i, Alert)]


def test_mqtt_flood_alerts_client_and_broker() -> None:
    alerts = publish_alerts(FlowWindows(), [(1000.0 + 2 * i, 2000) for i in range(5)])
    assert sorted((a.device, a.category, a.details["direction"]) for a in alerts) == [
        ("192.168.1.10", "mqtt_flood", "inbound"), ("192.168.1.100", "mqtt_flood", "outbound")]
    assert alerts[0].details["peer"] in ("192.168.1.10", "192.168.1.100")
    assert all(a.score > 1 for a in alerts)


def test_mqtt_publish_rate_normal_or_flush() -> None:
    assert publish_alerts(FlowWindows(), [(1000.0 + i, 1) for i in range(300)]) == []
    # A client reconnecting after an outage sends its 500 queued messages at once.
    assert publish_alerts(FlowWindows(), [(1000.0 + i, 1) for i in range(100)] + [(1100.0, 500)]) == []


def write_capture(path: Path, segments: list[tuple[float, str, int, str, int, int, int, bytes]]) -> None:
    with path.open("wb") as stream:
        writer = dpkt.pcap.Writer(stream)
        for time, src, sport, dst, dport, seq, flags, payload in segments:
            tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=payload)
            ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_TCP, data=tcp)
            ip.len = len(ip)
            writer.writepkt(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip), ts=time)


def test_pcap_publish_flood_in_large_segments(tmp_path: Path) -> None:
    # Every 2 s the client writes 2000 small PUBLISH packets as two 17 kB segments, as offload shows them.
    burst = publish(b"Temperature", b"640") * 2000
    half = len(burst) // 2
    segments = []
    seq = 1
    for i in range(6):
        for part in (burst[:half], burst[half:]):
            segments.append((1000.0 + 2 * i, "192.168.1.100", 42859, "10.16.100.73", 1883, seq, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, part))
            seq += len(part)
    write_capture(tmp_path / "flood.pcap", segments)
    alerts = [i for i in read_format("pcap", [str(tmp_path / "flood.pcap")]) if isinstance(i, Alert)]
    assert {(a.device, a.category) for a in alerts} == {("192.168.1.100", "mqtt_flood"), ("10.16.100.73", "mqtt_flood")}


def test_unsolicited_inbound_alerts_once() -> None:
    probes = [Flow(100.0 + 7 * i, f"45.140.140.{i}", 40000, "192.168.5.5", port, "tcp", state="S0")
              for i, port in enumerate([23, 445, 22, 23, 5555, 81] * 5)]
    windows = FlowWindows(record_firings=True)
    alerts = [i for i in run(windows, probes) if isinstance(i, Alert)]
    assert [(a.device, a.category, a.severity) for a in alerts] == [("192.168.5.5", "unsolicited_inbound", "low")]
    assert alerts[0].details["ports"] == [22, 23, 445]  # the first window: probes at 100, 107 and 114 s
    assert windows.firings is not None
    assert {f.peer for f in windows.firings} == {f"45.140.140.{i}" for i in range(30)}


def test_unsolicited_inbound_needs_stranger_and_failure() -> None:
    contacted = [Flow(50.0, "192.168.5.5", 40000, "93.184.100.7", 443, "tcp", state="SF"),
                 Flow(100.0, "93.184.100.7", 40001, "192.168.5.5", 8080, "tcp", state="S0")]
    answered = [Flow(100.0, "93.184.100.8", 40001, "192.168.5.5", 8080, "tcp", state="SF", duration=20.0)]
    internal = [Flow(100.0, "192.168.5.9", 40001, "192.168.5.5", 8080, "tcp", state="S0")]
    for flows in (contacted, answered, internal):
        alerts = [i for i in run(FlowWindows(), [*flows, Flow(400.0, "192.168.5.5", 1, "93.184.100.7", 443, "tcp")]) if isinstance(i, Alert)]
        assert alerts == []
