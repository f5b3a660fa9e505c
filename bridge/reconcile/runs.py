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
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlite_utils

from bridge.clients.instantly import InstantlyClient
from bridge.clock import now_iso
from bridge.events.event import Event
from bridge.locations.registry import Registry, Workspace
from bridge.reconcile.reconciler import (
    REPLIES,
    STATUSES,
    Options,
    PassStats,
    Progress,
    Reconciler,
    Summary,
)
from bridge.store import state
from bridge.store.db import immediate

log = logging.getLogger("bridge.reconcile")

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


@dataclass
class WorkspaceRun:
    """One workspace's part of a run: its summary, or why it was not polled."""

    workspace: Workspace
    summary: Summary | None = None
    skipped: str | None = None

    @property
    def label(self) -> str:
        return self.workspace.label


@dataclass
class RunSummary:
    """A run over every workspace: each one's summary, and the totals the run log, the
    CLI's table and /healthz read (as one workspace's Summary offers them)."""

    started_at: str
    dry_run: bool
    parts: list[WorkspaceRun] = field(default_factory=list)
    stopped: bool = False  # stopped between two workspaces

    def _summaries(self) -> list[Summary]:
        return [part.summary for part in self.parts if part.summary is not None]

    @property
    def status(self) -> str:
        if self.stopped or any(s.status == "stopped" for s in self._summaries()):
            return "stopped"
        return "error" if self.errors else "ok"

    @property
    def errors(self) -> list[str]:
        """Every error, named by its workspace when the bridge has more than the one
        INSTANTLY_API_KEY gives (whose errors read as they always did)."""
        named = len(self.parts) > 1 or any(part.workspace.id for part in self.parts)
        out = []
        for part in self.parts:
            if part.skipped:
                out.append(part.skipped)  # the registry's reason names the workspace
            elif part.summary is not None:
                out += [f"workspace {part.label}: {e}" if named else e for e in part.summary.errors]
        return out

    @property
    def replies(self) -> PassStats:
        return _merged(s.replies for s in self._summaries())

    @property
    def statuses(self) -> PassStats:
        return _merged(s.statuses for s in self._summaries())

    @property
    def planned(self) -> list[Event]:
        return [event for s in self._summaries() for event in s.planned]

    @property
    def new_event_ids(self) -> list[int]:
        return [i for s in self._summaries() for i in s.new_event_ids]

    @property
    def only(self) -> Summary | None:
        """The one workspace's summary when the run polled exactly one."""
        found = self._summaries()
        return found[0] if len(self.parts) == 1 and found else None

    def totals(self) -> dict[str, int]:
        names = ("pages", "calls", "read", "found", "known", "new")
        return {n: sum(s.totals()[n] for s in self._summaries()) for n in names}

    def as_dict(self) -> dict[str, Any]:
        """The totals at the top (with one workspace, its replies window too, as before),
        then each workspace's own summary."""
        one = self.only
        out: dict[str, Any] = {
            "status": self.status,
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "finished_at": max((s.finished_at for s in self._summaries()), default=""),
        }
        for name in ("since", "until", "watermark_before", "watermark_after"):
            out[name] = getattr(one, name) if one else None
        out[REPLIES] = asdict(self.replies)
        out[STATUSES] = asdict(self.statuses)
        out["totals"] = self.totals()
        out["errors"] = self.errors
        out["workspaces"] = [
            {
                "id": part.workspace.id,
                "name": part.workspace.name,
                "skipped": part.skipped,
                **({"summary": part.summary.as_dict()} if part.summary else {}),
            }
            for part in self.parts
        ]
        return out


def _merged(stats: Iterable[PassStats]) -> PassStats:
    out = PassStats()
    skipped = []
    for one in stats:
        for name in ("pages", "calls", "read", "found", "known", "new"):
            setattr(out, name, getattr(out, name) + getattr(one, name))
        out.errors += one.errors
        skipped.append(one.skipped)
    # A pass skipped everywhere is skipped; run anywhere, it ran.
    out.skipped = skipped[0] if skipped and all(skipped) and len(set(skipped)) == 1 else None
    return out


# The client of the workspace INSTANTLY_API_KEY gives, when no registry says otherwise.
PLAIN = Workspace("", "INSTANTLY_API_KEY's workspace", "", "INSTANTLY_API_KEY")


def run_recorded(
    db: sqlite_utils.Database,
    client: InstantlyClient | Callable[[Workspace], InstantlyClient],
    settings: dict,
    options: Options,
    trigger: str,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.time,
    registry: Registry | None = None,
) -> RunSummary:
    """Take the lock, run once per workspace, and keep the run's record (one row for the
    run, its errors naming the workspace). A dry run writes nothing at all, so it neither
    locks nor records. Raises Busy when another run is going.

    `client` makes each workspace's client (with that workspace's key), or is the one
    client of a bridge without a registry (INSTANTLY_API_KEY's workspace alone). With a
    registry, a workspace whose key is missing is skipped with its reason.
    """
    workspaces = registry.workspaces if registry is not None else (PLAIN,)
    client_for = (lambda _: client) if isinstance(client, InstantlyClient) else client

    def run_all(heartbeat: Callable[[], None] | None) -> RunSummary:
        summary = RunSummary(started_at=now_iso(), dry_run=options.dry_run)
        route = registry.route if registry is not None else None
        routed = tuple(c for loc in registry.locations for c in loc.campaigns) if registry else ()
        for workspace in workspaces:
            if should_stop and should_stop():
                summary.stopped = True
                break
            if workspace.problem:
                log.warning("reconcile skips workspace %s: %s", workspace.label, workspace.problem)
                summary.parts.append(WorkspaceRun(workspace, skipped=workspace.problem))
                continue
            reconciler = Reconciler(
                db,
                client_for(workspace),
                settings,
                on_progress=on_progress,
                heartbeat=heartbeat,
                should_stop=should_stop,
                workspace_id=workspace.id,
                route=route,
                routed_campaigns=routed,
            )
            summary.parts.append(WorkspaceRun(workspace, reconciler.run(options)))
        return summary

    if options.dry_run:
        return run_all(None)
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
        try:
            summary = run_all(lock.renew)
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
                "events_new": totals["new"],
                "events_known": totals["known"],
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
