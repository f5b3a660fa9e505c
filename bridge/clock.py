"""The one timestamp format the bridge writes: ISO 8601, UTC, milliseconds, `Z`.

Instantly writes the same format, so stored times compare as text. `parse_time` also
reads the older forms a database may hold from before (`+00:00`, microseconds).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["iso", "now_iso", "parse_time"]


def iso(moment: datetime) -> str:
    """`moment` as UTC ISO 8601 with milliseconds and a Z; a naive moment is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    """The current time in the bridge's format."""
    return iso(datetime.now(UTC))


def parse_time(value: Any) -> datetime | None:
    """Parse an ISO 8601 timestamp (`Z`, an offset, or none: UTC); None when absent or
    unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
