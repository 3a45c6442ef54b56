"""Score the flow detectors on the public Stratosphere Zeek logs and MQTTset captures.

Run ``python -m iotwarden.sources.flows.benchmark DATASETS_DIR`` (the
folder holding ``stratosphere_zeek/`` and ``mqttset/``); it prints a
Markdown report. Labels are read beside each flow for scoring and never
reach the detector: the reader that feeds the detector drops them.

Scoring: a window of a device is positive when a malicious flow of that
device ends in it; it is flagged when a rule held in it or the engine
opened an alert on it. A flow is flagged when its device's window was
flagged by the engine, or by a rule whose peer is the flow's remote host
(rules about many hosts flag every flow of the window).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from iotwarden.decisions.alerts import Alert
from iotwarden.engine import Engine
from iotwarden.pipeline import Replay
from iotwarden.sources.flows.afterimage import AfterImage
from iotwarden.sources.flows.formats import _read_flows, flow_windows, pcap_metrics
from iotwarden.sources.flows.pcap import read_pcap
from iotwarden.sources.flows.zeek import read_zeek_conn

__all__ = ["PcapResult", "ZeekResult", "run_pcap", "run_zeek"]

MQTTSET_CAPTURES = ("benign", "bruteforce", "flood", "malariados")


@dataclass
class ZeekResult:
    """Alerts and detection figures of one Zeek log."""

    path: str
    flows: int = 0
    alerts: list[Alert] = field(default_factory=list)
    seconds: float = 0.0
    window_counts: Counter[str] = field(default_factory=Counter)
    flow_counts: Counter[str] = field(default_factory=Counter)
    rule_flow_counts: Counter[str] = field(default_factory=Counter)

    def alerts_by(self) -> Counter[tuple[str, str]]:
        return Counter((alert.device, alert.category) for alert in self.alerts)


def _replay(items) -> tuple[list[Alert], int]:  # type: ignore[no-untyped-def]
    alerts: list[Alert] = []
    replay = Replay(Engine(), on_alert=alerts.append)
    summary = replay.run(items)
    return alerts, summary.observations


def run_zeek(path: str | Path, **options: object) -> ZeekResult:
    """Run one conn.log through the ``zeek`` reader and the engine, and score it when it has labels."""
    path = str(path)
    windows = flow_windows(dict(options), record_firings=True)
    started = time.perf_counter()
    alerts, _ = _replay(_read_flows([path], read_zeek_conn, windows))
    result = ZeekResult(path, alerts=alerts, seconds=time.perf_counter() - started)

    width = windows.rules.window
    engine_windows = {(a.device, math.floor(a.time / width)) for a in alerts if a.detector != "flow_rules"}
    rule_peers: dict[tuple[str, int], set[str]] = defaultdict(set)
    for firing in windows.firings or []:
        peer = firing.peer.rsplit(":", 1)[0] if firing.category == "brute_force" else firing.peer
        rule_peers[(firing.device, math.floor(firing.window_start / width))].add(peer)

    truth_windows: dict[tuple[str, int], bool] = {}
    labelled = False
    for flow in read_zeek_conn(path, keep_labels=True):
        if not hasattr(flow, "label"):
            continue
        result.flows += 1
        if flow.label is None:
            continue
        labelled = True
        malicious = flow.label.lower().startswith("malicious")
        src_device, dst_device = windows.internal.devices(flow)
        index = math.floor((flow.time + flow.duration) / width)
        flagged_any = flagged_rule = False
        for device, remote, is_device in ((flow.src, flow.dst, src_device), (flow.dst, flow.src, dst_device)):
            if not is_device:
                continue
            key = (device, index)
            truth_windows[key] = truth_windows.get(key, False) or malicious
            peers = rule_peers.get(key, set())
            by_rule = bool(peers & {remote, "*", "telnet"})
            flagged_rule |= by_rule
            flagged_any |= by_rule or key in engine_windows
        result.flow_counts[_cell(malicious, flagged_any)] += 1
        result.rule_flow_counts[_cell(malicious, flagged_rule)] += 1
    if labelled:
        flagged_windows = engine_windows | set(rule_peers)
        for key in truth_windows.keys() | flagged_windows:
            result.window_counts[_cell(truth_windows.get(key, False), key in flagged_windows)] += 1
    return result


def _cell(truth: bool, flagged: bool) -> str:
    if truth:
        return "tp" if flagged else "fn"
    return "fp" if flagged else "tn"


def rates(counts: Counter[str]) -> tuple[float, float, float]:
    """Return precision, recall and false-positive rate of confusion counts (NaN where undefined)."""
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    fpr = fp / (fp + tn) if fp + tn else math.nan
    return precision, recall, fpr


@dataclass
class PcapResult:
    """Alerts of one capture."""

    path: str
    packets_seconds: float
    observations: int
    alerts: list[Alert]


def run_pcap(path: str | Path, **options: object) -> PcapResult:
    """Run one capture through the ``pcap`` reader and the engine."""
    afterimage = AfterImage()
    windows = flow_windows(dict(options))
    windows.extra_metrics = pcap_metrics(afterimage)
    started = time.perf_counter()
    alerts, observations = _replay(read_pcap([str(path)], windows, afterimage))
    return PcapResult(str(path), time.perf_counter() - started, observations, alerts)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def report(datasets: Path) -> str:
    """Run every benchmark and return the Markdown report."""
    lines = ["| log | flows | alerts (rules) | alerts (engine) | window P / R / FPR | flow P / R / FPR (all) | flow P / R (rules only) | time |",
             "|---|---|---|---|---|---|---|---|"]
    zeek = datasets / "stratosphere_zeek"
    logs = ["001-zeek-scenario-malicious/labeled-conn.log", "002-zeek-scenario-port-scanning/conn.log",
            "003-zeek-scenario-malicious/conn.log", "008-zeek-mixed/conn.log.labeled"]
    details = []
    for name in logs:
        result = run_zeek(zeek / name)
        rule_alerts = [a for a in result.alerts if a.detector == "flow_rules"]
        engine_alerts = [a for a in result.alerts if a.detector != "flow_rules"]
        window = "/".join(_fmt(v) for v in rates(result.window_counts)) if result.window_counts else "no labels"
        flow = "/".join(_fmt(v) for v in rates(result.flow_counts)) if result.flow_counts else "no labels"
        rule = "/".join(_fmt(v) for v in rates(result.rule_flow_counts)[:2]) if result.rule_flow_counts else "no labels"
        lines.append(f"| {name.split('/')[0]} | {result.flows} | {len(rule_alerts)} | {len(engine_alerts)} | {window} | {flow} | {rule} | {result.seconds:.1f} s |")
        by = Counter((a.device, a.category) for a in result.alerts)
        details.append(f"- {name.split('/')[0]}: " + ", ".join(f"{device} {category} x{count}" for (device, category), count in by.most_common(8)))
        if result.flow_counts:
            details.append(f"  flow counts (all): {dict(result.flow_counts)}; windows: {dict(result.window_counts)}")
    lines.append("")
    lines.extend(details)
    lines.append("")
    lines.append("| capture | replay time | windows | rule alerts | engine alerts | categories |")
    lines.append("|---|---|---|---|---|---|")
    for kind in MQTTSET_CAPTURES:
        for capture in sorted((datasets / "mqttset" / kind).glob("*.pcap*")):
            result = run_pcap(capture)
            rule_alerts = [a for a in result.alerts if a.detector == "flow_rules"]
            engine_alerts = [a for a in result.alerts if a.detector != "flow_rules"]
            categories = Counter(a.category for a in result.alerts)
            lines.append(f"| {capture.name} | {result.packets_seconds:.2f} s | {result.observations} | {len(rule_alerts)} | {len(engine_alerts)} | "
                         + (", ".join(f"{c} {n}" for c, n in categories.most_common()) or "none") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", type=Path, help="folder holding stratosphere_zeek/ and mqttset/")
    args = parser.parse_args(argv)
    print(report(args.datasets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
