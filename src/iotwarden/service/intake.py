"""The bounded queue between the network threads and the forwarding thread of the receiver process.

Back-pressure policy (``overflow`` in the configuration), applied when the
queue contains ``queue_size`` messages or ``queue_max_bytes`` payload bytes:

* ``block`` (default): the network thread waits for space. paho then reads
  nothing from the socket, TCP flow control slows the broker, and the
  broker keeps the QoS 1 messages in the session's queue. If no space frees
  up within ``block_timeout`` seconds the message is dropped and counted,
  because a network thread blocked for longer than the keep-alive interval
  loses its connection.
* ``drop_oldest``: the oldest queued message is dropped to make room; the
  freshest data wins.
* ``drop_newest``: the arriving message is dropped.

Every drop is counted in :attr:`MessageQueue.dropped`; the service logs the
count.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from typing import Any

from iotwarden.errors import InvalidConfigError

__all__ = ["MessageQueue"]


class MessageQueue:
    """A FIFO of messages bounded by count and by payload bytes.

    Many producers (network threads) and one consumer (the forwarding thread).
    A message is any object; its payload size is given to :meth:`put`.
    """

    def __init__(self, max_messages: int, max_bytes: int, overflow: str = "block", block_timeout: float = 10.0) -> None:
        if overflow not in ("block", "drop_oldest", "drop_newest"):
            raise InvalidConfigError(f"invalid overflow policy {overflow!r}: expected block, drop_oldest or drop_newest")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.dropped = 0
        self.blocked_seconds = 0.0
        self._items: deque[Any] = deque()
        self._sizes: deque[int] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        """Payload bytes currently queued."""
        return self._bytes

    def put(self, message: Any, size: int) -> bool:
        """Queue one message whose payload has ``size`` bytes; return False when the overflow policy dropped it."""
        with self._lock:
            if not self._has_room(size):
                if self.overflow == "drop_newest":
                    self.dropped += 1
                    return False
                if self.overflow == "drop_oldest":
                    while self._items and not self._has_room(size):
                        self._items.popleft()
                        self._bytes -= self._sizes.popleft()
                        self.dropped += 1
                else:
                    started = time.monotonic()
                    deadline = started + self.block_timeout
                    while not self._has_room(size):
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            self.blocked_seconds += time.monotonic() - started
                            self.dropped += 1
                            return False
                        self._not_full.wait(remaining)
                    self.blocked_seconds += time.monotonic() - started
            self._items.append(message)
            self._sizes.append(size)
            self._bytes += size
            self._not_empty.notify()
        return True

    def take(self, max_items: int, timeout: float) -> list[Any]:
        """Remove and return up to ``max_items`` messages, waiting up to ``timeout`` seconds for the first."""
        with self._lock:
            if not self._items and timeout > 0:
                self._not_empty.wait(timeout)
            items = self._items
            count = min(max_items, len(items))
            if count == 0:
                return []
            taken = [items.popleft() for _ in range(count)]
            sizes = self._sizes
            self._bytes -= sum([sizes.popleft() for _ in range(count)])
            self._not_full.notify_all()
        return taken

    def _has_room(self, size: int) -> bool:
        # An empty queue always takes one message, so a payload larger than
        # max_bytes cannot block forever.
        if not self._items:
            return True
        return len(self._items) < self.max_messages and self._bytes + size <= self.max_bytes
