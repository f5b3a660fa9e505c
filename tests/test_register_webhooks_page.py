"""A failed *Register webhooks* answers on the dashboard: what went wrong, what to fix, and
the URL as typed; never a bare error page."""

from __future__ import annotations

import html

import pytest
import requests
import responses

from bridge import create_app
from bridge.config import load_config
from bridge.setup import subscriptions
from bridge.store import state
from tests.web_helpers import INSTANTLY, INSTANTLY_KEY, login, post, resolve_publicly

pytestmark = pytest.mark.admin

HOOKS = f"{INSTANTLY}/api/v2/webhooks"
PUBLIC = "https://bridge.example.com"


@pytest.fixture(autouse=True)
def public_dns(monkeypatch):
    resolve_publicly(monkeypatch)


def register(client, url: str, answer=None):
    """Press Register with `url`; Instantly answers the listing with `answer` (a status and
    body, or an exception) when the bridge gets that far."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        if isinstance(answer, Exception):
            rsps.get(HOOKS, body=answer)
        elif answer:
            status, body = answer
            rsps.get(HOOKS, status=status, json=body)
        response = post(client, "/instantly-webhooks", {"url": url})
        called = sum(1 for c in rsps.calls if c.request.url.startswith(HOOKS))
    return response, html.unescape(response.get_data(as_text=True)), called


def banner(page: str) -> str:
    start = page.index('<div class="banner flash error"')
    return page[start : page.index("</div>", start)]


def test_a_refused_key_says_which_setting_to_fix(logged_in, db):
    body = {"statusCode": 401, "error": "Unauthorized", "message": "Invalid API key"}
    response, page, _ = register(logged_in, PUBLIC, (401, body))
    assert response.status_code == 502
    assert "<h1>Dashboard</h1>" in page
    said = banner(page)
    assert "Registering the webhooks failed: Instantly 401: the API key was refused" in said
    assert "Fix: check INSTANTLY_API_KEY in .env" in said and "webhooks:all scope" in said
    assert INSTANTLY_KEY not in response.get_data(as_text=True)
    assert state.get(db, subscriptions.WEBHOOK_URL_STATE) is None


def test_a_missing_scope_says_which_scope(logged_in, db):
    body = {"statusCode": 403, "error": "Forbidden", "message": "Missing scope webhooks:read"}
    _, page, _ = register(logged_in, PUBLIC, (403, body))
    assert "Fix: give the key the webhooks:all scope" in banner(page)


def test_a_network_error_is_one_line_and_names_the_address(logged_in, db):
    refused = requests.ConnectionError(
        "HTTPSConnectionPool(host='api.instantly.ai', port=443): Max retries exceeded with url:"
        " /api/v2/webhooks (Caused by NewConnectionError(\"HTTPSConnection(host='api.instantly.ai',"
        ' port=443): Failed to establish a new connection: [Errno 111] Connection refused"))'
    )
    response, page, _ = register(logged_in, PUBLIC, refused)
    assert response.status_code == 502
    said = banner(page)
    assert "failed: Instantly unreachable: connection refused" in said
    assert f"Fix: the bridge cannot reach Instantly at {INSTANTLY}" in said
    assert "Max retries exceeded" not in page


def test_a_private_url_is_refused_before_any_call_and_stays_in_the_field(logged_in, db):
    response, page, called = register(logged_in, "https://10.1.2.3")
    assert (response.status_code, called) == (400, 0)
    said = banner(page)
    assert "10.1.2.3 is a private address" in said
    assert "BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL=1" in said
    assert 'value="https://10.1.2.3"' in page


def test_a_missing_key_says_how_to_set_it(env, db):
    app = create_app(
        {"BRIDGE_CONFIG": load_config({**env, "INSTANTLY_API_KEY": ""}), "TESTING": True}
    )
    client = app.test_client()
    login(client)
    response, page, called = register(client, PUBLIC)
    assert (response.status_code, called) == (409, 0)
    assert "INSTANTLY_API_KEY is not set" in banner(page)
    assert "Fix: add INSTANTLY_API_KEY=" in banner(page)
