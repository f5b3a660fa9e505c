"""The fake Instantly's webhooks API: what `webhook register` and `doctor` use, per the spec."""

from __future__ import annotations

import json

import pytest
import responses

from bridge.clients.instantly import InstantlyClient
from bridge.setup import subscriptions
from tests.support.instantly_fake import (
    API_KEY,
    BASE_URL,
    WEBHOOK_ACTIVE,
    FakeInstantly,
)
from tests.support.instantly_responses import install
from tests.support.specs import instantly_spec, specs_available

URL = "https://bridge.example.com/webhooks/instantly"
SECRET = "whsec-demo-2c9e"
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)", "Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def fake():
    made = FakeInstantly()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        install(rsps, made)
        yield made
    assert made.spec_errors == []


@pytest.fixture
def client(fake):
    return InstantlyClient.for_setup(BASE_URL, API_KEY)


def _answer(fake, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    status, _, text = fake.handle(method, BASE_URL + path, dict(BROWSER), data)
    return status, json.loads(text)


def test_register_creates_then_finds_them_unchanged(fake, client):
    created = subscriptions.register(client, URL, SECRET, ["reply_received", "lead_interested"])
    assert [(a.what, a.event_type) for a in created] == [
        ("created", "reply_received"),
        ("created", "lead_interested"),
    ]
    assert [(h["event_type"], h["headers"], h["status"]) for h in fake.webhooks] == [
        ("reply_received", {"X-Bridge-Secret": SECRET}, WEBHOOK_ACTIVE),
        ("lead_interested", {"X-Bridge-Secret": SECRET}, WEBHOOK_ACTIVE),
    ]
    again = subscriptions.register(client, URL, SECRET, ["reply_received", "lead_interested"])
    assert [a.what for a in again] == ["unchanged", "unchanged"]
    found = subscriptions.coverage(client.webhooks(), URL, SECRET, ["reply_received"])
    assert found.ok and found.covered == ["reply_received"]


def test_a_new_secret_is_patched_in_and_other_headers_kept(fake, client):
    hook = fake.add_webhook(URL, "reply_received", headers={"Authorization": "Basic x"})
    actions = subscriptions.register(client, URL, SECRET, ["reply_received"])
    assert [(a.what, a.webhook_id) for a in actions] == [("updated", hook["id"])]
    assert fake.webhooks[0]["headers"] == {"Authorization": "Basic x", "X-Bridge-Secret": SECRET}


def test_a_disabled_webhook_is_resumed_when_asked(fake, client):
    hook = fake.add_webhook(URL, "reply_received", headers={"X-Bridge-Secret": SECRET})
    fake.disable_webhook(hook["id"])
    assert subscriptions.register(client, URL, SECRET, ["reply_received"])[0].what == "disabled"
    resumed = subscriptions.register(client, URL, SECRET, ["reply_received"], resume=True)
    assert resumed[0].what == "resumed"
    assert (fake.webhooks[0]["status"], fake.webhooks[0]["timestamp_error"]) == (1, None)


def test_listing_pages_and_filters(fake):
    for event in ("reply_received", "lead_interested", "reply_received"):
        fake.add_webhook(URL, event)
    status, first = _answer(fake, "GET", "/api/v2/webhooks?limit=2")
    assert status == 200 and len(first["items"]) == 2
    _, rest = _answer(
        fake, "GET", f"/api/v2/webhooks?limit=2&starting_after={first['next_starting_after']}"
    )
    assert len(rest["items"]) == 1
    _, replies = _answer(fake, "GET", "/api/v2/webhooks?event_type=reply_received")
    assert [h["event_type"] for h in replies["items"]] == ["reply_received", "reply_received"]


def test_get_delete_and_unknown_ids(fake):
    hook = fake.add_webhook(URL, "reply_received")
    assert _answer(fake, "GET", f"/api/v2/webhooks/{hook['id']}") == (200, hook)
    assert _answer(fake, "DELETE", f"/api/v2/webhooks/{hook['id']}")[0] == 200
    assert fake.webhooks == []
    status, body = _answer(fake, "GET", f"/api/v2/webhooks/{hook['id']}")
    assert (status, body["message"]) == (404, "Webhook not found")
    assert [c.method for c in fake.writes()] == ["DELETE"]


def test_a_create_without_a_url_is_a_400():
    made = FakeInstantly(validate=False)  # the fake's own check, spec or no spec
    status, body = _answer(made, "POST", "/api/v2/webhooks", {"event_type": "reply_received"})
    assert status == 400 and "target_hook_url" in body["message"]
    assert made.webhooks == []


@pytest.mark.skipif(not specs_available(), reason="../shared/specs is absent")
def test_answers_match_the_webhook_schema(fake):
    hook = fake.add_webhook(URL, "reply_received", headers={"X-Bridge-Secret": SECRET})
    fake.disable_webhook(hook["id"])
    spec = instantly_spec()
    for method, path, body in [
        ("GET", "/api/v2/webhooks", None),
        ("POST", "/api/v2/webhooks", {"target_hook_url": URL, "event_type": "lead_interested"}),
        ("PATCH", f"/api/v2/webhooks/{hook['id']}", {"headers": {"X-Bridge-Secret": "new"}}),
        ("POST", f"/api/v2/webhooks/{hook['id']}/resume", None),
        ("GET", f"/api/v2/webhooks/{hook['id']}", None),
    ]:
        status, answer = _answer(fake, method, path, body)
        assert status == 200, answer
        assert spec.validate_response(method, BASE_URL + path, 200, answer) == [], path
    assert fake.webhooks[0]["status"] == WEBHOOK_ACTIVE  # resumed


def test_subscribers_are_the_active_webhooks_for_the_type_or_all_events(fake):
    mine = fake.add_webhook(URL, "reply_received", headers={"X-Bridge-Secret": SECRET})
    every = fake.add_webhook("https://zapier.example/hook", "all_events")
    off = fake.add_webhook(URL, "reply_received")
    fake.disable_webhook(off["id"])
    fake.add_webhook(URL, "lead_interested")
    found = fake.subscribers("reply_received")
    assert [h["id"] for h in found] == [mine["id"], every["id"]]
    assert found[0]["headers"] == {"X-Bridge-Secret": SECRET}
