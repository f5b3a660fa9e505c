"""A reply found by polling carries what the conversation action reads from a webhook: the
same subject, text, html, time, Instantly thread and Unibox link, under the same key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from bridge import settings as settings_mod
from bridge.events import polled
from bridge.events.webhook import from_webhook
from bridge.reconcile.reconciler import Options, Reconciler
from tests.helpers import SAMPLES_DIR

NOW = datetime(2026, 1, 20, tzinfo=UTC)
# Captured reply webhooks that name their email and link a Unibox thread (the recent shape).
THREADED = (
    "reply_received.equity-connect.2025-10-15.json",
    "reply_received.middleware-instantly-attio.2025-11-24.json",
)


def sample(name: str) -> dict:
    """A captured delivery's body."""
    data = json.loads((SAMPLES_DIR / name).read_text())
    return data.get("body", data) if "headers" in data else data


def webhook_thread(unibox_url: str) -> str:
    """The Instantly thread id a webhook's unibox_url searches for."""
    (search,) = parse_qs(urlsplit(unibox_url).query)["thread_search"]
    assert search.startswith("thread:")
    return search.removeprefix("thread:")


def listed_email(fake_instantly, body: dict) -> dict:
    """The reply `GET /api/v2/emails` lists for this webhook's reply, from the fake's shape."""
    email = fake_instantly.add_reply(
        body["lead_email"],
        datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")),
        body["campaign_id"],
        subject=body["reply_subject"],
        text=body["reply_text"],
        email_id=body["email_id"],
    )
    email["body"]["html"] = body.get("reply_html")
    email["organization_id"] = body["workspace"]
    email["thread_id"] = webhook_thread(body["unibox_url"])
    return email


@pytest.mark.parametrize("name", THREADED)
def test_a_polled_reply_and_its_webhook_give_the_action_the_same_content(fake_instantly, name):
    body = sample(name)
    arrived = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")) + timedelta(
        seconds=2
    )
    webhook = from_webhook(body, received_at=arrived)
    found = polled.reply_event(
        listed_email(fake_instantly, body),
        "reply_received",
        None,
        body["campaign_name"],
        found_at=arrived,
    )

    assert found.key == webhook.key == f"reply:{body['email_id']}"
    assert found.occurred_at == webhook.occurred_at
    for field in ("reply_subject", "reply_text", "reply_html", "timestamp", "unibox_url"):
        assert found.payload.get(field) == webhook.payload.get(field), field
    assert found.payload["thread_id"] == webhook_thread(webhook.payload["unibox_url"])


def test_the_unibox_link_is_built_only_when_thread_and_workspace_are_known():
    email = {"id": "e1", "lead": "a@example.com", "timestamp_created": "2026-01-19T10:00:00Z"}
    bare = polled.reply_event(email, "reply_received", None, "Q1")
    no_workspace = polled.reply_event({**email, "thread_id": "t1"}, "reply_received", None, "Q1")
    no_thread = polled.reply_event({**email, "organization_id": "w1"}, "reply_received", None, "")

    assert "unibox_url" not in bare.payload and "thread_id" not in bare.payload
    assert "unibox_url" not in no_workspace.payload and no_workspace.payload["thread_id"] == "t1"
    assert "unibox_url" not in no_thread.payload and "thread_id" not in no_thread.payload
    assert bare.key == no_workspace.key == no_thread.key == "reply:e1"


def test_the_unibox_link_encodes_what_would_break_its_query():
    url = polled.unibox_url("a&b=c d/é", "w#1")
    assert url == (
        "https://app.instantly.ai/app/unibox?thread_search=thread:a%26b%3Dc%20d%2F%C3%A9"
        "&selected_wks=w%231"
    )
    assert webhook_thread(url) == "a&b=c d/é"
    assert parse_qs(urlsplit(url).query)["selected_wks"] == ["w#1"]


def test_a_custom_variable_named_thread_id_does_not_replace_the_thread(fake_instantly):
    email = fake_instantly.add_reply("a@example.com", NOW - timedelta(hours=1))
    lead = {"email": "a@example.com", "payload": {"thread_id": "not-a-thread"}}
    found = polled.reply_event(email, "reply_received", lead, "")
    assert found.payload["thread_id"] == email["thread_id"]


def test_reconciliation_stores_the_thread_and_unibox_link_under_the_same_key(
    db, fake_instantly, instantly
):
    reply = fake_instantly.add_reply("a@example.com", NOW - timedelta(hours=1))
    Reconciler(db, instantly, settings_mod.current(db)[1], now=lambda: NOW).run(
        Options(statuses=False)
    )
    (row,) = db.query("SELECT key, payload FROM events")
    payload = json.loads(row["payload"])

    assert row["key"] == f"reply:{reply['id']}"
    assert payload["thread_id"] == reply["thread_id"]
    assert payload["unibox_url"] == (
        "https://app.instantly.ai/app/unibox?thread_search=thread:"
        f"{reply['thread_id']}&selected_wks={fake_instantly.organization}"
    )
