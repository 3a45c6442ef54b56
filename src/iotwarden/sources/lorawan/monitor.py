"""Per-device LoRaWAN state: duplicate collapsing, frame-counter accounting, link features and rules.

:class:`LorawanMonitor` takes :class:`~iotwarden.sources.lorawan.events.LorawanEvent`
objects in arrival order and returns items for the replay pipeline:
an :class:`~iotwarden.observation.Observation` per uplink (link features and
decoded fields as metrics), :class:`~iotwarden.observation.FieldIssue` for
dropped decoded fields, and finished :class:`~iotwarden.decisions.alerts.Alert`
objects from the rules below.

Copies of one frame (same device, session and counter, same content) that
arrive within ``merge_window`` seconds of the first copy are one uplink. The
uplink is held until then, or until the device's next frame, and its
gateways are the union of all copies. So an uplink's observation comes out
at most ``merge_window`` seconds of stream time after its first copy.

Frame counters (``fcnt`` below is the 32-bit counter a network server
reconstructs; 16-bit on-air counters are extended the usual way first):

* ``fcnt`` one more than the last: nothing lost. ``N`` more: ``N - 1`` lost.
* 65535 then 0 from a 32-bit source is a 16-bit view of the counter (a
  network server or integration that truncates it): an info
  ``fcnt_rollover`` event, nothing lost, and counting goes on at 65536.
* A drop to ``reset_below`` or less is a device reset (ABP devices, or OTAA
  devices whose rejoin was not reported): an info ``fcnt_reset`` event and a
  new count. A network server only lets it through when frame-counter
  checks are relaxed for that device, and then a replay looks the same.
* A new DevAddr, or a join event, starts a new session: no event.
* The last counter again with the same content within
  ``retransmission_window``: a retransmission (confirmed uplinks are re-sent
  with the same counter until acknowledged). Later: ``lorawan_replay``.
* An older counter with content already seen within ``duplicate_window``
  of its first reception: a late copy from a slow gateway. Later, or an older
  counter never seen and not a reset: ``lorawan_replay``.
* A counter seen before with different content: ``fcnt_reuse``.
* A jump forward by more than ``max_fcnt_gap`` (LoRaWAN 1.0.x
  MAX_FCNT_GAP, 16384): ``fcnt_jump``; the loss is unknown.

Join rules: a DevNonce that a DevEUI already used (``devnonce_reuse``,
high; LoRaWAN 1.0.x network servers must reject it), more than
``join_flood_count`` join-requests or joins of one DevEUI within
``join_flood_window`` seconds (``join_flood``), and join-requests from
``gateway_join_devices`` or more distinct DevEUIs through one gateway within
that window (``join_flood`` on the gateway, for floods with random DevEUIs).

Gateway rule (``gateway_change``): a device with a settled history (at least
``gateway_change_min_uplinks`` uplinks, one gateway hearing at least half of
them) is heard only by gateways that rarely heard it, while its usual
gateways were up (they forwarded other frames within
``gateway_up_window``), with a best RSSI at least ``gateway_change_db`` dB
from its usual level: the device moved, or another transmitter uses its
identity.

Gateway rule ``jamming`` (:mod:`~iotwarden.sources.lorawan.jamming`): within
``jamming_window``, at least ``jamming_min_devices`` of the fixed devices a
gateway usually hears, and at least ``jamming_min_share`` of them, arrive
with a much lower SNR at a level RSSI, or lose frames at that gateway, each
compared with its own usual link there. That is a raised noise floor: a
jammer or a new interferer near the gateway.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iotwarden.decisions.alerts import Alert, Contribution
from iotwarden.errors import InvalidConfigError
from iotwarden.observation import FieldIssue, Observation
from iotwarden.sources.lorawan.episodes import SEVERITY_SCORES, EpisodeBook, describe_duration
from iotwarden.sources.lorawan.events import EventKind, LorawanEvent, Reception
from iotwarden.sources.lorawan.jamming import JammingWatch
from iotwarden.sources.payload import MetricValueError, ValuePolicy, flatten

__all__ = ["LINK_METRICS", "LorawanMonitor", "MonitorConfig"]

logger = logging.getLogger(__name__)

Item = Observation | FieldIssue | Alert

# Metric names of the link features; decoded payload fields keep their own names.
LINK_METRICS = (
    "lora.rssi",
    "lora.snr",
    "lora.rssi_mean",
    "lora.snr_mean",
    "lora.gateways",
    "lora.dr",
    "lora.sf",
    "lora.payload_bytes",
    "lora.interval",
    "lora.frames_lost",
    "lora.loss_rate",
    "lora.battery",
    "lora.margin",
)

_SEEN_FRAMES = 256  # counters remembered per device for late-copy and replay checks
_SEEN_NONCES = 4096  # DevNonces remembered per DevEUI
_COUNTER_16 = 1 << 16
_WEAKER_ELSEWHERE_UPLINKS = 3  # consecutive uplinks heard elsewhere, weaker, before gateway_change
# Decoded fields of a position: they make a device mobile and are not level metrics.
_POSITION_FIELDS = frozenset({"latitude", "longitude", "lat", "lon", "lng", "long", "altitude", "gpslatitude", "gpslongitude"})
_LATE_FRAME_DISTANCE = 32  # a never-seen older counter this close to the last one may be a late frame
_STALE_EVIDENCE = 60.0  # seconds between a gateway's reception time and forwarding that an explanation mentions


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds of the LoRaWAN rules; durations in seconds of event time.

    Attributes:
        merge_window: Copies of one frame arriving within this of the first
            copy are merged into one uplink.
        duplicate_window: A copy of an older frame within this of the
            frame's first reception is a late copy, not a replay.
        retransmission_window: The last frame repeated with the same content
            within this is a retransmission, not a replay.
        reset_below: A counter that drops to this value or less is a reset.
        max_fcnt_gap: A forward jump larger than this raises ``fcnt_jump``.
        join_flood_count: Join-requests (or joins) of one DevEUI within
            ``join_flood_window`` above which ``join_flood`` is raised.
        join_flood_window: Window of the join-flood rules.
        gateway_join_devices: Distinct DevEUIs sending join-requests through
            one gateway within ``join_flood_window`` that raise a gateway
            ``join_flood``.
        gateway_change_min_uplinks: Uplinks of history before
            ``gateway_change`` is checked.
        gateway_change_db: Smallest change of best RSSI, in dB, for
            ``gateway_change``.
        gateway_up_window: A gateway that forwarded any frame within this
            is taken to be up.
        loss_halflife: Half-life of ``lora.loss_rate``, in uplinks.
        jamming_window: Seconds of uplinks over which each device's link at
            a gateway is compared with its usual link there (``jamming``).
        jamming_min_devices: Degraded devices at one gateway, at least, for
            ``jamming``. Fewer is a device problem.
        jamming_min_share: Share of the judged devices at a gateway that must
            be degraded. Judged are the devices the gateway usually hears
            that sent ``jamming_min_frames`` frames or more in the window.
        jamming_snr_drop_db: Smallest median SNR drop, in dB, of a degraded
            device.
        jamming_snr_spread: The SNR drop must also reach this many standard
            deviations of the device's own SNR at the gateway.
        jamming_rssi_tolerance_db: Largest median RSSI fall, in dB, of a
            device whose SNR drop counts: a raised noise floor leaves RSSI
            level, fading lowers both.
        jamming_loss_increase: Rise of the share of a device's frames that
            the gateway missed, over its usual share, that makes the device
            degraded.
        jamming_loss_probability: The device's misses must also be this
            unlikely, or less, by chance at its usual miss share (binomial
            tail probability).
        jamming_min_frames: Frames of a device in the window, at least, for
            the device to be judged. Devices with fewer count neither way.
        jamming_baseline_receptions: Receptions of a device at a gateway
            before its usual SNR and RSSI there are trusted.
        jamming_gateway_silence: A frame counts as missed by a gateway only
            when the gateway forwarded a frame of another device within this
            many seconds of it. Otherwise the gateway was down.
        jamming_adopt_after: Seconds after which a device's degraded link
            at a gateway is learned as its new usual link.
        episode_gap: Findings of one rule on one device closer than this
            form one alert.
        decoded_metrics: Turn numeric decoded payload fields into metrics.
    """

    merge_window: float = 30.0
    duplicate_window: float = 600.0
    retransmission_window: float = 3600.0
    reset_below: int = 64
    max_fcnt_gap: int = 16384
    join_flood_count: int = 10
    join_flood_window: float = 60.0
    gateway_join_devices: int = 20
    gateway_change_min_uplinks: int = 30
    gateway_change_db: float = 20.0
    gateway_up_window: float = 3600.0
    loss_halflife: float = 32.0
    jamming_window: float = 3600.0
    jamming_min_devices: int = 3
    jamming_min_share: float = 0.5
    jamming_snr_drop_db: float = 6.0
    jamming_snr_spread: float = 3.0
    jamming_rssi_tolerance_db: float = 3.0
    jamming_loss_increase: float = 0.3
    jamming_loss_probability: float = 0.001
    jamming_min_frames: int = 3
    jamming_baseline_receptions: int = 20
    jamming_gateway_silence: float = 600.0
    jamming_adopt_after: float = 6 * 3600.0
    episode_gap: float = 3600.0
    decoded_metrics: bool = True

    def __post_init__(self) -> None:
        for name in (
            "merge_window", "duplicate_window", "retransmission_window", "join_flood_window", "episode_gap",
            "jamming_gateway_silence", "jamming_adopt_after",
        ):
            if not getattr(self, name) >= 0:
                raise InvalidConfigError(f"invalid {name} {getattr(self, name)!r}: expected seconds >= 0")
        for name in ("jamming_snr_drop_db", "jamming_snr_spread", "jamming_rssi_tolerance_db"):
            if not getattr(self, name) >= 0:
                raise InvalidConfigError(f"invalid {name} {getattr(self, name)!r}: expected a number >= 0")
        for name in (
            "join_flood_count", "gateway_join_devices", "gateway_change_min_uplinks", "max_fcnt_gap",
            "jamming_min_devices", "jamming_min_frames", "jamming_baseline_receptions",
        ):
            if not getattr(self, name) >= 1:
                raise InvalidConfigError(f"invalid {name} {getattr(self, name)!r}: expected an integer >= 1")
        if not self.loss_halflife > 0:
            raise InvalidConfigError(f"invalid loss_halflife {self.loss_halflife!r}: expected a number of uplinks > 0")
        if not self.jamming_window > 0:
            raise InvalidConfigError(f"invalid jamming_window {self.jamming_window!r}: expected seconds > 0")
        for name in ("jamming_min_share", "jamming_loss_increase", "jamming_loss_probability"):
            if not 0 < getattr(self, name) <= 1:
                raise InvalidConfigError(f"invalid {name} {getattr(self, name)!r}: expected a share in (0, 1]")


@dataclass(slots=True)
class _Pending:
    """An accepted uplink held for copies from other gateways."""

    event: LorawanEvent
    fcnt: int
    lost: int | None
    source: str
    line: int | None
    receptions: dict[str, Reception]
    copies: int = 1
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Device:
    session: str | None = None
    new_session: bool = False
    last_fcnt: int | None = None
    last_time: float | None = None
    view_offset: int = 0
    last_uplink_time: float | None = None
    seen: OrderedDict[int, tuple[float, str | None]] = field(default_factory=OrderedDict)
    pending: _Pending | None = None
    uplinks: int = 0
    retransmissions: int = 0
    late_copies: int = 0
    loss_received: float = 0.0
    loss_lost: float = 0.0
    gateway_weight: dict[str, float] = field(default_factory=dict)
    best_rssi_mean: float | None = None
    mobile: bool = False
    elsewhere: int = 0
    joins: deque[float] = field(default_factory=deque)
    nonces: OrderedDict[int, tuple[float, bytes | None]] = field(default_factory=OrderedDict)


class LorawanMonitor:
    """Turn LoRaWAN events of many devices into observations and rule alerts.

    Feed events with :meth:`push` in arrival order and call :meth:`finish`
    at the end of the input. A long-running consumer also calls
    :meth:`expire` on a timer with the current time, which releases held
    uplinks and finished alerts.
    """

    def __init__(self, config: MonitorConfig | None = None, policy: ValuePolicy | None = None) -> None:
        self.config = config or MonitorConfig()
        self.policy = policy or ValuePolicy()
        self.devices: dict[str, _Device] = {}
        self.episodes = EpisodeBook(self.config.episode_gap)
        self.jamming = JammingWatch(self.config, self.episodes)
        self.clock = -math.inf
        self._due: list[tuple[float, int, str]] = []
        self._sequence = 0
        self._gateway_last_heard: dict[str, float] = {}
        self._gateway_joins: dict[str, deque[tuple[float, str]]] = {}
        self._loss_decay = 0.5 ** (1.0 / self.config.loss_halflife)
        self._gateway_decay = 0.5 ** (1.0 / 200.0)

    # Input ---------------------------------------------------------------------------

    def push(self, event: LorawanEvent, *, source: str = "", line: int | None = None) -> list[Item]:
        """Take one event; return the items it completes (possibly none)."""
        items: list[Item] = []
        if event.time > self.clock:
            self.clock = event.time
            items.extend(self._release_due())
        device = self.devices.get(event.device)
        if device is None:
            device = self.devices[event.device] = _Device()
        for reception in event.receptions:
            heard = self._gateway_last_heard.get(reception.gateway)
            if heard is None or event.time > heard:
                self._gateway_last_heard[reception.gateway] = event.time

        if event.kind == EventKind.UPLINK:
            items.extend(self._uplink(device, event, source, line))
        elif event.kind in (EventKind.JOIN, EventKind.JOIN_REQUEST):
            items.extend(self._join(device, event, source, line))
        elif event.kind == EventKind.STATUS:
            items.extend(self._status(event, source, line))
        elif event.kind == EventKind.ERROR:
            items.extend(self._error(device, event, source, line))
        return items

    def expire(self, clock: float) -> list[Item]:
        """Advance the clock to ``clock``: release held uplinks, evaluate waiting gateways, release finished episodes."""
        if clock > self.clock:
            self.clock = clock
        return [*self._release_due(), *self.jamming.expire(self.clock), *self.episodes.expire(self.clock)]

    def finish(self) -> list[Item]:
        """Release every held uplink and finish every episode (end of input)."""
        items: list[Item] = []
        held = [(device.pending.event.time, name) for name, device in self.devices.items() if device.pending is not None]
        for _, name in sorted(held):
            items.extend(self._commit(name, self.devices[name]))
        items.extend(self.jamming.finish())
        items.extend(self.episodes.finish())
        return items

    # Uplinks ---------------------------------------------------------------------------

    def _uplink(self, device: _Device, event: LorawanEvent, source: str, line: int | None) -> list[Item]:
        items: list[Item] = []
        pending = device.pending
        if pending is not None and self._same_frame(pending, event):
            self._merge(pending, event)
            return items
        if pending is not None:
            items.extend(self._commit(event.device, device))

        assert event.fcnt is not None
        if event.dev_addr and device.session and event.dev_addr != device.session:
            device.new_session = True
        if event.dev_addr:
            device.session = event.dev_addr
        if device.last_fcnt is None or device.new_session:
            device.new_session = False
            device.view_offset = 0
            device.seen.clear()
            return items + self._accept(device, event, event.fcnt, None, source, line)

        fcnt = self._extend_counter(device, event)
        last = device.last_fcnt
        if fcnt == last:
            items.extend(self._repeat_of_last(device, event, fcnt, source, line))
        elif fcnt < last:
            items.extend(self._backwards(device, event, fcnt, source, line))
        else:
            gap = fcnt - last
            if gap > self.config.max_fcnt_gap:
                items.extend(
                    self._note(
                        event, "fcnt_jump", "medium", source, line,
                        f"Frame counter jumped from {last} to {fcnt} ({gap} ahead). LoRaWAN 1.0.x network servers "
                        f"drop frames more than {self.config.max_fcnt_gap} ahead; a forged or corrupted counter, or "
                        "a device that skipped ahead to lock out its own next frames.",
                        Contribution("fcnt", float(fcnt), float(last + 1), None, float(last + self.config.max_fcnt_gap), SEVERITY_SCORES["medium"]),
                        {"previous_fcnt": last, "fcnt": fcnt},
                    )
                )
                items.extend(self._accept(device, event, fcnt, None, source, line))
            else:
                items.extend(self._accept(device, event, fcnt, gap - 1, source, line))
        return items

    def _extend_counter(self, device: _Device, event: LorawanEvent) -> int:
        """Return the event's counter on the device's 32-bit scale."""
        assert event.fcnt is not None and device.last_fcnt is not None
        last = device.last_fcnt
        if event.fcnt_bits == 16:
            low = event.fcnt & 0xFFFF
            base = last & ~0xFFFF
            forward = base | low if low >= (last & 0xFFFF) else base + _COUNTER_16 + low
            if forward - last <= self.config.max_fcnt_gap:
                return forward
            backward = base | low
            return backward if backward <= last else forward
        if device.view_offset:
            shifted = event.fcnt + device.view_offset
            if 0 < shifted - last <= self.config.max_fcnt_gap:
                return shifted
        return event.fcnt

    def _repeat_of_last(self, device: _Device, event: LorawanEvent, fcnt: int, source: str, line: int | None) -> list[Item]:
        first_time, fingerprint = device.seen.get(fcnt, (device.last_time or event.time, None))
        if not _same_content(fingerprint, event.fingerprint):
            return self._fcnt_reuse(event, fcnt, first_time, source, line)
        age = event.time - first_time
        if age <= self.config.retransmission_window:
            device.retransmissions += 1
            return []
        return self._note(
            event, "lorawan_replay", "high", source, line,
            f"Frame {fcnt} was received again {describe_duration(age)} after its first reception, with the same "
            f"content{_via(event)}. A retransmission comes within minutes; this is a recorded frame sent again, by an "
            "attacker or by a gateway that stores frames and forwards them late.",
            Contribution("fcnt", float(fcnt), float(fcnt + 1), None, None, SEVERITY_SCORES["high"]),
            {"fcnt": fcnt, "first_seen": first_time, "age_seconds": age, "gateways": _gateways(event)},
        )

    def _backwards(self, device: _Device, event: LorawanEvent, fcnt: int, source: str, line: int | None) -> list[Item]:
        assert device.last_fcnt is not None and device.last_time is not None
        last = device.last_fcnt
        record = device.seen.get(fcnt)
        if record is not None:
            first_time, fingerprint = record
            if _same_content(fingerprint, event.fingerprint):
                age = event.time - first_time
                if age <= self.config.duplicate_window:
                    device.late_copies += 1
                    return []
                if fcnt > self.config.reset_below:
                    return self._old_frame(event, fcnt, last, first_time, age, source, line)
                # A restarting device often sends the same first frames again (a boot message): a reset.
            elif fcnt > self.config.reset_below:
                return self._fcnt_reuse(event, fcnt, first_time, source, line)

        age = event.time - device.last_time
        if record is None and age <= self.config.duplicate_window and last - fcnt <= _LATE_FRAME_DISTANCE:
            # A frame overtaken by a few later ones (a slow gateway): no longer lost.
            device.late_copies += 1
            device.loss_lost = max(device.loss_lost - 1.0, 0.0)
            _remember(device.seen, fcnt, (event.time, event.fingerprint), _SEEN_FRAMES)
            return []

        if event.fcnt_bits == 32 and event.fcnt is not None and event.fcnt < _COUNTER_16:
            step = (event.fcnt - last) % _COUNTER_16
            if 0 < step <= self.config.max_fcnt_gap and last % _COUNTER_16 > event.fcnt:
                extended = last + step
                device.view_offset = extended - event.fcnt
                items = self._note(
                    event, "fcnt_rollover", "info", source, line,
                    f"Frame counter went from {last} to {event.fcnt}: the low 16 bits rolled over. The source "
                    f"reports a 16-bit view of the counter; counting goes on at {extended}.",
                    Contribution("fcnt", float(event.fcnt), float(last + 1), None, None, 0.0),
                    {"previous_fcnt": last, "fcnt": event.fcnt, "extended_fcnt": extended},
                )
                return items + self._accept(device, event, extended, step - 1, source, line)

        if fcnt <= self.config.reset_below:
            items = self._note(
                event, "fcnt_reset", "info", source, line,
                f"Frame counter restarted: {last} then {fcnt}, in the same session. The device rebooted or "
                "rejoined unseen; the network server accepted it, so frame-counter checks are relaxed for this "
                "device, and a replayed frame would look the same.",
                Contribution("fcnt", float(fcnt), float(last + 1), None, None, 0.0),
                {"previous_fcnt": last, "fcnt": fcnt},
            )
            device.view_offset = 0
            device.seen.clear()
            return items + self._accept(device, event, fcnt, None, source, line)

        return self._note(
            event, "lorawan_replay", "high", source, line,
            f"Frame counter went back from {last} to {fcnt}, {describe_duration(age)} after frame {last}{_via(event)}. "
            f"Not a reset (the counter did not restart at {self.config.reset_below} or less): an old frame sent again.",
            Contribution("fcnt", float(fcnt), float(last + 1), None, None, SEVERITY_SCORES["high"]),
            {"fcnt": fcnt, "last_fcnt": last, "gateways": _gateways(event)},
        )

    def _old_frame(self, event: LorawanEvent, fcnt: int, last: int, first_time: float, age: float, source: str, line: int | None) -> list[Item]:
        return self._note(
            event, "lorawan_replay", "high", source, line,
            f"Old frame {fcnt} was received again {describe_duration(age)} after its first reception, after frame "
            f"{last}, with the same content{_via(event)}: a recorded frame sent again, by an attacker or by a "
            "gateway that stores frames and forwards them late.",
            Contribution("fcnt", float(fcnt), float(last + 1), None, None, SEVERITY_SCORES["high"]),
            {"fcnt": fcnt, "last_fcnt": last, "first_seen": first_time, "age_seconds": age, "gateways": _gateways(event)},
        )

    def _fcnt_reuse(self, event: LorawanEvent, fcnt: int, first_time: float, source: str, line: int | None) -> list[Item]:
        return self._note(
            event, "fcnt_reuse", "high", source, line,
            f"Frame counter {fcnt} was used again with different content{_via(event)}, "
            f"{describe_duration(max(event.time - first_time, 0.0))} after its first use. A LoRaWAN device never "
            "sends two different frames with one counter: a forged frame, or a device whose keys are shared.",
            Contribution("fcnt", float(fcnt), None, None, None, SEVERITY_SCORES["high"]),
            {"fcnt": fcnt, "first_seen": first_time, "gateways": _gateways(event)},
        )

    def _accept(self, device: _Device, event: LorawanEvent, fcnt: int, lost: int | None, source: str, line: int | None) -> list[Item]:
        device.last_fcnt = fcnt
        device.last_time = event.time
        _remember(device.seen, fcnt, (event.time, event.fingerprint), _SEEN_FRAMES)
        receptions: dict[str, Reception] = {}
        _merge_receptions(receptions, event.receptions)
        device.pending = _Pending(event, fcnt, lost, source, line, receptions)
        self._sequence += 1
        heapq.heappush(self._due, (event.time + self.config.merge_window, self._sequence, event.device))
        return []

    def _same_frame(self, pending: _Pending, event: LorawanEvent) -> bool:
        if event.fcnt is None or event.time - pending.event.time > self.config.merge_window:
            return False
        if event.dev_addr and pending.event.dev_addr and event.dev_addr != pending.event.dev_addr:
            return False
        same_counter = event.fcnt == pending.event.fcnt or (event.fcnt_bits == 16 and (pending.fcnt & 0xFFFF) == event.fcnt)
        return same_counter and _same_content(pending.event.fingerprint, event.fingerprint)

    def _merge(self, pending: _Pending, event: LorawanEvent) -> None:
        pending.copies += 1
        _merge_receptions(pending.receptions, event.receptions)

    def _release_due(self) -> list[Item]:
        items: list[Item] = []
        while self._due and self._due[0][0] < self.clock:
            _, _, name = heapq.heappop(self._due)
            device = self.devices[name]
            pending = device.pending
            if pending is not None and pending.event.time + self.config.merge_window < self.clock:
                items.extend(self._commit(name, device))
        return items

    def _commit(self, name: str, device: _Device) -> list[Item]:
        """Turn the held uplink into an observation and run the gateway rule."""
        pending = device.pending
        assert pending is not None
        device.pending = None
        event = pending.event
        items: list[Item] = []
        metrics: dict[str, float] = {}
        receptions = list(pending.receptions.values())

        if pending.lost is not None:
            device.loss_received = device.loss_received * self._loss_decay + 1.0
            device.loss_lost = device.loss_lost * self._loss_decay + pending.lost
        # Seconds per frame-counter step: the device's transmit period, which lost frames do not stretch.
        interval = None
        previous = device.last_uplink_time
        if pending.lost is not None and previous is not None:
            interval = (event.time - previous) / (pending.lost + 1)
        device.last_uplink_time = event.time if previous is None else max(previous, event.time)
        items.extend(self._gateway_change(name, device, event, receptions, pending))
        if not device.mobile:
            # A mobile device's link changes with its position, so it is no evidence of a gateway's noise.
            items.extend(self.jamming.observe(name, event.time, receptions, pending.lost, previous, pending.source, pending.line))

        if not event.mac_only:
            _link_metrics(metrics, receptions, event)
            if pending.lost is not None:
                metrics["lora.frames_lost"] = float(pending.lost)
            if device.loss_received > 0:
                metrics["lora.loss_rate"] = device.loss_lost / (device.loss_lost + device.loss_received)
            if interval is not None and interval > 0:
                metrics["lora.interval"] = interval
            if self.config.decoded_metrics and event.decoded:
                items.extend(self._decoded_metrics(metrics, event.decoded, pending.source, pending.line))
        device.uplinks += 1

        attributes = _attributes(event)
        attributes["fcnt"] = str(pending.fcnt)
        if event.mac_only:
            attributes["frame"] = "mac-only"
        if pending.errors:
            attributes["error"] = ",".join(pending.errors)
        items.append(Observation(name, event.time, metrics, attributes, pending.source, pending.line))
        return items

    def _decoded_metrics(self, metrics: dict[str, float], decoded: Mapping[str, Any], source: str, line: int | None) -> list[FieldIssue]:
        issues: list[FieldIssue] = []
        for key, value in flatten(decoded).items():
            if any(part.startswith("_") for part in key.split(".")) or key.startswith("lora."):
                continue  # recorder annotations such as CampusIoT's _geohash_precision
            leaf = key.rsplit(".", 1)[-1].lower()
            if leaf in _POSITION_FIELDS or "counter" in leaf or leaf == "uptime":
                # Positions jump when a tracker moves, and counters only grow: neither has a level to learn.
                continue
            if isinstance(value, (bool, list)) or value is None:
                continue  # flags and lists are not measurements
            try:
                number = self.policy.from_json(key, value)
            except MetricValueError as exc:
                if not exc.invalid:
                    issues.append(FieldIssue(source, line, key, exc.reason))
                continue  # free text (a firmware version, a status word) is not a measurement
            if number is not None:
                metrics[key] = number
        return issues

    # Gateway rule ----------------------------------------------------------------------

    def _gateway_change(self, name: str, device: _Device, event: LorawanEvent, receptions: list[Reception], pending: _Pending) -> list[Item]:
        rssis = [reception.rssi for reception in receptions if reception.rssi is not None]
        if not receptions or not rssis:
            return []
        if event.decoded and any(key.lower() in _POSITION_FIELDS for key in event.decoded):
            device.mobile = True  # a tracker reports its position: other gateways are expected
        if device.mobile:
            return []
        best = max(rssis)
        heard = {reception.gateway for reception in receptions}
        items: list[Item] = []
        total = sum(device.gateway_weight.values())
        if device.uplinks >= self.config.gateway_change_min_uplinks and total > 0 and device.best_rssi_mean is not None:
            usual = {gateway for gateway, weight in device.gateway_weight.items() if weight >= 0.05 * total}
            settled = max(device.gateway_weight.values()) >= 0.5 * total
            shift = best - device.best_rssi_mean
            elsewhere = settled and heard.isdisjoint(usual) and abs(shift) >= self.config.gateway_change_db
            device.elsewhere = device.elsewhere + 1 if elsewhere else 0
            # A stronger signal at an unusual gateway alerts at once. A weaker one is usually a frame
            # the usual gateway missed, so it must repeat on consecutive uplinks.
            if elsewhere and (shift > 0 or device.elsewhere >= _WEAKER_ELSEWHERE_UPLINKS):
                up = [
                    gateway for gateway in usual
                    if event.time - self._gateway_last_heard.get(gateway, -math.inf) <= self.config.gateway_up_window
                ]
                if up:
                    items.extend(
                        self._note(
                            event, "gateway_change", "medium", pending.source, pending.line,
                            f"Uplink {pending.fcnt} was heard only by {_names(heard)}, none of which usually hears this "
                            f"device, at {best:.0f} dBm against its usual {device.best_rssi_mean:.0f} dBm, while its usual "
                            f"{_names(up)} forwarded other frames: the device moved, "
                            "or another transmitter uses its identity.",
                            Contribution("lora.rssi", best, device.best_rssi_mean, None, None, SEVERITY_SCORES["medium"]),
                            {"gateways": sorted(heard), "usual_gateways": sorted(usual), "rssi_shift_db": shift},
                        )
                    )
        for gateway in list(device.gateway_weight):
            device.gateway_weight[gateway] *= self._gateway_decay
        for gateway in heard:
            device.gateway_weight[gateway] = device.gateway_weight.get(gateway, 0.0) + 1.0
        if device.best_rssi_mean is None:
            device.best_rssi_mean = best
        elif not items:
            device.best_rssi_mean += 0.05 * (best - device.best_rssi_mean)
        return items

    # Joins, status and errors ----------------------------------------------------------

    def _join(self, device: _Device, event: LorawanEvent, source: str, line: int | None) -> list[Item]:
        items: list[Item] = []
        config = self.config
        device.new_session = True
        if event.kind == EventKind.JOIN_REQUEST and event.dev_nonce is not None:
            items.extend(self._devnonce(device, event, source, line))

        device.joins.append(event.time)
        while device.joins and event.time - device.joins[0] > config.join_flood_window:
            device.joins.popleft()
        if len(device.joins) > config.join_flood_count:
            what = "join-requests" if event.kind == EventKind.JOIN_REQUEST else "joins"
            items.extend(
                self._note(
                    event, "join_flood", "high", source, line,
                    f"{len(device.joins)} {what} from DevEUI {event.device} within {config.join_flood_window:g} s"
                    f"{_via(event)}. A device backs off between join attempts (duty-cycle limits allow a few per "
                    f"minute at most): a join flood that loads the network and join server.{_stale(event)}",
                    Contribution("join_requests", float(len(device.joins)), None, None, float(config.join_flood_count), SEVERITY_SCORES["high"]),
                    {"window_seconds": config.join_flood_window, "count": len(device.joins)},
                )
            )
        if event.kind == EventKind.JOIN_REQUEST:
            items.extend(self._gateway_join_flood(event, source, line))
        if event.kind == EventKind.JOIN:
            items.append(Observation(event.device, event.time, {}, {**_attributes(event), "frame": "join"}, source, line))
        return items

    def _devnonce(self, device: _Device, event: LorawanEvent, source: str, line: int | None) -> list[Item]:
        assert event.dev_nonce is not None
        nonce = event.dev_nonce
        raw = bytes.fromhex(event.fingerprint) if event.fingerprint else None
        previous = device.nonces.get(nonce)
        if previous is None:
            _remember(device.nonces, nonce, (event.time, raw), _SEEN_NONCES)
            return []
        first_time, first_raw = previous
        identical = raw is not None and raw == first_raw
        how = "an identical join-request, MIC included" if identical else "a join-request with a different MIC"
        return self._note(
            event, "devnonce_reuse", "high", source, line,
            f"DevNonce {nonce} of DevEUI {event.device} was used again, {describe_duration(max(event.time - first_time, 0.0))} "
            f"after its first use, in {how}{_via(event)}. LoRaWAN network servers must reject a used DevNonce; a "
            f"replayed join-request that is accepted resets the device's session.{_stale(event)}",
            Contribution("dev_nonce", float(nonce), None, None, None, SEVERITY_SCORES["high"]),
            {"dev_nonce": nonce, "first_seen": first_time, "identical_frame": identical, "stale_seconds": event.stale_seconds},
        )

    def _gateway_join_flood(self, event: LorawanEvent, source: str, line: int | None) -> list[Item]:
        items: list[Item] = []
        window = self.config.join_flood_window
        for reception in event.receptions:
            recent = self._gateway_joins.setdefault(reception.gateway, deque())
            recent.append((event.time, event.device))
            while recent and event.time - recent[0][0] > window:
                recent.popleft()
            devices = {device for _, device in recent}
            if len(devices) >= self.config.gateway_join_devices:
                items.extend(
                    self.episodes.note(
                        reception.gateway, "join_flood", event.time,
                        severity="high",
                        summary=(
                            f"Gateway {reception.gateway} forwarded join-requests from {len(devices)} different DevEUIs "
                            f"within {window:g} s: a join flood with changing DevEUIs."
                        ),
                        metric=Contribution("join_devices", float(len(devices)), None, None, float(self.config.gateway_join_devices), SEVERITY_SCORES["high"]),
                        details={"scope": "gateway", "window_seconds": window, "devices": len(devices)},
                        source=source,
                        line=line,
                    )
                )
        return items

    def _status(self, event: LorawanEvent, source: str, line: int | None) -> list[Item]:
        metrics: dict[str, float] = {}
        if event.battery_level is not None:
            metrics["lora.battery"] = event.battery_level
        if event.margin is not None:
            metrics["lora.margin"] = event.margin
        return [Observation(event.device, event.time, metrics, {**_attributes(event), "frame": "status"}, source, line)]

    def _error(self, device: _Device, event: LorawanEvent, source: str, line: int | None) -> list[Item]:
        pending = device.pending
        if pending is not None and event.fcnt is not None and pending.event.fcnt == event.fcnt:
            pending.errors.append(event.error or "error")
            return []
        # Kept out of the telemetry, but still a sign of life.
        attributes = {**_attributes(event), "frame": "error", "error": event.error or "error"}
        return [Observation(event.device, event.time, {}, attributes, source, line)]

    def _note(
        self,
        event: LorawanEvent,
        category: str,
        severity: str,
        source: str,
        line: int | None,
        summary: str,
        metric: Contribution,
        details: dict[str, Any],
    ) -> list[Item]:
        details = {"dialect": event.dialect, **details}
        return list(
            self.episodes.note(
                event.device, category, event.time,
                severity=severity, summary=summary, metric=metric, details=details, source=source, line=line,
            )
        )


# Helpers -------------------------------------------------------------------------------


def _same_content(first: str | None, second: str | None) -> bool:
    """True unless both fingerprints are known and differ."""
    return first is None or second is None or first == second


def _remember(table: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


def _merge_receptions(into: dict[str, Reception], receptions: Iterable[Reception]) -> None:
    """Keep one reception per gateway, the strongest (a gateway may report one frame on two antennas)."""
    for reception in receptions:
        known = into.get(reception.gateway)
        if known is None or (reception.rssi is not None and (known.rssi is None or reception.rssi > known.rssi)):
            into[reception.gateway] = reception


def _link_metrics(metrics: dict[str, float], receptions: list[Reception], event: LorawanEvent) -> None:
    rssis = [reception.rssi for reception in receptions if reception.rssi is not None]
    snrs = [reception.snr for reception in receptions if reception.snr is not None]
    if rssis:
        metrics["lora.rssi"] = max(rssis)
    if snrs:
        metrics["lora.snr"] = max(snrs)
    if rssis:
        metrics["lora.rssi_mean"] = sum(rssis) / len(rssis)
    if snrs:
        metrics["lora.snr_mean"] = sum(snrs) / len(snrs)
    if receptions:
        metrics["lora.gateways"] = float(len(receptions))
    if event.data_rate is not None:
        metrics["lora.dr"] = float(event.data_rate)
    if event.spreading_factor is not None:
        metrics["lora.sf"] = float(event.spreading_factor)
    # Decoders of variable-content payloads (optional TLV fields) make the size vary
    # by design; with a decoder the fields themselves show what changed.
    if event.payload_size is not None and not event.decoded:
        metrics["lora.payload_bytes"] = float(event.payload_size)


def _attributes(event: LorawanEvent) -> dict[str, str]:
    attributes = {"lorawan": event.dialect}
    if event.name:
        attributes["device_name"] = event.name
    if event.dev_addr:
        attributes["dev_addr"] = event.dev_addr
    return attributes


def _gateways(event: LorawanEvent) -> list[str]:
    return sorted({reception.gateway for reception in event.receptions})


def _via(event: LorawanEvent) -> str:
    gateways = _gateways(event)
    return f", via {_names(gateways)}" if gateways else ""


def _stale(event: LorawanEvent) -> str:
    if event.stale_seconds is None or event.stale_seconds < _STALE_EVIDENCE:
        return ""
    return (
        f" The gateway's own reception time in the frame is {describe_duration(event.stale_seconds)} before it "
        "was forwarded: the frame was recorded earlier and injected again."
    )


def _names(gateways: Iterable[str]) -> str:
    names = sorted(gateways)
    shown = ", ".join(names[:3])
    if len(names) > 3:
        shown += f" and {len(names) - 3} more"
    return ("gateway " if len(names) == 1 else "gateways ") + shown
