"""Reconciliation runs as the config page and /metrics see them.

The reconciliation worker owns the runs; this module is the narrow seam the web side
reads through, so the page never runs a reconciliation inside a web request:

- `request_run(db)` asks through `reconcile_runs.request_run`; the worker's scheduler
  picks the request up, clears it and starts a run.
- The worker records each run as a row of the `reconcile_runs` table
  (status running|ok|error|stopped, pages, events_found, events_new, errors).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from bridge.reconcile import runs as reconcile_runs

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


def request_run(db: sqlite_utils.Database) -> dict:
    """Ask the worker for a run now; a request already waiting is kept, not doubled."""
    waiting = requested(db)
    if waiting:
        return waiting
    reconcile_runs.request_run(db, by="page")
    return requested(db) or {}


def requested(db: sqlite_utils.Database) -> dict | None:
    """The request the worker has not picked up yet, if any."""
    return reconcile_runs.requested(db)


def latest(db: sqlite_utils.Database) -> Run | None:
    """The most recent run, or None before the first (or when not installed)."""
    rows = list(db[RUNS_TABLE].rows_where(order_by="id DESC", limit=1))
    return _run(rows[0]) if rows else None


def totals(db: sqlite_utils.Database) -> dict:
    """Runs by status and events found/new over all runs, for /metrics."""
    by_status = {
        status: n
        for status, n in db.execute(f"SELECT status, COUNT(*) FROM {RUNS_TABLE} GROUP BY status")
    }
    found, new = db.execute(
        f"SELECT COALESCE(SUM(events_found), 0), COALESCE(SUM(events_new), 0) FROM {RUNS_TABLE}"
    ).fetchone()
    return {"by_status": by_status, "found": found, "new": new}


def _run(row: dict) -> Run:
    return Run(
        id=row["id"],
        started_at=row["started_at"],
        finished_at=row.get("finished_at"),
        status=row.get("status") or "running",
        pages=row.get("pages") or 0,
        found=row.get("events_found") or 0,
        new=row.get("events_new") or 0,
        errors=row.get("errors"),
    )
