"""An event's time: its own timestamp, unless that lies further ahead of its arrival than
clocks drift apart.

Interest statuses apply in the order they happened, so an event that claims a time in the
future (a `lead_interested` dated 2999) would supersede every real status after it and
freeze the contact. Such an event is ordered by its arrival instead; the time it claimed
stays in its payload and in the note its sync records.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bridge.clock import iso, parse_time
from bridge.events.event import Event

__all__ = ["MAX_AHEAD", "ahead_note", "occurred_at"]

# Instantly's clock and this machine's may differ by seconds; minutes ahead is no drift.
MAX_AHEAD = timedelta(minutes=5)
_MAX_AHEAD_SECONDS = MAX_AHEAD.total_seconds()


def occurred_at(claimed: datetime | None, arrived: datetime | None = None) -> str:
    """The time an event is ordered by: the time it claims (its parsed timestamp), or its
    arrival when it claims none or one more than MAX_AHEAD after the arrival."""
    if claimed is not None:
        # Epoch seconds, not datetimes: this runs for every webhook, and is cheaper so.
        now = arrived.timestamp() if arrived else time.time()
        if claimed.timestamp() <= now + _MAX_AHEAD_SECONDS:
            return iso(claimed)
    return iso(arrived or datetime.now(UTC))


def ahead_note(event: Event) -> str | None:
    """Why an event is ordered by its arrival rather than its own timestamp (that lay more
    than MAX_AHEAD after it); None when the event keeps its own time."""
    timestamp = event.payload.get("timestamp")
    claimed, ordered = parse_time(timestamp), parse_time(event.occurred_at)
    if claimed is None or ordered is None or claimed <= ordered + MAX_AHEAD:
        return None
    return (
        f"its timestamp {timestamp} is {_span(claimed - ordered)} after it arrived;"
        f" ordered by its arrival at {event.occurred_at}"
    )


def _span(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days} days"
    if delta >= timedelta(hours=2):
        return f"{int(delta.total_seconds() // 3600)} hours"
    return f"{int(delta.total_seconds() // 60)} minutes"
