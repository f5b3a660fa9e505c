"""Dashboard, events, event detail, dead letters, reconcile-now: what the operator sees."""

from __future__ import annotations

import html

import pytest

from bridge.events.webhook import from_webhook
from bridge.reconcile import runs
from bridge.store import inbox, state
from tests.helpers import LOCATION_ID, reply_payload
from tests.web_helpers import all_secrets, post

pytestmark = pytest.mark.admin

XSS = '<script>alert("x")</script>'


def enqueue(db, **overrides):
    return inbox.enqueue(db, from_webhook(reply_payload(**overrides))).event_id


def test_dashboard_shows_counts_oldest_pending_pause_and_last_error(logged_in, db):
    enqueue(db)
    dead_id = enqueue(db, email_id="e-2", lead_email="dead@example.com")
    inbox.dead(db, dead_id, "GHL 422: phone is invalid")
    state.put(
        db,
        state.scoped(state.GHL_PAUSE, LOCATION_ID),
        {
            "reason": "GHL answered 401 (Invalid JWT)",
            "since": "2026-01-05T10:00:00+00:00",
            "probe_at": 0,
        },
    )
    state.put(
        db,
        state.scoped(state.GHL_LAST_ERROR, LOCATION_ID),
        {"status": 401, "message": "Invalid JWT", "at": "2026-01-05T10:00:00"},
    )
    page = logged_in.get("/").get_data(as_text=True)
    assert "Writes paused" in page and "GHL answered 401 (Invalid JWT)" in page
    assert "GHL 401: token rejected (Invalid JWT)" in page
    assert "Oldest waiting event" in page and "s old" in page
    assert 'href="/events?status=dead"' in page
    assert "dead@example.com" in page and "jordan.lead@example.com" in page
    assert "No run yet." in page


def test_events_filter_by_status_and_search_by_email(logged_in, db):
    enqueue(db, email_id="a", lead_email="ann@alpha.example")
    done = enqueue(db, email_id="b", lead_email="bob@beta.example")
    inbox.finish(db, done, "done", contact_id="c_bob")
    page = logged_in.get("/events?status=done").get_data(as_text=True)
    assert "bob@beta.example" in page and "ann@alpha.example" not in page
    page = logged_in.get("/events?q=ALPHA").get_data(as_text=True)
    assert "ann@alpha.example" in page and "bob@beta.example" not in page
    # LIKE wildcards in the search are plain characters.
    page = logged_in.get("/events?q=%25").get_data(as_text=True)
    assert "ann@alpha.example" not in page


def test_ghl_contact_id_links_to_the_contact_in_the_location(logged_in, db):
    event_id = enqueue(db)
    inbox.finish(db, event_id, "done", contact_id="cont_42")
    page = logged_in.get("/events").get_data(as_text=True)
    assert (
        f'href="https://app.gohighlevel.com/v2/location/{LOCATION_ID}/contacts/detail/cont_42"'
        in page
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=nope", "unknown status"),
        ("page=abc", "page must be a number"),
        ("page=0", "page must be 1 or more"),
    ],
)
def test_bad_filters_get_a_400_with_a_message(logged_in, query, message):
    response = logged_in.get(f"/events?{query}")
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_unknown_event_is_a_404_page(logged_in):
    response = logged_in.get("/events/999")
    assert response.status_code == 404
    assert "there is no event 999" in response.get_data(as_text=True)


def test_event_detail_shows_payload_and_the_ghl_calls_it_made(logged_in, db):
    event_id = enqueue(db)
    db["ghl_calls"].insert_all(
        [
            {
                "event_id": event_id,
                "method": "POST",
                "path": "/contacts/upsert",
                "status": 200,
                "duration_ms": 120.5,
                "error": None,
                "at": "2026-01-05T10:00:01",
            },
            {
                "event_id": event_id,
                "method": "POST",
                "path": "/contacts/c1/tags",
                "status": 422,
                "duration_ms": 80.0,
                "error": "tags must be an array",
                "at": "2026-01-05T10:00:02",
            },
            {
                "event_id": event_id + 1,
                "method": "GET",
                "path": "/other",
                "status": 200,
                "duration_ms": 1.0,
                "error": None,
                "at": "2026-01-05T10:00:03",
            },
        ]
    )
    page = logged_in.get(f"/events/{event_id}").get_data(as_text=True)
    assert "POST /contacts/upsert" in page and "POST /contacts/c1/tags" in page
    assert "tags must be an array" in page
    assert "/other" not in page
    assert "Trust Attorneys Q4" in page
    assert "&#34;campaign_name&#34;: &#34;Trust Attorneys Q4&#34;" in page


def test_reply_text_and_payload_values_are_escaped(logged_in, db):
    # Custom variables arrive as extra top-level keys: their names and values are the
    # lead owner's text too.
    custom = {"icebreaker": XSS, "<img src=x onerror=alert(1)>": "value"}
    event_id = enqueue(db, reply_text=XSS, campaign_name=XSS, firstName=XSS, **custom)
    inbox.dead(db, event_id, f"GHL 422: {XSS}")
    for path in ["/", "/events", f"/events/{event_id}", "/dead"]:
        page = logged_in.get(path).get_data(as_text=True)
        assert XSS not in page, path
        assert "<script>" not in page, path
        assert "<img src=x" not in page, path
        assert (
            html.escape(XSS, quote=False).replace('"', "&#34;") in page or "&lt;script&gt;" in page
        )


def test_replay_one_dead_event_from_its_page(logged_in, db):
    event_id = enqueue(db)
    inbox.dead(db, event_id, "GHL 422: bad")
    page = logged_in.get(f"/events/{event_id}").get_data(as_text=True)
    assert "Replay this event" in page
    response = post(logged_in, f"/events/{event_id}/replay")
    assert response.status_code == 302
    row = inbox.get(db, event_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert "queued again" in logged_in.get(response.location).get_data(as_text=True)


def test_replaying_a_queued_event_is_a_409(logged_in, db):
    event_id = enqueue(db)
    response = post(logged_in, f"/events/{event_id}/replay")
    assert response.status_code == 409
    assert "already queued" in response.get_data(as_text=True)


def test_dead_letters_replay_one_or_all(logged_in, db):
    ids = [enqueue(db, email_id=f"d{i}", lead_email=f"d{i}@example.com") for i in range(3)]
    kept = enqueue(db, email_id="live", lead_email="live@example.com")
    for event_id in ids:
        inbox.dead(db, event_id, "GHL 500")
    page = logged_in.get("/dead").get_data(as_text=True)
    assert "Replay all 3 dead events" in page
    assert "live@example.com" not in page
    response = post(logged_in, f"/events/{ids[0]}/replay", {"next": "/dead"})
    assert response.location == "/dead"
    assert inbox.get(db, ids[0])["status"] == "pending"
    response = post(logged_in, "/dead/replay")
    assert "2 dead events queued again" in logged_in.get(response.location).get_data(as_text=True)
    assert inbox.counts(db)["dead"] == 0
    assert inbox.get(db, kept)["attempts"] == 0


def test_reconcile_now_asks_the_worker_and_the_dashboard_shows_the_last_run(logged_in, db):
    # The reconciliation worker's side of the seam (bridge/reconcile/runs.py): its run table.
    db[runs.RUNS_TABLE].insert(
        {
            "id": 1,
            "started_at": "2026-01-05T09:00:00+00:00",
            "finished_at": "2026-01-05T09:00:40+00:00",
            "status": "ok",
            "trigger": "schedule",
            "pages": 3,
            "events_found": 41,
            "events_new": 2,
            "errors": None,
        },
        pk="id",
    )
    response = post(logged_in, "/reconcile")
    assert response.status_code == 302
    assert runs.requested(db)["by"] == "page"
    page = logged_in.get("/").get_data(as_text=True)
    assert "Last run #1" in page and "41 events found, 2 new" in page
    assert "waiting for the worker" in page
    again = runs.request_run(db)
    assert again == runs.requested(db)


def test_no_page_shows_a_secret(logged_in, db, client):
    event_id = enqueue(db)
    inbox.dead(db, event_id, "GHL 401: token ghl-test-token refused")
    pages = [
        "/",
        "/events",
        f"/events/{event_id}",
        "/dead",
        "/settings",
        "/settings/export",
        "/metrics",
        "/healthz",
        "/login",
    ]
    for path in pages:
        body = logged_in.get(path).get_data(as_text=True)
        for secret in all_secrets():
            assert secret not in body, (path, secret)
    settings_page = logged_in.get("/settings").get_data(as_text=True)
    assert "set, ending …XYZW" in settings_page
    assert 'BRIDGE_WEBHOOK_SECRET</th><td class="ok">set</td>' in settings_page
