"""The live service behind ``iotwarden run``: sources feeding the engine and the store.

Processes and threads: the MQTT sources run in a receiver process
(:mod:`iotwarden.service.receiver`) that acknowledges, queues, decodes and
maps every message and sends them here in batches; one thread per followed
log file counts connection events. The thread that calls
:meth:`Service.run` (the main thread) does everything else: de-duplication,
re-ordering, micro-batches, the engine, the store, the dead-letter file and
the timers.

Micro-batches are cut by count (``batch_size`` observations) and by time
(every ``flush_interval`` seconds), whichever comes first.

The clock (``clock`` in the configuration) drives silence checks, the
reorderer's timed release and the time stamp of traffic features:

* ``wall`` (default, for live fleets): the local wall clock. A device that
  stops reporting is found silent even when the whole fleet stops, which an
  event-time clock would never notice. Silence checks pause while any
  source is disconnected and for ``silence_grace`` seconds after a
  (re)connect or start, so a backlog still queued at the broker is not taken
  for silence. It assumes device clocks are roughly right.
* ``event``: the latest event time received. For replays of recorded
  data at high speed, and for fleets whose clocks are far off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iotwarden.decisions.alerts import Alert
from iotwarden.engine import Engine
from iotwarden.errors import IotwardenError
from iotwarden.observation import FieldIssue, Observation, Rejection
from iotwarden.service.config import ServiceConfig
from iotwarden.service.receiver import Entry, Receiver, ReceiverError, SourceStatus
from iotwarden.service.traffic import BrokerTraffic, MosquittoLogFollower
from iotwarden.sources.deadletter import DeadLetterWriter
from iotwarden.sources.mqtt import RecentMessages
from iotwarden.sources.ordering import Reorderer
from iotwarden.api.history import ObservationRecorder
from iotwarden.feedback.suppressions import SuppressionSync
from iotwarden.response import Responder
from iotwarden.store import AlertStore

__all__ = ["Service", "ServiceCounters", "sidecar_path"]

logger = logging.getLogger(__name__)

SIDECAR_VERSION = 1
_LOG_WINDOW_SECONDS = 10.0
_LOGGED_REJECTIONS_PER_WINDOW = 20


@dataclass
class ServiceCounters:
    """Counts of one ``iotwarden run`` process (not saved across restarts)."""

    messages: int = 0
    observations: int = 0
    rejected: int = 0
    field_issues: int = 0
    duplicates: int = 0
    retained_without_time: int = 0
    reorderer_rejected: int = 0
    traffic_observations: int = 0
    alerts_opened: int = 0
    alerts_closed: int = 0
    rejection_reasons: Counter[str] = field(default_factory=Counter)


class Service:
    """One ``iotwarden run`` process; see the module documentation.

    Builds the engine (from the state file when it exists), the store and
    the dead-letter writer. The receiver process starts, and connects, in
    :meth:`run`.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.counters = ServiceCounters()
        self.reorderer = Reorderer(lateness=config.lateness)
        self.recent = RecentMessages(config.dedupe_size)
        self.max_event_time = -math.inf
        self.pending: list[Observation] = []
        self.first_message_at: float | None = None
        self.last_batch_at: float | None = None
        self.engine = self._load_engine()

        self.receiver = Receiver(config)
        self.sources: list[SourceStatus] = self.receiver.sources
        self._seen_connects = [0] * len(self.sources)
        self.traffic: BrokerTraffic | None = None
        self.followers: list[MosquittoLogFollower] = []
        if config.traffic.enabled:
            self.traffic = BrokerTraffic(config.traffic.interval, config.traffic.device_suffix, with_events=bool(config.logs))
            own_ids = frozenset(source.settings.client_id for source in self.sources)
            for log in config.logs:
                self.followers.append(
                    MosquittoLogFollower(
                        log.path, self.traffic, client_device=log.client_device, ignore_clients=own_ids, from_start=log.from_start
                    )
                )
        elif config.logs:
            logger.warning("traffic.enabled is false, so the configured Mosquitto logs are not followed")
        self._load_sidecar()

        self.store = AlertStore(config.store)
        self.responder = Responder.from_file(self.store, config.policies) if config.policies else None
        self.suppressions = SuppressionSync(self.store, self.engine)
        self.suppressions.refresh()
        # Console history: one observation per device per minute, written at
        # least every 2 s or every 5,000 rows, not once per batch.
        self.recorder = ObservationRecorder(self.store, self.engine, flush_rows=5000, flush_seconds=2.0)
        self.dead_letters = DeadLetterWriter(config.dead_letter)
        self._logged_rejections = 0
        self._suppressed_rejections = 0
        self._log_window_start = time.monotonic()
        self._dropped_logged = 0

    # State ------------------------------------------------------------------

    def _load_engine(self) -> Engine:
        path = self.config.state
        if not path.exists():
            logger.info("no engine state at %s; starting with a new engine", path)
            return Engine(self.config.engine)
        engine = Engine.load(path)
        if engine.config != self.config.engine:
            logger.warning(
                "the engine settings in %s differ from those saved in %s; the saved settings are used "
                "(delete the state file to start again with the new settings)",
                self.config.source_file, path,
            )
        logger.info(
            "resumed engine state from %s: %d devices, %d observations", path, engine.n_devices, engine.observations
        )
        return engine

    def _load_sidecar(self) -> None:
        path = sidecar_path(self.config.state)
        if not path.exists():
            return
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("version") != SIDECAR_VERSION:
                raise ValueError(f"version {saved.get('version')!r}, expected {SIDECAR_VERSION}")
            self.reorderer.restore(saved["reorderer"])
            self.recent.restore(saved["recent"])
            if saved.get("max_event_time") is not None:
                self.max_event_time = float(saved["max_event_time"])
            positions = {entry["path"]: entry for entry in saved.get("logs", [])}
            for follower in self.followers:
                if str(follower.path) in positions:
                    follower.restore(positions[str(follower.path)])
        except (OSError, ValueError, KeyError, TypeError, IotwardenError) as error:
            raise IotwardenError(
                f"cannot read the service state {path}: {error}; delete it (and {self.config.state}) to start afresh"
            ) from error

    def save_state(self) -> None:
        """Save the engine and the service's own state (reorderer, recent message keys, log positions)."""
        self.engine.save(self.config.state)
        extra = {
            "version": SIDECAR_VERSION,
            "reorderer": self.reorderer.snapshot(),
            "recent": self.recent.snapshot(),
            "max_event_time": self.max_event_time if math.isfinite(self.max_event_time) else None,
            "logs": [follower.snapshot() for follower in self.followers],
        }
        path = sidecar_path(self.config.state)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(extra), encoding="utf-8")
        os.replace(temporary, path)
        logger.info(
            "saved service state to %s (%d observations held for re-ordering, %d recent message keys)",
            path, self.reorderer.pending_count, len(self.recent),
        )

    # The loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> ServiceCounters:
        """Run until ``stop`` is set, then drain the queue, save the state and return the counts."""
        config = self.config
        run_id = self.store.start_run("run")
        logger.info(
            "iotwarden run started: store %s, state %s, dead letters %s, clock %s",
            config.store, config.state, config.dead_letter, config.clock,
        )
        self._warm_up_engine()
        for follower in self.followers:
            follower.start()
        self.receiver.start()

        now = time.monotonic()
        self._quiet_until = now + config.silence_grace
        next_flush = now + config.flush_interval
        next_silence = now + config.silence_interval
        next_stats = now + config.stats_interval
        next_checkpoint = now + config.checkpoint_interval
        failed = False
        receiver_error: ReceiverError | None = None
        try:
            while not stop.is_set():
                timeout = max(0.0, next_flush - time.monotonic())
                for entry in self.receiver.take(config.batch_size, timeout):
                    self._ingest(entry)
                now = time.monotonic()
                if len(self.pending) < config.batch_size and now < next_flush:
                    continue
                next_flush = now + config.flush_interval
                self._release_and_flush()
                if now - self._log_window_start >= _LOG_WINDOW_SECONDS:
                    self._roll_log_window(now)
                if now >= next_silence:
                    next_silence = now + config.silence_interval
                    self._check_silence(now)
                    if self.responder is not None:
                        self.responder.tick()
                if now >= next_stats:
                    next_stats = now + config.stats_interval
                    self._report()
                if now >= next_checkpoint:
                    next_checkpoint = now + config.checkpoint_interval
                    self.save_state()
        except ReceiverError as error:
            # The engine state is intact, so it is saved before the error is raised.
            receiver_error = error
            logger.error("stopping: %s", error)
        except BaseException:
            failed = True
            logger.exception("iotwarden run failed; the engine state is not saved")
            raise
        finally:
            self._shutdown(run_id, save=not failed)
        if receiver_error is not None:
            raise receiver_error
        return self.counters

    def _warm_up_engine(self) -> None:
        """Score a small synthetic batch on a throwaway engine before subscribing.

        The engine's numba kernels are loaded from numba's cache (0.2 s
        measured), or compiled the first time, on first use. Doing it here
        keeps that delay out of the message stream, while the broker still
        stores the messages. A failure is logged and does not stop the start.

        NOTE: nothing checks that the batch (4 devices, 3 metrics, 40 hourly
        readings each) reaches every kernel. A kernel that only a rarer path
        uses still loads on its first use.
        """
        started = time.perf_counter()
        generator = random.Random(0)
        batch = [
            Observation(
                f"warm-up-{device}",
                3600.0 * step,
                {"a": generator.gauss(10.0, 1.0), "b": generator.gauss(5.0, 1.0), "c": float(step % 3)},
            )
            for step in range(40)
            for device in range(4)
        ]
        try:
            Engine(self.engine.config).process_batch(batch)
        except Exception:  # noqa: BLE001 - the kernels then load on first use
            logger.warning("engine warm-up failed; the engine loads its kernels on first use", exc_info=True)
            return
        logger.info("engine kernels loaded in %.2f s", time.perf_counter() - started)

    def _shutdown(self, run_id: int, *, save: bool) -> None:
        logger.info(
            "stopping: disconnecting sources and draining about %d queued messages", self.receiver.queue_depth
        )
        for follower in self.followers:
            follower.stop()
        # The receiver process disconnects and forwards the messages it still
        # has; this thread keeps ingesting until its last batch has arrived.
        try:
            self.receiver.request_stop()
            while not self.receiver.finished:
                for entry in self.receiver.take(self.config.batch_size, 0.05):
                    self._ingest(entry)
                if len(self.pending) >= self.config.batch_size:
                    self._flush()
        finally:
            self.receiver.close()
        try:
            if save:
                self._flush()
                self.save_state()
            self.recorder.flush()
            self._report()
            self.store.finish_run(run_id, self.summary())
        finally:
            if self.responder is not None:
                self.responder.close()
            self.store.close()
            self.dead_letters.close()
        logger.info(
            "iotwarden run stopped: %d messages, %d observations, %d rejected, %d alerts opened",
            self.counters.messages, self.counters.observations, self.counters.rejected, self.counters.alerts_opened,
        )

    # Per message --------------------------------------------------------------

    def _ingest(self, entry: Entry) -> None:
        index, topic, size, retain, dup, received, line, topic_device, digest, parsed = entry
        counters = self.counters
        counters.messages += 1
        if self.first_message_at is None:
            self.first_message_at = received
        settings = self.sources[index].settings
        where = f"{settings.address}/{topic}"
        traffic = self.traffic

        if parsed is None:
            limit = settings.max_payload_bytes
            reason = f"payload of {size} bytes is larger than max_payload_bytes ({limit}); rejected before decoding"
            self._reject(Rejection(where, line, None, reason, raw=f"<{size} bytes not kept>"), "too_large")
            if traffic is not None and topic_device is not None:
                traffic.count_message(topic_device, topic, size, rejected=True)
            return

        if type(parsed) is tuple:
            device, when, metrics, attributes = parsed
            observation: Observation | FieldIssue | Rejection = Observation(device, when, metrics, attributes, where, line)
        else:
            observation = parsed[-1]
            for item in parsed:
                if type(item) is Rejection:
                    self._reject(item, "invalid_payload")
                elif type(item) is FieldIssue:
                    counters.field_issues += 1
                    self.dead_letters.write(item)
                    logger.debug("field dropped: %s", item)
        if type(observation) is not Observation:
            if traffic is not None and topic_device is not None:
                traffic.count_message(topic_device, topic, size, rejected=True)
            return
        if traffic is not None:
            traffic.count_message(observation.device, topic, size)

        # The parser fell back to the receive time when the payload has none.
        payload_time = observation.time != received
        if retain and not payload_time:
            counters.retained_without_time += 1
            logger.debug("retained message on %s has no event time; not scored (its reading time is unknown)", where)
            return
        key = (observation.device, observation.time if payload_time else None, digest)
        if (payload_time or retain or dup) and key in self.recent:
            counters.duplicates += 1
            logger.debug("message on %s already received (retained=%s, dup=%s); not scored again", where, retain, dup)
            return
        self.recent.add(key)
        if observation.time > self.max_event_time:
            self.max_event_time = observation.time
        for released in self.reorderer.push(observation):
            self._route(released)

    def _route(self, item: Observation | FieldIssue | Rejection) -> None:
        if type(item) is Observation:
            self.pending.append(item)
        elif type(item) is Rejection:
            if item.kind == "duplicate":
                self.counters.duplicates += 1
                self.dead_letters.write(item)
            else:
                self.counters.reorderer_rejected += 1
                self._reject(item, "out_of_order")

    def _reject(self, rejection: Rejection, code: str) -> None:
        self.counters.rejected += 1
        self.counters.rejection_reasons[code] += 1
        self.dead_letters.write(rejection)
        if self._logged_rejections < _LOGGED_REJECTIONS_PER_WINDOW:
            self._logged_rejections += 1
            logger.warning("rejected message %s", rejection)
        else:
            self._suppressed_rejections += 1

    # Timers -------------------------------------------------------------------

    def clock(self) -> float:
        """Return the service clock in epoch seconds: wall time, or the latest event time (see the module documentation)."""
        if self.config.clock == "wall":
            return time.time()
        return self.max_event_time

    def _release_and_flush(self) -> None:
        clock = self.clock()
        if math.isfinite(clock):
            for released in self.reorderer.release_until(clock - self.config.lateness):
                self._route(released)
        traffic = self.traffic
        if traffic is not None and traffic.due(time.time()):
            stamp = traffic.window_end if self.config.clock == "wall" else self.max_event_time
            rows = traffic.collect(stamp)
            if math.isfinite(stamp):
                self.pending.extend(rows)
                self.counters.traffic_observations += len(rows)
        self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        # Readings still held for reordering keep their devices from looking silent.
        result = self.engine.process_batch(batch, silence_clock=self.reorderer.frontier())
        self.recorder.record(batch)
        self.suppressions.refresh()
        self.counters.observations += len(batch)
        self.last_batch_at = time.time()
        self._store(result.alerts, result.closed)

    def _check_silence(self, now: float) -> None:
        if self.config.clock != "wall":
            return  # process_batch already checks silence against the latest event time
        for index, source in enumerate(self.sources):
            if not source.connected or source.connects != self._seen_connects[index]:
                self._seen_connects[index] = source.connects
                self._quiet_until = now + self.config.silence_grace
        if now < self._quiet_until:
            return
        self.engine.book.start_batch()
        raised = self.engine.check_silence(time.time() - self.config.lateness - self.config.flush_interval)
        self._store(raised, [])

    def _store(self, opened: list[Alert], closed: list[Alert]) -> None:
        if not opened and not closed:
            return
        self.store.record_alerts(opened, closed)
        if self.responder is not None:
            for alert in opened:
                self.responder.on_alert(alert)
        self.counters.alerts_opened += len(opened)
        self.counters.alerts_closed += len(closed)
        for alert in opened:
            level = logging.WARNING if alert.severity in ("high", "critical") else logging.INFO
            logger.log(level, "alert %s opened: device %s, %s (%s): %s", alert.id, alert.device, alert.category, alert.severity, alert.explanation)

    def _roll_log_window(self, now: float) -> None:
        """Log what the last window suppressed: rejections beyond the per-window limit, and queue drops."""
        if self._suppressed_rejections:
            logger.warning(
                "%d more rejected messages in the last %.0f s were not logged one by one; see %s",
                self._suppressed_rejections, now - self._log_window_start, self.config.dead_letter,
            )
        self._suppressed_rejections = 0
        self._logged_rejections = 0
        self._log_window_start = now
        dropped = self.receiver.dropped
        if dropped > self._dropped_logged:
            logger.warning(
                "dropped %d messages because the queue was full (overflow policy %s); %d dropped since start",
                dropped - self._dropped_logged, self.config.overflow, dropped,
            )
            self._dropped_logged = dropped

    def _report(self) -> None:
        self._roll_log_window(time.monotonic())
        summary = self.summary()
        logger.info(
            "processed %d messages, %d observations, %d rejected, %d duplicates, %d alerts opened; queue %d",
            summary["messages"], summary["observations"], summary["rejected"], summary["duplicates"],
            summary["alerts_opened"], summary["queue_depth"],
        )
        if self.config.status_file is not None:
            _write_json(self.config.status_file, summary)

    def summary(self) -> dict[str, Any]:
        """Return the counts and connection state as JSON-compatible data (the status file's content)."""
        counters = self.counters
        return {
            "time": time.time(),
            "messages": counters.messages,
            "observations": counters.observations,
            "engine_observations": self.engine.observations,
            "held_for_reordering": self.reorderer.pending_count,
            "rejected": counters.rejected,
            "rejection_reasons": dict(counters.rejection_reasons),
            "field_issues": counters.field_issues,
            "duplicates": counters.duplicates,
            "retained_without_time": counters.retained_without_time,
            "dropped": self.receiver.dropped,
            "queue_depth": self.receiver.queue_depth,
            "receiver": {
                "pid": self.receiver.pid,
                "alive": self.receiver.alive,
                "restarts": self.receiver.restarts,
                "lost": self.receiver.lost,
            },
            "traffic_observations": counters.traffic_observations,
            "alerts_opened": counters.alerts_opened,
            "alerts_closed": counters.alerts_closed,
            "devices": self.engine.n_devices,
            "first_message_at": self.first_message_at,
            "last_batch_at": self.last_batch_at,
            "sources": [
                {
                    "address": source.settings.address,
                    "client_id": source.settings.client_id,
                    "connected": source.connected,
                    "connects": source.connects,
                    "messages": source.messages,
                }
                for source in self.sources
            ],
        }

def sidecar_path(state: Path) -> Path:
    """Return the file beside the engine state that contains the service's own state."""
    return state.with_name(state.name + ".service.json")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data), encoding="utf-8")
    os.replace(temporary, path)
