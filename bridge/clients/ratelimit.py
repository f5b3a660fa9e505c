"""Client-side pacing shared by both clients: a sliding-window limiter with an injectable
clock, and how long an answer asks us to wait (Retry-After)."""

from __future__ import annotations

import collections
import email.utils
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

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
        """Send nothing for `seconds` (a 429's Retry-After), never longer than the cap:
        one odd answer must not hold every later call for years."""
        with self._lock:
            self._not_before = max(self._not_before, self.clock() + bounded_wait(seconds))


# An answer asking for a longer wait than this is broken (a unit mixed up, a proxy's
# default), not a rate limit: waiting years would stop every sync until a restart. The
# bridge waits this long instead, and the caller reports what was asked.
MAX_RETRY_AFTER_SECONDS = 15 * 60.0
# How much of an odd header value is kept for the report.
ASKED_CHARS = 100


@dataclass(frozen=True)
class RetryAfter:
    """How long an answer asked us to wait, within [0, MAX_RETRY_AFTER_SECONDS].

    `seconds` is None when the answer did not say; `asked` is the header as sent
    ("Retry-After: 1e9") when it asked for longer than the cap, else None.
    """

    seconds: float | None
    asked: str | None = None


def bounded_wait(seconds: float) -> float:
    """`seconds` within [0, MAX_RETRY_AFTER_SECONDS]; NaN counts as no wait."""
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def read_retry_after(response: requests.Response) -> RetryAfter:
    """Retry-After (seconds or HTTP date), else GHL's X-RateLimit-Interval-Milliseconds,
    capped; says what was asked when it was more than the cap."""
    for header, seconds in (
        ("Retry-After", _delay_or_date),
        ("X-RateLimit-Interval-Milliseconds", _milliseconds),
    ):
        value = response.headers.get(header, "").strip()
        wait = seconds(value) if value else None
        if wait is not None:
            asked = f"{header}: {value[:ASKED_CHARS]}" if wait > MAX_RETRY_AFTER_SECONDS else None
            return RetryAfter(bounded_wait(wait), asked)
    return RetryAfter(None)


def retry_after_seconds(response: requests.Response) -> float | None:
    """How long the answer asked us to wait, capped; None when it did not say."""
    return read_retry_after(response).seconds


def _number(value: str) -> float | None:
    """A finite or infinite number; None for text and NaN, which say nothing."""
    try:
        number = float(value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _delay_or_date(value: str) -> float | None:
    delay = _number(value)
    if delay is not None:
        return delay
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return parsed.timestamp() - time.time()


def _milliseconds(value: str) -> float | None:
    interval = _number(value)
    return None if interval is None else interval / 1000
