"""Client-side pacing shared by both clients: a sliding-window limiter with an injectable
clock, and how long an answer asks us to wait (Retry-After)."""

from __future__ import annotations

import collections
import email.utils
import threading
import time
from collections.abc import Callable

import requests


class SlidingWindowLimiter:
    """At most `limit` calls in any `window` seconds, plus an explicit 'not before'.

    `acquire()` blocks (through `sleep`) until a call may go out. Tests pass a fake
    clock and sleep to check the arithmetic without waiting.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.clock = clock
        self.sleep = sleep
        self._sent: collections.deque[float] = collections.deque()
        self._not_before = 0.0
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Seconds to wait before the next call may go out (0 when it may go now)."""
        with self._lock:
            return self._delay(self.clock())

    def _delay(self, now: float) -> float:
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        wait = max(0.0, self._not_before - now)
        if len(self._sent) >= self.limit:
            wait = max(wait, self._sent[0] + self.window - now)
        return wait

    def acquire(self) -> float:
        """Wait for a slot and take it; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                wait = self._delay(now)
                if wait <= 0:
                    self._sent.append(now)
                    return waited
            self.sleep(wait)
            waited += wait

    def block_for(self, seconds: float) -> None:
        """Send nothing for `seconds` (a 429's Retry-After)."""
        with self._lock:
            self._not_before = max(self._not_before, self.clock() + seconds)


def retry_after_seconds(response: requests.Response) -> float | None:
    """Retry-After (seconds or HTTP date), else GHL's X-RateLimit-Interval-Milliseconds."""
    value = response.headers.get("Retry-After", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None and parsed.tzinfo is not None:
                return max(0.0, parsed.timestamp() - time.time())
    interval = response.headers.get("X-RateLimit-Interval-Milliseconds", "").strip()
    try:
        return max(0.0, float(interval) / 1000) if interval else None
    except ValueError:
        return None
