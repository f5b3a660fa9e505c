"""m036's running totals: every change of an event, a GHL call or a reconciliation run is
counted where /metrics and /healthz read it, and rows written before m036 are counted too."""

from __future__ import annotations

from bridge.events.webhook import from_webhook
from bridge.reconcile import runs
from bridge.store import db as store
from bridge.store import inbox
from tests.helpers import enqueue_before_m042, reply_payload

M036 = "m036_running_totals"


def counted(db) -> list[tuple]:
    """What a full scan says: the answer the totals must give."""
    rows = db.execute("SELECT event_type, status, COUNT(*) FROM events GROUP BY 1, 2")
    return sorted(tuple(row) for row in rows)


def call(db, status: int, ms: float) -> None:
    db["ghl_calls"].insert(
        {"event_id": 1, "method": "POST", "path": "/x", "status": status, "duration_ms": ms}
    )


def latency(db) -> list[tuple[float, int]]:
    return [tuple(r) for r in db.execute("SELECT le_ms, calls FROM ghl_call_latency ORDER BY 1")]


def test_event_totals_follow_every_change_of_status(db):
    ids = [
        inbox.enqueue(db, from_webhook(reply_payload(email_id=f"e{i}"))).event_id for i in range(4)
    ]
    inbox.enqueue(db, from_webhook(reply_payload(event_type="lead_interested")))
    inbox.finish(db, ids[0], "done", "c1")
    inbox.dead(db, ids[1], "GHL 422")
    inbox.dead(db, ids[2], "GHL 422")
    inbox.replay(db, [ids[2]])
    inbox.finish(db, ids[3], "ignored")
    db.execute("UPDATE events SET event_type = 'lead_won' WHERE id = ?", [ids[3]])
    db.execute("DELETE FROM events WHERE id = ?", [ids[0]])
    assert sorted(inbox.counts_by_type(db)) == counted(db)
    zero = dict.fromkeys(inbox.STATUSES, 0)
    assert inbox.counts(db) == {**zero, "pending": 2, "dead": 1, "ignored": 1}
    assert inbox.claim_next(db) is not None
    assert inbox.counts(db) == {**zero, "pending": 1, "processing": 1, "dead": 1, "ignored": 1}
    assert sorted(inbox.counts_by_type(db)) == counted(db)


def test_ghl_call_totals_and_cumulative_latency_buckets(db):
    for status, ms in [(200, 40), (200, 100), (429, 101), (0, 30_000), (500, 31_000)]:
        call(db, status, ms)
    totals = dict((s, (n, ms)) for s, n, ms in db.execute("SELECT * FROM ghl_call_totals"))
    assert totals == {200: (2, 140.0), 429: (1, 101.0), 0: (1, 30_000.0), 500: (1, 31_000.0)}
    assert latency(db) == [
        (50.0, 1),
        (100.0, 2),
        (250.0, 3),
        (500.0, 3),
        (1000.0, 3),
        (2500.0, 3),
        (5000.0, 3),
        (10000.0, 3),
        (30000.0, 4),
    ]


def test_reconcile_totals_follow_a_run_from_start_to_end(db):
    db["reconcile_runs"].insert({"id": 1, "trigger": "cli", "status": "running", "started_at": "a"})
    db["reconcile_runs"].insert(
        {"id": 2, "trigger": "cli", "status": "ok", "started_at": "b", "events_found": 2}
    )
    assert runs.totals(db) == {"by_status": {"running": 1, "ok": 1}, "found": 2, "new": 0}
    db.execute("UPDATE reconcile_runs SET status = 'error', events_found = 7, events_new = 3")
    assert runs.totals(db) == {"by_status": {"error": 2}, "found": 14, "new": 6}
    db.execute("DELETE FROM reconcile_runs WHERE id = 2")
    assert runs.totals(db) == {"by_status": {"error": 1}, "found": 7, "new": 3}


def test_rows_written_before_m036_are_counted(config):
    database = store.connect(config.database)
    store.load_migrations().apply(database, stop_before=M036)
    for i in range(3):
        enqueue_before_m042(database, from_webhook(reply_payload(email_id=f"e{i}")))
    database.execute("UPDATE events SET status = 'done' WHERE id < 3")
    call(database, 200, 70)
    call(database, 429, 20)
    database["reconcile_runs"].insert(
        {"trigger": "cli", "status": "ok", "started_at": "a", "events_found": 5, "events_new": 1}
    )
    assert M036 in store.migrate(database)
    assert sorted(inbox.counts_by_type(database)) == counted(database)
    assert latency(database)[:2] == [(50.0, 1), (100.0, 2)]
    calls = database.execute("SELECT status, calls FROM ghl_call_totals ORDER BY 1").fetchall()
    assert [tuple(r) for r in calls] == [(200, 1), (429, 1)]
    assert runs.totals(database) == {"by_status": {"ok": 1}, "found": 5, "new": 1}
    database.close()
