"""The dashboard of a bridge whose locations wait for GHL's daily budget (issue 17), in a real
browser at a laptop's and a phone's width: an agency's table with a long-named location held
and another syncing, and a single location's card. Nothing may stick out sideways; the
screenshots land in tests/artifacts/dashboard-budget*-<width>.png. The budgets are real rows
made by bridge/clients/budget.py from GHL's X-RateLimit-* headers."""

from __future__ import annotations

import pytest

from bridge import create_app
from bridge import settings as settings_mod
from bridge.events.webhook import from_webhook
from bridge.setup import health
from bridge.store import inbox
from tests.browser_helpers import ARTIFACTS
from tests.helpers import LOCATION_ID, reply_payload
from tests.test_browser import AGENCY, LAPTOP, LONG_LOCATION, PHONE, look, new_page, serve
from tests.test_ghl_budget_pages import answered, held
from tests.web_helpers import ADMIN_PASSWORD, admin_env

pytestmark = pytest.mark.slow


@pytest.fixture
def env(env):
    return {**admin_env(env), **{variable: token for _, _, variable, token in AGENCY}}


def open_dashboard(browser, config, width: int, height: int):
    url, stop = serve(create_app({"BRIDGE_CONFIG": config, "TESTING": True}))
    page = new_page(browser, width, height)
    page.goto(url + "/login")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Dashboard')")
    return page, stop


@pytest.mark.parametrize(("width", "height"), [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_an_agency_dashboard_with_a_held_location_holds_its_shape(
    browser, db, config, width, height
):
    ARTIFACTS.mkdir(exist_ok=True)
    _, current = settings_mod.current(db)
    current["locations"] = [
        {"id": loc, "name": name, "token_env": variable, "campaigns": [f"camp-{loc}"]}
        for loc, name, variable, _ in AGENCY
    ]
    settings_mod.save(db, current)
    routes = health.served_registry(db, config).route
    for i, (loc, _, _, _) in enumerate(AGENCY):
        payload = reply_payload(email_id=f"budget-{i}", campaign_id=f"camp-{loc}")
        inbox.enqueue(db, from_webhook(payload))
    inbox.route_pending(db, routes)
    long_named, beta = AGENCY[0][0], AGENCY[1][0]
    budgets = [held(db, long_named, daily_remaining=812), answered(db, beta, 154_210)]
    page, stop = open_dashboard(browser, config, width, height)
    try:
        rows = page.locator("#locations tbody tr")
        waiting = rows.filter(has=page.locator(f"a[href='/events?location={long_named}']"))
        cell = waiting.locator("td[data-label='GHL']")
        said = cell.get_attribute("title")
        assert said.startswith(
            f"waiting for GHL's daily budget: GHL's daily budget for {LONG_LOCATION}"
        )
        assert "GHL daily budget: 812 of 200,000 left" in cell.inner_text()
        # On a phone there is no hover: the whole sentence is on the page, wrapped.
        shown = cell.evaluate("td => td.scrollWidth <= td.clientWidth")
        assert shown == (width == PHONE[0]), said
        if width == PHONE[0]:
            assert "(next check " in cell.inner_text()
        syncing = rows.filter(has=page.locator(f"a[href='/events?location={beta}']"))
        assert "writing" in syncing.inner_text()
        assert "GHL daily budget: 154,210 of 200,000 left" in syncing.inner_text()
        plain = rows.filter(has=page.locator(f"a[href='/events?location={LOCATION_ID}']"))
        assert "GHL daily budget" not in plain.inner_text()
        assert "1 waiting for GHL's daily budget" in page.locator(".grid").inner_text()
        banner = page.locator(".banner.warn").inner_text()
        assert f"GHL's daily budget for {LONG_LOCATION}" in banner
        look(page, "dashboard-budget-locations", width)
        page.context.close()
    finally:
        stop()
        for budget in budgets:
            budget.close()


@pytest.mark.parametrize(("width", "height"), [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_a_single_location_dashboard_shows_its_hold_and_holds_its_shape(
    browser, db, config, width, height
):
    ARTIFACTS.mkdir(exist_ok=True)
    inbox.enqueue(db, from_webhook(reply_payload(email_id="budget-single")))
    budget = held(db, LOCATION_ID, daily_remaining=640)
    page, stop = open_dashboard(browser, config, width, height)
    try:
        card = page.locator("section.card", has=page.locator("h2:has-text('GoHighLevel')"))
        text = card.inner_text()
        assert "waiting for GHL's daily budget: GHL's daily budget for" in text
        assert "640 of 200,000 calls left, 1,000 kept in reserve" in text
        assert "GHL daily budget: 640 of 200,000 left" in text
        assert "Writing (not paused)." not in text
        assert page.locator("#locations").count() == 0
        look(page, "dashboard-budget", width)
        page.context.close()
    finally:
        stop()
        budget.close()
