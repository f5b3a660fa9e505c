"""Event keys, the inbox's lease and replay, the rate limiter and backoff."""

from __future__ import annotations

import time

import pytest

from bridge.clients.ratelimit import SlidingWindowLimiter
from bridge.config import load_config
from bridge.events.event import idempotency_key, normalise_email
from bridge.events.webhook import BadEvent, from_webhook
from bridge.store import inbox
from bridge.sync.lanes import Lane
from bridge.sync.worker import Worker, backoff_delay
from tests.helpers import reply_payload
from tests.support.clock import FakeClock


def test_reply_key_is_the_email_id_polling_also_sees():
    event = from_webhook(reply_payload(email_id="0199e9d9-cc23"))
    assert event.key == "reply:0199e9d9-cc23"


def test_keys_without_email_id_depend_on_type_email_campaign_and_time():
    base = idempotency_key("lead_interested", "a@b.co", "c1", "2025-01-01T00:00:00Z", "")
    assert base == idempotency_key("lead_interested", "a@b.co", "c1", "2025-01-01T00:00:00Z", "")
    assert base != idempotency_key("lead_interested", "a@b.co", "c2", "2025-01-01T00:00:00Z", "")
    assert base != idempotency_key("lead_interested", "a@b.co", "c1", "2025-01-01T00:00:01Z", "")
    assert base != idempotency_key("lead_neutral", "a@b.co", "c1", "2025-01-01T00:00:00Z", "")


def test_emails_are_trimmed_and_lowercased_for_keys_and_lookups():
    assert normalise_email("  Jordan.Lead@Example.COM ") == "jordan.lead@example.com"
    one = from_webhook(reply_payload(lead_email="A@B.co", email_id=None))
    two = from_webhook(reply_payload(lead_email=" a@b.CO", email_id=None))
    assert one.key == two.key and one.email == "a@b.co"


def test_lead_email_falls_back_to_the_lead_field():
    body = reply_payload(email="fallback@example.com")
    del body["lead_email"]
    assert from_webhook(body).email == "fallback@example.com"


def test_event_time_is_normalised_to_utc():
    event = from_webhook(reply_payload(timestamp="2025-06-09T18:42:42.715+02:00"))
    assert event.occurred_at == "2025-06-09T16:42:42.715Z"


def test_missing_email_is_a_bad_event():
    body = reply_payload()
    del body["lead_email"], body["email"]
    with pytest.raises(BadEvent, match="lead_email is missing"):
        from_webhook(body)


def test_claim_leases_one_event_and_counts_the_attempt(db):
    first = inbox.enqueue(db, from_webhook(reply_payload(email_id="r1")), now=100.0)
    other = reply_payload(email_id="r2", lead_email="other@example.com", email="other@example.com")
    inbox.enqueue(db, from_webhook(other), now=100.0)
    row = inbox.claim_next(db, lease_seconds=60, now=200.0)
    assert (row["id"], row["status"], row["attempts"]) == (first.event_id, "processing", 1)
    again = inbox.claim_next(db, lease_seconds=60, now=200.0)
    assert again["id"] != first.event_id


def test_expired_lease_gives_the_event_to_another_worker(db):
    queued = inbox.enqueue(db, from_webhook(reply_payload()), now=100.0)
    inbox.claim_next(db, lease_seconds=60, now=100.0)
    assert inbox.claim_next(db, lease_seconds=60, now=150.0) is None
    retaken = inbox.claim_next(db, lease_seconds=60, now=161.0)
    assert (retaken["id"], retaken["attempts"]) == (queued.event_id, 2)


def test_worker_leases_for_the_configured_time(env, db, monkeypatch):
    config = load_config({**env, "BRIDGE_LEASE_SECONDS": "42"})
    assert config.lease_seconds == 42.0
    assert load_config(env).lease_seconds == 300.0
    inbox.enqueue(db, from_webhook(reply_payload()))
    worker = Worker(config, db=db)
    held = []
    # Claim one event, sync nothing, stop.
    monkeypatch.setattr(
        Lane,
        "process_batch",
        lambda lane, rows, settings, stopping: (held.append(rows[0]["lease_until"]), worker.stop()),
    )
    before = time.time()
    assert worker.run() == 1
    assert before + 42 <= held[0] <= time.time() + 42
    # Stopping released it: the next worker need not wait for the 42 s.
    row = db.execute("SELECT status, lease_until, lease_owner FROM events").fetchone()
    assert tuple(row) == ("pending", None, None)


def test_retry_later_waits_and_rate_limits_do_not_use_up_attempts(db):
    queued = inbox.enqueue(db, from_webhook(reply_payload()), now=0.0)
    inbox.claim_next(db, now=10.0)
    inbox.retry_later(db, queued.event_id, 30, "GHL 429", count_attempt=False, now=10.0)
    assert inbox.claim_next(db, now=39.0) is None
    row = inbox.claim_next(db, now=41.0)
    assert row["attempts"] == 1 and row["last_error"] == "GHL 429"


def test_replay_requeues_dead_events_only(db):
    dead = inbox.enqueue(db, from_webhook(reply_payload(email_id="r1")))
    done = inbox.enqueue(db, from_webhook(reply_payload(email_id="r2")))
    inbox.dead(db, dead.event_id, "GHL 422: bad phone")
    inbox.finish(db, done.event_id, "done")
    assert inbox.replay(db) == 1
    row = inbox.get(db, dead.event_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert inbox.get(db, done.event_id)["status"] == "done"
    assert inbox.replay(db, [done.event_id]) == 1


def test_limiter_allows_the_limit_then_waits_for_the_window():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 10.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert limiter.acquire() == 0
    clock.now = 4.0
    assert limiter.delay() == pytest.approx(6.0)
    assert limiter.acquire() == pytest.approx(6.0)
    assert clock.now == pytest.approx(10.0)


def test_limiter_keeps_any_window_under_the_limit():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(20, 60.0, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(65):
        limiter.acquire()
        sent.append(clock.now)
        clock.now += 0.5
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + 60.0) <= 20


def test_block_for_holds_every_call_until_the_time():
    clock = FakeClock()
    limiter = SlidingWindowLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    limiter.block_for(7.5)
    assert limiter.acquire() == pytest.approx(7.5)


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    assert backoff_delay(1, 30, 3600, rand=lambda: 0.5) == 30
    assert backoff_delay(4, 30, 3600, rand=lambda: 0.5) == 240
    assert backoff_delay(20, 30, 3600, rand=lambda: 0.5) == 3600
    assert backoff_delay(2, 30, 3600, rand=lambda: 0.0) == 30
    assert backoff_delay(2, 30, 3600, rand=lambda: 0.999) == pytest.approx(89.94)
