"""Scoring of the detection engine on public benchmarks: NAB, SKAB and TON_IoT.

Each benchmark module reads its dataset, replays it through the engine
(``iotwarden.engine``) without the labels and scores the output against the
labels. The scorers also accept any per-row scores or flags, so they can be
tested without the engine. ``iotwarden evaluate`` is the command line.
"""

from iotwarden.evaluate.common import DatasetError
from iotwarden.evaluate.nab import run_nab
from iotwarden.evaluate.skab import run_skab
from iotwarden.evaluate.ton_iot import run_ton_iot

__all__ = ["DatasetError", "run_nab", "run_skab", "run_ton_iot"]
