"""Synthetic fleet streams for the benchmarks.

:func:`make_stream` builds one interleaved stream of a device fleet. Each
device reports on its own period (30 s to 120 s, with jitter) and every
metric has a per-device level and noise scale drawn around the typical
range of a real sensor. Temperature and humidity follow a daily cycle, and
current follows the CPU load of the same device so that some metric pairs
are correlated. A small share of observations are spikes, and a few devices
shift their level half-way through the stream.

The stream is a set of NumPy arrays, so the benchmark can time the engine
without the cost of building the stream. :func:`write_csv` writes it as the
CSV that ``iotwarden detect`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = ["METRIC_CATALOG", "Stream", "load_stream", "make_stream", "save_stream", "write_csv"]

START_TIME = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()
SPIKE_SHARE = 0.001  # share of observations with one metric pushed 6-12 noise scales away
SHIFT_SHARE = 0.002  # share of devices whose level shifts by 5-10 noise scales half-way

# name: (fleet mean of the level, fleet spread of the level, typical noise scale, decimals written)
METRIC_CATALOG: dict[str, tuple[float, float, float, int]] = {
    "temperature": (22.0, 4.0, 0.3, 2),
    "humidity": (45.0, 10.0, 1.5, 1),
    "pressure": (1013.0, 5.0, 0.5, 1),
    "co2": (600.0, 150.0, 20.0, 0),
    "voltage": (3.3, 0.05, 0.01, 3),
    "current": (120.0, 30.0, 5.0, 1),
    "rssi": (-70.0, 8.0, 2.0, 0),
    "cpu_load": (30.0, 10.0, 5.0, 1),
    "memory_used": (200.0, 50.0, 2.0, 1),
    "packet_loss": (1.0, 0.5, 0.3, 2),
}


@dataclass
class Stream:
    """One interleaved fleet stream, in time order.

    ``values[i, k]`` is metric ``metric_names[k]`` of observation ``i``,
    reported by device ``device_ids[device[i]]`` at ``times[i]`` (seconds
    since the Unix epoch). ``anomaly[i]`` marks injected spikes and the
    observations of shifted devices after their shift.
    """

    device_ids: list[str]
    device: np.ndarray
    times: np.ndarray
    values: np.ndarray
    metric_names: list[str]
    anomaly: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def head(self, count: int) -> Stream:
        """Return the first ``count`` observations as a stream of their own."""
        return Stream(
            self.device_ids,
            self.device[:count],
            self.times[:count],
            self.values[:count],
            self.metric_names,
            self.anomaly[:count],
        )

    def device_column(self) -> list[str]:
        """Return the device id of every observation, as the engine takes it."""
        ids = self.device_ids
        return [ids[index] for index in self.device.tolist()]


def _metric_names(count: int) -> list[str]:
    catalog = list(METRIC_CATALOG)
    names = catalog[:count]
    names += [f"extra_{k}" for k in range(count - len(names))]
    return names


def _catalog_entry(name: str) -> tuple[float, float, float, int]:
    return METRIC_CATALOG.get(name, (100.0, 20.0, 2.0, 2))


def make_stream(devices: int, observations: int, metrics: int, seed: int = 7) -> Stream:
    """Build a stream of exactly ``observations`` rows from ``devices`` devices."""
    if devices < 1 or observations < devices or metrics < 1:
        raise ValueError(
            f"invalid stream size: devices={devices}, observations={observations}, metrics={metrics}. "
            "Give at least one device and metric, and at least one observation per device."
        )
    rng = np.random.default_rng(seed)
    names = _metric_names(metrics)

    # Report counts proportional to each device's rate, so every device reports until the end.
    period = rng.uniform(30.0, 120.0, devices)
    rate = 1.0 / period
    counts = np.maximum(1, np.floor(observations * rate / rate.sum())).astype(np.int64)
    shortfall = observations - int(counts.sum())
    if shortfall > 0:
        counts[rng.choice(devices, shortfall, replace=shortfall > devices)] += 1
    elif shortfall < 0:
        while shortfall < 0:
            largest = np.argsort(counts)[::-1][: -shortfall]
            counts[largest] -= 1
            shortfall = observations - int(counts.sum())

    device = np.repeat(np.arange(devices), counts)
    sequence = np.arange(observations) - np.repeat(np.cumsum(counts) - counts, counts)
    phase = rng.uniform(0.0, 1.0, devices) * period
    jitter = rng.uniform(-0.05, 0.05, observations) * period[device]
    times = START_TIME + phase[device] + sequence * period[device] + jitter
    order = np.argsort(times, kind="stable")
    device, times, sequence = device[order], times[order], sequence[order]

    values = np.empty((observations, metrics))
    daily = 2.0 * np.pi * (times - START_TIME) / 86400.0
    cpu_noise = rng.standard_normal(observations)
    for k, name in enumerate(names):
        mean, spread, noise, decimals = _catalog_entry(name)
        level = rng.normal(mean, spread, devices)
        scale = noise * rng.lognormal(0.0, 0.3, devices)
        # Student-t noise with 5 degrees of freedom, scaled to unit variance, because real sensors have heavier tails than a normal.
        residual = rng.standard_t(5, observations) / np.sqrt(5.0 / 3.0)
        if name == "cpu_load":
            residual = cpu_noise
        elif name == "current":
            residual = 0.8 * cpu_noise + 0.6 * residual
        column = level[device] + scale[device] * residual
        if name in ("temperature", "humidity"):
            amplitude = rng.uniform(0.5, 3.0, devices) * noise
            column += amplitude[device] * np.sin(daily + rng.uniform(0, 2 * np.pi, devices)[device])
        values[:, k] = column

    anomaly = np.zeros(observations, dtype=bool)
    spikes = rng.choice(observations, int(observations * SPIKE_SHARE), replace=False)
    spike_metric = rng.integers(0, metrics, spikes.size)
    spike_size = rng.uniform(6.0, 12.0, spikes.size) * rng.choice([-1.0, 1.0], spikes.size)
    for k, name in enumerate(names):
        chosen = spike_metric == k
        values[spikes[chosen], k] += spike_size[chosen] * _catalog_entry(name)[2]
    anomaly[spikes] = True

    shifted = rng.choice(devices, max(1, int(devices * SHIFT_SHARE)), replace=False)
    for index in shifted:
        k = int(rng.integers(0, metrics))
        after = (device == index) & (sequence >= counts[index] // 2)
        values[after, k] += rng.uniform(5.0, 10.0) * rng.choice([-1.0, 1.0]) * _catalog_entry(names[k])[2]
        anomaly[after] = True

    for k, name in enumerate(names):
        values[:, k] = np.round(values[:, k], _catalog_entry(name)[3])
        if name == "packet_loss":
            values[:, k] = np.clip(values[:, k], 0.0, 100.0)

    device_ids = [f"dev-{index:05d}" for index in range(devices)]
    return Stream(device_ids, device.astype(np.int32), times, values, names, anomaly)


def save_stream(stream: Stream, path: Path) -> None:
    """Write ``stream`` as an uncompressed ``.npz`` file for a child process."""
    np.savez(
        path,
        device_ids=np.array(stream.device_ids),
        device=stream.device,
        times=stream.times,
        values=stream.values,
        metric_names=np.array(stream.metric_names),
        anomaly=stream.anomaly,
    )


def load_stream(path: Path) -> Stream:
    """Read a stream written by :func:`save_stream`."""
    with np.load(path) as data:
        return Stream(
            device_ids=data["device_ids"].tolist(),
            device=data["device"],
            times=data["times"],
            values=data["values"],
            metric_names=data["metric_names"].tolist(),
            anomaly=data["anomaly"],
        )


def write_csv(stream: Stream, path: Path, time_format: str = "iso") -> None:
    """Write ``stream`` as CSV: ``device_id``, ``timestamp``, then one column per metric.

    ``time_format`` is ``iso`` (UTC with milliseconds and ``Z``) or ``epoch``
    (seconds with three decimals). The anomaly labels are not written.
    """
    decimals = [_catalog_entry(name)[3] for name in stream.metric_names]
    row_format = ",".join(["{}", "{}"] + [f"{{:.{d}f}}" for d in decimals]) + "\n"
    ids = stream.device_ids
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(",".join(["device_id", "timestamp", *stream.metric_names]) + "\n")
        chunk = 50_000
        for start in range(0, len(stream), chunk):
            stop = min(start + chunk, len(stream))
            stamps = _format_times(stream.times[start:stop], time_format)
            devices = stream.device[start:stop].tolist()
            rows = stream.values[start:stop].tolist()
            out.write("".join(row_format.format(ids[d], t, *row) for d, t, row in zip(devices, stamps, rows)))


def _format_times(times: np.ndarray, time_format: str) -> list[str]:
    if time_format == "epoch":
        return [f"{t:.3f}" for t in times.tolist()]
    if time_format != "iso":
        raise ValueError(f"invalid time_format {time_format!r}: expected 'iso' or 'epoch'")
    milliseconds = np.round(times * 1000.0).astype("int64").astype("datetime64[ms]")
    return [text + "Z" for text in np.datetime_as_string(milliseconds, unit="ms").tolist()]
