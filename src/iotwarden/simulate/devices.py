"""Device types of the simulated fleet and the physics behind their metrics.

Each type has a fixed list of metrics, shared by every device of that type so
that the type forms a cohort. A generator draws one device's profile (levels,
amplitudes, schedule) from its random generator and returns the report times
and a ``(rows, metrics)`` array of values in the type's metric order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from iotwarden.simulate._signals import (
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    SECONDS_PER_MINUTE,
    daylight,
    gaussian_bump,
    hour_of_day,
    is_weekend,
    moving_average,
    office_occupancy,
    report_gaps,
    reporting_times,
    slow_noise,
    strictly_increasing,
    window_weight,
)

__all__ = ["DEVICE_TYPES", "METRIC_NAMES", "DeviceType"]

Generator = Callable[[np.random.Generator, float, float], tuple[np.ndarray, np.ndarray]]

_METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class DeviceType:
    """One kind of device: its metrics, reporting interval and generator.

    Attributes:
        name: Type name, written to the ``device_type`` column.
        metrics: Metric names in the order of the generator's value columns.
        decimals: Decimal places kept for each metric (0 means an integer).
        share: Fraction of the fleet made of this type.
        interval_s: Nominal seconds between reports (for the tracker, while parked).
        generate: ``generate(rng, start, end)`` returns times and values for one device.
    """

    name: str
    metrics: tuple[str, ...]
    decimals: tuple[int, ...]
    share: float
    interval_s: float
    generate: Generator

    def column(self, metric: str) -> int:
        """Return the value column of ``metric``. Raises KeyError if the type lacks it."""
        try:
            return self.metrics.index(metric)
        except ValueError:
            raise KeyError(f"device type {self.name!r} has no metric {metric!r}") from None


def _thermostat(rng: np.random.Generator, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    times = reporting_times(rng, start, end, 60.0)
    hours = hour_of_day(times)
    weekend = is_weekend(times)

    # Offices heat during working hours on weekdays, homes in the morning and
    # evening of every day. Outside those hours the setpoint drops to a setback.
    comfort = rng.uniform(20.5, 22.5)
    setback = comfort - rng.uniform(3.0, 5.0)
    if rng.random() < 0.7:
        opens, closes = 7.0 + rng.uniform(-0.5, 1.0), 18.0 + rng.uniform(-1.0, 1.0)
        occupied = ~weekend & (hours >= opens) & (hours < closes)
    else:
        morning = (hours >= 6.0 + rng.uniform(-0.5, 0.5)) & (hours < 8.5)
        evening = (hours >= 17.0 + rng.uniform(-0.5, 1.0)) & (hours < 22.5)
        occupied = morning | evening | (weekend & (hours >= 9.0) & (hours < 22.5))
    setpoint = np.where(occupied, comfort, setback)

    outdoor = rng.uniform(0.0, 14.0) + 5.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0)
    outdoor += slow_noise(rng, times, 3 * SECONDS_PER_HOUR, 1.5)

    true_temp = _first_order_lag(times, setpoint, heat_tau_s=rng.uniform(30, 60) * 60, cool_tau_s=3 * 3600)
    true_temp += 0.02 * (outdoor - 10.0)
    # The heating cycles on and off, which shows as a small ripple indoors.
    ripple_period = rng.uniform(15, 25) * SECONDS_PER_MINUTE
    true_temp += 0.2 * np.sin(2 * np.pi * times / ripple_period + rng.uniform(0, 2 * np.pi))
    temperature = true_temp + rng.normal(0.0, 0.05, times.size) + rng.normal(0.0, 0.3)

    duty = np.clip(0.02 * (setpoint - outdoor) + 1.2 * (setpoint - true_temp), 0.0, 1.0)
    rated_w = rng.uniform(1200.0, 2500.0)
    power = 4.0 + rated_w * duty * (1.0 + rng.normal(0.0, 0.04, times.size))

    humidity = rng.uniform(35.0, 50.0) - 2.0 * (true_temp - comfort) + 4.0 * occupied
    humidity += slow_noise(rng, times, 2 * SECONDS_PER_HOUR, 2.0) + rng.normal(0.0, 0.3, times.size)
    humidity = np.clip(humidity, 10.0, 90.0)

    return times, np.column_stack([temperature, humidity, setpoint, power])


def _first_order_lag(times: np.ndarray, target: np.ndarray, heat_tau_s: float, cool_tau_s: float) -> np.ndarray:
    """Return a temperature that follows a piecewise-constant ``target`` exponentially.

    Warming up uses ``heat_tau_s`` and passive cooling ``cool_tau_s``. The loop
    runs once per setpoint change, not once per sample.
    """
    result = np.empty_like(target)
    if target.size == 0:
        return result
    changes = np.flatnonzero(np.diff(target)) + 1
    bounds = np.concatenate(([0], changes, [target.size]))
    level = target[0]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        goal = target[lo]
        tau = heat_tau_s if goal > level else cool_tau_s
        elapsed = times[lo:hi] - times[lo]
        result[lo:hi] = goal + (level - goal) * np.exp(-elapsed / tau)
        level = result[hi - 1]
    return result


def _camera(rng: np.random.Generator, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    times = reporting_times(rng, start, end, 30.0)
    gaps = report_gaps(times, 30.0)

    # Variable-bitrate video: more motion in the scene means more bytes. Some
    # cameras watch offices, others streets that are busy whenever it is light.
    office_weight = rng.uniform(0.0, 1.0)
    scene = office_weight * office_occupancy(times) + (1 - office_weight) * daylight(times)
    activity = np.clip(0.1 + rng.uniform(0.6, 1.0) * scene + slow_noise(rng, times, 1800.0, 0.08), 0.0, 1.5)

    bitrate_bps = rng.uniform(1.0e6, 4.0e6) * (0.6 + 0.6 * activity)
    bitrate_bps *= rng.lognormal(0.0, 0.08, times.size)
    bytes_out = np.round(bitrate_bps / 8.0 * gaps)
    packet_size = rng.uniform(1100.0, 1350.0) * (1.0 + rng.normal(0.0, 0.02, times.size))
    packets_out = np.round(bytes_out / packet_size)

    # The recorder and the cloud relay, now and then DNS or NTP.
    distinct_dst = 2.0 + rng.poisson(0.25 + 0.3 * activity)
    conn_failed = rng.poisson(0.02, times.size).astype(float)
    cpu = rng.uniform(8.0, 20.0) + 25.0 * activity + rng.normal(0.0, 1.5, times.size)

    return times, np.column_stack([bytes_out, packets_out, distinct_dst, conn_failed, np.clip(cpu, 0.0, 100.0)])


def _smart_meter(rng: np.random.Generator, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    times = reporting_times(rng, start, end, 60.0)
    hours = hour_of_day(times)
    weekend = is_weekend(times)

    # Household load in kW: base load, a fridge cycling, a morning and an
    # evening peak (later and flatter at weekends) and appliance events.
    load = np.full(times.size, rng.uniform(0.12, 0.35))
    fridge_period = rng.uniform(40, 60) * SECONDS_PER_MINUTE
    load += 0.08 * ((times / fridge_period + rng.random()) % 1.0 < 0.4)
    morning = np.where(weekend, gaussian_bump(hours, 9.5, 1.5), gaussian_bump(hours, 7.2, 0.7))
    load += rng.uniform(0.4, 1.4) * morning
    load += rng.uniform(0.9, 2.4) * gaussian_bump(hours, 19.5 + rng.uniform(-0.5, 0.5), 1.6)
    load += 0.4 * weekend * window_weight(hours, 10.0, 17.0)
    load += _appliance_events(rng, times, hours)
    load *= 1.0 + slow_noise(rng, times, 1800.0, 0.05)
    power_kw = np.maximum(load, 0.05)

    # Grid voltage sags at the evening peak and under the household's own
    # current across the service cable's resistance.
    source_v = 230.0 + rng.uniform(-4.0, 4.0) - 3.0 * gaussian_bump(hours, 19.0, 1.5)
    source_v += slow_noise(rng, times, 900.0, 0.8) + rng.normal(0.0, 0.3, times.size)
    resistance_ohm = rng.uniform(0.1, 0.3)
    current = power_kw * 1000.0 / source_v
    voltage = source_v - resistance_ohm * current
    current = power_kw * 1000.0 / voltage

    gaps = report_gaps(times, 60.0)
    energy = rng.uniform(1_000.0, 40_000.0) + np.cumsum(power_kw * gaps / SECONDS_PER_HOUR)

    return times, np.column_stack([energy, voltage, current, voltage * current / 1000.0])


def _appliance_events(rng: np.random.Generator, times: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Return extra kW from kettles, ovens and washing machines, mostly while people are awake."""
    extra = np.zeros(times.size)
    if times.size == 0:
        return extra
    span_h = (times[-1] - times[0]) / SECONDS_PER_HOUR
    count = rng.poisson(0.5 * span_h)
    starts = rng.uniform(times[0], times[-1], count)
    awake = window_weight(hour_of_day(starts), 6.5, 23.0) > rng.random(count)
    for begin in starts[awake]:
        duration = rng.uniform(3.0, 40.0) * SECONDS_PER_MINUTE
        lo, hi = np.searchsorted(times, [begin, begin + duration])
        extra[lo:hi] += rng.uniform(0.8, 2.5)
    return extra


def _industrial_pump(rng: np.random.Generator, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    times = reporting_times(rng, start, end, 60.0)
    hours = hour_of_day(times)

    # Demand as a fraction of rated flow: either a continuous process or two
    # shifts on weekdays with a reduced night and weekend load.
    if rng.random() < 0.4:
        demand = np.full(times.size, rng.uniform(0.75, 0.9))
    else:
        day_shift = window_weight(hours, 6.0, 22.0, ramp=0.5)
        demand = np.where(is_weekend(times), 0.35, 0.45 + 0.4 * day_shift)
    demand = np.clip(demand + slow_noise(rng, times, 1200.0, 0.05), 0.2, 1.1)

    rated_flow = rng.uniform(150.0, 900.0)
    flow = rated_flow * demand * (1.0 + rng.normal(0.0, 0.01, times.size))
    load = flow / rated_flow

    # Pump curve: head falls with the square of flow.
    shutoff_kpa = rng.uniform(450.0, 700.0)
    pressure = shutoff_kpa * (1.0 - 0.45 * load**2) + rng.normal(0.0, 2.0, times.size)

    rated_current = rng.uniform(10.0, 45.0)
    current = rated_current * (0.25 + 0.75 * load + rng.normal(0.0, 0.004, times.size))

    # Vibration is lowest near the best efficiency point (80 % of rated flow).
    vibration = rng.uniform(1.2, 2.8) * (1.0 + 1.5 * (load - 0.8) ** 2)
    vibration *= 1.0 + rng.normal(0.0, 0.04, times.size)

    # Copper losses heat the motor, which lags behind by about 45 minutes.
    heating = 40.0 * (current / rated_current) ** 2
    ambient = rng.uniform(18.0, 32.0) + 3.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0)
    motor_temp = ambient + moving_average(heating, 45) + rng.normal(0.0, 0.2, times.size)

    return times, np.column_stack([flow, pressure, vibration, motor_temp, current])


def _vehicle_tracker(rng: np.random.Generator, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    trips = _plan_trips(rng, start, end)
    times, moving, trip_of_row = _tracker_times(rng, start, end, trips)
    gaps = report_gaps(times, 20.0)

    cruise = rng.uniform(30.0, 70.0)
    traffic = slow_noise(rng, times, 90.0, 1.0)
    speed = cruise * np.clip(0.75 + 0.35 * traffic, 0.0, 1.4)
    speed[traffic < -1.3] = 0.0  # traffic lights and junctions
    for trip_start, trip_end in trips:
        ramp_in = np.clip((times - trip_start) / 60.0, 0.0, 1.0)
        ramp_out = np.clip((trip_end - times) / 60.0, 0.0, 1.0)
        inside = (times >= trip_start) & (times < trip_end)
        speed[inside] *= (ramp_in * ramp_out)[inside]
    speed = np.where(moving, speed, 0.0)

    lat, lon = _track_positions(rng, times, gaps, speed, trip_of_row)

    # 12 V battery: the alternator charges it at about 14 V while the engine
    # runs. Once parked, the surface charge decays towards the resting voltage.
    resting_v = rng.uniform(12.4, 12.7)
    charging_v = rng.uniform(13.9, 14.3)
    last_stop = _time_of_last_stop(times, trips, start)
    parked_hours = (times - last_stop) / SECONDS_PER_HOUR
    parked_v = resting_v + 0.6 * np.exp(-parked_hours * 3.0) - 0.01 * parked_hours
    battery = np.where(moving, charging_v, parked_v) + rng.normal(0.0, 0.03, times.size)

    rssi = rng.uniform(-90.0, -70.0) + slow_noise(rng, times, 600.0, 3.0)
    rssi += np.where(moving, slow_noise(rng, times, 60.0, 5.0), 0.0) + rng.normal(0.0, 2.0, times.size)
    rssi = np.clip(rssi, -120.0, -50.0)

    return times, np.column_stack([speed, lat, lon, battery, rssi])


def _plan_trips(rng: np.random.Generator, start: float, end: float) -> list[tuple[float, float]]:
    """Return non-overlapping (start, end) trips: several per weekday between 07:00 and 19:00, few at weekends."""
    trips: list[tuple[float, float]] = []
    first_day = np.floor(start / SECONDS_PER_DAY) * SECONDS_PER_DAY
    for midnight in np.arange(first_day, end, SECONDS_PER_DAY):
        weekend = bool(is_weekend(np.array([midnight]))[0])
        count = rng.poisson(1.0) if weekend else 3 + rng.poisson(2.0)
        begins = np.sort(midnight + rng.uniform(7.0, 19.0, count) * SECONDS_PER_HOUR)
        for begin in begins:
            finish = begin + rng.uniform(8.0, 50.0) * SECONDS_PER_MINUTE
            if trips and begin < trips[-1][1] + 5 * SECONDS_PER_MINUTE:
                continue
            if begin >= start and finish <= end:
                trips.append((float(begin), float(finish)))
    return trips


def _tracker_times(
    rng: np.random.Generator, start: float, end: float, trips: list[tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return report times, a moving flag and the trip index (-1 while parked) per row.

    A parked tracker sends a heartbeat about every 5 minutes, a moving one every 15 to 30 s.
    """
    pieces: list[np.ndarray] = []
    moving: list[np.ndarray] = []
    trip_index: list[np.ndarray] = []
    cursor = start
    for index, (trip_start, trip_end) in enumerate(trips):
        parked = reporting_times(rng, cursor, trip_start, 300.0)
        steps = rng.uniform(15.0, 30.0, int((trip_end - trip_start) / 15.0) + 2)
        driving = np.round(trip_start + np.concatenate(([0.0], np.cumsum(steps[:-1]))))
        driving = driving[driving < trip_end]
        pieces += [parked, driving]
        moving += [np.zeros(parked.size, bool), np.ones(driving.size, bool)]
        trip_index += [np.full(parked.size, -1), np.full(driving.size, index)]
        cursor = trip_end
    parked = reporting_times(rng, cursor, end, 300.0)
    pieces.append(parked)
    moving.append(np.zeros(parked.size, bool))
    trip_index.append(np.full(parked.size, -1))
    return strictly_increasing(np.concatenate(pieces)), np.concatenate(moving), np.concatenate(trip_index)


def _track_positions(
    rng: np.random.Generator, times: np.ndarray, gaps: np.ndarray, speed_kmh: np.ndarray, trip_of_row: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return latitude and longitude from dead reckoning, with GPS noise of a few metres.

    Each trip starts heading home when the vehicle is more than 8 km from its
    depot, otherwise in a random direction, and then wanders.
    """
    home = np.array([rng.uniform(48.0, 53.0), rng.uniform(2.0, 12.0)])
    position = home.copy()
    lat = np.empty(times.size)
    lon = np.empty(times.size)
    if times.size == 0:
        return lat, lon
    metres_per_lon_degree = _METRES_PER_DEGREE * np.cos(np.radians(home[0]))
    boundaries = np.flatnonzero(np.diff(trip_of_row) != 0) + 1
    for lo, hi in zip(np.concatenate(([0], boundaries)), np.concatenate((boundaries, [times.size]))):
        if trip_of_row[lo] < 0:
            lat[lo:hi], lon[lo:hi] = position
            continue
        offset_m = (home - position) * [_METRES_PER_DEGREE, metres_per_lon_degree]
        if np.hypot(*offset_m) > 8000.0:
            heading = np.arctan2(offset_m[1], offset_m[0])
        else:
            heading = rng.uniform(0.0, 2 * np.pi)
        headings = heading + np.cumsum(rng.normal(0.0, 0.12, hi - lo))
        metres = speed_kmh[lo:hi] / 3.6 * gaps[lo:hi]
        lat[lo:hi] = position[0] + np.cumsum(metres * np.cos(headings)) / _METRES_PER_DEGREE
        lon[lo:hi] = position[1] + np.cumsum(metres * np.sin(headings)) / metres_per_lon_degree
        position = np.array([lat[hi - 1], lon[hi - 1]])
    lat += rng.normal(0.0, 3.0, times.size) / _METRES_PER_DEGREE
    lon += rng.normal(0.0, 3.0, times.size) / metres_per_lon_degree
    return lat, lon


def _time_of_last_stop(times: np.ndarray, trips: list[tuple[float, float]], start: float) -> np.ndarray:
    """Return for each row the end of the latest earlier trip, or ``start - 12 h`` before the first trip."""
    ends = np.array([start - 12 * SECONDS_PER_HOUR] + [finish for _, finish in trips])
    return ends[np.searchsorted(ends, times, side="right") - 1]


DEVICE_TYPES: dict[str, DeviceType] = {
    spec.name: spec
    for spec in (
        DeviceType(
            name="thermostat",
            metrics=("temperature_c", "humidity_pct", "setpoint_c", "power_w"),
            decimals=(2, 1, 1, 1),
            share=0.30,
            interval_s=60.0,
            generate=_thermostat,
        ),
        DeviceType(
            name="camera",
            metrics=("bytes_out", "packets_out", "distinct_dst", "conn_failed", "cpu_pct"),
            decimals=(0, 0, 0, 0, 1),
            share=0.20,
            interval_s=30.0,
            generate=_camera,
        ),
        DeviceType(
            name="smart_meter",
            metrics=("energy_kwh_total", "voltage_v", "current_a", "power_kw"),
            decimals=(3, 1, 2, 3),
            share=0.25,
            interval_s=60.0,
            generate=_smart_meter,
        ),
        DeviceType(
            name="industrial_pump",
            metrics=("flow_lpm", "pressure_kpa", "vibration_rms", "motor_temp_c", "current_a"),
            decimals=(1, 1, 3, 2, 2),
            share=0.10,
            interval_s=60.0,
            generate=_industrial_pump,
        ),
        DeviceType(
            name="vehicle_tracker",
            metrics=("speed_kmh", "lat", "lon", "battery_v", "rssi_dbm"),
            decimals=(1, 6, 6, 2, 0),
            share=0.15,
            interval_s=300.0,
            generate=_vehicle_tracker,
        ),
    )
}


def _all_metric_names() -> tuple[str, ...]:
    names: list[str] = []
    for spec in DEVICE_TYPES.values():
        names += [name for name in spec.metrics if name not in names]
    return tuple(names)


METRIC_NAMES: tuple[str, ...] = _all_metric_names()
"""Every metric of every type, in the fixed column order of the CSV."""
