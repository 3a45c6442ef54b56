"""Damped incremental statistics of packet streams, in the manner of Kitsune's AfterImage.

Each statistic keeps, per stream key and per decay rate ``lambda`` (1/s),
an exponentially decayed weight ``w``, linear sum and squared sum. A value
``x`` arriving ``dt`` seconds after the previous one first scales all three
by ``2 ** (-lambda * dt)`` and then adds ``1``, ``x`` and ``x * x``. So
``w`` is a decayed packet count (at a steady rate ``r`` it settles at
``r / (lambda * ln 2)``), ``sum / w`` a decayed mean, and
``sum_sq / w - mean ** 2`` a decayed variance; the half-life of a
statistic is ``1 / lambda`` seconds.

:class:`AfterImage` keeps three families of streams:

* per source host: sizes of the packets it sends;
* per channel (source host, destination host): packet sizes and the
  inter-arrival times (jitter) of its packets;
* per socket (source address and port, destination address and port):
  packet sizes.

Streams whose slowest weight has decayed below :data:`PRUNE_WEIGHT` are
dropped, and at most ``max_streams`` streams of each family are kept (the
least recently updated go first), so memory stays bounded under a scan.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence

__all__ = ["DEFAULT_DECAYS", "AfterImage", "DampedStat", "PRUNE_WEIGHT"]

DEFAULT_DECAYS: tuple[float, ...] = (5.0, 1.0, 0.1, 0.01)
"""Decay rates in 1/s; half-lives 0.2 s, 1 s, 10 s and 100 s."""

PRUNE_WEIGHT = 1e-3
_LN2 = math.log(2.0)


class DampedStat:
    """Decayed weight, mean and variance of one stream at several decay rates."""

    __slots__ = ("decays", "last", "sum", "sum_sq", "weight")

    def __init__(self, decays: Sequence[float]) -> None:
        self.decays = decays
        self.last = math.nan
        self.weight = [0.0] * len(decays)
        self.sum = [0.0] * len(decays)
        self.sum_sq = [0.0] * len(decays)

    def update(self, time: float, value: float) -> None:
        """Decay to ``time`` and add ``value``; times earlier than the last are taken as equal to it."""
        self.decay_to(time)
        for i in range(len(self.decays)):
            self.weight[i] += 1.0
            self.sum[i] += value
            self.sum_sq[i] += value * value

    def decay_to(self, time: float) -> None:
        """Decay the sums to ``time`` without adding a value."""
        last = self.last
        if last == last and time > last:  # last is NaN before the first update
            dt = time - last
            for i, decay in enumerate(self.decays):
                factor = 2.0 ** (-decay * dt)
                self.weight[i] *= factor
                self.sum[i] *= factor
                self.sum_sq[i] *= factor
        if not last >= time:
            self.last = time

    def mean(self, i: int) -> float:
        """Decayed mean at decay index ``i``; 0 before any value."""
        weight = self.weight[i]
        return self.sum[i] / weight if weight > 0 else 0.0

    def std(self, i: int) -> float:
        """Decayed standard deviation at decay index ``i``."""
        weight = self.weight[i]
        if weight <= 0:
            return 0.0
        mean = self.sum[i] / weight
        return math.sqrt(abs(self.sum_sq[i] / weight - mean * mean))

    def rate(self, i: int) -> float:
        """Rate of values per second implied by the decayed weight at decay index ``i``."""
        return self.weight[i] * self.decays[i] * _LN2

    def value_rate(self, i: int) -> float:
        """Sum of values per second implied by the decayed sum (bytes per second for sizes)."""
        return self.sum[i] * self.decays[i] * _LN2


class _Family:
    """Streams of one kind, keyed, pruned by weight and by count."""

    def __init__(self, decays: Sequence[float], max_streams: int) -> None:
        self.decays = tuple(decays)
        self.max_streams = max_streams
        self.streams: OrderedDict[Hashable, DampedStat] = OrderedDict()

    def get(self, key: Hashable) -> DampedStat:
        stat = self.streams.get(key)
        if stat is None:
            stat = DampedStat(self.decays)
            self.streams[key] = stat
            if len(self.streams) > self.max_streams:
                self.streams.popitem(last=False)
        else:
            self.streams.move_to_end(key)
        return stat

    def prune(self, time: float) -> None:
        slowest = min(range(len(self.decays)), key=self.decays.__getitem__)
        for key in [key for key, stat in self.streams.items() if _weight_at(stat, slowest, time) < PRUNE_WEIGHT]:
            del self.streams[key]


def _weight_at(stat: DampedStat, index: int, time: float) -> float:
    return stat.weight[index] * 2.0 ** (-stat.decays[index] * max(0.0, time - stat.last))


class AfterImage:
    """Damped per-host, per-channel and per-socket packet statistics.

    Args:
        decays: Decay rates in 1/s.
        max_streams: Most streams kept per family.
    """

    def __init__(self, decays: Sequence[float] = DEFAULT_DECAYS, *, max_streams: int = 100_000) -> None:
        if not decays or any(not (d > 0 and math.isfinite(d)) for d in decays):
            raise ValueError(f"invalid decays {decays!r}: expected positive finite rates in 1/s")
        self.decays = tuple(float(d) for d in decays)
        self.hosts = _Family(self.decays, max_streams)
        self.channels = _Family(self.decays, max_streams)
        self.channel_jitter = _Family(self.decays, max_streams)
        self.sockets = _Family(self.decays, max_streams)
        self._updates = 0

    def update(self, time: float, src: str, sport: int, dst: str, dport: int, size: float) -> None:
        """Add one packet of ``size`` bytes sent from ``src:sport`` to ``dst:dport`` at ``time``."""
        self.hosts.get(src).update(time, size)
        channel = self.channels.get((src, dst))
        jitter = self.channel_jitter.get((src, dst))
        previous = channel.last
        channel.update(time, size)
        if previous == previous:
            jitter.update(time, max(0.0, time - previous))
        else:
            jitter.decay_to(time)
        self.sockets.get((src, sport, dst, dport)).update(time, size)
        self._updates += 1
        if self._updates % 50_000 == 0:
            for family in (self.hosts, self.channels, self.channel_jitter, self.sockets):
                family.prune(time)

    def decay_index(self, decay: float) -> int:
        """Index of the decay rate closest to ``decay``."""
        return min(range(len(self.decays)), key=lambda i: abs(self.decays[i] - decay))

    def host_features(self, host: str, time: float) -> dict[str, float]:
        """Return ``{size_w, size_mean, size_std}`` of ``host``'s sent packets at each decay, decayed to ``time``.

        Names end in ``_l<lambda>``, for example ``size_mean_l0.1``. A host
        never seen gives zeros.
        """
        stat = self.hosts.streams.get(host)
        features: dict[str, float] = {}
        for i, decay in enumerate(self.decays):
            if stat is None:
                weight = mean = std = 0.0
            else:
                factor = 2.0 ** (-decay * max(0.0, time - stat.last))
                weight, mean, std = stat.weight[i] * factor, stat.mean(i), stat.std(i)
            features[f"size_w_l{decay:g}"] = weight
            features[f"size_mean_l{decay:g}"] = mean
            features[f"size_std_l{decay:g}"] = std
        return features

    def channel(self, src: str, dst: str) -> tuple[DampedStat | None, DampedStat | None]:
        """Return the size and jitter statistics of channel ``src`` to ``dst``, or None where absent."""
        return self.channels.streams.get((src, dst)), self.channel_jitter.streams.get((src, dst))

    def socket(self, src: str, sport: int, dst: str, dport: int) -> DampedStat | None:
        """Return the size statistics of one socket pair, or None when absent."""
        return self.sockets.streams.get((src, sport, dst, dport))
