"""Fleet simulator: realistic IoT device reports with labelled incidents.

Used by ``iotwarden demo`` and ``iotwarden simulate``, and by tests that need
data with a known ground truth. Needs only numpy. ``docs/simulator.md``
describes the device types, metrics and incident kinds.

Example::

    from iotwarden.simulate import simulate_fleet, write_csv

    simulation = simulate_fleet(200, 48, seed=7)
    write_csv(simulation, "fleet.csv.gz")  # also writes fleet.labels.csv
"""

from iotwarden.simulate.devices import DEVICE_TYPES, METRIC_NAMES, DeviceType
from iotwarden.simulate.fleet import DEFAULT_START, Simulation, TypeBlock, simulate_fleet
from iotwarden.simulate.incidents import ATTACKS, Incident
from iotwarden.simulate.output import LABEL_COLUMNS, default_labels_path, write_csv, write_labels

__all__ = [
    "ATTACKS",
    "DEFAULT_START",
    "DEVICE_TYPES",
    "LABEL_COLUMNS",
    "METRIC_NAMES",
    "DeviceType",
    "Incident",
    "Simulation",
    "TypeBlock",
    "default_labels_path",
    "simulate_fleet",
    "write_csv",
    "write_labels",
]
