"""GET /metrics: Prometheus text read from the store at scrape time, plus webhook outcomes."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.events.webhook import from_webhook
from bridge.reconcile import runs
from bridge.store import inbox, state
from bridge.web import metrics
from tests.helpers import post_webhook, reply_payload
from tests.web_helpers import admin_env, all_secrets


@pytest.fixture
def env(env):
    return admin_env(env)


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
    state.put(db, state.GHL_PAUSE, {"reason": "401", "since": "x", "probe_at": 0})
    samples = scrape(client)
    for status, n in (("dead", 1), ("done", 1), ("pending", 1)):
        key = ("bridge_events", (("event_type", "reply_received"), ("status", status)))
        assert samples[key] == n
    assert samples[("bridge_queue_depth", ())] == 1
    assert samples[("bridge_queue_oldest_pending_seconds", ())] >= 0
    assert samples[("bridge_ghl_paused", ())] == 1


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

    def broken(self, db):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(metrics.StoreCollector, "_families", broken)
    samples = scrape(client)
    assert samples[("bridge_store_up", ())] == 0
