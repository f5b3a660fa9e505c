"""A real browser on the real app: log in, change a tag template, save, replay a dead event.

Drives Debian's chromium through Playwright (`playwright install` cannot download here).
GHL and Instantly are fakes on 127.0.0.1 (FakeGHLServer, and a small Instantly stand-in
here), both checking each request against the vendor's spec. Screenshots land in
tests/artifacts/: the newcomer's dashboard and settings, and every page at a laptop's and a
phone's width with real-world long values (<page>-<width>.png).
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
from collections.abc import Callable

import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from bridge import create_app
from bridge import settings as settings_mod
from bridge.clock import now_iso
from bridge.config import load_config
from bridge.events.webhook import from_webhook
from bridge.locations import registry as locations
from bridge.setup import subscriptions
from bridge.store import db as store
from bridge.store import inbox, state
from tests.browser_helpers import ARTIFACTS
from tests.helpers import LOCATION_ID, reply_payload
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer
from tests.support.specs import instantly_spec, specs_available
from tests.test_error_summary import LONG_REFUSED
from tests.web_helpers import ADMIN_PASSWORD, admin_env, instantly_webhook

LAPTOP, PHONE = (1366, 900), (390, 844)

pytestmark = pytest.mark.slow


class FakeInstantly:
    """The Instantly calls the page makes (campaigns, lead lists, webhooks), checked against
    the spec."""

    def __init__(self):
        self.webhooks: list[dict] = []
        self.spec_errors: list[str] = []
        app = Flask("fake-instantly")
        app.add_url_rule("/api/v2/campaigns", view_func=self.campaigns)
        app.add_url_rule("/api/v2/lead-lists", view_func=self.campaigns)
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
        """Campaigns and lead lists: none yet."""
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


def new_page(browser, width: int, height: int):
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    return context.new_page()


@pytest.fixture
def page(browser):
    """A laptop's window."""
    tab = new_page(browser, *LAPTOP)
    yield tab
    tab.context.close()


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
    page.wait_for_selector(".banner.error:has-text('1 of 10 checks failed')")
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
    assert page.locator("table.checks td.ok").count() == 10
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


# --- every page at a laptop's and a phone's width, with the long values real data has --------

LONG_EMAIL = "alexandra.konstantinopoulou-vanderbilt.office@marketing-depts.enterprise.example"
LONG_CAMPAIGN = (
    "Q4 2026 Trust & Estate Attorneys: Northeast, Mid-Atlantic and New England warm-lead"
    " follow-up sequence (v3.12)"
)
RECONCILE_ERROR = (
    "Instantly network error: ConnectionError: HTTPSConnectionPool(host='api.instantly.ai',"
    " port=443): Max retries exceeded with url: /api/v2/emails?limit=100&email_type=received"
    "&starting_after=019ab465-0036-7b51-9914-3353686e7dc1 (Caused by NewConnectionError("
    "\"HTTPSConnection(host='api.instantly.ai', port=443): Failed to establish a new"
    ' connection: [Errno 111] Connection refused"))'
)


@pytest.fixture
def long_values(db):
    """An operator's week: an 80-character email, a 110-character campaign, a dead event
    whose error is 2,000 characters of urllib3, a waiting one, a failed reconciliation."""
    assert (len(LONG_EMAIL), len(LONG_CAMPAIGN), len(LONG_REFUSED) > 2000) == (80, 110, True)
    long_one = {"lead_email": LONG_EMAIL, "email": LONG_EMAIL, "campaign_name": LONG_CAMPAIGN}
    done = inbox.enqueue(db, from_webhook(reply_payload(email_id="ok-1", **long_one))).event_id
    inbox.finish(db, done, "done", contact_id="cont_8fQ2xLm3Zp7Wq1")
    dead = inbox.enqueue(db, from_webhook(reply_payload(email_id="dead-1", **long_one))).event_id
    inbox.dead(db, dead, "gave up after 5 attempts: " + LONG_REFUSED)
    waiting = inbox.enqueue(db, from_webhook(reply_payload(email_id="wait-1", **long_one)))
    inbox.retry_later(db, waiting.event_id, 125, "GHL 503: Service Unavailable")
    db["ghl_calls"].insert_all(
        [
            {
                "event_id": dead,
                "method": "POST",
                "path": "/contacts/upsert",
                "status": 0,
                "duration_ms": 5003.1,
                "error": LONG_REFUSED.split(": ", 1)[1][:500],
                "request": json.dumps(
                    {"locationId": "loc_1", "email": LONG_EMAIL, "companyName": LONG_CAMPAIGN},
                    indent=1,
                ),
                "at": "2026-01-05T10:00:01.000Z",
            },
        ]
    )
    db["reconcile_runs"].insert(
        {
            "started_at": "2026-01-05T09:00:00.000Z",
            "finished_at": "2026-01-05T09:00:40.000Z",
            "status": "error",
            "trigger": "schedule",
            "pages": 1,
            "events_found": 1,
            "events_new": 0,
            "errors": json.dumps([RECONCILE_ERROR]),
        }
    )
    # GHL refusing the token, with a message that is one long word, as a gateway's can be.
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "x" * 300
    reason = f"GHL answered 401 (Invalid JWT {jwt}): check GHL_TOKEN and its scopes"
    state.put(
        db,
        state.scoped(state.GHL_PAUSE, LOCATION_ID),
        {"reason": reason, "since": now_iso(), "probe_at": 0},
    )
    last = {"status": 0, "message": LONG_REFUSED.split(": ", 1)[1][:500], "at": now_iso()}
    state.put(db, state.scoped(state.GHL_LAST_ERROR, LOCATION_ID), last)
    return {"dead": dead, "waiting": waiting.event_id}


def too_wide(page) -> list[str]:
    """What sticks out past the window: the page scrolling sideways, or a card."""
    return page.evaluate(
        """() => {
          const width = window.innerWidth, out = [];
          if (document.documentElement.scrollWidth > width)
            out.push(`page is ${document.documentElement.scrollWidth} px wide`);
          for (const el of document.querySelectorAll('.card, .banner, header, main'))
            if (el.getBoundingClientRect().right > width + 0.5)
              out.push(`${el.tagName}.${el.className} ends at ${el.getBoundingClientRect().right}`);
          return out;
        }"""
    )


def squeezed(page) -> list[str]:
    """Cut cells narrower than about ten characters: a column squeezed, not cut."""
    return page.evaluate(
        """() => [...document.querySelectorAll('td.cut')]
            .filter(td => td.textContent.trim() && td.getBoundingClientRect().width < 100)
            .map(td => `${td.title}: ${td.getBoundingClientRect().width} px`)"""
    )


def look(page, name: str, width: int, full_page: bool = True) -> None:
    assert too_wide(page) == [], name
    assert squeezed(page) == [], name
    page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=full_page)


@pytest.mark.parametrize(("width", "height"), [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_every_page_holds_its_shape_with_long_values(
    server, browser, db, long_values, env, width, height
):
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_page(browser, width, height)
    page.goto(server + "/login")
    look(page, "login", width)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Dashboard')")
    banners = page.locator(".banner").all_inner_texts()
    said = "last reconciliation failed: Instantly unreachable: connection refused"
    assert any(said in text for text in banners), banners
    assert page.locator("text=Last GHL error: GHL unreachable: ConnectionError").count() == 1
    assert page.locator(f"td.cut[title='{LONG_EMAIL}']").count() == 3
    assert page.locator(f"td.cut[title='{LONG_CAMPAIGN}']").count() == 3
    summary = "GHL unreachable: connection refused (gave up after 5 tries)"
    assert page.locator(f"td.cut[title='{summary}']").inner_text() == summary
    assert "Max retries exceeded" not in page.content()
    look(page, "dashboard", width)
    # A refused Register answers here, with the fix, the URL still in its field.
    page.fill("#webhook-url", "https://10.1.2.3")
    page.click("button:has-text('Register webhooks')")
    refused = page.locator(".banner.flash.error")
    assert "10.1.2.3 is a private address" in refused.inner_text()
    assert "BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL=1" in refused.inner_text()
    assert page.input_value("#webhook-url") == "https://10.1.2.3"
    look(page, "register-refused", width)

    page.goto(server + "/events")
    assert page.locator(".when", has_text=re.compile(r"^next try in \d+ min$")).count() == 1
    look(page, "events", width)

    page.goto(server + "/dead")
    row = page.locator(f"tr:has(a[href='/events/{long_values['dead']}'])")
    failed = row.locator("time")
    assert re.fullmatch(r"just now|\d+ s ago", failed.inner_text())
    assert failed.get_attribute("title").endswith(" UTC")
    assert summary in row.inner_text()
    look(page, "dead", width)

    page.goto(f"{server}/events/{long_values['dead']}")
    raw = page.locator("pre.raw-error")
    assert "Max retries exceeded" in raw.inner_text()
    page.click("summary:has-text('Sent')")
    assert LONG_EMAIL in page.locator("tr.sent pre").first.inner_text()
    look(page, "event", width)

    # The settings form is test_browser_settings.py's; here its frame, the header and nav.
    page.goto(server + "/settings")
    look(page, "settings", width, full_page=False)
    page.goto(server + "/events/999999")
    assert page.locator("h1").inner_text() == "404"
    look(page, "error", width)
    page.context.close()

    # A bridge without an admin password shows how to set one, at the same width.
    no_password = {k: v for k, v in env.items() if k != "BRIDGE_ADMIN_PASSWORD"}
    url, stop = serve(create_app({"BRIDGE_CONFIG": load_config(no_password), "TESTING": True}))
    try:
        page = new_page(browser, width, height)
        page.goto(url + "/")
        page.wait_for_selector("h1:has-text('Set an admin password first')")
        look(page, "no_password", width)
        page.context.close()
    finally:
        stop()


# --- an agency's bridge: several locations with long names, one paused, events held -------

# As long as a name may be (100 characters).
LONG_LOCATION = (
    "Northeast Regional Trust, Estate & Elder-Law Attorneys Collective: Boston and Hartford"
    " offices #1042"
)
AGENCY = [
    ("ve9EPM428h8vShlRW1KT", LONG_LOCATION, "GHL_TOKEN_NORTHEAST", "pit-ne-5c0f3a9e-2b7d-4f11"),
    ("Qm3xT7bWcN2pLs8dK4vY", "Beta Roofing", "GHL_TOKEN_BETA", "pit-beta-8d1e6b2a-9c4f-4e07"),
]
HELD_CAMPAIGN = "9f9f9f9f-0000-4000-8000-00000000held"


@pytest.mark.parametrize(("width", "height"), [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_an_agencys_pages_hold_their_shape_with_long_location_names(
    browser, db, env, config, public_dns, width, height
):
    ARTIFACTS.mkdir(exist_ok=True)
    tokens = {variable: token for _, _, variable, token in AGENCY}
    agency = dataclasses.replace(config, environ={**env, **tokens})
    _, current = settings_mod.current(db)
    current["locations"] = [
        {"id": loc, "name": name, "token_env": variable, "campaigns": [f"camp-{loc}"]}
        for loc, name, variable, _ in AGENCY
    ]
    current["routing"] = {"default_location": "none"}
    settings_mod.save(db, current)
    routes = locations.build(agency, current, db).route
    for i, (loc, _, _, _) in enumerate(AGENCY):
        payload = reply_payload(
            email_id=f"agency-{i}",
            lead_email=LONG_EMAIL,
            email=LONG_EMAIL,
            campaign_name=LONG_CAMPAIGN,
            campaign_id=f"camp-{loc}",
        )
        event_id = inbox.enqueue(db, from_webhook(payload)).event_id
        inbox.route_pending(db, routes)
        inbox.dead(db, event_id, "gave up after 5 attempts: " + LONG_REFUSED)
    held = reply_payload(
        email_id="held-1",
        lead_email=LONG_EMAIL,
        campaign_name=LONG_CAMPAIGN,
        campaign_id=HELD_CAMPAIGN,
    )
    inbox.enqueue(db, from_webhook(held))
    inbox.route_pending(db, routes)
    long_word = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "x" * 300
    state.put(
        db,
        state.scoped(state.GHL_PAUSE, AGENCY[0][0]),
        {
            "reason": f"GHL answered 401 (Invalid JWT {long_word})",
            "since": now_iso(),
            "probe_at": 0,
        },
    )
    state.put(
        db,
        state.scoped(state.GHL_LAST_ERROR, AGENCY[1][0]),
        {"status": 0, "message": LONG_REFUSED.split(": ", 1)[1][:500], "at": now_iso()},
    )
    url, stop = serve(create_app({"BRIDGE_CONFIG": agency, "TESTING": True}))
    try:
        page = new_page(browser, width, height)
        page.goto(url + "/login")
        page.fill("#password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("h1:has-text('Dashboard')")
        rows = page.locator("#locations tbody tr")
        assert rows.count() == 3  # GHL_LOCATION_ID's and the two declared
        paused = rows.filter(has=page.locator(f"a[href='/events?location={AGENCY[0][0]}']"))
        assert "paused" in paused.inner_text()
        beta = rows.filter(has=page.locator(f"a[href='/events?location={AGENCY[1][0]}']"))
        assert "writing" in beta.inner_text() and "paused" not in beta.inner_text()
        assert "GHL unreachable: ConnectionError" in beta.inner_text()
        assert page.locator("#unrouted").inner_text().startswith("Unrouted (held): 1")
        look(page, "dashboard-locations", width)

        page.goto(url + "/events")
        label = f"{LONG_LOCATION} ({AGENCY[0][0]})"
        assert page.locator("td.cut[data-label='Location']", has_text=label).count() == 1
        page.select_option("select[name=location]", AGENCY[1][0])
        page.click("button:has-text('Filter')")
        page.wait_for_url(re.compile(f"location={AGENCY[1][0]}"))
        assert page.locator("table.events tbody tr").count() == 1
        look(page, "events-locations", width)

        page.goto(url + "/dead")
        assert page.locator("td[data-label='Location']").count() == 2
        look(page, "dead-locations", width)

        page.goto(url + "/events/1")
        assert page.locator("table.kv a", has_text=LONG_LOCATION).count() == 1
        look(page, "event-locations", width)

        page.goto(url + "/unrouted")
        assert page.locator("table.held tbody tr").count() == 1
        assert HELD_CAMPAIGN in page.locator("table.held").inner_text()
        look(page, "unrouted", width)
        page.click("button:has-text('Replay the held event')")
        page.wait_for_selector(".banner.ok:has-text('1 held event queued again')")
        assert page.locator("text=No held events").count() == 1
        for secret in tokens.values():
            assert secret not in page.content()
        page.context.close()
    finally:
        stop()
