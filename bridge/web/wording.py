"""Counts and times as the page says them: "1 event", "2 events", "3 min ago",
"next try in 2 min", "due now"."""

from __future__ import annotations

import time
from typing import Any

from bridge.clock import parse_time

__all__ = ["duration", "next_try", "plural", "since"]

_UNITS = ((86400, "day"), (3600, "h"), (60, "min"), (1, "s"))


def plural(count: int, word: str, words: str | None = None) -> str:
    """`count` and the word, singular for exactly one: "1 second", "3 seconds"."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def duration(seconds: float) -> str:
    """A length of time in its largest whole unit: "45 s", "3 min", "2 h", "1 day", "4 days"."""
    seconds = max(0.0, seconds)
    for size, unit in _UNITS:
        if seconds >= size:
            count = int(seconds // size)
            return plural(count, unit) if unit == "day" else f"{count} {unit}"
    return "0 s"


def since(stamp: Any, now: float | None = None) -> str:
    """How long ago a stored timestamp was: "3 min ago", "just now"; "" when unreadable."""
    moment = parse_time(stamp)
    if moment is None:
        return ""
    ago = (time.time() if now is None else now) - moment.timestamp()
    if ago < 5:
        return "just now"
    return duration(ago) + " ago"


def next_try(due_at: float | None, now: float | None = None) -> str:
    """When a pending event is tried again: "next try in 2 min", or "due now"."""
    if due_at is None:
        return ""
    wait = due_at - (time.time() if now is None else now)
    if wait < 1:
        return "due now"
    return "next try in " + duration(wait)
