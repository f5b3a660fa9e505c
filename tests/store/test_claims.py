"""The per-contact claim: while one event of an email is leased, no other event of that
email is claimed; a contact's events come out one at a time, in order."""

from __future__ import annotations

from bridge.events.webhook import from_webhook
from bridge.store import inbox
from tests.interest_helpers import interest_payload

LEASE = 60.0


def queue(db, email: str, *steps: str, now: float = 100.0) -> list[int]:
    """Enqueue one interest event per step for `email`, a second apart; their ids."""
    ids = []
    for n, event_type in enumerate(steps):
        body = interest_payload(
            event_type, f"2026-02-01T09:00:{n:02d}.000Z", lead_email=email, email=email
        )
        ids.append(inbox.enqueue(db, from_webhook(body), now=now + n).event_id)
    return ids


def claim(db, now: float = 200.0) -> int | None:
    row = inbox.claim_next(db, lease_seconds=LEASE, now=now)
    return row["id"] if row else None


def test_a_second_claim_on_one_contact_gets_nothing(db):
    first, _ = queue(db, "a@example.com", "lead_interested", "lead_meeting_booked")
    assert claim(db) == first
    assert claim(db) is None


def test_a_second_claim_takes_another_contacts_event(db):
    first, _ = queue(db, "a@example.com", "lead_interested", "lead_meeting_booked")
    (other,) = queue(db, "b@example.com", "lead_interested", now=150.0)
    assert [claim(db), claim(db), claim(db)] == [first, other, None]


def test_a_contacts_events_come_out_in_order_each_after_the_last_is_finished(db):
    ids = queue(db, "a@example.com", "lead_interested", "lead_meeting_booked", "lead_closed")
    claimed = []
    for _ in ids:
        event_id = claim(db)
        claimed.append(event_id)
        assert claim(db) is None, "the contact is held until its event is finished"
        inbox.finish(db, event_id, "done")
    assert claimed == ids
    assert claim(db) is None


def test_a_retry_or_a_dead_letter_frees_the_contact(db):
    first, second, third = queue(
        db, "a@example.com", "lead_interested", "lead_meeting_booked", "lead_closed"
    )
    assert claim(db) == first
    inbox.retry_later(db, first, 500.0, "GHL 503", now=200.0)
    assert claim(db) == second
    inbox.dead(db, second, "GHL 422")
    assert claim(db) == third


def test_an_expired_lease_frees_the_contact_and_its_event_is_taken_first(db):
    first, second = queue(db, "a@example.com", "lead_interested", "lead_meeting_booked")
    assert claim(db, now=200.0) == first
    assert claim(db, now=200.0 + LEASE - 1) is None
    assert claim(db, now=200.0 + LEASE + 1) == first, "the oldest due event of the contact"
    assert claim(db, now=200.0 + LEASE + 1) is None


def test_a_held_contact_with_a_long_queue_does_not_hide_other_contacts(db):
    held = queue(db, "a@example.com", *["lead_interested", "lead_meeting_booked"] * 100)
    (other,) = queue(db, "b@example.com", "lead_interested", now=500.0)
    assert claim(db, now=600.0) == held[0]
    assert claim(db, now=600.0) == other


def test_the_claim_is_served_by_the_indexes(db):
    plan = " | ".join(
        step[-1] for step in db.execute("EXPLAIN QUERY PLAN " + inbox._CLAIMABLE, {"now": 1.0})
    )
    assert plan.count("USING INDEX idx_events_status_next_attempt_at") == 2, plan
    assert plan.count("USING INDEX idx_events_leased_email") == 2, plan
    assert "SCAN events" not in plan and "SCAN due" not in plan and "SCAN held" not in plan, plan
