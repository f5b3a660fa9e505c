"""Counts on the page agree with their nouns: "Wait 1 second", "1 event"."""

from __future__ import annotations

import pytest

from bridge.events.webhook import from_webhook
from bridge.store import inbox
from bridge.web.admin import throttle
from tests.helpers import reply_payload
from tests.web_helpers import ADMIN_PASSWORD, login, post

pytestmark = pytest.mark.admin


def test_a_login_wait_of_one_second_says_second(app, client):
    now = [1000.0]
    app.config["BRIDGE_CLOCK"] = lambda: now[0]
    for _ in range(throttle.FREE_TRIES):
        login(client, "guess")
    now[0] += throttle.FIRST_WAIT_SECONDS - 0.5  # half a second left
    blocked = login(client, ADMIN_PASSWORD)
    assert blocked.status_code == 429
    assert "Wait 1 second, then try again." in blocked.get_data(as_text=True)


def test_one_event_and_one_dead_event_are_singular(logged_in, db):
    event_id = inbox.enqueue(db, from_webhook(reply_payload())).event_id
    assert "1 event<" in logged_in.get("/events").get_data(as_text=True)
    inbox.dead(db, event_id, "GHL 422: phone must be a valid phone number")
    assert "Replay the dead event<" in logged_in.get("/dead").get_data(as_text=True)
    replayed = post(logged_in, "/dead/replay")
    page = logged_in.get(replayed.location).get_data(as_text=True)
    assert "1 dead event queued again." in page
