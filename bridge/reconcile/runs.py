"""Reconciliation runs: one at a time per database, recorded, requestable, reported.

The lock lives in SQLite (with an expiry a live run keeps pushing back), so a second
worker started by mistake, or `instantly-ghl-bridge reconcile` typed during a scheduled
run, waits its turn instead of polling Instantly twice. The dashboard asks for a run by writing a
request the worker's scheduler picks up within seconds, so the page never runs a
reconciliation inside a web request. Each run is a row of `reconcile_runs`; the page,
/healthz and /metrics all read them through `report` and `totals` here.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from bridge.clients.instantly import InstantlyClient
from bridge.clock import now_iso
from bridge.reconcile.reconciler import Options, Progress, Reconciler, Summary
from bridge.store import state
from bridge.store.db import immediate

RUNS_TABLE = "reconcile_runs"
LOCK = "reconcile_lock"
REQUEST = "reconcile_requested"
SCHEDULE = "reconcile_schedule"
# A run renews its lock at every page; one that has not for this long has died.
LOCK_SECONDS = 15 * 60.0


class Busy(Exception):
    """Another reconciliation holds the lock; the message says whose and since when."""


@dataclass
class Lock:
    """This process's hold on the reconciliation lock."""

    db: sqlite_utils.Database
    owner: str
    clock: Callable[[], float] = time.time
    seconds: float = LOCK_SECONDS

    def renew(self) -> None:
        with immediate(self.db):
            held = state.get(self.db, LOCK)
            if held and held.get("owner") == self.owner:
                held["expires_at"] = self.clock() + self.seconds
                state.put(self.db, LOCK, held)

    def release(self) -> None:
        with immediate(self.db):
            held = state.get(self.db, LOCK)
            if held and held.get("owner") == self.owner:
                state.delete(self.db, LOCK)


def acquire_lock(
    db: sqlite_utils.Database,
    what: str,
    clock: Callable[[], float] = time.time,
    seconds: float = LOCK_SECONDS,
) -> Lock:
    """Take the lock, or raise Busy while another live run holds it (an expired hold is
    taken over: its run crashed, and repeating its work is harmless)."""
    owner = uuid.uuid4().hex
    now = clock()
    with immediate(db):
        held = state.get(db, LOCK)
        if held and held.get("expires_at", 0) > now:
            raise Busy(
                f"another reconciliation ({held.get('what')}, pid {held.get('pid')} on "
                f"{held.get('host')}) has been running since {held.get('since')}"
            )
        state.put(
            db,
            LOCK,
            {
                "owner": owner,
                "what": what,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": now_iso(),
                "expires_at": now + seconds,
            },
        )
    return Lock(db, owner, clock, seconds)


def run_recorded(
    db: sqlite_utils.Database,
    client: InstantlyClient,
    settings: dict,
    options: Options,
    trigger: str,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.time,
) -> Summary:
    """Take the lock, run, and keep the run's record. A dry run writes nothing at all,
    so it neither locks nor records. Raises Busy when another run is going."""
    if options.dry_run:
        reconciler = Reconciler(
            db, client, settings, on_progress=on_progress, should_stop=should_stop
        )
        return reconciler.run(options)
    lock = acquire_lock(db, trigger, clock)
    try:
        # A run that starts now answers any request made before it.
        state.delete(db, REQUEST)
        run_id = (
            db["reconcile_runs"]
            .insert(
                {
                    "trigger": trigger,
                    "status": "running",
                    "started_at": now_iso(),
                    "options": json.dumps(options.as_dict()),
                }
            )
            .last_pk
        )
        reconciler = Reconciler(
            db,
            client,
            settings,
            on_progress=on_progress,
            heartbeat=lock.renew,
            should_stop=should_stop,
        )
        try:
            summary = reconciler.run(options)
        except BaseException as exc:
            db["reconcile_runs"].update(
                run_id,
                {
                    "status": "error",
                    "finished_at": now_iso(),
                    "errors": json.dumps([f"{type(exc).__name__}: {exc}"]),
                },
            )
            raise
        totals = summary.totals()
        db["reconcile_runs"].update(
            run_id,
            {
                "status": summary.status,
                "finished_at": now_iso(),
                "pages": totals["pages"],
                "instantly_calls": totals["calls"],
                "events_found": totals["found"],
                "events_known": totals["known"],
                "events_new": totals["new"],
                "errors": json.dumps(summary.errors),
                "detail": json.dumps(summary.as_dict()),
            },
        )
        return summary
    finally:
        lock.release()


def request_run(db: sqlite_utils.Database, by: str = "page") -> dict[str, Any]:
    """Ask the worker for a run soon (the dashboard's "Reconcile now"); a request already
    waiting is kept, not doubled. Returns the request waiting."""
    with immediate(db):
        waiting = requested(db)
        if waiting:
            return waiting
        request = {"by": by, "at": now_iso()}
        state.put(db, REQUEST, request)
        return request


def requested(db: sqlite_utils.Database) -> dict[str, Any] | None:
    """The pending request, if any."""
    return state.get(db, REQUEST)


def last_run(db: sqlite_utils.Database) -> dict[str, Any] | None:
    """The latest finished run, as the dashboard and /healthz show it (a run going on is
    `report`'s `running`)."""
    rows = list(
        db.query("SELECT * FROM reconcile_runs WHERE status != 'running' ORDER BY id DESC LIMIT 1")
    )
    return _run_facts(rows[0]) if rows else None


def report(db: sqlite_utils.Database, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Reconciliation facts for /healthz and the page: last run, a run going on now,
    a pending request, the schedule."""
    held = state.get(db, LOCK)
    running = None
    if held and held.get("expires_at", 0) > clock():
        running = {k: held.get(k) for k in ("what", "since", "pid", "host")}
    return {
        "last_run": last_run(db),
        "running": running,
        "requested": requested(db),
        "schedule": state.get(db, SCHEDULE),
    }


def totals(db: sqlite_utils.Database) -> dict[str, Any]:
    """Runs by status and events found/new over all runs, for /metrics: read from the
    totals m036's triggers keep, since a run every 15 minutes is 35,000 rows a year."""
    rows = db.execute(
        "SELECT status, runs, events_found, events_new FROM reconcile_totals WHERE runs > 0"
    ).fetchall()
    return {
        "by_status": {status: n for status, n, _, _ in rows},
        "found": sum(row[2] for row in rows),
        "new": sum(row[3] for row in rows),
    }


def _run_facts(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "trigger": row["trigger"],
        "status": row["status"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "pages": row["pages"],
        "instantly_calls": row["instantly_calls"],
        "events_found": row["events_found"],
        "events_known": row["events_known"],
        "events_new": row["events_new"],
        "errors": json.loads(row["errors"] or "[]"),
    }
