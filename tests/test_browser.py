"""A real browser on the real app: log in, change a tag template, save, replay a dead event.

Drives Debian's chromium through Playwright (`playwright install` cannot download here).
GHL and Instantly are fakes on 127.0.0.1 (FakeGHLServer, and a small Instantly stand-in
here), both checking each request against the vendor's spec. Screenshots of the
dashboard and the settings page land in tests/artifacts/.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from bridge import settings as settings_mod
from bridge.events.webhook import from_webhook
from bridge.setup import subscriptions
from bridge.store import db as store
from bridge.store import inbox
from tests.helpers import reply_payload
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer
from tests.support.specs import instantly_spec, specs_available
from tests.web_helpers import ADMIN_PASSWORD, admin_env, instantly_webhook

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = pytest.mark.slow


class FakeInstantly:
    """The Instantly calls the page makes (campaigns, webhooks), checked against the spec."""

    def __init__(self):
        self.webhooks: list[dict] = []
        self.spec_errors: list[str] = []
        app = Flask("fake-instantly")
        app.add_url_rule("/api/v2/campaigns", view_func=self.campaigns)
        app.add_url_rule("/api/v2/webhooks", view_func=self.list_webhooks)
        app.add_url_rule("/api/v2/webhooks", view_func=self.create_webhook, methods=["POST"])
        app.add_url_rule(
            "/api/v2/webhooks/<hook_id>/resume", view_func=self.resume_webhook, methods=["POST"]
        )
        app.before_request(self.check)
        self.app = app

    def check(self):
        if not specs_available():
            return
        errors = instantly_spec().validate_request(
            request.method,
            request.path,
            dict(request.headers),
            request.args.to_dict(flat=False),
            request.get_json(silent=True),
        )
        self.spec_errors += errors

    def campaigns(self):
        return jsonify(items=[])

    def list_webhooks(self):
        return jsonify(items=self.webhooks)

    def create_webhook(self):
        body = request.get_json()
        hook = instantly_webhook(
            f"wh-{len(self.webhooks) + 1}",
            body["event_type"],
            body["target_hook_url"],
            body["headers"],
        )
        self.webhooks.append(hook)
        return jsonify(hook)

    def resume_webhook(self, hook_id: str):
        for hook in self.webhooks:
            if hook["id"] == hook_id:
                hook.update(status=1, timestamp_error=None)
                return jsonify(hook)
        return jsonify(statusCode=404, error="Not Found", message="Resource not found"), 404


def serve(app) -> tuple[str, Callable[[], None]]:
    """Serve a WSGI app on 127.0.0.1 and an ephemeral port, in a thread."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        http.shutdown()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the test server did not stop"

    return f"http://127.0.0.1:{http.server_port}", stop


@pytest.fixture
def fake_instantly():
    fake = FakeInstantly()
    fake.url, stop = serve(fake.app)
    yield fake
    stop()
    assert fake.spec_errors == []


@pytest.fixture
def ghl_server():
    fake = FakeGHL()
    fake.add_custom_field("contact.icebreaker", "Icebreaker")
    server = FakeGHLServer(fake)
    server.start()
    yield server
    server.stop()
    assert fake.spec_errors == []


@pytest.fixture
def env(env, ghl_server, fake_instantly):
    """A newcomer's bridge: credentials set, GHL and Instantly reachable (both fakes)."""
    return {
        **admin_env(env),
        "GHL_BASE_URL": ghl_server.url,
        "INSTANTLY_BASE_URL": fake_instantly.url,
    }


PUBLIC_HOST, PUBLIC_ADDRESS = "bridge.example.com", "93.184.215.14"


@pytest.fixture
def public_dns(monkeypatch):
    """The bridge's public name resolves to a public address, as it would in DNS: the
    register form refuses a URL whose host does not (tests never query real DNS)."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == PUBLIC_HOST:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESS, port or 443))]
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def server(app, public_dns):
    """The real app, as a browser reaches it."""
    url, stop = serve(app)
    yield url
    stop()


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} not found: install the Debian package `chromium` (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        yield context.new_page()
        context.close()
        browser.close()


@pytest.fixture
def events(db):
    """A few events in the states an operator meets: done, dead, waiting."""
    done = inbox.enqueue(db, from_webhook(reply_payload())).event_id
    inbox.finish(db, done, "done", contact_id="cont_8fQ2x")
    dead = inbox.enqueue(
        db,
        from_webhook(
            reply_payload(
                email_id="dead-1",
                lead_email="sam.dead@example.com",
                reply_text="<script>alert(1)</script>",
            )
        ),
    ).event_id
    inbox.dead(db, dead, "GHL 422: phone must be a valid phone number")
    inbox.enqueue(db, from_webhook(reply_payload(email_id="wait-1", lead_email="ada@example.com")))
    return {"done": done, "dead": dead}


def test_newcomer_sets_up_changes_a_tag_and_replays_a_dead_event(
    server, page, db, events, config, fake_instantly
):
    ARTIFACTS.mkdir(exist_ok=True)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(server + "/")
    assert "/login" in page.url
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Dashboard')")

    # First checks: everything works but no Instantly webhook delivers here yet.
    page.click("button:has-text('Run checks')")
    page.wait_for_selector(".banner.error:has-text('1 of 9 checks failed')")
    page.fill("#webhook-url", f"https://{PUBLIC_HOST}")
    page.click("button:has-text('Register webhooks')")
    page.wait_for_selector(".banner.ok:has-text('created')")
    # One webhook per event type the default settings sync: replies, unsubscribes, statuses.
    synced = subscriptions.enabled_event_types(settings_mod.load_defaults())
    assert sorted(h["event_type"] for h in fake_instantly.webhooks) == [
        t for t in synced if subscriptions.subscription_for(t)
    ]
    page.click("button:has-text('Run checks')")
    page.wait_for_selector(".banner.ok:has-text('All checks passed.')")
    assert page.locator("table.checks td.ok").count() == 9
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.click("header a:has-text('Settings')")
    tags = page.locator("textarea[name='events.reply_received.tags']")
    tags.fill("instantly-replied\nbrowser-{campaign_name}")
    page.fill("input[name='field_map.5.instantly']", "icebreaker")
    page.fill("input[name='field_map.5.ghl']", "contact.icebreaker")
    assert page.locator("#pick-ghl_field option[value='contact.icebreaker']").count() == 1
    page.click("#save")
    page.wait_for_selector(".banner.ok:has-text('Saved (version 2)')")
    page.reload()
    assert page.locator("textarea[name='events.reply_received.tags']").input_value() == (
        "instantly-replied\nbrowser-{campaign_name}"
    )
    check = store.connect(config.database)
    saved = settings_mod.current(check)[1]
    assert saved["events"]["reply_received"]["tags"] == [
        "instantly-replied",
        "browser-{campaign_name}",
    ]
    assert saved["field_map"][-1] == {"instantly": "icebreaker", "ghl": "contact.icebreaker"}
    page.screenshot(path=str(ARTIFACTS / "settings.png"), full_page=True)

    page.click("header a:has-text('Dead letters')")
    page.wait_for_selector("text=sam.dead@example.com")
    page.click("tr:has-text('sam.dead@example.com') button:has-text('Replay')")
    page.wait_for_selector(".banner.ok:has-text('queued again')")
    assert inbox.get(check, events["dead"])["status"] == "pending"
    assert page.locator("text=No dead events.").count() == 1
    check.close()
    # The reply holding a <script> rendered as text: no alert ever opened.
    page.goto(f"{server}/events/{events['dead']}")
    reply = page.locator("section:has(h2:has-text('Reply')) pre")
    assert reply.inner_text() == "<script>alert(1)</script>"
    assert dialogs == []
