"""The keyed record of GHL writes that GHL itself would repeat: notes and opportunities
(not idempotent), workflow enrolments and DND (done once per contact).

A write that must not happen twice is recorded as an `intent` before the call and
marked `done` with GHL's id after. An intent without done means the call's fate is
unknown (a timeout, or a crash between the call and its record): look in GHL before
writing again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from bridge.clock import now_iso

INTENT, DONE = "intent", "done"


@dataclass(frozen=True)
class Write:
    key: str
    kind: str
    contact_id: str
    state: str
    ghl_id: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state == DONE


def get(db: sqlite_utils.Database, location_id: str, key: str) -> Write | None:
    row = db.execute(
        "SELECT key, kind, contact_id, state, ghl_id, detail FROM ghl_writes"
        " WHERE location_id = ? AND key = ?",
        [location_id, key],
    ).fetchone()
    if row is None:
        return None
    return Write(row[0], row[1], row[2] or "", row[3], row[4] or "", json.loads(row[5] or "{}"))


def intend(
    db: sqlite_utils.Database, location_id: str, key: str, kind: str, contact_id: str
) -> None:
    """Record that a write is about to be sent; an existing record is left as it is."""
    db.execute(
        "INSERT INTO ghl_writes (location_id, key, kind, contact_id, state, at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(location_id, key) DO NOTHING",
        [location_id, key, kind, contact_id, INTENT, now_iso()],
    )


def done(
    db: sqlite_utils.Database,
    location_id: str,
    key: str,
    kind: str,
    contact_id: str,
    ghl_id: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Record a write GHL confirmed, with the id it answered and what was written."""
    db.execute(
        "INSERT INTO ghl_writes (location_id, key, kind, contact_id, state, ghl_id, detail, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(location_id, key) DO UPDATE SET state = excluded.state,"
        " ghl_id = excluded.ghl_id, contact_id = excluded.contact_id, detail = excluded.detail,"
        " at = excluded.at",
        [location_id, key, kind, contact_id, DONE, ghl_id, json.dumps(detail or {}), now_iso()],
    )


def forget(db: sqlite_utils.Database, location_id: str, key: str) -> None:
    """Drop a record whose GHL object no longer exists, so it is written afresh."""
    db.execute("DELETE FROM ghl_writes WHERE location_id = ? AND key = ?", [location_id, key])
