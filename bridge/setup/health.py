"""Is the bridge able to do its job right now? The facts /healthz, `bridge status` and the
dashboard show, and the problems among them."""

from __future__ import annotations

import sqlite_utils

from bridge.config import Config
from bridge.reconcile import runs
from bridge.store import db as store
from bridge.store import inbox, state

# An event still waiting after this long means the worker is down or stuck.
STALE_PENDING_SECONDS = 3600


def report(db: sqlite_utils.Database, config: Config) -> dict:
    """The health facts, and the problems among them (empty when healthy)."""
    problems: list[str] = []
    missing = config.missing()
    for name in missing:
        if name == "BRIDGE_WEBHOOK_SECRET":
            problems.append("BRIDGE_WEBHOOK_SECRET is not set: webhooks are refused")
        elif name in ("GHL_TOKEN", "GHL_LOCATION_ID"):
            problems.append(f"{name} is not set: events are queued but not synced")
    pending = store.pending_migrations(db)
    if pending:
        problems.append(f"database not migrated: run `bridge migrate` ({len(pending)} pending)")
        return {"database": "not migrated", "missing": missing, "problems": problems}
    counts = inbox.counts(db)
    oldest = inbox.oldest_pending_age(db)
    pause = state.get(db, state.GHL_PAUSE)
    if pause:
        problems.append(f"GHL writes paused: {pause['reason']}")
    if oldest is not None and oldest > STALE_PENDING_SECONDS:
        problems.append(f"oldest pending event is {int(oldest)} s old: is `bridge worker` running?")
    reconcile = runs.report(db)
    last = reconcile["last_run"]
    if last and last["status"] == "error":
        problems.append(
            "last reconciliation failed: " + "; ".join(last["errors"] or ["see the run log"])
        )
    return {
        "database": "ok",
        "queue": counts,
        "oldest_pending_seconds": None if oldest is None else round(oldest, 1),
        "ghl_paused": pause,
        "last_ghl_error": state.get(db, state.GHL_LAST_ERROR),
        "missing": missing,
        "reconcile": reconcile,
        "problems": problems,
    }
