"""Reconciliation runs as the config page and /metrics see them.

The reconciliation worker owns the runs; this module is the narrow seam the web side
reads through, so the page never runs a reconciliation inside a web request:

- `request_run(db)` writes the state value REQUEST_STATE; the worker picks it up,
  clears it and starts a run.
- The worker records each run as a row of the `reconcile_runs` table
  (id, started_at, finished_at, status running|ok|failed, pages, found, new, errors).

Until that table exists, `available()` is False and the page says reconciliation is
not installed instead of offering a button that nothing would answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from bridge import state
from bridge.inbox import now_iso

REQUEST_STATE = "reconcile_requested"
RUNS_TABLE = "reconcile_runs"


@dataclass(frozen=True)
class Run:
    """One reconciliation run, finished or not."""

    id: int
    started_at: str
    finished_at: str | None
    status: str
    pages: int
    found: int
    new: int
    errors: str | None


def available(db: sqlite_utils.Database) -> bool:
    """Whether this build records reconciliation runs (the worker side is installed)."""
    return db[RUNS_TABLE].exists()


def request_run(db: sqlite_utils.Database) -> dict:
    """Ask the worker for a run now; a request already waiting is kept, not doubled."""
    waiting = requested(db)
    if waiting:
        return waiting
    value = {"requested_at": now_iso()}
    state.put(db, REQUEST_STATE, value)
    return value


def requested(db: sqlite_utils.Database) -> dict | None:
    """The request the worker has not picked up yet, if any."""
    return state.get(db, REQUEST_STATE)


def latest(db: sqlite_utils.Database) -> Run | None:
    """The most recent run, or None before the first (or when not installed)."""
    if not available(db):
        return None
    rows = list(db[RUNS_TABLE].rows_where(order_by="id DESC", limit=1))
    return _run(rows[0]) if rows else None


def totals(db: sqlite_utils.Database) -> dict:
    """Runs by status and events found/new over all runs, for /metrics."""
    if not available(db):
        return {"by_status": {}, "found": 0, "new": 0}
    by_status = {
        status: n
        for status, n in db.execute(f"SELECT status, COUNT(*) FROM {RUNS_TABLE} GROUP BY status")
    }
    found, new = db.execute(
        f"SELECT COALESCE(SUM(found), 0), COALESCE(SUM(new), 0) FROM {RUNS_TABLE}"
    ).fetchone()
    return {"by_status": by_status, "found": found, "new": new}


def _run(row: dict) -> Run:
    return Run(
        id=row["id"],
        started_at=row["started_at"],
        finished_at=row.get("finished_at"),
        status=row.get("status") or "running",
        pages=row.get("pages") or 0,
        found=row.get("found") or 0,
        new=row.get("new") or 0,
        errors=row.get("errors"),
    )
