"""Input sources: file readers, payload parsing, ordering and dead letters.

Every source yields :class:`~iotwarden.observation.Observation`,
:class:`~iotwarden.observation.FieldIssue` and
:class:`~iotwarden.observation.Rejection` items. The value policy that
decides which values become metrics is documented in
:mod:`iotwarden.sources.payload`, the ordering policy in
:mod:`iotwarden.sources.ordering`.
"""

from iotwarden.sources.counters import SourceCounters
from iotwarden.sources.deadletter import DeadLetterWriter
from iotwarden.sources.files import Item, read_records
from iotwarden.sources.ordering import OrderingCounters, Reorderer
from iotwarden.sources.payload import PayloadParser, RecordError, ValuePolicy
from iotwarden.sources.timeparse import TimeParser

__all__ = [
    "DeadLetterWriter",
    "Item",
    "OrderingCounters",
    "PayloadParser",
    "RecordError",
    "Reorderer",
    "SourceCounters",
    "TimeParser",
    "ValuePolicy",
    "read_records",
]
