"""Event times: an event dated ahead of its arrival is ordered by its arrival, and events
without a timestamp are keyed by their body, by webhook and by polling alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bridge.clock import iso, now_iso
from bridge.events import polled
from bridge.events.times import MAX_AHEAD
from bridge.events.webhook import from_webhook
from bridge.store import contacts, inbox
from bridge.store import db as store
from tests.helpers import LOCATION_ID, post_webhook
from tests.interest_helpers import EMAIL, interest_payload

FAR_FUTURE = "2999-01-01T00:00:00.000Z"
ARRIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def deliver(client, worker, body):
    answer = post_webhook(client, body)
    assert answer.status_code == 202, answer.json
    worker.run(drain=True)
    return inbox.get(worker.db, answer.json["event_id"])


def test_a_status_dated_2999_does_not_freeze_the_contact(client, db, worker, fake_ghl):
    future = deliver(client, worker, interest_payload("lead_interested", FAR_FUTURE))
    assert future["status"] == "done"
    assert future["occurred_at"] <= now_iso() < FAR_FUTURE
    assert future["last_error"].startswith(f"its timestamp {FAR_FUTURE} is ")
    assert "after it arrived; ordered by its arrival at " in future["last_error"]

    booked = deliver(client, worker, interest_payload("lead_meeting_booked", now_iso()))

    assert booked["status"] == "done", booked["last_error"]
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-meeting-booked"]
    assert contacts.get(db, LOCATION_ID, EMAIL).interest_status == "meeting_booked"


@pytest.mark.parametrize(
    ("claimed", "ordered_by"),
    [
        (ARRIVED + MAX_AHEAD + timedelta(seconds=1), ARRIVED),  # beyond drift: arrival
        (ARRIVED + MAX_AHEAD, ARRIVED + MAX_AHEAD),  # clock drift: its own time
        (ARRIVED - timedelta(days=3), ARRIVED - timedelta(days=3)),  # late: its own time
    ],
)
def test_webhook_and_polling_bound_an_event_time_alike(claimed, ordered_by):
    body = interest_payload("lead_interested", iso(claimed))
    webhook = from_webhook(body, received_at=ARRIVED)
    lead = {"email": EMAIL, "campaign": "c1", "lt_interest_status": 1}
    poll = polled.interest_event(lead, "lead_interested", "Q1", iso(claimed), found_at=ARRIVED)
    assert webhook.occurred_at == poll.occurred_at == iso(ordered_by)
    assert webhook.payload["timestamp"] == poll.payload["timestamp"] == iso(claimed)


def test_a_polled_reply_dated_ahead_is_ordered_by_the_poll():
    item = {"id": "e1", "lead": EMAIL, "timestamp_created": FAR_FUTURE, "campaign_id": "c1"}
    event = polled.reply_event(item, "reply_received", None, "Q1", found_at=ARRIVED)
    assert event.occurred_at == iso(ARRIVED)


def test_two_bookings_without_a_timestamp_are_two_events_and_a_redelivery_one(client, db):
    first = interest_payload("lead_meeting_booked", "", reply_text_snippet="Tuesday 10am")
    second = interest_payload("lead_meeting_booked", "", reply_text_snippet="Friday 3pm")
    for body in (first, second):
        del body["timestamp"]
    answers = [
        post_webhook(client, first),
        post_webhook(client, second),
        post_webhook(client, first),
        # The same body, its keys in another order and spaced otherwise.
        post_webhook(client, json.dumps(dict(reversed(first.items())), indent=2).encode()),
    ]
    assert [a.json["status"] for a in answers] == ["accepted", "accepted", "duplicate", "duplicate"]
    assert answers[2].json["event_id"] == answers[3].json["event_id"] == answers[0].json["event_id"]
    assert len(list(db.query("SELECT id FROM events"))) == 2


def test_an_unreadable_timestamp_is_keyed_by_the_body_too():
    one = from_webhook(interest_payload("lead_meeting_booked", "soon", step=1))
    two = from_webhook(interest_payload("lead_meeting_booked", "soon", step=2))
    assert one.key != two.key
    assert one.key == from_webhook(interest_payload("lead_meeting_booked", "soon", step=1)).key


def test_a_polled_status_without_a_time_keeps_the_key_polling_computes():
    lead = {"email": EMAIL, "campaign": "c1"}
    one = polled.interest_event({**lead, "first_name": "A"}, "lead_interested", "Q1", "")
    two = polled.interest_event({**lead, "first_name": "B"}, "lead_interested", "Q1", "")
    # A poll sees a state, not a delivery: the same state polled again is the same event.
    assert one.key == two.key and one.occurred_at == ""


def test_m035_orders_stored_future_events_by_arrival_and_thaws_their_contacts(config):
    database = store.connect(config.database)
    store.load_migrations().apply(database, stop_before="m035_future_event_times")
    arrived, updated = "2026-03-01T12:00:00.000Z", "2026-03-02T08:00:00.000Z"
    for key, occurred in [("future", FAR_FUTURE), ("past", "2026-02-01T00:00:00.000Z")]:
        database["events"].insert(
            {"key": key, "source": "webhook", "event_type": "lead_interested", "email": EMAIL}
            | {"payload": "{}", "status": "done", "attempts": 1}
            | {"occurred_at": occurred, "received_at": arrived, "updated_at": arrived}
        )
    # Rows as that schema had them (the contact map had no location until m042).
    for email, contact_id, interest, tags in [
        (EMAIL, "c1", "interested", '["instantly-interested"]'),
        ("other@example.com", "c2", "interested", "[]"),
        ("real@example.com", "c3", None, "[]"),
    ]:
        database["contacts"].insert(
            {"email": email, "contact_id": contact_id, "tags": "[]", "interest_tags": tags}
            | {"interest_status": interest, "interest_at": FAR_FUTURE if interest else None}
        )
    database.execute(
        "UPDATE contacts SET updated_at = ?, interest_at = COALESCE(interest_at, ?)",
        [updated, "2026-02-01T00:00:00.000Z"],
    )

    assert "m035_future_event_times" in store.migrate(database)

    occurred = dict(database.execute("SELECT key, occurred_at FROM events").fetchall())
    assert occurred == {"future": arrived, "past": "2026-02-01T00:00:00.000Z"}
    assert contacts.get(database, "", EMAIL).interest_at == arrived  # the event that set it
    assert contacts.get(database, "", "other@example.com").interest_at == updated  # none: the row
    assert contacts.get(database, "", "real@example.com").interest_at == "2026-02-01T00:00:00.000Z"
    database.close()
