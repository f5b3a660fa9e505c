"""Small named values kept in the store: GHL pause, last GHL error, a capped Retry-After,
caches, watermarks."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from bridge.clock import now_iso

GHL_PAUSE = "ghl_pause"
GHL_LAST_ERROR = "ghl_last_error"
# The last 429 that asked for a longer wait than the cap: {asked, waited_seconds, at}.
GHL_RETRY_AFTER_CAPPED = "ghl_retry_after_capped"


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
