"""Gateway rule ``jamming``: many devices lose their link at one gateway at once.

A jammer, or any new transmitter near a gateway, raises the gateway's noise
floor. Every device the gateway hears then arrives with a lower SNR while its
RSSI stays level or rises (RSSI includes the added noise), and frames that
fall below the demodulation limit are lost. Fading and weather change the
path instead, so RSSI and SNR fall together, and a failing device affects
only itself.

:class:`JammingWatch` learns, for each device and each gateway that hears
it, the device's usual SNR and RSSI at that gateway and the share of its
frames that the gateway forwards. A gateway usually hears a device once it
received ``jamming_baseline_receptions`` of its frames and forwards at least
half of them. Over the last ``jamming_window`` seconds, each such device
that sent at least ``jamming_min_frames`` frames is judged. It is degraded
at the gateway when

* the median of its SNR drops (usual SNR minus received SNR, over two
  receptions or more) reaches both ``jamming_snr_drop_db`` and
  ``jamming_snr_spread`` standard deviations of its own SNR there, while its
  median RSSI fell by no more than ``jamming_rssi_tolerance_db``; or
* the share of its frames that the gateway missed exceeds its usual share
  by ``jamming_loss_increase`` or more, and that many misses have a binomial
  probability of ``jamming_loss_probability`` or less at the usual share
  (taken as 5 % at least).

When at least ``jamming_min_devices`` devices, and at least
``jamming_min_share`` of the judged devices, are degraded, the gateway gets
a ``jamming`` finding. While a device counts towards a finding, its link at
that gateway learns nothing, for at most ``jamming_adopt_after`` seconds.

A frame counts as missed only when the gateway forwarded a frame of another
device within ``jamming_gateway_silence`` seconds of it. A gateway that
forwarded nothing was down (power, backhaul), and a jam that silences a
gateway completely looks the same, so neither is reported.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scipy.stats import binom

from iotwarden.decisions.alerts import Alert, Contribution
from iotwarden.sources.lorawan.episodes import SEVERITY_SCORES, EpisodeBook, describe_duration
from iotwarden.sources.lorawan.events import Reception

if TYPE_CHECKING:
    from iotwarden.sources.lorawan.monitor import MonitorConfig

__all__ = ["JammingWatch"]

_LINK_HALFLIFE = 64.0  # receptions: the usual SNR and RSSI follow seasons and foliage, not a jam of hours
_HEARD_HALFLIFE = 32.0  # frames: the share of a device's frames that a gateway forwards
_USUAL_SHARE = 0.5  # a gateway usually hears a device when it forwards at least this share of its frames
_FORGET_SHARE = 0.01  # links of gateways that forward less than this share are dropped
_EVALUATION_INTERVAL = 60.0  # seconds of event time between evaluations of one gateway
_LISTED_DEVICES = 20  # affected devices listed in an alert's details
_MIN_SNR_SAMPLES = 2  # receptions in the window before a device's median SNR drop counts: one reading can be a fluke
_MIN_USUAL_MISS = 0.05  # good LoRaWAN links still lose a few percent of frames
_MIN_FRAME_SPACING = 1.0  # seconds; duty-cycle limits keep LoRaWAN devices far slower
_MAD_TO_SIGMA = 1.25  # mean absolute deviation times this is the standard deviation of a normal distribution


@dataclass(slots=True)
class _Link:
    """One device's learned reception at one gateway, with SNR in dB and RSSI in dBm."""

    receptions: int = 0
    snr: float = 0.0
    snr_deviation: float = 0.0  # exponentially weighted mean absolute deviation
    rssi: float = 0.0
    forward_share: float = 1.0  # exponentially weighted share of the device's frames this gateway forwarded
    degraded_since: float | None = None  # first of the consecutive receptions that look jammed
    frozen_since: float | None = None  # since when the device counts towards a jamming finding at this gateway


@dataclass(slots=True)
class _Sample:
    """The evidence of one uplink of a device about one gateway that usually hears it."""

    time: float
    device: str
    frames: int  # frames sent while the gateway was up: this one and those lost before it
    missed: int  # of those, frames the gateway did not forward
    usual_missed: float  # the share of frames the gateway usually misses for this device
    snr_drop: float | None  # usual SNR minus received SNR, when the gateway forwarded this frame
    rssi_drop: float | None  # usual RSSI minus received RSSI
    snr_limit: float  # the drop that counts as marked for this device at this gateway
    source: str
    line: int | None


@dataclass(slots=True)
class _Gateway:
    """A gateway's samples over the window and the frames it forwarded recently."""

    samples: deque[_Sample] = field(default_factory=deque)
    forwards: list[tuple[float, str]] = field(default_factory=list)  # (time, device) of forwarded frames, by time
    latest: float = -math.inf
    checked: float = -math.inf
    dirty: bool = False


@dataclass(slots=True)
class _DeviceWindow:
    """One device's samples at a gateway over the window, summarised for the decision."""

    device: str
    frames: int
    missed: int
    usual_missed: float
    snr_drop: float | None
    rssi_drop: float | None
    by_snr: bool
    by_loss: bool


class JammingWatch:
    """Per-gateway jamming rule over the uplinks of every non-mobile device.

    The monitor calls :meth:`observe` for each committed uplink, :meth:`expire`
    with its clock and :meth:`finish` at the end of the input. Findings go to
    the monitor's :class:`~iotwarden.sources.lorawan.episodes.EpisodeBook`
    under the gateway id, so a jam of several hours is one alert.
    """

    def __init__(self, config: MonitorConfig, episodes: EpisodeBook) -> None:
        self.config = config
        self.episodes = episodes
        self.links: dict[str, dict[str, _Link]] = {}
        self.gateways: dict[str, _Gateway] = {}
        self._link_alpha = 1.0 - 0.5 ** (1.0 / _LINK_HALFLIFE)
        self._heard_alpha = 1.0 - 0.5 ** (1.0 / _HEARD_HALFLIFE)

    def observe(
        self,
        device: str,
        time: float,
        receptions: Iterable[Reception],
        lost: int | None,
        previous: float | None,
        source: str,
        line: int | None,
    ) -> list[Alert]:
        """Learn from one uplink and evaluate the gateways it adds samples to.

        ``lost`` is the number of frames skipped by the counter since the
        device's previous uplink at ``previous`` (None when unknown, as after
        a reset or a new session).
        """
        by_gateway = {reception.gateway: reception for reception in receptions}
        for gateway in by_gateway:
            self._record_forward(gateway, time, device)
        links = self.links.setdefault(device, {})
        lost_times = self._lost_times(time, lost, previous)

        alerts: list[Alert] = []
        for gateway in sorted(set(links) | set(by_gateway)):
            link = links.get(gateway)
            if link is None:
                link = links[gateway] = _Link()
            sample = self._sample(device, time, gateway, link, by_gateway.get(gateway), lost_times, source, line)
            if link.forward_share < _FORGET_SHARE and gateway not in by_gateway:
                del links[gateway]
            if sample is not None:
                alerts.extend(self._add(gateway, sample))
        return alerts

    def expire(self, clock: float) -> list[Alert]:
        """Evaluate the gateways whose latest samples have waited a minute of ``clock`` unevaluated."""
        alerts: list[Alert] = []
        for name, gateway in self.gateways.items():
            if gateway.dirty and clock - gateway.latest >= _EVALUATION_INTERVAL:
                alerts.extend(self._evaluate(name, gateway, gateway.latest))
        return alerts

    def finish(self) -> list[Alert]:
        """Evaluate every gateway with samples not yet evaluated (end of input)."""
        alerts: list[Alert] = []
        for name, gateway in self.gateways.items():
            if gateway.dirty:
                alerts.extend(self._evaluate(name, gateway, gateway.latest))
        return alerts

    # Learning ------------------------------------------------------------------------------

    def _lost_times(self, time: float, lost: int | None, previous: float | None) -> list[float]:
        """Estimate when the lost frames were sent: evenly spaced since the previous uplink, within the window."""
        if not lost or previous is None or time <= previous:
            return []
        step = (time - previous) / (lost + 1)
        if step < _MIN_FRAME_SPACING:
            return []  # a counter that skipped ahead: no device transmits that often
        first = max(1, math.ceil((time - self.config.jamming_window - previous) / step))
        return [previous + step * index for index in range(first, lost + 1)]

    def _sample(
        self,
        device: str,
        time: float,
        gateway: str,
        link: _Link,
        reception: Reception | None,
        lost_times: list[float],
        source: str,
        line: int | None,
    ) -> _Sample | None:
        """Update the device's link at ``gateway`` and return a sample when the gateway usually hears the device."""
        config = self.config
        # Frames sent while the gateway forwarded nothing else are no evidence about its reception.
        frames = 1 if reception is not None or self._was_up(gateway, device, time, time) else 0
        missed = frames if reception is None else 0
        for lost_time in lost_times:
            if self._was_up(gateway, device, lost_time, time):
                frames += 1
                missed += 1

        usual = link.receptions >= config.jamming_baseline_receptions and link.forward_share >= _USUAL_SHARE
        sample = None
        snr_drop = rssi_drop = None
        snr_limit = max(config.jamming_snr_drop_db, config.jamming_snr_spread * _MAD_TO_SIGMA * link.snr_deviation)
        if reception is not None and reception.snr is not None and reception.rssi is not None and link.receptions > 0:
            snr_drop = link.snr - reception.snr
            rssi_drop = link.rssi - reception.rssi
        if usual and frames > 0:
            sample = _Sample(time, device, frames, missed, 1.0 - link.forward_share, snr_drop, rssi_drop, snr_limit, source, line)

        # While the device counts towards a jamming finding here, its link learns nothing, so a jam
        # of hours does not become its usual level, unless it lasts longer than jamming_adopt_after.
        if link.frozen_since is not None and time - link.frozen_since < config.jamming_adopt_after:
            return sample
        for index in range(frames):
            forwarded = 1.0 if index < frames - missed else 0.0
            link.forward_share += self._heard_alpha * (forwarded - link.forward_share)
        if reception is not None and reception.snr is not None and reception.rssi is not None:
            self._learn_levels(link, time, reception, snr_drop, rssi_drop, snr_limit)
        return sample

    def _learn_levels(
        self, link: _Link, time: float, reception: Reception, snr_drop: float | None, rssi_drop: float | None, snr_limit: float
    ) -> None:
        """Move the usual SNR and RSSI towards this reception, unless it looks jammed."""
        assert reception.snr is not None and reception.rssi is not None
        jammed = (
            link.receptions >= self.config.jamming_baseline_receptions
            and snr_drop is not None
            and rssi_drop is not None
            and snr_drop >= snr_limit
            and rssi_drop <= self.config.jamming_rssi_tolerance_db
        )
        if jammed:
            if link.degraded_since is None:
                link.degraded_since = time
            # Receptions that look jammed stay out of the levels, unless the new level lasted long
            # enough to be the new normal (a new noise source that stays, a changed gateway).
            if time - link.degraded_since < self.config.jamming_adopt_after:
                return
        else:
            link.degraded_since = None
        link.receptions += 1
        alpha = max(1.0 / link.receptions, self._link_alpha)
        deviation = abs(reception.snr - link.snr) if link.receptions > 1 else 0.0
        link.snr += alpha * (reception.snr - link.snr)
        link.rssi += alpha * (reception.rssi - link.rssi)
        if link.receptions > 1:
            link.snr_deviation += max(1.0 / (link.receptions - 1), self._link_alpha) * (deviation - link.snr_deviation)

    def _record_forward(self, gateway: str, time: float, device: str) -> None:
        state = self.gateways.get(gateway)
        if state is None:
            state = self.gateways[gateway] = _Gateway()
        bisect.insort(state.forwards, (time, device), key=_forward_time)
        # A lost frame is at most a window before the sample that reveals it, which stays a window.
        horizon = time - 2 * self.config.jamming_window - self.config.jamming_gateway_silence
        if state.forwards[0][0] < horizon:
            del state.forwards[: bisect.bisect_left(state.forwards, horizon, key=_forward_time)]

    def _was_up(self, gateway: str, device: str, moment: float, now: float) -> bool:
        """Return True when ``gateway`` forwarded a frame of another device within the silence limit of ``moment``.

        Frames after ``now`` are not known yet. The device's own frames do not count: the frames
        around a gap of its own were forwarded before and after an outage too.
        """
        state = self.gateways.get(gateway)
        if state is None:
            return False
        silence = self.config.jamming_gateway_silence
        end = min(moment + silence, now)
        index = bisect.bisect_left(state.forwards, moment - silence, key=_forward_time)
        while index < len(state.forwards) and state.forwards[index][0] <= end:
            if state.forwards[index][1] != device:
                return True
            index += 1
        return False

    # Decision ------------------------------------------------------------------------------

    def _add(self, name: str, sample: _Sample) -> list[Alert]:
        gateway = self.gateways.get(name)
        if gateway is None:
            gateway = self.gateways[name] = _Gateway()
        alerts: list[Alert] = []
        if gateway.dirty and sample.time - gateway.latest >= _EVALUATION_INTERVAL:
            # A pause after unevaluated samples: judge them before the window moves past them.
            alerts.extend(self._evaluate(name, gateway, gateway.latest))
        gateway.samples.append(sample)
        gateway.latest = max(gateway.latest, sample.time)
        gateway.dirty = True
        if gateway.latest - gateway.checked >= _EVALUATION_INTERVAL:
            alerts.extend(self._evaluate(name, gateway, gateway.latest))
        return alerts

    def _evaluate(self, name: str, gateway: _Gateway, now: float) -> list[Alert]:
        config = self.config
        gateway.checked = now
        gateway.dirty = False
        while gateway.samples and gateway.samples[0].time < now - config.jamming_window:
            gateway.samples.popleft()

        by_device: dict[str, list[_Sample]] = {}
        for sample in gateway.samples:
            by_device.setdefault(sample.device, []).append(sample)
        if len(by_device) < config.jamming_min_devices:
            return []
        summaries = [self._summarise(device, samples) for device, samples in by_device.items()]
        # Devices with too few frames in the window cannot be judged, so they count neither way.
        summaries = [summary for summary in summaries if summary.frames >= config.jamming_min_frames]
        degraded = [summary for summary in summaries if summary.by_snr or summary.by_loss]
        jammed = len(degraded) >= config.jamming_min_devices and len(degraded) >= config.jamming_min_share * len(summaries)
        # The degraded devices of a finding stop learning at this gateway (see _sample); the others resume.
        frozen = {entry.device for entry in degraded} if jammed else set()
        for entry in summaries:
            link = self.links.get(entry.device, {}).get(name)
            if link is None:
                continue
            if entry.device not in frozen:
                link.frozen_since = None
            elif link.frozen_since is None:
                link.frozen_since = now
        if not jammed:
            return []
        last = gateway.samples[-1]
        return self._note(name, now, degraded, len(summaries), last.source, last.line)

    def _summarise(self, device: str, samples: list[_Sample]) -> _DeviceWindow:
        config = self.config
        frames = sum(sample.frames for sample in samples)
        missed = sum(sample.missed for sample in samples)
        # Misses before the finding already lowered the learned share, so take its lowest value in the window.
        usual_missed = min(sample.usual_missed for sample in samples)
        snr_drops = [sample.snr_drop for sample in samples if sample.snr_drop is not None]
        rssi_drops = [sample.rssi_drop for sample in samples if sample.rssi_drop is not None]
        snr_drop = statistics.median(snr_drops) if snr_drops else None
        rssi_drop = statistics.median(rssi_drops) if rssi_drops else None
        by_snr = (
            len(snr_drops) >= _MIN_SNR_SAMPLES
            and snr_drop is not None
            and rssi_drop is not None
            and snr_drop >= samples[-1].snr_limit
            and rssi_drop <= config.jamming_rssi_tolerance_db
        )
        by_loss = frames > 0 and missed / frames - usual_missed >= config.jamming_loss_increase
        if by_loss:
            # So many misses must also be unlikely by chance at the device's usual miss share.
            chance = float(binom.sf(missed - 1, frames, max(usual_missed, _MIN_USUAL_MISS)))
            by_loss = chance <= config.jamming_loss_probability
        return _DeviceWindow(device, frames, missed, usual_missed, snr_drop, rssi_drop, by_snr, by_loss)

    def _note(self, name: str, now: float, degraded: list[_DeviceWindow], judged: int, source: str, line: int | None) -> list[Alert]:
        config = self.config
        snr_drops = [entry.snr_drop for entry in degraded if entry.by_snr and entry.snr_drop is not None]
        rssi_changes = [-entry.rssi_drop for entry in degraded if entry.by_snr and entry.rssi_drop is not None]
        frames = sum(entry.frames for entry in degraded)
        missed = sum(entry.missed for entry in degraded)
        loss_rate = missed / frames if frames else 0.0
        usual_loss = statistics.fmean(entry.usual_missed for entry in degraded)
        median_drop = statistics.median(snr_drops) if snr_drops else None
        median_rssi = statistics.median(rssi_changes) if rssi_changes else None

        text = (
            f"Gateway {name}: {len(degraded)} of the {judged} devices it usually hears that sent {config.jamming_min_frames} "
            f"frames or more in the last {describe_duration(config.jamming_window)} degraded together."
        )
        if median_drop is not None and median_rssi is not None:
            text += (
                f" {len(snr_drops)} of them arrived with a median SNR drop of {median_drop:.1f} dB against their usual "
                f"SNR at this gateway, while their median RSSI changed by {median_rssi:+.1f} dB."
            )
        text += f" The gateway missed {100 * loss_rate:.0f} % of their {frames} frames (usually {100 * usual_loss:.0f} %)."
        if snr_drops:
            text += (
                " A lower SNR at a level or higher RSSI is a raised noise floor: a jammer or a new interferer near "
                "the gateway. Fading and weather lower RSSI and SNR together."
            )
        else:
            text += (
                " The gateway kept forwarding other frames, so it was up. Frames of many devices lost at once point "
                "to a jammer or a new interferer near the gateway."
            )
        details = {
            "scope": "gateway",
            "gateway": name,
            "window_seconds": config.jamming_window,
            "devices_degraded": len(degraded),
            "devices_judged": judged,
            "devices": sorted(entry.device for entry in degraded)[:_LISTED_DEVICES],
            "median_snr_drop_db": median_drop,
            "median_rssi_change_db": median_rssi,
            "loss_rate": loss_rate,
            "usual_loss_rate": usual_loss,
        }
        metric = Contribution("degraded_devices", float(len(degraded)), None, None, float(config.jamming_min_devices), SEVERITY_SCORES["high"])
        return self.episodes.note(
            name, "jamming", now,
            severity="high", summary=text, metric=metric, details=details, source=source, line=line,
        )

def _forward_time(forward: tuple[float, str]) -> float:
    return forward[0]
