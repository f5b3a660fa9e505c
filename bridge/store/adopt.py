"""What a single-location bridge stored before locations existed becomes GHL_LOCATION_ID's:
its contact map and GHL writes (location '' since m042) and its GHL state (pause, last
error, failing since, custom-field ids, under names without a location). The first process
that opens the database knowing GHL_LOCATION_ID moves them; none are left to move after."""

from __future__ import annotations

import logging

import sqlite_utils

from bridge.store import state
from bridge.store.db import immediate

log = logging.getLogger("bridge.store")

# State kept per location whose name before m042 had no location in it.
_UNSCOPED = (*state.PER_LOCATION, state.GHL_CUSTOM_FIELDS)


def adopt_single_location(db: sqlite_utils.Database, location_id: str) -> bool:
    """Give `location_id` what was stored without a location; True when anything moved.

    Looked for first, so opening a database that has nothing to adopt (the usual case, and
    a dry run's) writes nothing. A row the location already has (written since) is kept,
    and the old one left where it is rather than lost."""
    if not location_id or not _anything_unscoped(db):
        return False
    with immediate(db):
        moved = 0
        for table in ("contacts", "ghl_writes"):
            moved += db.execute(
                f"UPDATE OR IGNORE {table} SET location_id = ? WHERE location_id = ''",
                [location_id],
            ).rowcount
        for name in _UNSCOPED:
            value = state.get(db, name)
            if value is not None:
                if state.get(db, state.scoped(name, location_id)) is None:
                    state.put(db, state.scoped(name, location_id), value)
                state.delete(db, name)
    if moved:
        log.info("%d contact map and GHL write rows now belong to location %s", moved, location_id)
    return True


def _anything_unscoped(db: sqlite_utils.Database) -> bool:
    for table in ("contacts", "ghl_writes"):
        if db.execute(f"SELECT 1 FROM {table} WHERE location_id = '' LIMIT 1").fetchone():
            return True
    marks = ",".join("?" * len(_UNSCOPED))
    found = db.execute(f"SELECT 1 FROM state WHERE name IN ({marks}) LIMIT 1", _UNSCOPED)
    return found.fetchone() is not None
