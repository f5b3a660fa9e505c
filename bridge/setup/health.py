"""Is the bridge able to do its job right now? The facts /healthz, /metrics,
`instantly-ghl-bridge status` and the dashboard show, and what they add up to:

- unhealthy: the bridge cannot do its job now (the `problems`); /healthz answers 503.
- degraded: it does its job, but something needs a look (the `warnings`); 200, or 503
  with ?strict=1.
- ok: neither.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import asdict

import sqlite_utils

from bridge import logs
from bridge import settings as settings_mod
from bridge.clients import budget
from bridge.clock import parse_time
from bridge.config import Config
from bridge.locations import registry as locations
from bridge.reconcile import runs
from bridge.store import db as store
from bridge.store import inbox, probe, state

OK, DEGRADED, UNHEALTHY = "ok", "degraded", "unhealthy"
STATUSES = (OK, DEGRADED, UNHEALTHY)
PROBLEM, WARNING = "problem", "warning"

# Every check, by the name /metrics labels it with, and what failing it makes the bridge.
CHECKS = {
    "webhook_secret_missing": PROBLEM,
    "ghl_credentials_missing": PROBLEM,
    "settings_invalid": PROBLEM,
    "database_not_migrated": PROBLEM,
    "database_unreachable": PROBLEM,
    "database_unwritable": PROBLEM,
    "ghl_paused": PROBLEM,
    "ghl_failing": PROBLEM,
    "backlog": PROBLEM,
    "dead_events": WARNING,
    "reconcile_failed": WARNING,
    "ghl_errors": WARNING,
    "ghl_retry_after_capped": WARNING,
    "unrouted_events": WARNING,
    "ghl_daily_budget": WARNING,
}
# Statuses an event only reaches after its sync: one stored with no location before m042
# was synced to GHL_LOCATION_ID's location (see m042_locations).
FINISHED = (inbox.DONE, inbox.IGNORED, inbox.SUPERSEDED, inbox.DEAD)

# A due event that has waited this long for a worker: no worker runs, it is stuck, or it
# cannot keep up. An event waiting for its retry time is not due, so a GHL outage's
# backoff does not count here (GHL_FAILING_SECONDS does).
BACKLOG_SECONDS = 900
# Every GHL call failing for this long is an outage, not a blip; shorter is a warning.
GHL_FAILING_SECONDS = 300
# A 429 that asked for more than the cap is a warning for this long after it came; after
# that it stays in the report as a fact.
CAPPED_WAIT_WARNING_SECONDS = 3600


class Findings:
    """The checks that failed, each with a sentence saying what is wrong and the fix."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []

    def add(self, check: str, message: str) -> None:
        if check not in CHECKS:
            raise ValueError(f"unknown health check {check!r}")
        self.failed.append((check, message))

    def facts(self) -> dict:
        """`status`, `problems`, `warnings` and `failing_checks`, for the report."""
        problems = [m for c, m in self.failed if CHECKS[c] == PROBLEM]
        warnings = [m for c, m in self.failed if CHECKS[c] == WARNING]
        status = UNHEALTHY if problems else DEGRADED if warnings else OK
        return {
            "status": status,
            "problems": problems,
            "warnings": warnings,
            "failing_checks": sorted({c for c, _ in self.failed}),
        }


def report(db: sqlite_utils.Database, config: Config, now: float | None = None) -> dict:
    """The health facts, the state they add up to, and the problems and warnings among
    them, for the bridge and for each location (`locations`). Reads cost the same at any
    history length: /healthz needs no login.

    The keys from before there were several locations keep their meaning for one; with
    several, `ghl_paused` is a paused location's pause, `last_ghl_error` the latest of
    any, `ghl_failing_since` the earliest and `ghl_failing_seconds` the longest."""
    now = time.time() if now is None else now
    findings = Findings()
    missing = config.missing()
    ghl_set = "GHL_TOKEN" not in missing and "GHL_LOCATION_ID" not in missing
    _check_config(findings, missing)
    pending = store.pending_migrations(db)
    if pending:
        findings.add(
            "database_not_migrated",
            f"database not migrated: run `instantly-ghl-bridge migrate` ({len(pending)} pending)",
        )
        return {"database": "not migrated", "missing": missing, **findings.facts()}
    # Reads succeed on a full disk or a read-only file; only a commit shows it.
    unwritable = probe.write_failure(db, config.database)
    if unwritable:
        findings.add(
            "database_unwritable",
            f"database cannot be written: {unwritable}; free disk space, or let the bridge's"
            " user write the database file (BRIDGE_DATABASE) and its folder",
        )
    served = _registry(db, config, findings)
    rows = by_location(db, config.ghl_location_id)
    counts = dict.fromkeys(inbox.STATUSES, 0)
    for _, _, status, n in rows:
        counts[status] = counts.get(status, 0) + n
    declared = {loc.id: loc for loc in served.locations} if served else {}
    budgets = budget.reports(db, clock=lambda: now)
    per_location = {
        location_id: _location_facts(
            db, location_id, declared.get(location_id), rows, now, budgets.get(location_id)
        )
        for location_id in _served_ids(declared, rows)
    }
    several = len(per_location) > 1
    for location_id, facts in per_location.items():
        env_token = location_id in declared and declared[location_id].token_source == "GHL_TOKEN"
        for check, message in facts.pop("_failed"):
            if check == "dead_events" or (check == "ghl_credentials_missing" and env_token):
                continue  # said once for the bridge, by _check_config or the count of all
            # The daily budget's sentence names its location already.
            named = several and not message.startswith("location ") and check != "ghl_daily_budget"
            findings.add(check, f"location {facts['label']}: {message}" if named else message)
    oldest = inbox.oldest_pending_age(db, now)
    # A location waiting for its daily budget takes none of its due events on purpose, and
    # says so as a warning: they must not read as a worker that is not keeping up.
    held = {location_id for location_id, b in budgets.items() if b.held}
    if held:
        queued = (inbox.PENDING, inbox.PROCESSING)
        counted = {loc for loc, _, status, n in rows if status in queued and n} - held
        oldest_due = oldest_due_age(db, now, only=counted)
    else:
        oldest_due = oldest_due_age(db, now)
    pauses = [f["ghl_paused"] for f in per_location.values() if f["ghl_paused"]]
    if oldest_due is not None and oldest_due > BACKLOG_SECONDS:
        findings.add("backlog", _backlog_problem(oldest_due, held_back=bool(pauses) or not ghl_set))
    if counts[inbox.DEAD]:
        dead = counts[inbox.DEAD]
        findings.add(
            "dead_events",
            (f"{dead} dead events wait" if dead != 1 else "1 dead event waits")
            + ": see why on the Dead letters page,"
            " fix the cause, then replay them (`instantly-ghl-bridge replay`)",
        )
    held = counts.get(inbox.UNROUTED, 0)
    if held:
        findings.add("unrouted_events", unrouted_warning(held))
    reconcile = runs.report(db)
    last = reconcile["last_run"]
    if last and last["status"] == "error":
        findings.add(
            "reconcile_failed",
            f"last reconciliation failed: {_run_errors(last)}: check INSTANTLY_API_KEY and"
            " `instantly-ghl-bridge doctor`; the next run tries again",
        )
    blocks = list(per_location.values())
    failing = [f["ghl_failing_since"] for f in blocks if f["ghl_failing_since"]]
    # None for a stored time that cannot be read (infinitely long ago; JSON has no inf).
    failing_seconds = [
        f["ghl_failing_seconds"] for f in blocks if f["ghl_failing_seconds"] is not None
    ]
    return {
        "database": "ok" if unwritable is None else "cannot be written",
        "queue": counts,
        "oldest_pending_seconds": _rounded(oldest),
        "oldest_due_seconds": _rounded(oldest_due),
        "ghl_paused": pauses[0] if pauses else None,
        "last_ghl_error": _latest(f["last_ghl_error"] for f in blocks),
        "ghl_failing_since": min(failing, key=_when, default=None),
        "ghl_failing_seconds": max(failing_seconds, default=None),
        "ghl_retry_after_capped": _latest(f["ghl_retry_after_capped"] for f in blocks),
        "missing": missing,
        "reconcile": reconcile,
        "unrouted": held,
        "default_location": None if served is None else served.default_id,
        "locations": per_location,
        **findings.facts(),
    }


def unrouted_warning(held: int) -> str:
    """Why events are held and what to do, as the dashboard and /healthz say it."""
    events = "1 event is" if held == 1 else f"{held} events are"
    return (
        f"{events} held: no route claims their campaign or workspace and there is no"
        " default location: add a route on the settings page, then Replay"
        " (`instantly-ghl-bridge replay --unrouted`)"
    )


def located(location_id: str | None, status: str, env_location: str) -> str:
    """The location an event's row belongs to: its own, or GHL_LOCATION_ID's for one that
    finished before m042 recorded locations; '' for one not routed (yet, or held)."""
    if location_id:
        return location_id
    return env_location if status in FINISHED else ""


def by_location(db: sqlite_utils.Database, env_location: str) -> list[tuple[str, str, str, int]]:
    """(location, event type, status, events), a finished event stored without a location
    counted for GHL_LOCATION_ID's location (`located`); as cheap as inbox.counts_by_type."""
    totals: dict[tuple[str, str, str], int] = {}
    for location_id, event_type, status, n in inbox.counts_by_location(db):
        key = (located(location_id, status, env_location), event_type, status)
        totals[key] = totals.get(key, 0) + n
    return [(*key, n) for key, n in totals.items()]


def served_registry(db: sqlite_utils.Database, config: Config) -> locations.Registry:
    """The locations and workspaces the stored settings declare (settings.SettingsError
    when they no longer validate)."""
    registry = locations.build(config, _stored_settings(db, config.database), db)
    logs.add_secrets(registry.secret_values())
    return registry


# The stored settings, validated, by database file and the save that wrote them: /healthz
# and /metrics need no login, and validating costs more than the rest of the report.
_validated: dict[str, tuple[tuple, dict]] = {}


def _stored_settings(db: sqlite_utils.Database, path: str) -> dict:
    mark = db.execute("SELECT version, updated_at FROM settings WHERE id = 1").fetchone()
    seen = _validated.get(path)
    if mark is not None and seen is not None and seen[0] == tuple(mark):
        return seen[1]
    _, current = settings_mod.current(db)  # seeds the defaults when none are stored
    if mark is not None:
        _validated[path] = (tuple(mark), current)
    return current


def _registry(
    db: sqlite_utils.Database, config: Config, findings: Findings
) -> locations.Registry | None:
    try:
        return served_registry(db, config)
    except settings_mod.SettingsError as exc:
        findings.add(
            "settings_invalid",
            f"stored settings are not valid: {'; '.join(settings_mod.error_lines(exc))}:"
            " fix them on the settings page or import a good file"
            " (`instantly-ghl-bridge settings import FILE`)",
        )
        return None


def _served_ids(
    declared: dict[str, locations.Location], rows: list[tuple[str, str, str, int]]
) -> list[str]:
    """Each declared location, then any no longer declared that still has events (a
    removed client's history)."""
    out = list(declared)
    for location_id, _, _, _ in rows:
        if location_id and location_id not in out:
            out.append(location_id)
    return out


def _location_facts(
    db: sqlite_utils.Database,
    location_id: str,
    location: locations.Location | None,
    rows: list[tuple[str, str, str, int]],
    now: float,
    spent: budget.Report | None = None,
) -> dict:
    """One location's block: its events by status, its token's trouble, pause, failing
    GHL calls and last error (bridge/store/state.py keeps them per location), its GHL
    budget (bridge/clients/budget.py), and what they make it."""
    label = location.label if location else location_id
    findings = Findings()
    if location is not None and location.problem:
        findings.add(
            "ghl_credentials_missing",
            f"{location.problem}: its events are queued but not synced",
        )
    queue = dict.fromkeys(inbox.STATUSES, 0)
    for row_location, _, status, n in rows:
        if row_location == location_id:
            queue[status] = queue.get(status, 0) + n
    queue.pop(inbox.UNROUTED, None)  # a held event has no location
    pause = state.get(db, state.scoped(state.GHL_PAUSE, location_id))
    if pause:
        findings.add(
            "ghl_paused",
            f"GHL writes paused: {pause['reason']}; the bridge tries again every minute"
            " and resumes by itself",
        )
    failing = state.get(db, state.scoped(state.GHL_FAILING_SINCE, location_id))
    last_error = state.get(db, state.scoped(state.GHL_LAST_ERROR, location_id))
    failing_seconds = None if failing is None else max(0.0, _seconds_since(failing["at"], now))
    if failing_seconds is not None:
        _check_ghl_failing(findings, failing, failing_seconds, last_error)
    capped = state.get(db, state.scoped(state.GHL_RETRY_AFTER_CAPPED, location_id))
    if capped and _seconds_since(capped["at"], now) < CAPPED_WAIT_WARNING_SECONDS:
        findings.add("ghl_retry_after_capped", _capped_wait_warning(capped))
    if queue[inbox.DEAD]:
        dead = queue[inbox.DEAD]
        findings.add(
            "dead_events",
            (f"{dead} dead events wait" if dead != 1 else "1 dead event waits")
            + ": see why on the Dead letters page, fix the cause, then replay them",
        )
    held_message = spent.message(label) if spent else None
    if held_message:
        findings.add("ghl_daily_budget", held_message)
    return {
        "label": label,
        "queue": queue,
        "ghl_paused": pause,
        "last_ghl_error": last_error,
        "ghl_failing_since": failing,
        "ghl_failing_seconds": _rounded(failing_seconds),
        "ghl_retry_after_capped": capped,
        "ghl_budget": _budget_facts(spent, held_message),
        **findings.facts(),
        "_failed": findings.failed,
    }


def _budget_facts(spent: budget.Report | None, message: str | None) -> dict | None:
    """The location's GHL budget as /healthz shows it (None before its first call), with
    the hold's sentence (`message`, None when it is not held) for the pages."""
    if spent is None:
        return None
    facts = asdict(spent)
    del facts["location_id"]  # the block's key
    return {**facts, "message": message}


def _latest(values) -> dict | None:
    return max((v for v in values if v), key=_when, default=None)


def _when(value: dict) -> float:
    moment = parse_time(value.get("at"))
    return float("-inf") if moment is None else moment.timestamp()


def unreachable(error: Exception) -> dict:
    """The report when the database cannot even be read."""
    findings = Findings()
    findings.add(
        "database_unreachable",
        f"database cannot be read: {error}; check the file BRIDGE_DATABASE names"
        " (`instantly-ghl-bridge status` says what to do)",
    )
    return {"database": f"error: {error}", **findings.facts()}


def oldest_due_age(
    db: sqlite_utils.Database, now: float | None = None, only: Collection[str] | None = None
) -> float | None:
    """Seconds the event next in line has been due (its retry time has come, or its lease
    ran out) without a worker taking it; None when nothing is due. With `only`, just the
    events of those locations count ('' for those not routed yet).

    Two index lookups, whatever the queue's length: the head of the claim order, and the
    earliest lease run out (the processing rows are one per worker); with `only`, a head
    per location (the lanes' index).
    """
    now = time.time() if now is None else now
    lapsed_sql = (
        "SELECT MIN(lease_until) FROM events WHERE status = 'processing' AND lease_until < ?"
    )
    if only is None:
        heads = [
            db.execute(
                "SELECT next_attempt_at, updated_at FROM events"
                " WHERE status = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, id LIMIT 1",
                [now],
            ).fetchone()
        ]
        (lapsed,) = db.execute(lapsed_sql, [now]).fetchone()
    else:
        # The lanes' partial index, named and its condition repeated so SQLite takes it:
        # the other index would step over every due event of the locations left out.
        heads = [
            db.execute(
                "SELECT next_attempt_at, updated_at FROM events INDEXED BY idx_events_lane"
                " WHERE location_id IS ? AND status IN ('pending', 'processing')"
                " AND status = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, id LIMIT 1",
                [loc or None, now],
            ).fetchone()
            for loc in only
        ]
        marks = ", ".join("?" * len(only))
        (lapsed,) = db.execute(
            lapsed_sql + f" AND IFNULL(location_id, '') IN ({marks})", [now, *only]
        ).fetchone()
    since: list[float] = []
    for head in heads:
        if head is None:
            continue
        next_attempt_at, updated_at = head
        # A replayed event is due at 0, "at once": it has been due since the replay.
        if next_attempt_at <= 0:
            replayed = parse_time(updated_at)
            since.append(now if replayed is None else replayed.timestamp())
        else:
            since.append(next_attempt_at)
    if lapsed is not None:
        since.append(lapsed)
    return max(0.0, now - min(since)) if since else None


def _check_config(findings: Findings, missing: list[str]) -> None:
    for name in missing:
        if name == "BRIDGE_WEBHOOK_SECRET":
            findings.add(
                "webhook_secret_missing",
                "BRIDGE_WEBHOOK_SECRET is not set: webhooks are refused; run"
                " `instantly-ghl-bridge init-env` (or set it in .env) and restart",
            )
        elif name in ("GHL_TOKEN", "GHL_LOCATION_ID"):
            findings.add(
                "ghl_credentials_missing",
                f"{name} is not set: events are queued but not synced; set it in .env and restart",
            )


def _backlog_problem(seconds: float, held_back: bool) -> str:
    waited = f"the next due event has waited {int(seconds)} s for the worker"
    if held_back:
        # Paused or unconfigured, the worker takes nothing on purpose: that is the fix.
        return f"{waited}: nothing syncs until the GHL problem above is fixed"
    return f"{waited}: is `instantly-ghl-bridge worker` running, and keeping up?"


def _check_ghl_failing(
    findings: Findings, failing: dict, seconds: float, last_error: dict | None
) -> None:
    """Every GHL call since `failing["at"]` failed: a problem once it has lasted, else a
    warning (a blip that the next call may end)."""
    what = f"every GHL call has failed for {int(seconds)} s (since {failing['at']}"
    if last_error and state.ghl_call_failed(int(last_error.get("status") or 0)):
        what += f"; last: {_error_text(last_error)}"
    what += ")"
    if seconds > GHL_FAILING_SECONDS:
        findings.add(
            "ghl_failing",
            f"{what}: check GHL's status page and this machine's network or proxy;"
            " events wait and are retried",
        )
    else:
        findings.add(
            "ghl_errors",
            f"{what}: the bridge retries; after {GHL_FAILING_SECONDS // 60} min it is"
            " reported as GHL failing",
        )


def _run_errors(run: dict) -> str:
    # Stored as a JSON list; a run written by hand may hold one bare value.
    errors = run["errors"] if isinstance(run["errors"], list) else [run["errors"]]
    return "; ".join(str(e) for e in errors if e) or "see the run log"


def _error_text(error: dict) -> str:
    status = int(error.get("status") or 0)
    where = "no answer (network error or timeout)" if status == 0 else f"HTTP {status}"
    return f"{where}: {error.get('message') or ''}".rstrip(": ")


def _capped_wait_warning(capped: dict) -> str:
    return (
        f"GHL asked to wait longer than the cap ({capped['asked']}) at {capped['at']};"
        f" the bridge waited {capped['waited_seconds']:.0f} s instead:"
        " check what answers for GHL (a proxy, a gateway)"
    )


def _rounded(seconds: float | None) -> float | None:
    # JSON has no infinity: an unreadable stored time shows as unknown.
    return None if seconds is None or not math.isfinite(seconds) else round(seconds, 1)


def _seconds_since(stamp: str, now: float) -> float:
    """Seconds from a stored timestamp to `now`; unreadable counts as long ago."""
    moment = parse_time(stamp)
    return float("inf") if moment is None else now - moment.timestamp()
