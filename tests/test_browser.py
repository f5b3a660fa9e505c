"""A real browser on the real app: log in, change a tag template, save, replay a dead event.

Drives Debian's chromium through Playwright (`playwright install` cannot download here).
Screenshots of the dashboard and the settings page land in tests/artifacts/.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from bridge import db as store
from bridge import inbox
from bridge import settings as settings_mod
from bridge.events import from_webhook
from tests.helpers import reply_payload
from tests.web_helpers import ADMIN_PASSWORD, admin_env

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


@pytest.fixture
def env(env):
    # No GHL or Instantly credentials: the page must work (and say so) without them.
    bare = {k: v for k, v in admin_env(env).items() if k not in ("GHL_TOKEN", "INSTANTLY_API_KEY")}
    return bare


@pytest.fixture
def server(app):
    """The real app on 127.0.0.1, an ephemeral port, in a thread."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(timeout=10)


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


def test_login_change_a_tag_template_and_replay_a_dead_event(server, page, db, events, config):
    ARTIFACTS.mkdir(exist_ok=True)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(server + "/")
    assert "/login" in page.url
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Dashboard')")

    page.click("button:has-text('Run checks')")
    page.wait_for_selector("table.checks")
    assert page.locator("table.checks tr").count() == 9
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.click("header a:has-text('Settings')")
    tags = page.locator("textarea[name='events.reply_received.tags']")
    tags.fill("instantly-replied\nbrowser-{campaign_name}")
    page.click("#save")
    page.wait_for_selector(".banner.ok:has-text('Saved (version 2)')")
    page.reload()
    assert page.locator("textarea[name='events.reply_received.tags']").input_value() == (
        "instantly-replied\nbrowser-{campaign_name}"
    )
    check = store.connect(config.database)
    assert settings_mod.current(check)[1]["events"]["reply_received"]["tags"] == [
        "instantly-replied",
        "browser-{campaign_name}",
    ]
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
