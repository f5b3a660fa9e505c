"""Small named values kept in the store: GHL pause, last GHL error, since when GHL has been
failing, a capped Retry-After, caches, watermarks."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from bridge.clock import now_iso

GHL_PAUSE = "ghl_pause"
GHL_LAST_ERROR = "ghl_last_error"
# The last 429 that asked for a longer wait than the cap: {asked, waited_seconds, at}.
GHL_RETRY_AFTER_CAPPED = "ghl_retry_after_capped"
# The first GHL call that failed after the last one that reached GHL: {at, status}. Absent
# while the last call reached GHL, so "failing for how long" costs one read.
GHL_FAILING_SINCE = "ghl_failing_since"


# Custom field keys to ids, fetched from GHL (bridge/sync/fieldmap.py).
GHL_CUSTOM_FIELDS = "ghl_custom_fields"
# Of the names above, those each location keeps its own of (scoped by its id).
PER_LOCATION = (GHL_PAUSE, GHL_LAST_ERROR, GHL_RETRY_AFTER_CAPPED, GHL_FAILING_SINCE)


def scoped(name: str, location_id: str) -> str:
    """The state name `name` has for one location."""
    return f"{name}:{location_id}"


def get(db: sqlite_utils.Database, name: str, default: Any = None) -> Any:
    row = db.execute("SELECT value FROM state WHERE name = ?", [name]).fetchone()
    return json.loads(row[0]) if row else default


def put(db: sqlite_utils.Database, name: str, value: Any) -> None:
    db.execute(
        "INSERT INTO state (name, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [name, json.dumps(value), now_iso()],
    )


def delete(db: sqlite_utils.Database, name: str) -> None:
    db.execute("DELETE FROM state WHERE name = ?", [name])


def ghl_call_failed(status: int) -> bool:
    """True when a GHL call's HTTP status means GHL could not be reached or failed:
    0 (network error, timeout), 408 or 5xx. Any other answer, a 4xx included, came from a
    GHL that is up."""
    return status == 0 or status == 408 or status >= 500


def note_ghl_call(db: sqlite_utils.Database, status: int, location_id: str) -> None:
    """Keep the location's GHL_FAILING_SINCE for a call's outcome: set by the first failure
    after a call that reached GHL, cleared by the next one that reaches it.

    Read first, so the usual call (whose outcome changes nothing) writes nothing; a second
    worker setting it meanwhile keeps the earlier time.
    """
    name = scoped(GHL_FAILING_SINCE, location_id)
    failing = get(db, name)
    if not ghl_call_failed(status):
        if failing is not None:
            delete(db, name)
        return
    if failing is None:
        db.execute(
            "INSERT INTO state (name, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(name) DO NOTHING",
            [name, json.dumps({"at": now_iso(), "status": status}), now_iso()],
        )
