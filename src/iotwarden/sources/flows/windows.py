"""Per-device flow features over short windows, and the rules that are sharper than a baseline.

:class:`FlowWindows` takes flows (and, from packet captures, packet
volumes) in roughly the order a sensor logs them and, for every monitored
device (an internal host, see :class:`~iotwarden.sources.flows.records.InternalHosts`),
yields one :class:`~iotwarden.observation.Observation` per window with the
metrics in :data:`WINDOW_METRICS`. The engine baselines those metrics per
device. Where a rule decides better than a baseline (a scan, a burst of
failed logins) it yields a finished :class:`~iotwarden.decisions.alerts.Alert`.

A flow belongs to the window of its end time (``time + duration``),
because Zeek writes a connection when it ends. A window closes when a flow
ending ``grace`` seconds past the window's end arrives; a flow for a window
already closed is counted in the oldest open one. Between two active
windows of a device, up to ``max_fill_windows`` idle windows are emitted
with zero counts, so quiet periods are learned as quiet rather than raising
silence alerts. The first and last windows of the input are usually cut
short by its start and end: the rules run on them, but they yield no
observation, so the engine never sees a partial window as a dip.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from iotwarden.decisions.alerts import Alert, Contribution
from iotwarden.errors import InvalidConfigError
from iotwarden.observation import Observation, format_time
from iotwarden.sources.flows.records import Flow, InternalHosts

__all__ = ["AUTH_PORTS", "WINDOW_METRICS", "FlowRules", "FlowWindows", "RuleFiring"]

WINDOW_METRICS = (
    "bytes_out", "bytes_in", "packets_out", "packets_in", "conns_out", "conns_in",
    "dst_hosts", "dst_ports", "failed_out", "failed_in", "new_dsts",
)
"""Metrics of every window observation; ``beacon_cv`` is added when a periodic destination is measurable."""

AUTH_PORTS = frozenset({21, 22, 23, 25, 110, 143, 445, 993, 1433, 1883, 2323, 3306, 3389, 5432, 5900, 8883})
"""TCP ports of login services that the brute-force rule watches: FTP, SSH, telnet, SMTP, POP3, IMAP,
SMB, MS SQL, MQTT (plain and TLS), MySQL, RDP, PostgreSQL and VNC."""

TELNET_PORTS = frozenset({23, 2323})

_MAX_REMOTES_PER_DEVICE = 4096
_MAX_BEACON_PAIRS = 512
_BEACON_HISTORY = 16
_TYPICAL_ALPHA = 0.05  # weight of a new window in a device's typical volumes (about 20 windows)
# Half-life in seconds of the MQTT publish rate. A client that flushes a few
# hundred queued messages at once stays well under 100 messages/s on this
# scale, while a flood kept up for a few seconds goes over it.
_PUBLISH_HALF_LIFE = 10.0
_MAX_PUBLISH_CHANNELS = 4096


@dataclass(frozen=True)
class FlowRules:
    """Window length and rule thresholds.

    Attributes:
        window: Window length in seconds.
        grace: Seconds past a window's end that flows may still arrive for it.
        max_fill_windows: Idle windows emitted with zero counts after a
            device's last activity; beyond that the device is left silent.
        scan_hosts: Distinct hosts that a device tried and that did not
            answer (see ``UNANSWERED_STATES``) in one window that make a scan.
        scan_ports: Distinct ports of one host, tried without answer or
            refused, in one window that make a port scan (either direction).
        telnet_hosts: Distinct hosts contacted on telnet (23, 2323) in one
            window that make a telnet scan, answered or not.
        unsolicited_hosts: Distinct external hosts, never contacted by the
            device, whose connection attempts to it failed in one window. That
            many show the device is reachable from outside and being probed.
        brute_force_attempts: Failed, unanswered, login-refused or short
            connections to one service port in :data:`AUTH_PORTS` from one
            host in one window that make a brute-force attempt.
        short_connection: Seconds under which a connection to a login port
            counts as an attempt even when it completed.
        ddos_pps: Packets per second to one destination, averaged over the
            window (or the peak damped rate, from packet captures), from
            which an outbound burst can be DDoS participation.
        ddos_factor: The burst must also exceed this multiple of the
            device's typical per-destination packet rate.
        exfil_bytes: Bytes sent to one destination never seen before by the
            device, in one window, from which a transfer can be exfiltration.
        exfil_factor: The transfer must also exceed this multiple of the
            device's typical bytes sent per window.
        mqtt_flood_rate: MQTT PUBLISH messages per second from one client to
            one broker (damped with a 10 s half-life, from packet captures)
            from which the client is flooding the broker.
        mqtt_flood_factor: The rate must also exceed this multiple of the
            device's typical per-peer publish rate.
        beacon_events: Connections to one destination and port needed to
            judge periodicity.
        beacon_cv: Largest coefficient of variation (standard deviation over
            mean) of the intervals between those connections that counts as
            beaconing.
        beacon_min_interval: Shortest mean interval, in seconds, that counts
            (faster repeats are bulk traffic, not check-ins).
        beacon_max_interval: Longest mean interval, in seconds.
        rearm_windows: Quiet windows after which a rule may alert again for
            the same device, rule and peer.
    """

    window: float = 60.0
    grace: float = 10.0
    max_fill_windows: int = 60
    scan_hosts: int = 20
    scan_ports: int = 20
    telnet_hosts: int = 5
    unsolicited_hosts: int = 1
    brute_force_attempts: int = 10
    short_connection: float = 10.0
    ddos_pps: float = 100.0
    ddos_factor: float = 10.0
    exfil_bytes: float = 5e6
    exfil_factor: float = 10.0
    mqtt_flood_rate: float = 100.0
    mqtt_flood_factor: float = 10.0
    beacon_events: int = 8
    beacon_cv: float = 0.35
    beacon_min_interval: float = 1.0
    beacon_max_interval: float = 3600.0
    rearm_windows: int = 3

    def __post_init__(self) -> None:
        for name in ("window", "short_connection", "ddos_pps", "ddos_factor", "exfil_bytes", "exfil_factor", "mqtt_flood_rate",
                     "mqtt_flood_factor", "beacon_cv", "beacon_min_interval"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise InvalidConfigError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("scan_hosts", "scan_ports", "telnet_hosts", "unsolicited_hosts", "brute_force_attempts", "rearm_windows"):
            if int(getattr(self, name)) < 1:
                raise InvalidConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.beacon_events < 4:
            raise InvalidConfigError(f"beacon_events must be an integer >= 4, got {self.beacon_events!r}")
        if self.grace < 0 or self.max_fill_windows < 0:
            raise InvalidConfigError("grace and max_fill_windows must be >= 0")
        if self.beacon_max_interval <= self.beacon_min_interval:
            raise InvalidConfigError("beacon_max_interval must be greater than beacon_min_interval")


@dataclass(frozen=True, slots=True)
class RuleFiring:
    """One window in which a rule held for a device, alerting or not (episodes alert once)."""

    device: str
    window_start: float
    category: str
    peer: str


@dataclass
class _Window:
    bytes_out: float = 0.0
    bytes_in: float = 0.0
    packets_out: float = 0.0
    packets_in: float = 0.0
    conns_out: int = 0
    conns_in: int = 0
    failed_out: int = 0
    failed_in: int = 0
    new_dsts: int = 0
    dsts: set[str] = field(default_factory=set)
    dports: set[int] = field(default_factory=set)
    unanswered_hosts: set[str] = field(default_factory=set)
    probed_ports: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    telnet_hosts: set[str] = field(default_factory=set)
    unsolicited_ports: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # external host -> ports it tried
    attempts: dict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    packets_to: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bytes_to: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    peak_pps_to: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    peak_publish_rate: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))  # by (direction, remote)
    new_remotes: set[str] = field(default_factory=set)
    beacon_cv: float | None = None
    beacon_peer: tuple[str, int] | None = None


@dataclass
class _History:
    remotes: OrderedDict[str, None] = field(default_factory=OrderedDict)
    starts: OrderedDict[tuple[str, int], list[float]] = field(default_factory=OrderedDict)
    last_window: int = -1
    windows: int = 0
    typical_bytes_out: float = 0.0
    typical_dst_pps: float = 0.0
    typical_publish_rate: float = 0.0
    last_firing: dict[tuple[str, str], int] = field(default_factory=dict)
    beaconing: set[tuple[str, int]] = field(default_factory=set)


class FlowWindows:
    """Aggregate flows into per-device window observations and rule alerts.

    Args:
        rules: Window length and thresholds.
        internal: Which addresses are devices.
        extra_metrics: Called as ``extra_metrics(device, window_end)`` when a
            window closes; its metrics are added to the observation (the
            packet-capture reader adds damped packet statistics).
        record_firings: Keep every :class:`RuleFiring` in :attr:`firings`,
            for scoring against labels.
        source: Source name put on observations.
    """

    def __init__(
        self,
        rules: FlowRules | None = None,
        *,
        internal: InternalHosts | None = None,
        extra_metrics: Callable[[str, float], dict[str, float]] | None = None,
        record_firings: bool = False,
        source: str = "",
    ) -> None:
        self.rules = rules or FlowRules()
        self.internal = internal or InternalHosts()
        self.extra_metrics = extra_metrics
        self.source = source
        self.firings: list[RuleFiring] | None = [] if record_firings else None
        self.open: dict[int, dict[str, _Window]] = {}
        self.history: dict[str, _History] = {}
        self.next_to_close: int | None = None
        self.publish_rates: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # (client, broker) -> [time, damped count]
        self.late_flows = 0
        self.first_time = math.inf
        self.clock = -math.inf

    # Input ------------------------------------------------------------------

    def add_flow(self, flow: Flow, *, count_volume: bool = True) -> Iterator[Observation | Alert]:
        """Add one flow; yield what windows it closes. ``count_volume=False`` skips its bytes and packets."""
        end = flow.time + flow.duration
        yield from self.advance(end)
        index = self._window_index(end)
        src_device, dst_device = self.internal.devices(flow)
        if src_device:
            self._add_outbound(self._window(index, flow.src), self._history(flow.src), flow, count_volume)
        if dst_device:
            self._add_inbound(self._window(index, flow.dst), self._history(flow.dst), flow, count_volume, external=not src_device)

    def add_packet(self, time: float, src: str, dst: str, size: float, channel_pps: float = 0.0) -> Iterator[Observation | Alert]:
        """Count one packet's volume (packet captures); ``channel_pps`` is the damped src-to-dst packet rate."""
        yield from self.advance(time)
        index = self._window_index(time)
        probe = Flow(time, src, 0, dst, 0, "")
        src_device, dst_device = self.internal.devices(probe)
        if src_device:
            window = self._window(index, src)
            window.bytes_out += size
            window.packets_out += 1
            window.bytes_to[dst] += size
            window.packets_to[dst] += 1
            if channel_pps > window.peak_pps_to[dst]:
                window.peak_pps_to[dst] = channel_pps
            self._history(src)
        if dst_device:
            window = self._window(index, dst)
            window.bytes_in += size
            window.packets_in += 1
            self._history(dst)

    def add_mqtt_publishes(self, time: float, client: str, broker: str, count: int) -> Iterator[Observation | Alert]:
        """Count ``count`` MQTT PUBLISH messages that ``client`` sent to ``broker`` at ``time`` (packet captures)."""
        yield from self.advance(time)
        key = (client, broker)
        state = self.publish_rates.get(key)
        if state is None:
            state = self.publish_rates[key] = [time, 0.0]
            if len(self.publish_rates) > _MAX_PUBLISH_CHANNELS:
                self.publish_rates.popitem(last=False)
        else:
            self.publish_rates.move_to_end(key)
        if time > state[0]:
            state[1] *= 2.0 ** (-(time - state[0]) / _PUBLISH_HALF_LIFE)
            state[0] = time
        state[1] += count
        rate = state[1] * math.log(2.0) / _PUBLISH_HALF_LIFE  # a steady rate r settles at r
        index = self._window_index(time)
        client_device, broker_device = self.internal.devices(Flow(time, client, 0, broker, 0, ""))
        for device, key_in_window, is_device in ((client, ("out", broker), client_device), (broker, ("in", client), broker_device)):
            if is_device:
                window = self._window(index, device)
                window.peak_publish_rate[key_in_window] = max(window.peak_publish_rate[key_in_window], rate)
                self._history(device)

    def advance(self, time: float) -> Iterator[Observation | Alert]:
        """Close every window that ended ``grace`` seconds before ``time``."""
        self.first_time = min(self.first_time, time)
        self.clock = max(self.clock, time)
        target = self._window_index(time - self.rules.grace)  # windows below target may close
        if self.next_to_close is None:
            self.next_to_close = target
            return
        yield from self._close_until(target)

    def finish(self) -> Iterator[Observation | Alert]:
        """Close every open window (end of input)."""
        if self.open:
            yield from self._close_until(max(self.open) + 1)

    # Accumulation ---------------------------------------------------------------

    def _window_index(self, time: float) -> int:
        return math.floor(time / self.rules.window)

    def _window(self, index: int, device: str) -> _Window:
        if self.next_to_close is not None and index < self.next_to_close:
            self.late_flows += 1
            index = self.next_to_close
        devices = self.open.get(index)
        if devices is None:
            devices = self.open[index] = {}
        window = devices.get(device)
        if window is None:
            window = devices[device] = _Window()
        return window

    def _history(self, device: str) -> _History:
        history = self.history.get(device)
        if history is None:
            history = self.history[device] = _History()
        return history

    def _add_outbound(self, window: _Window, history: _History, flow: Flow, count_volume: bool) -> None:
        remote = flow.dst
        window.conns_out += 1
        window.dsts.add(remote)
        window.dports.add(flow.dport)
        if count_volume:
            window.bytes_out += flow.src_bytes
            window.bytes_in += flow.dst_bytes
            window.packets_out += flow.src_packets
            window.packets_in += flow.dst_packets
            window.bytes_to[remote] += flow.src_bytes
            window.packets_to[remote] += flow.src_packets
        if flow.failed:
            window.failed_out += 1
        if flow.unanswered:
            window.unanswered_hosts.add(remote)
        if flow.unanswered or flow.state == "REJ":
            window.probed_ports[("out", remote)].add(flow.dport)
        if flow.proto in ("tcp", "") and flow.dport in TELNET_PORTS:
            window.telnet_hosts.add(remote)
        if self._is_attempt(flow):
            window.attempts[("out", remote, flow.dport)] += 1
        if remote not in history.remotes and remote not in window.new_remotes:
            window.new_remotes.add(remote)
            window.new_dsts += 1
        self._track_start(window, history, remote, flow.dport, flow.time)

    def _add_inbound(self, window: _Window, history: _History, flow: Flow, count_volume: bool, *, external: bool) -> None:
        remote = flow.src
        window.conns_in += 1
        if count_volume:
            window.bytes_in += flow.src_bytes
            window.bytes_out += flow.dst_bytes
            window.packets_in += flow.src_packets
            window.packets_out += flow.dst_packets
        if flow.failed:
            window.failed_in += 1
        if flow.unanswered or flow.state == "REJ":
            window.probed_ports[("in", remote)].add(flow.dport)
        if external and flow.failed and remote not in history.remotes:
            window.unsolicited_ports[remote].add(flow.dport)
        if self._is_attempt(flow):
            window.attempts[("in", remote, flow.dport)] += 1

    def _is_attempt(self, flow: Flow) -> bool:
        if flow.dport not in AUTH_PORTS or flow.proto not in ("tcp", ""):
            return False
        return flow.failed or flow.unanswered or flow.duration < self.rules.short_connection

    def _track_start(self, window: _Window, history: _History, remote: str, port: int, start: float) -> None:
        key = (remote, port)
        starts = history.starts.get(key)
        if starts is None:
            starts = history.starts[key] = []
            if len(history.starts) > _MAX_BEACON_PAIRS:
                history.starts.popitem(last=False)
        else:
            history.starts.move_to_end(key)
        bisect.insort(starts, start)
        if len(starts) > _BEACON_HISTORY:
            del starts[0]
        if len(starts) < self.rules.beacon_events:
            return
        intervals = [b - a for a, b in zip(starts, starts[1:])]
        mean = statistics.fmean(intervals)
        if not self.rules.beacon_min_interval <= mean <= self.rules.beacon_max_interval:
            return
        cv = statistics.pstdev(intervals) / mean
        if cv > self.rules.beacon_cv:
            history.beaconing.discard(key)  # the pattern broke: a later one alerts again
        if window.beacon_cv is None or cv < window.beacon_cv:
            window.beacon_cv = cv
            window.beacon_peer = key

    # Closing --------------------------------------------------------------------

    def _close_until(self, target: int) -> Iterator[Observation | Alert]:
        index = self.next_to_close
        assert index is not None
        while index < target:
            devices = self.open.pop(index, None)
            if devices is not None or self._needs_fill(index):
                yield from self._close(index, devices or {})
                index += 1
                continue
            later = [k for k in self.open if k > index]
            index = min([*later, target])
        self.next_to_close = max(index, self.next_to_close)

    def _needs_fill(self, index: int) -> bool:
        limit = self.rules.max_fill_windows
        return any(0 <= index - h.last_window <= limit and h.last_window >= 0 for h in self.history.values())

    def _close(self, index: int, devices: dict[str, _Window]) -> Iterator[Observation | Alert]:
        start = index * self.rules.window
        end = start + self.rules.window
        for device in sorted(self.history):
            history = self.history[device]
            window = devices.get(device)
            if window is None:
                if history.last_window < 0 or not 0 < index - history.last_window <= self.rules.max_fill_windows:
                    continue
                window = _Window()
            else:
                history.last_window = index
            yield from self._rules(device, history, window, index, start, end)
            self._remember_remotes(history, window)
            if start >= self.first_time and end <= self.clock:
                yield self._observation(device, window, start, end)
                self._learn(history, window)

    def _observation(self, device: str, window: _Window, start: float, end: float) -> Observation:
        metrics = {
            "bytes_out": window.bytes_out,
            "bytes_in": window.bytes_in,
            "packets_out": window.packets_out,
            "packets_in": window.packets_in,
            "conns_out": float(window.conns_out),
            "conns_in": float(window.conns_in),
            "dst_hosts": float(len(window.dsts)),
            "dst_ports": float(len(window.dports)),
            "failed_out": float(window.failed_out),
            "failed_in": float(window.failed_in),
            "new_dsts": float(window.new_dsts),
        }
        if window.beacon_cv is not None:
            metrics["beacon_cv"] = window.beacon_cv
        if self.extra_metrics is not None:
            metrics.update(self.extra_metrics(device, end))
        return Observation(device, start, metrics, {"device_type": "network_host"}, self.source, None)

    def _remember_remotes(self, history: _History, window: _Window) -> None:
        for remote in window.dsts:
            if remote in history.remotes:
                history.remotes.move_to_end(remote)
            else:
                history.remotes[remote] = None
        while len(history.remotes) > _MAX_REMOTES_PER_DEVICE:
            history.remotes.popitem(last=False)

    def _learn(self, history: _History, window: _Window) -> None:
        top_pps = max(self._window_pps(window).values(), default=0.0)
        top_publish_rate = max(window.peak_publish_rate.values(), default=0.0)
        alpha = 1.0 / (history.windows + 1) if history.windows < 1 / _TYPICAL_ALPHA else _TYPICAL_ALPHA
        history.typical_bytes_out += alpha * (window.bytes_out - history.typical_bytes_out)
        history.typical_dst_pps += alpha * (top_pps - history.typical_dst_pps)
        history.typical_publish_rate += alpha * (top_publish_rate - history.typical_publish_rate)
        history.windows += 1

    def _window_pps(self, window: _Window) -> dict[str, float]:
        rates = {remote: packets / self.rules.window for remote, packets in window.packets_to.items()}
        for remote, peak in window.peak_pps_to.items():
            rates[remote] = max(rates.get(remote, 0.0), peak)
        return rates

    # Rules ----------------------------------------------------------------------

    def _rules(self, device: str, history: _History, window: _Window, index: int, start: float, end: float) -> Iterator[Alert]:
        rules = self.rules
        for finding in self._findings(history, window):
            category, peer, metric, value, threshold, text, details = finding[:7]
            if self.firings is not None:
                for firing_peer in finding.firing_peers or (peer,):
                    self.firings.append(RuleFiring(device, start, category, firing_peer))
            if category == "beaconing":
                pair = (peer, int(details["port"]))
                if pair in history.beaconing:
                    continue  # still the same periodic pattern: it alerted when it was found
                history.beaconing.add(pair)
            key = (category, peer)
            previous = history.last_firing.get(key)
            history.last_firing[key] = index
            if previous is not None and index - previous <= rules.rearm_windows:
                continue  # the same episode goes on: one alert per episode
            yield Alert(
                device=device,
                time=start,
                category=category,
                severity=_SEVERITY[category],
                score=value / threshold,
                detector="flow_rules",
                metrics=[Contribution(metric, value, None, None, threshold, 0.0)],
                explanation=text,
                cohort="network_host",
                end_time=end,
                close_reason="window ended",
                source=self.source,
                details={"peer": peer, "window_start": format_time(start), "window_s": rules.window, **details},
            )

    def _findings(self, history: _History, window: _Window) -> Iterable[_Finding]:
        rules = self.rules
        hosts = len(window.unanswered_hosts)
        if hosts >= rules.scan_hosts:
            yield _Finding("scan", "*", "unanswered_hosts", float(hosts), float(rules.scan_hosts),
                           f"tried {hosts} hosts that did not answer in {rules.window:g} s (threshold {rules.scan_hosts})",
                           {"direction": "outbound", "examples": sorted(window.unanswered_hosts)[:5]})
        if len(window.telnet_hosts) >= rules.telnet_hosts:
            count = len(window.telnet_hosts)
            yield _Finding("scan", "telnet", "telnet_hosts", float(count), float(rules.telnet_hosts),
                           f"contacted {count} hosts on telnet ports 23/2323 in {rules.window:g} s (threshold {rules.telnet_hosts})",
                           {"direction": "outbound", "examples": sorted(window.telnet_hosts)[:5]})
        for (direction, remote), ports in window.probed_ports.items():
            if len(ports) >= rules.scan_ports:
                verb = "probed" if direction == "out" else "was probed by"
                yield _Finding("scan" if direction == "out" else "scanned", remote, "probed_ports", float(len(ports)), float(rules.scan_ports),
                               f"{verb} {remote} on {len(ports)} ports without a completed connection in {rules.window:g} s",
                               {"direction": "outbound" if direction == "out" else "inbound", "ports": sorted(ports)[:10]})
        # A host the device contacted later in the same window is not unsolicited either.
        unsolicited = {remote: ports for remote, ports in window.unsolicited_ports.items() if remote not in window.dsts}
        if len(unsolicited) >= rules.unsolicited_hosts:
            remotes = sorted(unsolicited)
            ports = sorted(set().union(*unsolicited.values()))
            yield _Finding("unsolicited_inbound", "*", "unsolicited_hosts", float(len(remotes)), float(rules.unsolicited_hosts),
                           f"received failed connection attempts from {len(remotes)} external hosts it never contacted, on ports "
                           f"{', '.join(str(port) for port in ports[:10])}{' ...' if len(ports) > 10 else ''} in {rules.window:g} s "
                           f"(threshold {rules.unsolicited_hosts})",
                           {"direction": "inbound", "examples": remotes[:5], "ports": ports[:10]}, firing_peers=tuple(remotes))
        for (direction, remote, port), count in window.attempts.items():
            if count >= rules.brute_force_attempts:
                text = (f"made {count} failed or short connections to {remote} port {port}" if direction == "out"
                        else f"received {count} failed or short connections on port {port} from {remote}")
                yield _Finding("brute_force", f"{remote}:{port}", "login_attempts", float(count), float(rules.brute_force_attempts),
                               f"{text} in {rules.window:g} s (threshold {rules.brute_force_attempts})",
                               {"direction": "outbound" if direction == "out" else "inbound", "port": port})
        floor = max(rules.ddos_pps, rules.ddos_factor * history.typical_dst_pps)
        for remote, pps in self._window_pps(window).items():
            if pps >= floor:
                yield _Finding("ddos", remote, "packets_per_s_to_destination", pps, floor,
                               f"sent {pps:.0f} packets/s to {remote}, over {floor:.0f} (the larger of {rules.ddos_pps:g} and "
                               f"{rules.ddos_factor:g} x its typical {history.typical_dst_pps:.1f})", {"direction": "outbound"})
        publish_floor = max(rules.mqtt_flood_rate, rules.mqtt_flood_factor * history.typical_publish_rate)
        for (direction, remote), rate in window.peak_publish_rate.items():
            if rate >= publish_floor:
                text = (f"sent MQTT PUBLISH messages to broker {remote} at {rate:.0f}/s" if direction == "out"
                        else f"received MQTT PUBLISH messages from client {remote} at {rate:.0f}/s")
                yield _Finding("mqtt_flood", remote, "mqtt_publish_rate", rate, publish_floor,
                               f"{text} ({_PUBLISH_HALF_LIFE:g} s half-life), over {publish_floor:.0f} (the larger of {rules.mqtt_flood_rate:g} "
                               f"and {rules.mqtt_flood_factor:g} x its typical {history.typical_publish_rate:.1f})",
                               {"direction": "outbound" if direction == "out" else "inbound"})
        exfil_floor = max(rules.exfil_bytes, rules.exfil_factor * history.typical_bytes_out)
        for remote in window.new_remotes:
            sent = window.bytes_to.get(remote, 0.0)
            if sent >= exfil_floor:
                yield _Finding("exfiltration", remote, "bytes_to_new_destination", sent, exfil_floor,
                               f"sent {sent:.0f} bytes to {remote}, a destination never seen before, over {exfil_floor:.0f}",
                               {"direction": "outbound"})
        if window.beacon_cv is not None and window.beacon_cv <= rules.beacon_cv and window.beacon_peer is not None:
            remote, port = window.beacon_peer
            starts = history.starts.get(window.beacon_peer, [])
            intervals = [b - a for a, b in zip(starts, starts[1:])]
            mean = statistics.fmean(intervals) if intervals else 0.0
            yield _Finding("beaconing", remote, "beacon_cv", window.beacon_cv, rules.beacon_cv,
                           f"connects to {remote} port {port} every {mean:.1f} s with interval variation {window.beacon_cv:.2f} "
                           f"(at most {rules.beacon_cv:g} is periodic), over the last {len(starts)} connections",
                           {"direction": "outbound", "port": port, "interval_s": round(mean, 3)})


class _Finding(NamedTuple):
    """One rule that held in a window, before episode handling."""

    category: str
    peer: str
    metric: str
    value: float
    threshold: float
    text: str
    details: dict[str, Any]
    firing_peers: tuple[str, ...] = ()  # remote hosts to record firings for, when ``peer`` stands for several


_SEVERITY = {
    "scan": "high",
    "scanned": "medium",
    "brute_force": "high",
    "ddos": "high",
    "mqtt_flood": "high",
    "exfiltration": "high",
    "beaconing": "medium",
    "unsolicited_inbound": "low",
}
