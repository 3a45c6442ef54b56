"""Real components for the response tests and the containment benchmark.

Network namespaces joined by veth pairs (addresses in 10.231.0.0/16, used
only inside the namespaces created here, with no default route), a private
Mosquitto with the dynamic security plugin, and Open vSwitch (userspace
datapath) driven by an os-ken controller. Every helper removes what it
created in ``close``; the fixtures call it even when a test fails.

This module holds no tests; ``benchmarks/containment_latency.py`` imports it too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DYNSEC_PLUGIN_PATHS = ("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so", "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so")
OSKEN_VENV = Path(os.environ.get("IOTWARDEN_OSKEN_VENV", "/opt/iotwarden-osken"))

# Defines eventlet.wsgi.ALREADY_HANDLED, which os-ken 1.4.1 imports but eventlet
# 0.33 no longer has (os-ken uses it only for websocket responses).
OSKEN_LAUNCHER = """\
import sys
import eventlet.wsgi
if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
    eventlet.wsgi.ALREADY_HANDLED = object()
from os_ken.cmd.manager import main
sys.exit(main())
"""

# A UDP probe: the sender prints "seq send_time" per packet, the receiver
# prints "seq receive_time"; both run for a fixed time and stop by themselves.
PROBE_SENDER = """\
import socket, sys, time
target, port, interval, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + duration
seq = 0
out = []
while time.time() < end:
    now = time.time()
    try:
        sock.sendto(str(seq).encode(), (target, port))
    except OSError:
        pass
    out.append(f"{seq} {now:.6f}")
    seq += 1
    time.sleep(max(0.0, interval - (time.time() - now)))
print("\\n".join(out))
"""
PROBE_RECEIVER = """\
import socket, sys, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", port))
sock.settimeout(0.05)
end = time.time() + duration
out = []
while time.time() < end:
    try:
        data, _ = sock.recvfrom(64)
    except socket.timeout:
        continue
    out.append(f"{data.decode()} {time.time():.6f}")
print("\\n".join(out))
"""


def missing_tools(*names: str) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def is_root() -> bool:
    return os.geteuid() == 0


def run(*command: str, check: bool = True, timeout: float = 10.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}): {result.stderr.strip()}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def stop_pidfile(path: Path, timeout: float = 5.0) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _subnet() -> int:
    return 100 + secrets.randbelow(100)


# Namespaces with a routing gateway -------------------------------------------------


class RoutedLab:
    """Three namespaces: device -- gateway -- peer, routed by the gateway.

    The device is 10.231.S.2/24 behind gw 10.231.S.1, the peer is
    10.231.(S+50).2/24 behind gw 10.231.(S+50).1, with S from 100 to 149. Only the two /24s are
    routed; there is no default route.
    """

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.device_ns, self.gateway_ns, self.peer_ns = f"iwt-{tag}-dev", f"iwt-{tag}-gw", f"iwt-{tag}-peer"
        s = 100 + secrets.randbelow(50)
        dev_net, peer_net = f"10.231.{s}", f"10.231.{s + 50}"
        self.device_ip, self.device_gw = f"{dev_net}.2", f"{dev_net}.1"
        self.peer_ip, self.peer_gw = f"{peer_net}.2", f"{peer_net}.1"
        self.created: list[str] = []
        try:
            for ns in (self.device_ns, self.gateway_ns, self.peer_ns):
                run("ip", "netns", "add", ns)
                self.created.append(ns)
                run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "link", "add", "veth-d", "netns", self.device_ns, "type", "veth", "peer", "name", "veth-gd", "netns", self.gateway_ns)
            run("ip", "link", "add", "veth-p", "netns", self.peer_ns, "type", "veth", "peer", "name", "veth-gp", "netns", self.gateway_ns)
            run("ip", "-n", self.device_ns, "addr", "add", f"{self.device_ip}/24", "dev", "veth-d")
            run("ip", "-n", self.peer_ns, "addr", "add", f"{self.peer_ip}/24", "dev", "veth-p")
            run("ip", "-n", self.gateway_ns, "addr", "add", f"{self.device_gw}/24", "dev", "veth-gd")
            run("ip", "-n", self.gateway_ns, "addr", "add", f"{self.peer_gw}/24", "dev", "veth-gp")
            for ns, link in ((self.device_ns, "veth-d"), (self.peer_ns, "veth-p"), (self.gateway_ns, "veth-gd"), (self.gateway_ns, "veth-gp")):
                run("ip", "-n", ns, "link", "set", link, "up")
            run("ip", "-n", self.device_ns, "route", "add", f"{peer_net}.0/24", "via", self.device_gw)
            run("ip", "-n", self.peer_ns, "route", "add", f"{dev_net}.0/24", "via", self.peer_gw)
            run("ip", "netns", "exec", self.gateway_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        except BaseException:
            self.close()
            raise

    def ping(self, count: int = 1, timeout: float = 1.0) -> bool:
        """Return whether the device reaches the peer through the gateway."""
        result = run("ip", "netns", "exec", self.device_ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(timeout), self.peer_ip, check=False, timeout=count + timeout + 5)
        return result.returncode == 0

    def close(self) -> None:
        for ns in reversed(self.created):
            run("ip", "netns", "del", ns, check=False)
        self.created.clear()


# Mosquitto with dynamic security ----------------------------------------------------


def dynsec_plugin() -> str | None:
    return next((path for path in DYNSEC_PLUGIN_PATHS if Path(path).exists()), None)


class MosquittoLab:
    """A private Mosquitto on 127.0.0.1 with the dynamic security plugin and one admin."""

    admin = "iw-admin"

    def __init__(self) -> None:
        # Mosquitto started as root drops to user mosquitto, which must reach
        # this folder: pytest's tmp_path sits below a folder only root can enter.
        self.folder = folder = Path(tempfile.mkdtemp(prefix="iwt-mqtt-"))
        self.port = free_port()
        self.password = secrets.token_hex(8)
        self.process: subprocess.Popen[bytes] | None = None
        plugin = dynsec_plugin()
        if plugin is None:
            raise RuntimeError("mosquitto_dynamic_security.so not found")
        config_file = folder / "dynamic-security.json"
        run("mosquitto_ctrl", "dynsec", "init", str(config_file), self.admin, self.password)
        (folder / "mosquitto.conf").write_text(
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"listener {self.port} 127.0.0.1\n"
            f"plugin {plugin}\n"
            f"plugin_opt_config_file {config_file}\n"
            "persistence false\n"
            f"log_dest file {folder / 'mosquitto.log'}\n"
        )
        if is_root():
            shutil.chown(folder, "mosquitto", "mosquitto")
            for item in folder.iterdir():
                shutil.chown(item, "mosquitto", "mosquitto")
        self.process = subprocess.Popen(["mosquitto", "-c", str(folder / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port)
        except BaseException:
            self.close()
            raise

    def ctrl(self, *args: str) -> None:
        run("mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(self.port), "-u", self.admin, "-P", self.password, "dynsec", *args)

    def add_device(self, username: str, password: str) -> None:
        """Create a client allowed to publish and subscribe under fleet/USERNAME/#."""
        self.ctrl("createClient", username, "-c", username, "-p", password)
        self.ctrl("createRole", f"{username}-role")
        self.ctrl("addRoleACL", f"{username}-role", "publishClientSend", f"fleet/{username}/#", "allow", "5")
        self.ctrl("addClientRole", username, f"{username}-role")

    def close(self) -> None:
        stop_process(self.process)
        self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)


# Open vSwitch + os-ken ------------------------------------------------------------------


def osken_python() -> Path | None:
    python = OSKEN_VENV / "bin" / "python"
    if not python.exists():
        return None
    check = "import eventlet.wsgi; eventlet.wsgi.ALREADY_HANDLED = object(); import os_ken.app.ofctl_rest"
    ok = run(str(python), "-c", check, check=False, timeout=30)
    return python if ok.returncode == 0 else None


class SdnLab:
    """OVS (userspace datapath) with two device namespaces, driven by os-ken ofctl_rest.

    Devices: 10.231.S.1 (MAC 02:00:00:00:0a:01) and 10.231.S.2 (…:0a:02) on one
    L2 segment, both attached to the bridge. The controller runs
    simple_switch_13 (learning switch) and ofctl_rest on 127.0.0.1.
    """

    dpid = 1

    def __init__(self, folder: Path) -> None:
        python = osken_python()
        if python is None:
            raise RuntimeError(f"os-ken 1.4.1 venv not found at {OSKEN_VENV} (run .ci/containment-setup.sh)")
        tag = secrets.token_hex(2)
        self.folder = folder
        self.ovs_dir = folder / "ovs"
        self.ovs_dir.mkdir(parents=True, exist_ok=True)
        self.bridge = f"iwbr{tag}"
        self.ports = [f"iwp{tag}a", f"iwp{tag}b"]
        self.namespaces = [f"iwt-{tag}-s1", f"iwt-{tag}-s2"]
        s = _subnet()
        self.ips = [f"10.231.{s}.1", f"10.231.{s}.2"]
        self.macs = ["02:00:00:00:0a:01", "02:00:00:00:0a:02"]
        self.of_port = free_port()
        self.rest_port = free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.env = {**os.environ, "OVS_RUNDIR": str(self.ovs_dir), "OVS_LOGDIR": str(self.ovs_dir), "OVS_DBDIR": str(self.ovs_dir), "OVS_SYSCONFDIR": str(self.ovs_dir)}
        self.controller: subprocess.Popen[bytes] | None = None
        self.bridge_created = False
        self.links: list[str] = []
        self.created_ns: list[str] = []
        try:
            self._start_ovs()
            self._start_controller(python)
            self._build_topology()
        except BaseException:
            self.close()
            raise

    def vsctl(self, *args: str) -> None:
        run("ovs-vsctl", f"--db=unix:{self.ovs_dir / 'db.sock'}", *args, env=self.env)

    def _start_ovs(self) -> None:
        d = self.ovs_dir
        run("ovsdb-tool", "create", str(d / "conf.db"), "/usr/share/openvswitch/vswitch.ovsschema", env=self.env)
        run("ovsdb-server", str(d / "conf.db"), f"--remote=punix:{d / 'db.sock'}", f"--unixctl={d / 'ovsdb-server.ctl'}",
            f"--pidfile={d / 'ovsdb-server.pid'}", "--detach", f"--log-file={d / 'ovsdb-server.log'}", env=self.env)
        self.vsctl("--no-wait", "init")
        run("ovs-vswitchd", f"unix:{d / 'db.sock'}", f"--unixctl={d / 'ovs-vswitchd.ctl'}", f"--pidfile={d / 'ovs-vswitchd.pid'}",
            "--detach", f"--log-file={d / 'ovs-vswitchd.log'}", env=self.env)

    def _start_controller(self, python: Path) -> None:
        launcher = self.folder / "osken_run.py"
        launcher.write_text(OSKEN_LAUNCHER)
        log = open(self.folder / "osken.out", "wb")
        self.controller = subprocess.Popen(
            [str(python), str(launcher), "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(self.of_port),
             "--wsapi-host", "127.0.0.1", "--wsapi-port", str(self.rest_port), "os_ken.app.simple_switch_13", "os_ken.app.ofctl_rest"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.rest_port, timeout=20)

    def _build_topology(self) -> None:
        for index, (ns, port) in enumerate(zip(self.namespaces, self.ports)):
            run("ip", "netns", "add", ns)
            self.created_ns.append(ns)
            run("ip", "link", "add", "veth0", "netns", ns, "address", self.macs[index], "type", "veth", "peer", "name", port)
            self.links.append(port)
            run("sysctl", "-qw", f"net.ipv6.conf.{port}.disable_ipv6=1")
            run("ip", "link", "set", port, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "addr", "add", f"{self.ips[index]}/24", "dev", "veth0")
            run("ip", "-n", ns, "link", "set", "veth0", "up")
            # The userspace datapath does not fill in checksums that veth offloads.
            run("ip", "netns", "exec", ns, "ethtool", "-K", "veth0", "tx", "off")
        self.vsctl("add-br", self.bridge, "--", "set", "bridge", self.bridge, "datapath_type=netdev", "protocols=OpenFlow13",
                   "fail_mode=secure", f"other-config:datapath-id={self.dpid:016x}", "other-config:disable-in-band=true")
        self.bridge_created = True
        for number, port in enumerate(self.ports, start=1):
            self.vsctl("add-port", self.bridge, port, "--", "set", "interface", port, f"ofport_request={number}")
        self.vsctl("set-controller", self.bridge, f"tcp:127.0.0.1:{self.of_port}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/stats/switches", timeout=1) as response:
                    if self.dpid in json.loads(response.read()):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the switch did not register with os-ken within 20 s")

    def ping(self, count: int = 1, timeout: float = 1.0) -> bool:
        result = run("ip", "netns", "exec", self.namespaces[0], "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(timeout), self.ips[1], check=False, timeout=count + timeout + 5)
        return result.returncode == 0

    def reachable_within(self, seconds: float) -> bool:
        """Return whether a ping gets through before `seconds` pass.

        Once a drop flow is gone, the learning switch relearns the path from
        packet-ins, so the first echo after a release can be lost.
        """
        deadline = time.monotonic() + seconds
        while True:
            if self.ping():
                return True
            if time.monotonic() >= deadline:
                return False

    def flows(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/stats/flow/{self.dpid}", timeout=5) as response:
            return json.loads(response.read()).get(str(self.dpid), [])

    def close(self) -> None:
        if self.bridge_created:
            try:
                self.vsctl("--if-exists", "del-br", self.bridge)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            self.bridge_created = False
        stop_process(self.controller)
        self.controller = None
        stop_pidfile(self.ovs_dir / "ovs-vswitchd.pid")
        stop_pidfile(self.ovs_dir / "ovsdb-server.pid")
        run("ip", "link", "del", self.bridge, check=False)
        for link in self.links:
            run("ip", "link", "del", link, check=False)
        self.links.clear()
        for ns in self.created_ns:
            run("ip", "netns", "del", ns, check=False)
        self.created_ns.clear()


# Probe stream -----------------------------------------------------------------------------


def probe(sender_ns: str, receiver_ns: str, target_ip: str, duration: float, *, interval: float = 0.002, during=None) -> tuple[dict[int, float], dict[int, float]]:
    """Send UDP probes for ``duration`` s while ``during()`` runs; return (sent, received) seq -> time."""
    port = 40000 + secrets.randbelow(20000)
    receiver = subprocess.Popen(["ip", "netns", "exec", receiver_ns, sys.executable, "-c", PROBE_RECEIVER, str(port), str(duration + 1.0)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    sender = subprocess.Popen(["ip", "netns", "exec", sender_ns, sys.executable, "-c", PROBE_SENDER, target_ip, str(port), str(interval), str(duration)], stdout=subprocess.PIPE, text=True)
    try:
        if during is not None:
            during()
        sent_out, _ = sender.communicate(timeout=duration + 10)
        received_out, _ = receiver.communicate(timeout=duration + 10)
    finally:
        stop_process(sender)  # type: ignore[arg-type]
        stop_process(receiver)  # type: ignore[arg-type]
    sent = {int(a): float(b) for a, b in (line.split() for line in sent_out.splitlines() if line.strip())}
    received = {int(a): float(b) for a, b in (line.split() for line in received_out.splitlines() if line.strip())}
    return sent, received


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
