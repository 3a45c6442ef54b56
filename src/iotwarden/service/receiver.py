"""The MQTT receiver process of ``iotwarden run``.

The MQTT sources run in a child process, so that paho's network loop and
the decoding of payloads do not share one interpreter lock with the engine::

    receiver process                                              engine process
    paho network threads -> MessageQueue -> forwarder      ==pipe==>  Receiver.take -> Service._ingest
                            (bounded, the    (decodes, maps,
                             overflow        batches, pickles)
                             policy)

The forwarder (the child's main thread) takes up to ``FRAME_MESSAGES``
messages at a time from the queue, decodes each one with
:class:`MessageDecoder` (topic template, JSON payload, record mapping,
payload digest) and sends the resulting :data:`Entry` list to the engine
process as one pickled frame on a pipe. A frame is ``(entries,
status, log records, last)``. The status (connections, message counts,
queue depth, drops) comes with every frame, and at least every
``STATUS_INTERVAL`` seconds as an empty frame. Log records of the child are
sent in frames too and handled by the engine process's loggers, so both
processes write one log.

Acknowledgement: paho sends PUBACK when a message is in the child's queue,
before it is decoded or scored. If the engine process is slow the pipe
fills, the forwarder waits, the queue fills and the overflow policy
applies (:mod:`iotwarden.service.intake`).

The data pipe is enlarged to ``PIPE_BYTES`` where the system allows, so
the forwarder can decode about one micro-batch ahead while the engine
process scores the previous one. Commands go the other way on a second
pipe.

Stop: :meth:`Receiver.request_stop` sends ``stop``. The child disconnects
its clients (the broker keeps the sessions), keeps forwarding until its
queue is empty, sends a last frame and exits with code 0.

Failure: the engine process notices a dead child by end of file on the
pipe or its exit code, logs it with the number of acknowledged messages
that were lost, and starts a new child after ``RESTART_DELAY`` seconds. A
child that dies more than ``MAX_RESTARTS`` times within ``RESTART_WINDOW``
seconds raises :class:`ReceiverError`. The child ignores SIGINT and
SIGTERM, which a terminal or a service manager may send to the whole
process group. It stops on the ``stop`` command, and exits at once when its
parent process is gone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from iotwarden.errors import IotwardenError
from iotwarden.observation import Observation, Rejection
from iotwarden.service.config import MqttSourceConfig, ServiceConfig
from iotwarden.service.intake import MessageQueue
from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.mqtt import MqttSettings, MqttSource, RawMessage, TopicTemplate, payload_digest

__all__ = ["Entry", "MessageDecoder", "Receiver", "ReceiverError", "SourceStatus"]

logger = logging.getLogger(__name__)

FRAME_MESSAGES = 2000
FRAME_WAIT = 0.005
STATUS_INTERVAL = 0.2
RESTART_DELAY = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW = 600.0
# Capacity requested for the data pipe (Linux allows up to
# /proc/sys/fs/pipe-max-size, 1 MiB by default, without privileges); about
# 8000 entries of a typical telemetry message.
PIPE_BYTES = 1 << 20
# Seconds the child may take to stop beyond block_timeout: disconnecting
# and forwarding the rest of a full queue.
STOP_GRACE = 60.0
# Distinct topics, device ids and metric names kept for de-duplicated
# pickling; the table is cleared when it grows beyond this.
_MAX_NAMES = 100_000

# (source index, topic, payload size in bytes, retain flag, DUP flag, receive
# time in epoch seconds, message number of the source, device from the
# topic or None, payload digest or None, parsed). ``parsed`` is None for a
# payload larger than max_payload_bytes, a tuple (device, time, metrics,
# attributes) for a payload that gave an observation without field issues,
# and otherwise the list of Observation, FieldIssue and Rejection items of
# PayloadParser.parse_items. A tuple, because one is pickled per message.
Entry = tuple[int, str, int, bool, bool, float, int, "str | None", "bytes | None", Any]


class ReceiverError(IotwardenError):
    """The MQTT receiver process keeps dying, so the service stops."""


class MessageDecoder:
    """Turn the raw messages of one MQTT source into entries.

    Args:
        config: The source's settings and payload options.
        first_line: Message number given to the next message (numbers
            continue across restarts of the receiver process).
    """

    def __init__(self, config: MqttSourceConfig, first_line: int = 1) -> None:
        self.address = config.settings.address
        self.templates = [TopicTemplate(topic) for topic in config.settings.topics]
        self.parser = config.make_parser()
        self.receive_time_fallback = config.time_fallback == "receive"
        self.counters = SourceCounters()
        self.sequence = first_line - 1
        # One copy of each topic, device id and metric name, so that pickle
        # writes each of them once per frame instead of once per message.
        self._names: dict[str, str] = {}

    def decode(self, message: RawMessage) -> Entry:
        """Decode and map one message; see :data:`Entry`."""
        index, topic, payload, size, retain, dup, received = message
        self.sequence += 1
        line = self.sequence
        names = self._names
        if len(names) > _MAX_NAMES:
            names.clear()
        topic = names.setdefault(topic, topic)
        captured: dict[str, str] | None = None
        for template in self.templates:
            captured = template.match(topic)
            if captured is not None:
                break
        topic_device = captured.get("device") if captured else None
        if topic_device is not None:
            topic_device = names.setdefault(topic_device, topic_device)
        if payload is None:
            return (index, topic, size, retain, dup, received, line, topic_device, None, None)

        where = f"{self.address}/{topic}"
        try:
            items = self.parser.parse_items(
                payload,
                source=where,
                line=line,
                device=topic_device,
                fallback_time=received if self.receive_time_fallback else None,
                counters=self.counters,
            )
        except Exception as error:  # noqa: BLE001 - a bug met by one payload must not stop the receiver
            logger.exception("failed to decode the message %s:%d", where, line)
            items = [Rejection(where, line, None, f"failed to decode: {error!r}", raw=repr(payload[:1000]))]
        observation = items[-1]
        parsed: Any = items
        if type(observation) is Observation:
            attributes = observation.attributes
            if captured is not None and len(captured) > 1:
                for name, value in captured.items():
                    if name != "device":
                        attributes[name] = value
            if len(items) == 1:
                parsed = (observation.device, observation.time, self._canonical(observation.metrics), attributes)
        return (index, topic, size, retain, dup, received, line, topic_device, payload_digest(payload), parsed)

    def _canonical(self, metrics: dict[str, float]) -> dict[str, float]:
        names = self._names
        return {names.setdefault(name, name): value for name, value in metrics.items()}


# The child process -----------------------------------------------------------


class _LogForwarder(logging.Handler):
    """Keep the child's log records, formatted and picklable, until the forwarder sends them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: deque[logging.LogRecord] = deque(maxlen=10_000)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg = record.getMessage()
            record.args = None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            record.stack_info = None
            self.records.append(record)
        except Exception:  # noqa: BLE001 - a logging handler must not raise
            self.handleError(record)

    def take(self) -> list[logging.LogRecord]:
        records = []
        while self.records:
            records.append(self.records.popleft())
        return records


def _receiver_main(data_descriptor: int, control_descriptor: int) -> None:
    """Run in the receiver process: read the settings, then subscribe, decode and forward until the ``stop`` command.

    The descriptors are the write end of the data pipe and the read end of
    the command pipe. The first object on the command pipe is
    ``(source configs, queue settings, log level, first message numbers)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    data = Connection(data_descriptor, readable=False)
    control = Connection(control_descriptor, writable=False)
    configs, queue_settings, log_level, first_lines = control.recv()
    logs = _LogForwarder()
    root = logging.getLogger()
    root.handlers[:] = [logs]
    root.setLevel(log_level)
    forwarder = _Forwarder(data, control, configs, queue_settings, first_lines, logs)
    try:
        code = forwarder.run()
    except Exception:
        logger.exception("MQTT receiver process failed")
        if not forwarder.send_logs():
            _log_to_stderr(logs)
        code = 1
    sys.stderr.flush()
    # os._exit skips interpreter teardown, which would wait for paho's
    # threads, and closes the connections at once: messages that paho has
    # not acknowledged yet stay with the broker.
    os._exit(code)


def _log_to_stderr(logs: _LogForwarder) -> None:
    """Write the held records, and all later ones, to standard error; for when the engine process is gone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for record in logs.take():
        handler.handle(record)
    logging.getLogger().handlers[:] = [handler]


class _Forwarder:
    def __init__(
        self,
        data: Connection,
        control: Connection,
        configs: Sequence[MqttSourceConfig],
        queue_settings: tuple[int, int, str, float],
        first_lines: Sequence[int],
        logs: _LogForwarder,
    ) -> None:
        self.data = data
        self.control = control
        self.logs = logs
        self.parent = os.getppid()
        self.queue = MessageQueue(*queue_settings)
        self.decoders = [MessageDecoder(config, first) for config, first in zip(configs, first_lines)]
        self.sources = [MqttSource(config.settings, self._receive, index=index) for index, config in enumerate(configs)]
        self.forwarded = 0

    def _receive(self, message: RawMessage) -> None:
        # On paho's network thread. Decoding here instead, before PUBACK,
        # took 45 to 50 µs of CPU time per message in the receiver process
        # instead of 27 to 30 (benchmarks/mqtt_throughput.py's stream).
        self.queue.put(message, message[3] if message[2] is not None else 0)

    def run(self) -> int:
        for source in self.sources:
            source.start()
        stopper: threading.Thread | None = None
        next_status = 0.0
        while True:
            raw = self.queue.take(FRAME_MESSAGES, STATUS_INTERVAL / 4)
            if 0 < len(raw) < FRAME_MESSAGES:
                # A short wait lets a busy stream fill the frame, so the
                # cost of a frame is shared by hundreds of messages.
                time.sleep(FRAME_WAIT)
                raw.extend(self.queue.take(FRAME_MESSAGES - len(raw), 0))
            decoders = self.decoders
            entries = [decoders[message[0]].decode(message) for message in raw]
            last = stopper is not None and not stopper.is_alive() and len(self.queue) == 0
            now = time.monotonic()
            if entries or last or now >= next_status or self.logs.records:
                self.forwarded += len(entries)
                if not self._send((entries, self._status(), self.logs.take(), last)):
                    return self._abandon("the engine process closed the pipe")
                next_status = now + STATUS_INTERVAL
            if last:
                return 0
            if os.getppid() != self.parent:
                return self._abandon("the engine process is gone")
            if stopper is None:
                command = self._command()
                if command == "gone":
                    return self._abandon("the engine process closed the command pipe")
                if command is not None:
                    if command != "stop":
                        logger.error("MQTT receiver: unknown command %r from the engine process; stopping", command)
                    logger.info("MQTT receiver: stopping; the broker keeps the sessions")
                    stopper = threading.Thread(target=self._stop_sources, name="stop-sources")
                    stopper.start()

    def _command(self) -> str | None:
        """Return the next command from the engine process, ``gone`` when its pipe is closed, or None."""
        try:
            if not self.control.poll():
                return None
            return str(self.control.recv())
        except (EOFError, OSError):
            return "gone"

    def _stop_sources(self) -> None:
        for source in self.sources:
            source.stop()

    def _send(self, frame: tuple[Any, ...]) -> bool:
        try:
            self.data.send_bytes(pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            return False
        return True

    def send_logs(self) -> bool:
        """Send the log records that are still held; return False when the pipe is closed."""
        return self._send(([], self._status(), self.logs.take(), False))

    def _abandon(self, reason: str) -> int:
        # Nothing can be handed over any more, so the process exits without
        # a clean disconnect (see _receiver_main). The messages in the queue
        # were acknowledged and are lost.
        _log_to_stderr(self.logs)
        logger.error(
            "MQTT receiver: %s; exiting; %d acknowledged messages in its queue are lost", reason, len(self.queue)
        )
        return 1

    def _status(self) -> dict[str, Any]:
        queue = self.queue
        return {
            "sources": [
                (source.connected, source.connects, source.disconnects, source.messages, source.oversize)
                for source in self.sources
            ],
            "queue_depth": len(queue),
            "queued_bytes": queue.queued_bytes,
            "dropped": queue.dropped,
            "blocked_seconds": queue.blocked_seconds,
            "forwarded": self.forwarded,
        }


# The engine process's side ---------------------------------------------------


@dataclass
class SourceStatus:
    """The state of one MQTT source as the engine process has it from the receiver's status reports.

    Counts add up over restarts of the receiver process.
    """

    settings: MqttSettings
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    messages: int = 0
    oversize: int = 0

    def __post_init__(self) -> None:
        self._connected_event = threading.Event()
        self._base = (0, 0, 0, 0)

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until a status report shows a connection; return whether one does."""
        return self._connected_event.wait(timeout)

    def update(self, reported: tuple[bool, int, int, int, int]) -> None:
        connected, connects, disconnects, messages, oversize = reported
        base_connects, base_disconnects, base_messages, base_oversize = self._base
        self.connects = base_connects + connects
        self.disconnects = base_disconnects + disconnects
        self.messages = base_messages + messages
        self.oversize = base_oversize + oversize
        self.set_connected(connected)

    def set_connected(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self._connected_event.set()
        else:
            self._connected_event.clear()

    def new_process(self) -> None:
        """Keep the counts so far as the base of the next receiver process's counts."""
        self._base = (self.connects, self.disconnects, self.messages, self.oversize)
        self.set_connected(False)


class Receiver:
    """Start, feed from, watch and stop the receiver process; see the module documentation."""

    def __init__(self, config: ServiceConfig) -> None:
        self.configs = config.sources
        self.queue_settings = (config.queue_size, config.queue_max_bytes, config.overflow, config.block_timeout)
        self.stop_timeout = config.block_timeout + STOP_GRACE
        self.sources = [SourceStatus(source.settings) for source in config.sources]
        self.restarts = 0
        self.dropped = 0
        self.queue_depth = 0
        self.lost = 0
        self.pid: int | None = None
        self.finished = False
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._control: Connection | None = None
        self._received = [0] * len(self.sources)
        self._dropped_before = 0
        self._last_status: dict[str, Any] = {}
        self._got = 0
        self._final = False
        self._stopping = False
        self._stop_deadline = 0.0
        self._restart_at: float | None = None
        self._deaths: deque[float] = deque()

    @property
    def alive(self) -> bool:
        """True while a receiver process runs."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start a receiver process (``python -m iotwarden.service.receiver``) and send it the settings."""
        data_read, data_write = os.pipe()
        control_read, control_write = os.pipe()
        set_pipe_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
        try:
            if set_pipe_size is not None:
                fcntl.fcntl(data_write, set_pipe_size, PIPE_BYTES)
        except OSError as error:
            logger.debug("cannot enlarge the receiver's pipe to %d bytes (%s); using the system's size", PIPE_BYTES, error)

        # The child imports the same iotwarden as this process, wherever it was imported from.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            path for path in (package_root, environment.get("PYTHONPATH")) if path
        )
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "iotwarden.service.receiver", str(data_write), str(control_read)],
                pass_fds=[data_write, control_read],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=environment,
            )
        except BaseException:
            for descriptor in (data_read, control_write):
                os.close(descriptor)
            raise
        finally:
            os.close(data_write)
            os.close(control_read)

        self._connection = Connection(data_read, writable=False)
        self._control = Connection(control_write, readable=False)
        level = logging.getLogger("iotwarden").getEffectiveLevel()
        first_lines = [count + 1 for count in self._received]
        try:
            self._control.send((self.configs, self.queue_settings, level, first_lines))
        except OSError:
            pass  # The child died at once; the next take() finds and reports it.

        self._process = process
        self._last_status = {}
        self._got = 0
        self._final = False
        self.pid = process.pid
        logger.info("started the MQTT receiver process (pid %d)", process.pid)

    def take(self, max_entries: int, timeout: float) -> list[Entry]:
        """Return up to about ``max_entries`` entries, waiting up to ``timeout`` seconds for the first frame.

        Raises:
            ReceiverError: the receiver process died more than
                ``MAX_RESTARTS`` times within ``RESTART_WINDOW`` seconds.
        """
        entries: list[Entry] = []
        if self._stopping:
            self._check_stop_deadline()
        connection = self._connection
        if connection is None:
            self._wait_for_restart(timeout)
            return entries
        try:
            if not connection.poll(timeout):
                if self._process is not None and self._process.poll() is not None:
                    self._ended()
                return entries
            while True:
                entries.extend(self._apply(pickle.loads(connection.recv_bytes())))
                if self._final or len(entries) >= max_entries or not connection.poll(0):
                    break
        except (EOFError, OSError):
            self._ended()
        if self._final and self._connection is not None:
            self._ended()
        return entries

    def request_stop(self) -> None:
        """Ask the receiver process to disconnect, forward the messages it still has and exit; see :attr:`finished`."""
        self._stopping = True
        self._stop_deadline = time.monotonic() + self.stop_timeout
        if self._control is None:
            self.finished = True
            return
        try:
            self._control.send("stop")
        except OSError:
            self._ended()

    def close(self) -> None:
        """Wait for the receiver process to end (killing it when it does not) and close the pipe."""
        process = self._process
        if process is not None:
            _reap(process, "did not exit")
        self._close_pipes()
        self._process = None
        for source in self.sources:
            source.set_connected(False)

    def _close_pipes(self) -> None:
        for connection in (self._connection, self._control):
            if connection is not None:
                connection.close()
        self._connection = None
        self._control = None

    # Internals -----------------------------------------------------------------

    def _apply(self, frame: tuple[Any, ...]) -> list[Entry]:
        entries, status, records, last = frame
        for record in records:
            logging.getLogger(record.name).handle(record)
        for source, reported in zip(self.sources, status["sources"]):
            source.update(reported)
        self._last_status = status
        self.dropped = self._dropped_before + status["dropped"]
        self.queue_depth = status["queue_depth"]
        self._got += len(entries)
        for entry in entries:
            self._received[entry[0]] += 1
        if last:
            self._final = True
        return entries

    def _check_stop_deadline(self) -> None:
        process = self._process
        if process is None or time.monotonic() <= self._stop_deadline:
            return
        logger.error(
            "the MQTT receiver process (pid %d) did not stop within %g s; killing it; "
            "the messages it still held are lost",
            process.pid, self.stop_timeout,
        )
        process.kill()
        self._ended()

    def _ended(self) -> None:
        """Handle the end of the receiver process: a clean stop, or a death to log and recover from."""
        process = self._process
        if process is None and self._connection is None:
            return
        clean = self._final
        self._close_pipes()
        if process is not None:
            _reap(process, "closed its pipe but did not exit")
        self._process = None
        for source in self.sources:
            source.new_process()

        status = self._last_status
        self._dropped_before += status.get("dropped", 0)
        if clean:
            self.finished = True
            return
        received = sum(reported[3] for reported in status.get("sources", ()))
        lost = max(0, received - status.get("dropped", 0) - self._got)
        self.lost += lost
        exit_code = process.returncode if process is not None else None
        logger.error(
            "the MQTT receiver process (pid %s) %s; at least %d messages it had acknowledged were lost",
            self.pid, _describe_exit(exit_code), lost,
        )
        if self._stopping:
            self.finished = True
            return

        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - RESTART_WINDOW:
            self._deaths.popleft()
        if len(self._deaths) > MAX_RESTARTS:
            raise ReceiverError(
                f"the MQTT receiver process died {len(self._deaths)} times within {RESTART_WINDOW:g} s "
                f"(last: {_describe_exit(exit_code)}); see the log above for its errors"
            )
        self._restart_at = now + RESTART_DELAY
        logger.warning("restarting the MQTT receiver process in %g s", RESTART_DELAY)

    def _wait_for_restart(self, timeout: float) -> None:
        if self._stopping or self._restart_at is None:
            time.sleep(min(timeout, 0.05))
            return
        remaining = self._restart_at - time.monotonic()
        if remaining > 0:
            time.sleep(min(timeout, remaining))
            return
        self._restart_at = None
        self.restarts += 1
        self.start()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _reap(process: subprocess.Popen[bytes], problem: str) -> None:
    """Wait up to 10 s for the receiver process to exit, then kill it, logging ``problem``."""
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        logger.error("the MQTT receiver process (pid %d) %s; killing it", process.pid, problem)
        process.kill()
        process.wait(timeout=10)


if __name__ == "__main__":
    _receiver_main(int(sys.argv[1]), int(sys.argv[2]))
