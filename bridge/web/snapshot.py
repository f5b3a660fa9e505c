"""A value computed at most once per interval in a process, by one thread at a time: what
pages anyone may load (/metrics) answer from, so clients looping on them cost one query
per interval, however many they are."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Snapshot(Generic[T]):
    """`get()` answers `compute()`'s last value while it is younger than `ttl` seconds.

    When it is older, the first caller computes it again and the others wait for that
    answer rather than compute their own. An exception is not kept: the next caller tries.
    """

    def __init__(
        self,
        compute: Callable[[], T],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.compute = compute
        self.ttl = ttl
        self.clock = clock
        # (when computed, value), replaced whole so a reader never sees half of it.
        self._last: tuple[float, T] | None = None
        self._computing = threading.Lock()

    def get(self) -> T:
        last = self._fresh()
        if last is not None:
            return last[1]
        with self._computing:
            # Another thread may have computed it while this one waited for the lock.
            last = self._fresh()
            if last is None:
                last = (self.clock(), self.compute())
                self._last = last
            return last[1]

    def _fresh(self) -> tuple[float, T] | None:
        last = self._last
        if last is not None and self.clock() - last[0] < self.ttl:
            return last
        return None
