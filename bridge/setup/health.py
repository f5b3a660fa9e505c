"""Is the bridge able to do its job right now? The facts /healthz,
`instantly-ghl-bridge status` and the dashboard show, and the problems among them."""

from __future__ import annotations

import time

import sqlite_utils

from bridge.clock import parse_time
from bridge.config import Config
from bridge.reconcile import runs
from bridge.store import db as store
from bridge.store import inbox, probe, state

# An event still waiting after this long means the worker is down or stuck.
STALE_PENDING_SECONDS = 3600
# A 429 that asked for more than the cap is a problem for this long after it came; after
# that it stays in the report as a fact.
CAPPED_WAIT_PROBLEM_SECONDS = 3600


def report(db: sqlite_utils.Database, config: Config, now: float | None = None) -> dict:
    """The health facts, and the problems among them (empty when healthy)."""
    now = time.time() if now is None else now
    problems: list[str] = []
    missing = config.missing()
    for name in missing:
        if name == "BRIDGE_WEBHOOK_SECRET":
            problems.append("BRIDGE_WEBHOOK_SECRET is not set: webhooks are refused")
        elif name in ("GHL_TOKEN", "GHL_LOCATION_ID"):
            problems.append(f"{name} is not set: events are queued but not synced")
    pending = store.pending_migrations(db)
    if pending:
        problems.append(
            f"database not migrated: run `instantly-ghl-bridge migrate` ({len(pending)} pending)"
        )
        return {"database": "not migrated", "missing": missing, "problems": problems}
    # Reads succeed on a full disk or a read-only file; only a commit shows it.
    unwritable = probe.write_failure(db, config.database)
    if unwritable:
        problems.append(f"database cannot be written: {unwritable}")
    counts = inbox.counts(db)
    oldest = inbox.oldest_pending_age(db, now)
    pause = state.get(db, state.GHL_PAUSE)
    if pause:
        problems.append(f"GHL writes paused: {pause['reason']}")
    if oldest is not None and oldest > STALE_PENDING_SECONDS:
        problems.append(
            f"oldest pending event is {int(oldest)} s old:"
            " is `instantly-ghl-bridge worker` running?"
        )
    capped = state.get(db, state.GHL_RETRY_AFTER_CAPPED)
    if capped and _seconds_since(capped["at"], now) < CAPPED_WAIT_PROBLEM_SECONDS:
        problems.append(_capped_wait_problem(capped))
    reconcile = runs.report(db)
    last = reconcile["last_run"]
    if last and last["status"] == "error":
        problems.append(
            "last reconciliation failed: " + "; ".join(last["errors"] or ["see the run log"])
        )
    return {
        "database": "ok" if unwritable is None else "cannot be written",
        "queue": counts,
        "oldest_pending_seconds": None if oldest is None else round(oldest, 1),
        "ghl_paused": pause,
        "last_ghl_error": state.get(db, state.GHL_LAST_ERROR),
        "ghl_retry_after_capped": capped,
        "missing": missing,
        "reconcile": reconcile,
        "problems": problems,
    }


def _capped_wait_problem(capped: dict) -> str:
    return (
        f"GHL asked to wait longer than the cap ({capped['asked']}) at {capped['at']};"
        f" the bridge waited {capped['waited_seconds']:.0f} s instead:"
        " check what answers for GHL (a proxy, a gateway)"
    )


def _seconds_since(stamp: str, now: float) -> float:
    """Seconds from a stored timestamp to `now`; unreadable counts as long ago."""
    moment = parse_time(stamp)
    return float("inf") if moment is None else now - moment.timestamp()
