"""Row 6: a year at 5,000 events a day under the default retention.

Events are generated straight into a temporary store (no HTTP), day by day: each day's
replies (payloads shaped like the captured samples, reply HTML a few KB), two GHL calls
logged per event, a reconciliation run every 15 minutes, 0.1% of events dead; then the real
pruner (bridge/store/retention.py, batch by batch as the worker takes them) runs with the
clock at the day's end. After event_days the store holds only the last event_days days
plus the dead events, so a year is generated as its last event_days + 5 days in full and,
before them, only what retention never prunes (the dead events and their calls) and the
running totals; `--window 365` generates every day in full. The size shown is the one the
pruner holds the file to over the last 5 days. The size with no retention is the window's
growth over its first payload_days days (nothing is pruned before) carried to a year. Then
the dashboard (logged in), /healthz and /metrics are timed on that database, median of 15
requests through the Flask test client, against the same on an empty database made in the
same run.

    .venv/bin/python -m bench.retention_bench [--days 365] [--per-day 5000] [--window N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import procs
from bench.payloads import reply_body
from bench.stats import percentile
from bridge.store import inbox, retention

START = datetime(2025, 1, 1, tzinfo=UTC)
DAY = 86400.0
# Of each day's events: the rest are done. Dead ones are never pruned (they wait for an
# operator), so they are the only rows a year adds for good.
IGNORED_SHARE, SUPERSEDED_SHARE, DEAD_SHARE = 0.03, 0.01, 0.001
CALLS_PER_EVENT = 2  # an upsert and a tags call
RUNS_PER_DAY = 96  # one every 15 minutes
# A quoted thread in HTML, as mail clients send it: a few KB per reply.
QUOTED_HTML = (
    '<blockquote class="gmail_quote" style="margin:0 0 0 .8ex;border-left:1px #ccc solid;'
    'padding-left:1ex"><div dir="ltr">On {day} Sam Sender &lt;sender@agency.example&gt; '
    "wrote:<br></div><div>Hi {first},</div><div><br></div><div>I noticed that many trust and "
    "estate attorneys face challenges with timely deed preparation and recording. One of "
    "our clients, a law firm in California, reduced their processing time by 30% using our "
    "services.</div><div><br></div><div>Can we schedule a quick call?</div></blockquote>"
)
REQUESTS = 15  # per route and database, after one warm-up
# Days at the steady state (past event_days) that the window simulates, and whose sizes
# are shown.
STEADY_DAYS = 5
PRUNED = ("events", "payloads", "calls", "runs", "pages")
UNUSED_GHL = "http://127.0.0.1:9"


def run(
    out: Path, days: int = 365, per_day: int = 5000, window: int | None = None
) -> dict[str, Any]:
    """`days` days into a fresh store, the last `window` of them (at least event_days and
    5 more) day by day with the pruner at each day's end; then the pages timed there and
    on an empty store made in the same run."""
    workdir = _workdir(out)
    try:
        # GHL set (never called): /healthz reports on the store, not missing credentials.
        year_env = procs.bridge_env(workdir / "year", ghl_url=UNUSED_GHL)
        empty_env = procs.bridge_env(workdir / "empty", ghl_url=UNUSED_GHL)
        for env in (year_env, empty_env):
            _migrated(env).close()
        result = _simulate(year_env["BRIDGE_DATABASE"], days, per_day, window)
        timings = {"year": _time_pages(year_env), "empty": _time_pages(empty_env)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["timings_ms"] = timings
    result["ratios"] = {
        route: timings["year"][route] / timings["empty"][route] for route in timings["year"]
    }
    return result


def _migrated(env: dict[str, str]):
    from bridge import settings as settings_mod
    from bridge.store import db as store

    db = store.connect(env["BRIDGE_DATABASE"])
    store.migrate(db)
    settings_mod.current(db)
    return db


def _simulate(path: str, days: int, per_day: int, window: int | None) -> dict[str, Any]:
    """Generate and prune day by day; the sizes, what was pruned and the lock's holds."""
    from bridge import settings as settings_mod
    from bridge.store import db as store

    db = store.connect(path)
    # Generating is not what is measured: no fsync, a page cache that holds a day.
    db.conn.execute("PRAGMA synchronous = OFF")
    db.conn.execute("PRAGMA cache_size = -131072")
    rules = settings_mod.current(db)[1]["retention"]
    window = min(days, max(window or 0, rules["event_days"] + STEADY_DAYS))
    skipped = days - window
    started = time.monotonic()
    _fast_forward(db, skipped, per_day)
    template = _template()
    holds: list[float] = []
    pruned: dict[str, int] = dict.fromkeys(PRUNED, 0)
    sizes = {skipped: _size(db, path)}
    prune_seconds = 0.0
    for day in range(skipped, days):
        _generate_day(db, day, per_day, template)
        t0 = time.monotonic()
        for batch in retention.batches(db, rules, now=_at(day + 1)):
            holds.append(batch.longest_lock_seconds * 1000)
            for name in PRUNED:
                pruned[name] += getattr(batch, name)
        prune_seconds += time.monotonic() - t0
        if day + 1 == skipped + rules["payload_days"] or day + 1 >= days - STEADY_DAYS:
            sizes[day + 1] = _size(db, path)
        if (day + 1 - skipped) % 10 == 0:
            print(
                f"retention bench: day {day + 1} of {days}, {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    seconds = time.monotonic() - started
    rows = _rows(db)
    db.close()
    # Nothing is pruned in the window's first payload_days days: their growth per day,
    # for the whole period, is the size with no retention.
    grown = sizes[skipped + rules["payload_days"]]["mib"] - sizes[skipped]["mib"]
    steady = [sizes[d]["mib"] for d in range(days - STEADY_DAYS, days + 1)]
    return {
        "days": days,
        "per_day": per_day,
        "window_days": window,
        "retention": rules,
        "sizes_mib_by_day": {str(d): round(s["mib"], 1) for d, s in sorted(sizes.items())},
        "steady_mib": sizes[days]["mib"],
        "steady_file_mib": sizes[days]["file_mib"],
        "steady_range_mib": [min(steady), max(steady)],
        "no_retention_mib": grown / rules["payload_days"] * days,
        "rows": rows,
        "pruned": pruned,
        "lock_ms": {
            "batches": len(holds),
            "p50": percentile(holds, 50),
            "p99": percentile(holds, 99),
            "max": max(holds),
            "budget": retention.LOCK_BUDGET_SECONDS * 1000,
        },
        "prune_seconds_per_day": prune_seconds / window,
        "simulate_seconds": seconds,
    }


def _workdir(out: Path) -> Path:
    """A fresh folder for the two stores: on tmpfs when the machine has one, since what is
    measured is sizes and the pages' time on a warm page cache, not the disk."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else out
    workdir = base / f"bridge-retention-bench-{os.getpid()}"
    shutil.rmtree(workdir, ignore_errors=True)
    return workdir


def _fast_forward(db, days: int, per_day: int) -> None:
    """The days before the window, as retention leaves them a year on: only their dead
    events (never pruned) with their GHL calls, and what the running totals counted."""
    if not days:
        return
    template = _template()
    for day in range(days):
        _generate_day(db, day, per_day, template, only_dead=True)
    finished = {
        "done": 1 - DEAD_SHARE - IGNORED_SHARE - SUPERSEDED_SHARE,
        "ignored": IGNORED_SHARE,
        "superseded": SUPERSEDED_SHARE,
    }
    for status, share in finished.items():
        db.execute(
            "INSERT INTO event_totals VALUES ('', 'reply_received', ?, ?)"
            " ON CONFLICT (location_id, event_type, status)"
            " DO UPDATE SET events = events + excluded.events",
            [status, round(days * per_day * share)],
        )
    calls = days * per_day * CALLS_PER_EVENT
    db.execute(
        "UPDATE ghl_call_totals SET calls = calls + ?, duration_ms = duration_ms + ?"
        " WHERE status = 200",
        [calls, calls * 95.0],
    )
    db.execute(
        "INSERT INTO reconcile_totals VALUES ('ok', ?, ?, 0)"
        " ON CONFLICT (status) DO UPDATE SET runs = runs + excluded.runs,"
        " events_found = events_found + excluded.events_found",
        [days * RUNS_PER_DAY, days * RUNS_PER_DAY * 52],
    )


def _rows(db) -> dict[str, Any]:
    counts = dict(db.execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall())
    return {
        "events": sum(counts.values()),
        "events_by_status": counts,
        "payload_stubs": db.execute(
            "SELECT COUNT(*) FROM events WHERE payload LIKE '{\"_pruned\"%'"
        ).fetchone()[0],
        "ghl_calls": db.execute("SELECT COUNT(*) FROM ghl_calls").fetchone()[0],
        "reconcile_runs": db.execute("SELECT COUNT(*) FROM reconcile_runs").fetchone()[0],
        "events_counted_by_metrics": sum(n for _, _, n in inbox.counts_by_type(db)),
    }


def _at(day: float) -> float:
    return (START + timedelta(days=day)).timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _template() -> str:
    """One delivery as JSON with markers for what changes per event (a new email id and
    lead each time, as new replies are); the reply HTML a few KB, with the quoted thread."""
    body = reply_body("@ID@", "lead@N@@example.test", first_name="Jordan")
    body["reply_html"] += QUOTED_HTML.format(day="Mon, Nov 24, 2025", first="Jordan") * 4
    body["timestamp"] = "@AT@"
    return json.dumps(body)


def _status(n: int) -> str:
    """The outcome of a day's n-th event, in the shares above (389 is prime to 1000, so
    the outcomes are spread through the day at any rate)."""
    share = (n * 389 % 1000) / 1000
    for status, upto in (
        ("dead", DEAD_SHARE),
        ("ignored", DEAD_SHARE + IGNORED_SHARE),
        ("superseded", DEAD_SHARE + IGNORED_SHARE + SUPERSEDED_SHARE),
    ):
        if share < upto:
            return status
    return "done"


def _generate_day(db, day: int, per_day: int, template: str, only_dead: bool = False) -> None:
    """One day's events, their GHL calls and the day's reconciliation runs, in one
    transaction (their outcomes already recorded, as the worker leaves them); or only the
    dead ones and their calls."""
    from bridge.store.db import immediate

    base = _at(day)
    events, calls, runs = [], [], []
    next_id = (db.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0) + 1
    for n in range(per_day):
        status = _status(n)
        if only_dead and status != "dead":
            continue
        at = base + (n + 0.5) * DAY / per_day
        received, finished = _iso(at), _iso(at + 2.0)
        ident, seq = str(uuid.uuid4()), day * per_day + n
        payload = template.replace("@ID@", ident).replace("@N@", str(seq)).replace("@AT@", received)
        error = "GHL 422: the contact's email is invalid" if status == "dead" else None
        events.append(
            (f"reply:{ident}", "webhook", "reply_received", f"lead{seq}@example.test",
             "c0ffee00-0000-4000-8000-000000000001", "Trust Attorneys Q4", received, payload,
             status, 1, at, error, f"ghl{seq}", received, finished)
        )  # fmt: skip
        calls.append((next_id, "POST", "/contacts/upsert", 200, 90.0, None, _iso(at)))
        calls.append((next_id, "POST", f"/contacts/ghl{seq}/tags", 200, 100.0, None, _iso(at + 1)))
        next_id += 1
    for r in range(0 if only_dead else RUNS_PER_DAY):
        begun = base + r * DAY / RUNS_PER_DAY
        runs.append(
            ("schedule", "ok", _iso(begun), _iso(begun + 4), '{"since": null}', 1, 2, 52, 52, 0,
             "[]", '{"replies": {"pages": 1}}')
        )  # fmt: skip
    with immediate(db):
        db.conn.executemany(
            "INSERT INTO events (key, source, event_type, email, campaign_id, campaign_name,"
            " occurred_at, payload, status, attempts, next_attempt_at, last_error, contact_id,"
            " received_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )
        db.conn.executemany(
            "INSERT INTO ghl_calls (event_id, method, path, status, duration_ms, error, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            calls,
        )
        db.conn.executemany(
            "INSERT INTO reconcile_runs (trigger, status, started_at, finished_at, options,"
            " pages, instantly_calls, events_found, events_known, events_new, errors, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            runs,
        )


def _size(db, path: str) -> dict[str, float]:
    """The database's size in pages, and its file on disk once the WAL is checkpointed."""
    pages, page_size = (
        db.execute(f"PRAGMA {n}").fetchone()[0] for n in ("page_count", "page_size")
    )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return {"mib": pages * page_size / 2**20, "file_mib": os.path.getsize(path) / 2**20}


def _time_pages(env: dict[str, str]) -> dict[str, float]:
    """Median milliseconds of the dashboard (logged in), /healthz and /metrics."""
    from bridge import create_app
    from bridge.config import load_config
    from bridge.store import db as store
    from tests.web_helpers import admin_env, login

    config = load_config(admin_env(env))
    app = create_app({"BRIDGE_CONFIG": config, "BRIDGE_METRICS_CACHE_SECONDS": 0})
    client = app.test_client()
    login(client)
    out = {}
    for name, path in (("dashboard", "/"), ("healthz", "/healthz"), ("metrics", "/metrics")):
        client.get(path)  # warm-up: the connection and its page cache
        times = []
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            answer = client.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            if answer.status_code not in (200, 503):
                raise RuntimeError(f"{path} answered {answer.status_code}")
        out[name] = percentile(times, 50)
    store.forget_cached()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=5000)
    parser.add_argument(
        "--window", type=int, help="days simulated in full (default: event_days + 5)"
    )
    args = parser.parse_args()
    t0 = time.monotonic()
    result = run(procs.OUT, args.days, args.per_day, args.window)
    result["wall_seconds"] = time.monotonic() - t0
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
