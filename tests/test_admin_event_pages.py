"""What the operator reads about an event: when a dead one failed, when a waiting one is
tried next, its errors in one line (the whole text on its page only), and what each GHL
call sent, never the token."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from bridge.clients.ghl import SENT_LIMIT, GHLClient
from bridge.clock import iso
from bridge.events.webhook import from_webhook
from bridge.reconcile import runs
from bridge.store import inbox
from bridge.sync.worker import Worker
from tests.helpers import GHL_TOKEN, LOCATION_ID, post_webhook, reply_payload
from tests.support.ghl_responses import GHL_BASE_URL
from tests.test_error_summary import LONG_REFUSED

pytestmark = pytest.mark.admin


def enqueue(db, **overrides):
    return inbox.enqueue(db, from_webhook(reply_payload(**overrides))).event_id


def test_dead_letters_say_when_each_failed_and_summarise_the_error(logged_in, db):
    event_id = enqueue(db)
    inbox.dead(db, event_id, "gave up after 5 attempts: " + LONG_REFUSED)
    failed_at = inbox.get(db, event_id)["updated_at"]
    page = logged_in.get("/dead").get_data(as_text=True)
    assert f'<time datetime="{failed_at}" title="{failed_at[:19].replace("T", " ")} UTC">' in page
    assert "just now</time>" in page
    assert "GHL unreachable: connection refused (gave up after 5 tries)" in page
    assert "Max retries exceeded" not in page
    assert "Replay the dead event<" in page
    # The whole text is on the event's page, and only there.
    detail = logged_in.get(f"/events/{event_id}").get_data(as_text=True)
    assert "Max retries exceeded" in detail and "Failed</th>" in detail
    for path in ["/", "/events"]:
        assert "Max retries exceeded" not in logged_in.get(path).get_data(as_text=True), path


def test_a_waiting_event_says_when_it_is_tried_next(logged_in, db):
    later = enqueue(db, email_id="later")
    inbox.retry_later(db, later, 125, "GHL 503: Service Unavailable")
    due = enqueue(db, email_id="due")
    events = logged_in.get("/events").get_data(as_text=True)
    assert "next try in 2 min" in events and "due now" in events
    assert "GHL 503: Service Unavailable" in events
    detail = logged_in.get(f"/events/{later}").get_data(as_text=True)
    assert "Next try</th><td>next try in 2 min" in detail
    assert "due now" in logged_in.get(f"/events/{due}").get_data(as_text=True)


def test_each_ghl_call_shows_what_was_sent_and_never_the_token(
    logged_in, client, db, config, fake_ghl
):
    fake_ghl.fail_next(1, 422, body={"statusCode": 422, "message": ["phone must be a valid phone"]})
    post_webhook(client, reply_payload())
    Worker(config, db=db).run(drain=True)
    (call,) = db["ghl_calls"].rows
    sent = json.loads(call["request"])
    assert sent["locationId"] == LOCATION_ID and sent["email"] == "jordan.lead@example.com"
    assert GHL_TOKEN not in call["request"]
    event_id = call["event_id"]
    page = logged_in.get(f"/events/{event_id}").get_data(as_text=True)
    assert "<code>POST /contacts/upsert</code>" in page
    assert "<details><summary>Sent</summary>" in page
    assert "&#34;locationId&#34;: &#34;" + LOCATION_ID in page
    assert "GHL 422: phone must be a valid phone" in page


def test_a_get_records_its_query_and_a_long_body_is_cut(db, config, fake_ghl):
    calls = []
    client = GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID, recorder=calls.append)
    client.search_opportunities("cont_1", "pipe_1")
    contact, _ = client.upsert_contact({"email": "long@example.com"})
    client.create_note(contact, "a reply " * 1000 + GHL_TOKEN)
    query, _, note = (c.request for c in calls)
    assert json.loads(query)["query"]["contact_id"] == "cont_1"
    assert len(note) < SENT_LIMIT + 40 and note.endswith("characters in all)")
    assert GHL_TOKEN not in note


def test_a_token_in_a_value_is_masked_before_the_cut(fake_ghl):
    calls = []
    client = GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID, recorder=calls.append)
    contact, _ = client.upsert_contact({"email": "t@example.com"})
    # The token straddles the cut: masked first, no piece of it is kept.
    padding = SENT_LIMIT - len('{\n "body": "') - 5
    client.create_note(contact, "x" * padding + GHL_TOKEN)
    assert GHL_TOKEN[:5] not in calls[-1].request


def test_a_good_reconcile_run_shows_no_errors_line(logged_in, db):
    db[runs.RUNS_TABLE].insert(
        {
            "id": 1,
            "started_at": "2026-01-05T09:00:00.000Z",
            "finished_at": "2026-01-05T09:00:40.000Z",
            "status": "ok",
            "trigger": "schedule",
            "pages": 1,
            "events_found": 1,
            "events_new": 0,
            "errors": "[]",
        },
        pk="id",
    )
    page = logged_in.get("/").get_data(as_text=True)
    assert "1 page read, 1 event found, 0 new." in page
    assert "Errors" not in page and "[]" not in page


def test_a_failed_reconcile_run_shows_its_errors_summarised(logged_in, db):
    error = "Instantly network error: ConnectionError: " + LONG_REFUSED.split(": ", 2)[2]
    db[runs.RUNS_TABLE].insert(
        {
            "id": 1,
            "started_at": iso_ago(60),
            "finished_at": iso_ago(30),
            "status": "error",
            "trigger": "schedule",
            "pages": 0,
            "events_found": 0,
            "events_new": 0,
            "errors": json.dumps([error]),
        },
        pk="id",
    )
    page = logged_in.get("/").get_data(as_text=True)
    assert '<p class="bad small">Error: Instantly unreachable: connection refused</p>' in page
    # In the banner over the page too (the health report's problem or warning).
    assert "<li>last reconciliation failed: Instantly unreachable: connection refused" in page
    assert "Max retries exceeded" not in page


def iso_ago(seconds: float) -> str:
    return iso(datetime.fromtimestamp(time.time() - seconds, UTC))


def test_m041_adds_the_request_column_and_keeps_the_call_totals(db):
    assert db["ghl_calls"].columns_dict["request"] is str
    before = dict(db.execute("SELECT le_ms, calls FROM ghl_call_latency").fetchall())
    db["ghl_calls"].insert(
        {"event_id": 1, "method": "GET", "path": "/x", "status": 200, "duration_ms": 1.0}
    )
    after = dict(db.execute("SELECT le_ms, calls FROM ghl_call_latency").fetchall())
    assert all(after[bound] == before[bound] + 1 for bound in before)
