"""GET /metrics: Prometheus text read from the store at scrape time, plus webhook outcomes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import create_app
from bridge.clock import iso
from bridge.events.webhook import from_webhook
from bridge.reconcile import runs
from bridge.setup import health
from bridge.setup.health import report
from bridge.store import db as store
from bridge.store import inbox, probe, state
from bridge.web import metrics
from tests.helpers import LOCATION_ID, post_webhook, reply_payload
from tests.web_helpers import all_secrets

pytestmark = pytest.mark.admin


@pytest.fixture
def app(config, db):
    # Every scrape reads the store afresh, so a test sees what it just wrote.
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True, "BRIDGE_METRICS_CACHE_SECONDS": 0})
    yield app
    store.forget_cached()


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def deliveries(samples, outcome):
    return samples.get(("bridge_webhook_deliveries_total", (("outcome", outcome),)), 0.0)


def test_metrics_need_no_login_and_hold_no_secret(client):
    body = client.get("/metrics").get_data(as_text=True)
    assert "bridge_store_up 1.0" in body
    for secret in all_secrets():
        assert secret not in body


def test_events_by_type_and_status_and_queue_depth(client, db):
    ids = [
        inbox.enqueue(db, from_webhook(reply_payload(email_id=f"e{i}"))).event_id for i in range(3)
    ]
    inbox.dead(db, ids[0], "GHL 422")
    inbox.finish(db, ids[1], "done", "c1")
    state.put(
        db,
        state.scoped(state.GHL_PAUSE, LOCATION_ID),
        {"reason": "401", "since": "x", "probe_at": 0},
    )
    samples = scrape(client)
    # Finished before it had a location: GHL_LOCATION_ID's (m042); queued: not routed yet.
    for location, status in ((LOCATION_ID, "dead"), (LOCATION_ID, "done"), ("", "pending")):
        labels = (("event_type", "reply_received"), ("location", location), ("status", status))
        assert samples[("bridge_events", labels)] == 1
    assert samples[("bridge_queue_depth", (("location", ""),))] == 1
    assert samples[("bridge_queue_depth", (("location", LOCATION_ID),))] == 0
    assert samples[("bridge_queue_oldest_pending_seconds", ())] >= 0
    assert samples[("bridge_ghl_paused", (("location", LOCATION_ID),))] == 1
    assert samples[("bridge_unrouted_events", ())] == 0


def test_ghl_calls_by_status_and_latency_histogram(client, db):
    db["ghl_calls"].insert_all(
        {
            "event_id": 1,
            "method": "POST",
            "path": "/contacts/upsert",
            "status": status,
            "duration_ms": ms,
            "error": None,
            "at": "2026-01-05T10:00:00",
        }
        for status, ms in [(200, 40), (200, 300), (429, 90), (0, 30000), (201, 7000)]
    )
    samples = scrape(client)
    assert samples[("bridge_ghl_calls_total", (("status", "200"),))] == 2
    assert samples[("bridge_ghl_calls_total", (("status", "429"),))] == 1
    assert samples[("bridge_ghl_calls_total", (("status", "0"),))] == 1
    bucket = "bridge_ghl_call_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.05"),))] == 1
    assert samples[(bucket, (("le", "0.1"),))] == 2
    assert samples[(bucket, (("le", "0.5"),))] == 3
    assert samples[(bucket, (("le", "10.0"),))] == 4
    assert samples[(bucket, (("le", "30.0"),))] == 5
    assert samples[(bucket, (("le", "+Inf"),))] == 5
    assert samples[("bridge_ghl_call_duration_seconds_count", ())] == 5
    assert samples[("bridge_ghl_call_duration_seconds_sum", ())] == pytest.approx(37.43)


def test_reconcile_runs_and_events_found(client, db):
    assert ("bridge_reconcile_events_found_total", ()) in scrape(client)
    db[runs.RUNS_TABLE].insert_all(
        [
            {
                "id": 1,
                "started_at": "a",
                "finished_at": "b",
                "status": "ok",
                "trigger": "schedule",
                "pages": 2,
                "events_found": 10,
                "events_new": 1,
                "errors": None,
            },
            {
                "id": 2,
                "started_at": "c",
                "finished_at": "d",
                "status": "error",
                "trigger": "cli",
                "pages": 1,
                "events_found": 3,
                "events_new": 0,
                "errors": "429",
            },
        ],
        pk="id",
    )
    samples = scrape(client)
    assert samples[("bridge_reconcile_runs_total", (("status", "ok"),))] == 1
    assert samples[("bridge_reconcile_runs_total", (("status", "error"),))] == 1
    assert samples[("bridge_reconcile_events_found_total", ())] == 13
    assert samples[("bridge_reconcile_events_new_total", ())] == 1


def test_webhook_outcomes_are_counted_without_touching_the_store(client, db, monkeypatch):
    before = scrape(client)
    post_webhook(client, reply_payload())
    post_webhook(client, reply_payload())
    post_webhook(client, reply_payload(event_type="email_opened"))
    post_webhook(client, b"{not json")
    post_webhook(client, reply_payload(), secret="wrong")
    after = scrape(client)
    for outcome, n in [
        ("accepted", 1),
        ("duplicate", 1),
        ("ignored", 1),
        ("rejected", 1),
        ("unauthorized", 1),
    ]:
        assert deliveries(after, outcome) - deliveries(before, outcome) == n, outcome
    assert db["events"].count == 1


def test_unreadable_store_is_reported_not_a_500(client, monkeypatch):
    import sqlite3

    def broken(self, db, facts):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(metrics.StoreCollector, "_families", broken)
    samples = scrape(client)
    assert samples[("bridge_store_up", ())] == 0


# --- health: the same states /healthz reports, for alert rules (config/alerts.yml) -------


def health_gauges(samples) -> dict:
    """status -> value and check -> (the state it makes, value), from one scrape."""
    status = {
        dict(labels)["status"]: v
        for (name, labels), v in samples.items()
        if name == "bridge_health_status"
    }
    checks = {
        dict(labels)["check"]: (dict(labels)["state"], v)
        for (name, labels), v in samples.items()
        if name == "bridge_health_check_failed"
    }
    return {"status": status, "checks": checks}


def test_health_gauges_when_all_is_well(client):
    samples = scrape(client)
    gauges = health_gauges(samples)
    assert gauges["status"] == {"ok": 1, "degraded": 0, "unhealthy": 0}
    made = {health.PROBLEM: "unhealthy", health.WARNING: "degraded"}
    assert gauges["checks"] == {name: (made[kind], 0) for name, kind in health.CHECKS.items()}
    assert samples[("bridge_database_writable", ())] == 1
    assert samples[("bridge_queue_oldest_due_seconds", ())] == 0
    assert samples[("bridge_ghl_failing_seconds", ())] == 0
    assert samples[("bridge_reconcile_last_run_failed", ())] == 0
    assert client.get("/healthz").get_json()["status"] == "ok"


def test_health_gauges_follow_what_healthz_reports(client, db):
    now = time.time()
    dead = inbox.enqueue(db, from_webhook(reply_payload(email_id="dead"))).event_id
    inbox.dead(db, dead, "GHL 422")
    overdue = inbox.enqueue(db, from_webhook(reply_payload(email_id="late", lead_email="b@x.io")))
    db.execute(
        "UPDATE events SET next_attempt_at = ? WHERE id = ?",
        [now - health.BACKLOG_SECONDS - 60, overdue.event_id],
    )
    failing_since = iso(datetime.fromtimestamp(now - 600, UTC))
    state.put(
        db, state.scoped(state.GHL_FAILING_SINCE, LOCATION_ID), {"at": failing_since, "status": 503}
    )
    db[runs.RUNS_TABLE].insert(
        {"trigger": "cli", "status": "error", "started_at": "a", "finished_at": "b"}
    )
    samples = scrape(client)
    gauges = health_gauges(samples)
    assert gauges["status"] == {"ok": 0, "degraded": 0, "unhealthy": 1}
    failed = {name for name, (_, value) in gauges["checks"].items() if value == 1}
    assert failed == {"dead_events", "backlog", "ghl_failing", "reconcile_failed"}
    assert gauges["checks"]["backlog"] == ("unhealthy", 1)
    assert gauges["checks"]["dead_events"] == ("degraded", 1)
    assert samples[("bridge_queue_oldest_due_seconds", ())] >= health.BACKLOG_SECONDS + 60
    assert samples[("bridge_ghl_failing_seconds", ())] >= 600
    assert samples[("bridge_reconcile_last_run_failed", ())] == 1
    dead = (("event_type", "reply_received"), ("location", LOCATION_ID), ("status", "dead"))
    assert samples[("bridge_events", dead)] == 1
    body = client.get("/healthz").get_json()
    assert (body["status"], body["failing_checks"]) == ("unhealthy", sorted(failed))


def test_an_unreadable_store_is_unhealthy_in_the_gauges_too(client, monkeypatch):
    import sqlite3

    def broken(*_args, **_kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(health, "report", broken)
    samples = scrape(client)
    gauges = health_gauges(samples)
    assert samples[("bridge_store_up", ())] == 0
    assert gauges["status"] == {"ok": 0, "degraded": 0, "unhealthy": 1}
    assert gauges["checks"]["database_unreachable"] == ("unhealthy", 1)
    assert samples[("bridge_database_writable", ())] == 0


# --- cost: /metrics and /healthz need no login, so what they read must not grow -----------

DONE_AT = "2026-01-05T10:00:00.000Z"


def seed_history(db, first: int, n: int) -> None:
    """`n` finished events with two GHL calls each, and a reconciliation run per 25 events,
    written straight to the tables as years of use would leave them."""
    types = ("reply_received", "lead_interested", "lead_meeting_booked")
    statuses = ("done",) * 8 + ("ignored", "dead")
    ids = range(first, first + n)
    with store.immediate(db):
        db.conn.executemany(
            "INSERT INTO events (id, key, source, event_type, email, payload, status, attempts,"
            " next_attempt_at, received_at, updated_at) VALUES (?, ?, 'webhook', ?, ?, '{}', ?,"
            " 1, 0, ?, ?)",
            (
                (i, f"k{i}", types[i % 3], f"l{i}@example.com", statuses[i % 10], DONE_AT, DONE_AT)
                for i in ids
            ),
        )
        db.conn.executemany(
            "INSERT INTO ghl_calls (event_id, method, path, status, duration_ms, at)"
            " VALUES (?, 'POST', '/contacts/upsert', ?, ?, ?)",
            ((i, 200 if i % 7 else 429, 40.0 + i % 500, DONE_AT) for i in ids for _ in "ab"),
        )
        db.conn.executemany(
            "INSERT INTO reconcile_runs (trigger, status, started_at, finished_at, events_found,"
            " events_new) VALUES ('schedule', 'ok', ?, ?, 4, 1)",
            ((DONE_AT, DONE_AT) for _ in range(n // 25)),
        )


def vm_steps(db, read) -> int:
    """SQLite virtual-machine instructions `read()` runs on `db`: the rows it visits, counted
    without a clock."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db.conn.set_progress_handler(count, 1)
    try:
        read()
    finally:
        db.conn.set_progress_handler(None, 1)
    return steps


def test_a_scrape_reads_as_much_at_50k_events_as_at_1k(config, db):
    for i in range(5):
        inbox.enqueue(db, from_webhook(reply_payload(email_id=f"queued{i}")))
    seed_history(db, 100, 1_000)
    collector = metrics.StoreCollector(config, ttl=0)
    reader = store.cached(config.database)

    def scrape_with_probe() -> list:
        # The health gauges' write probe commits at most once a second: make both readings
        # commit, so they are compared like for like.
        probe.forget(config.database)
        return list(collector.collect())

    scrape_with_probe()  # the probe's first commit inserts its row; later ones update it
    small = vm_steps(reader, scrape_with_probe)
    seed_history(db, 10_000, 49_000)
    assert vm_steps(reader, scrape_with_probe) == small
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }
    done = (
        "bridge_events",
        (("event_type", "reply_received"), ("location", LOCATION_ID), ("status", "done")),
    )
    assert (
        samples[done]
        == db.execute(
            "SELECT COUNT(*) FROM events WHERE event_type = 'reply_received' AND status = 'done'"
        ).fetchone()[0]
    )
    assert samples[("bridge_queue_depth", (("location", ""),))] == 5
    assert (
        samples[("bridge_ghl_calls_total", (("status", "429"),))]
        == db.execute("SELECT COUNT(*) FROM ghl_calls WHERE status = 429").fetchone()[0]
    )
    assert samples[("bridge_reconcile_runs_total", (("status", "ok"),))] == 2_000


def test_health_reads_as_much_at_50k_events_as_at_1k(config, db):
    seed_history(db, 100, 1_000)
    small = vm_steps(db, lambda: report(db, config))
    seed_history(db, 10_000, 49_000)
    grown = vm_steps(db, lambda: report(db, config))
    # Not equal: the write probe commits at most once a second, so one of the two reports
    # may skip it. 49,000 more events cost at least one step each if anything scanned them.
    assert grown <= small + 500, (small, grown)
    (done,) = db.execute("SELECT COUNT(*) FROM events WHERE status = 'done'").fetchone()
    assert report(db, config)["queue"]["done"] == done == 40_000


# --- the cache: scrapers looping on /metrics read the store once per interval -------------


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_scrapes_within_the_interval_read_the_store_once(config, db, monkeypatch):
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True})
    clock = FrozenClock()
    app.extensions[metrics.EXTENSION].snapshot.clock = clock
    reads = []
    read_store = metrics.StoreCollector._families

    def counted(self, db, facts):
        reads.append(threading.get_ident())
        # Hold the read a moment, so the other scrapes arrive while it runs.
        time.sleep(0.05)
        return list(read_store(self, db, facts))

    monkeypatch.setattr(metrics.StoreCollector, "_families", counted)
    scrapers = 16
    together = threading.Barrier(scrapers)

    def scrape_once(_: int) -> str:
        together.wait()
        try:
            return app.test_client().get("/metrics").get_data(as_text=True)
        finally:
            store.forget_cached()

    with ThreadPoolExecutor(scrapers) as pool:
        bodies = set(pool.map(scrape_once, range(scrapers)))
    assert len(reads) == 1 and len(bodies) == 1
    unrouted_depth = 'bridge_queue_depth{location=""}'
    assert f"{unrouted_depth} 0.0" in bodies.pop()

    inbox.enqueue(db, from_webhook(reply_payload()))
    clock.now += metrics.CACHE_SECONDS - 0.01
    assert f"{unrouted_depth} 0.0" in scrape_once_plain(app)
    clock.now += 0.02
    assert f"{unrouted_depth} 1.0" in scrape_once_plain(app)
    assert len(reads) == 2
    store.forget_cached()


def scrape_once_plain(app) -> str:
    return app.test_client().get("/metrics").get_data(as_text=True)
