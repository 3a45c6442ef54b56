"""The ``iotwarden run`` command."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from types import FrameType

import click

from iotwarden.service.config import load_service_config
from iotwarden.service.runner import Service

__all__ = ["run"]

logger = logging.getLogger(__name__)

_GC_THRESHOLDS = (50_000, 20, 100)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML file of service settings (see docs/config.md); default: MQTT on 127.0.0.1:1883, topic '+/{device}/telemetry'.",
)
def run(config_path: str | None) -> None:
    """Run the live service: subscribe to MQTT, score every message and store alerts until SIGTERM or SIGINT.

    On stop it drains the queue and saves the engine state; the next start
    resumes from it. Use -v for progress in the log.
    """
    config = load_service_config(config_path)
    service = Service(config)
    # The loop allocates several short-lived containers per message, almost
    # none of them in reference cycles. Replaying benchmarks/mqtt_throughput.py's
    # stream through this process's work, the cyclic collector took 20 to 25 %
    # of the time with the default thresholds (700, 10, 10) and 2 to 3 % with these.
    gc.set_threshold(*_GC_THRESHOLDS)
    stop = threading.Event()

    def request_stop(number: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            logger.info("received %s; stopping", signal.Signals(number).name)
        stop.set()

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.run(stop)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
