"""The settings page in a real browser, on a laptop and a phone, with long real-world values.

Drives Debian's chromium through Playwright, like tests/test_browser.py. GHL and Instantly
are the fakes from tests/support on 127.0.0.1, with a 110-character campaign name and
workflow names longer than a phone is wide. Screenshots land in
tests/artifacts/settings-<width>.png.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from bridge import settings as settings_mod
from bridge.store import db as store
from tests.browser_helpers import ARTIFACTS
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer
from tests.support.instantly_fake import FakeInstantly
from tests.support.instantly_server import serving
from tests.web_helpers import ADMIN_PASSWORD, INSTANTLY_KEY, admin_env

LONG_CAMPAIGN = (
    "Q3 2026 outbound — dental clinics in the Greater Manchester area, owners and practice "
    "managers, second touch"
)
LONG_WORKFLOW = (
    "Instantly reply follow-up: book a discovery call within two working days, then hand over"
)
WIDTHS = [(1366, 900), (390, 844)]

pytestmark = pytest.mark.slow


@pytest.fixture
def ghl_server() -> Iterator[FakeGHLServer]:
    fake = FakeGHL()
    fake.add_custom_field("contact.icebreaker", "Icebreaker")
    fake.add_custom_field("contact.linkedin_profile_url", "LinkedIn profile URL")
    fake.add_workflow(LONG_WORKFLOW)
    fake.add_workflow("Nurture: monthly newsletter for leads who said not now", status="draft")
    fake.add_pipeline("Instantly outbound pipeline", ["Replied", "Interested", "Booked", "Won"])
    fake.add_pipeline("Partnerships", ["Intro", "Negotiation"])
    server = FakeGHLServer(fake)
    server.start()
    yield server
    server.stop()
    assert fake.spec_errors == []


@pytest.fixture
def fake_instantly() -> Iterator[str]:
    fake = FakeInstantly(api_key=INSTANTLY_KEY)
    fake.add_campaign(LONG_CAMPAIGN)
    fake.add_campaign("Q4 follow-ups")
    fake.add_list("Dentists, Greater Manchester, from the 2026 trade show badge scans")
    with serving(fake) as url:
        yield url
    assert fake.spec_errors == []


@pytest.fixture
def env(env, ghl_server, fake_instantly):
    return {**admin_env(env), "GHL_BASE_URL": ghl_server.url, "INSTANTLY_BASE_URL": fake_instantly}


@pytest.fixture
def long_settings(db, ghl_server):
    """Settings an operator has filled in: the long workflow on, an opportunity in the
    first pipeline, a custom field in the map."""
    fake = ghl_server.fake
    _, current = settings_mod.current(db)
    pipeline = fake.pipelines[0]
    current["actions"]["workflow"].update(enabled=True, workflow_id=fake.workflows[0]["id"])
    current["actions"]["opportunity"].update(
        enabled=True, pipeline_id=pipeline["id"], stage_id=pipeline["stages"][0]["id"]
    )
    current["field_map"].append({"instantly": "icebreaker", "ghl": "contact.icebreaker"})
    current["reconcile"]["campaigns"] = []
    settings_mod.save(db, current)
    return pipeline


@pytest.fixture
def server(app) -> Iterator[str]:
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the test server did not stop"


def open_settings(browser, server: str, width: int, height: int, scripts: bool = True):
    context = browser.new_context(
        viewport={"width": width, "height": height}, java_script_enabled=scripts
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(server + "/login")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Dashboard')")
    page.goto(server + "/settings")
    page.wait_for_selector("#settings-form")
    return context, page


def too_wide(page) -> list[str]:
    """The page's sideways overflow, if any, and the elements that stick out (to fix)."""
    return page.evaluate(
        """() => {
            const over = document.documentElement.scrollWidth - window.innerWidth;
            if (over <= 0) return [];
            const out = [`page is ${over}px wider than the window`];
            for (const el of document.querySelectorAll('body *')) {
                const r = el.getBoundingClientRect();
                if (r.right > window.innerWidth + 1 && out.length < 8) {
                    out.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className}`
                        + ` right=${Math.round(r.right)} name=${el.getAttribute('name')}`);
                }
            }
            return out;
        }"""
    )


def assert_fits(page) -> None:
    problems = too_wide(page)
    assert not problems, "\n".join(problems)


def in_view(page, selector: str) -> bool:
    """Whether the element is wholly inside the window."""
    return page.evaluate(
        """(selector) => {
            const r = document.querySelector(selector).getBoundingClientRect();
            return r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0
                && r.right <= window.innerWidth && r.width > 0;
        }""",
        selector,
    )


def save_button_in_view(page) -> bool:
    return in_view(page, "#save")


@pytest.mark.parametrize(("width", "height"), WIDTHS, ids=[f"{w}px" for w, _ in WIDTHS])
def test_settings_page_holds_its_shape_with_long_values(
    browser, server, long_settings, width, height
):
    ARTIFACTS.mkdir(exist_ok=True)
    context, page = open_settings(browser, server, width, height)
    try:
        # The lists came from GHL and Instantly: long names are there, and fit.
        assert page.locator(f"label:has-text('{LONG_CAMPAIGN}')").count() == 1
        workflow = page.locator("select[name='actions.workflow.workflow_id']")
        assert LONG_WORKFLOW in workflow.locator("option:checked").inner_text()
        assert_fits(page)

        # Jump to a section in the middle: the save button is still on screen.
        page.click("nav .jump a:has-text('Field map')")
        page.evaluate("window.scrollTo(0, (document.body.scrollHeight - innerHeight) / 2)")
        assert save_button_in_view(page)
        assert_fits(page)
        page.screenshot(path=str(ARTIFACTS / f"settings-{width}.png"), full_page=True)
        page.screenshot(path=str(ARTIFACTS / f"settings-{width}-viewport.png"))

        # The stage lists show the chosen pipeline's stages only; choosing another
        # pipeline shows its stages instead.
        stage = page.locator("select[name='actions.opportunity.stage_id']")
        shown = stage.locator("option[data-pipeline]:not([hidden])")
        assert shown.count() == len(long_settings["stages"])
        page.select_option("select[name='actions.opportunity.pipeline_id']", label="Partnerships")
        assert shown.count() == 2
        assert stage.input_value() == ""
    finally:
        context.close()


def test_a_mistyped_custom_field_is_refused_in_the_browser_with_a_suggestion(
    browser, server, long_settings, config
):
    context, page = open_settings(browser, server, 390, 844)
    try:
        page.fill("input[name='field_map.5.ghl']", "contact.icebreakr")
        page.click("#save")
        page.wait_for_selector(".banner.error:has-text('Not saved')")
        row_note = page.locator("tr.note:has-text('did you mean contact.icebreaker?')")
        assert row_note.count() == 1
        assert page.locator("nav .jump a.bad:has-text('Field map')").count() == 1
        # The page opens at the field to fix, the save button still in reach.
        assert row_note.is_visible() and in_view(page, "tr.has-error")
        assert save_button_in_view(page)
        assert_fits(page)
        page.screenshot(path=str(ARTIFACTS / "settings-390-error.png"))
    finally:
        context.close()
    check = store.connect(config.database)
    assert settings_mod.version(check) == 2  # the fixture's save, not this one
    check.close()


def test_without_scripts_every_stage_is_offered_by_name_and_saves(
    browser, server, long_settings, ghl_server, config
):
    partners = ghl_server.fake.pipelines[1]
    context, page = open_settings(browser, server, 1366, 900, scripts=False)
    try:
        stage = page.locator("select[name='actions.opportunity.stage_id']")
        assert stage.locator("option[hidden]").count() == 0
        assert stage.locator("option[data-pipeline]").count() == 6  # both pipelines' stages
        page.select_option("select[name='actions.opportunity.pipeline_id']", label="Partnerships")
        page.select_option(
            "select[name='actions.opportunity.stage_id']", label="Partnerships › Negotiation"
        )
        page.click("#save")
        page.wait_for_selector(".banner.ok:has-text('Saved (version 3)')")
    finally:
        context.close()
    check = store.connect(config.database)
    opportunity = settings_mod.current(check)[1]["actions"]["opportunity"]
    check.close()
    assert (opportunity["pipeline_id"], opportunity["stage_id"]) == (
        partners["id"],
        partners["stages"][1]["id"],
    )


def test_with_ghl_down_a_typed_workflow_id_is_saved_with_a_warning(
    browser, server, long_settings, ghl_server, config
):
    ghl_server.fake.fail_for(600, 503)
    context, page = open_settings(browser, server, 390, 844)
    try:
        assert page.locator(".banner.warn:has-text('Some lists could not be loaded')").count() == 1
        field = page.locator("#w-actions\\.workflow\\.workflow_id")
        assert field.locator("input[type=text]").count() == 1
        assert "GHL's list could not be loaded, so type the id" in field.inner_text()
        field.locator("input[type=text]").fill("wf_typed_while_ghl_was_down")
        page.click("#save")
        page.wait_for_selector(".banner.ok:has-text('Saved (version 3)')")
        warning = page.locator(".banner.warn:has-text('Not checked against GHL')")
        assert "actions.workflow.workflow_id" in warning.inner_text()
        assert_fits(page)
        page.screenshot(path=str(ARTIFACTS / "settings-390-ghl-down.png"))
    finally:
        context.close()
    check = store.connect(config.database)
    workflow = settings_mod.current(check)[1]["actions"]["workflow"]
    check.close()
    assert workflow["workflow_id"] == "wf_typed_while_ghl_was_down"


LONG_CLIENT_A = "Northern Smiles Dental Group — Greater Manchester, Stockport and Oldham practices"
LONG_CLIENT_B = "Brightwater Orthodontics & Implant Centre (Leeds, Harrogate, York) — 2026 retainer"
CLIENT_B = "ve9EPM428h8vShlRW1KT"
CLIENT_B_TOKEN = "pit-7d41c2b8-5e0f-4a8e-9b3d-client-b-only"
WORKSPACE = "3f0c6d1e-8a7b-4c2d-9e5f-000000000b0b"


@pytest.fixture
def two_locations(db, config, ghl_server):
    """GHL_LOCATION_ID's location and a client with a token typed on the page, both with long
    names, routes and an override; the client has a custom field of its own."""
    from bridge.locations import tokens

    client = ghl_server.fake.add_location(CLIENT_B, CLIENT_B_TOKEN, name=LONG_CLIENT_B)
    client.add_custom_field("contact.implant_interest", "Implant interest")
    client.add_workflow("Brightwater: consultation booking follow-up, orthodontics team")
    _, current = settings_mod.current(db)
    current["locations"] = [
        {"id": ghl_server.fake.location_id, "name": LONG_CLIENT_A, "workspaces": [WORKSPACE]},
        {
            "id": CLIENT_B,
            "name": LONG_CLIENT_B,
            "campaigns": [
                "0c9e2b1a-7f44-4c1d-8e2a-5b6f7a8b9c0d",
                "1d0f3c2b-8a55-4d2e-9f3b-6c7a8b9c0d1e",
            ],
            "overrides": {
                "events": {"reply_received": {"tags": ["replied", "brightwater-{campaign_name}"]}}
            },
        },
    ]
    current["instantly"] = {
        "workspaces": [{"id": WORKSPACE, "name": "Northern Smiles outreach", "key_env": ""}]
    }
    current["routing"] = {"default_location": "none"}
    settings_mod.save(db, current)
    tokens.store(db, config.secret_key, CLIENT_B, CLIENT_B_TOKEN)
    return client


@pytest.mark.parametrize(("width", "height"), WIDTHS, ids=[f"{w}px" for w, _ in WIDTHS])
def test_two_locations_with_long_names_fit_and_show_their_own_lists(
    browser, server, two_locations, ghl_server, width, height
):
    ARTIFACTS.mkdir(exist_ok=True)
    context, page = open_settings(browser, server, width, height)
    try:
        cards = page.locator("fieldset.record:not(.blank)")
        assert cards.count() == 2
        assert LONG_CLIENT_B in cards.nth(1).locator("legend").inner_text()
        assert "stored (encrypted)" in cards.nth(1).inner_text()
        assert CLIENT_B_TOKEN not in page.content()
        assert page.locator(
            "select[name='routing.default_location'] option:checked"
        ).inner_text() == ("hold (none): unrouted events wait for a route")
        assert_fits(page)
        page.click("nav .jump a:has-text('Locations')")
        assert save_button_in_view(page)
        page.screenshot(path=str(ARTIFACTS / f"settings-locations-{width}.png"), full_page=True)
        page.screenshot(path=str(ARTIFACTS / f"settings-locations-{width}-viewport.png"))
        # The client's card (its stored token, its override) and the workspaces and routing.
        cards.nth(1).screenshot(path=str(ARTIFACTS / f"settings-location-card-{width}.png"))
        page.locator("#s-instantly").screenshot(
            path=str(ARTIFACTS / f"settings-workspaces-{width}.png")
        )
        page.locator("#s-routing").screenshot(path=str(ARTIFACTS / f"settings-routing-{width}.png"))

        # The pickers show the chosen location's GHL lists, fetched with its own token.
        page.select_option("#lists-location", CLIENT_B)
        page.click("form.lists-from button")
        page.wait_for_selector("#settings-form")
        assert page.locator("#pick-ghl_field option[value='contact.implant_interest']").count() == 1
        assert page.locator("#pick-ghl_field option[value='contact.icebreaker']").count() == 0
        assert_fits(page)
    finally:
        context.close()
    ghl_server.fake.assert_no_cross_location_calls()


@pytest.mark.parametrize(("width", "height"), WIDTHS, ids=[f"{w}px" for w, _ in WIDTHS])
def test_the_reply_message_boxes_show_their_warning_and_save(
    browser, server, db, long_settings, width, height
):
    ARTIFACTS.mkdir(exist_ok=True)
    context, page = open_settings(browser, server, width, height)
    try:
        section = page.locator('[id="s-actions.reply_message"]')
        warning = section.locator("p.warnings[role=note]")
        assert "sends from GHL's own email" in warning.inner_text()
        # Ticked by its label, as a person does; the warning is on screen beside it.
        page.click("label:has-text('Add each reply to the contact')")
        section.scroll_into_view_if_needed()
        assert page.is_checked('[name="actions.reply_message.enabled"]')
        assert warning.is_visible() and in_view(page, '[id="s-actions.reply_message"] p.warnings')
        assert_fits(page)
        section.screenshot(path=str(ARTIFACTS / f"settings-reply-message-{width}.png"))
        page.screenshot(path=str(ARTIFACTS / f"settings-reply-message-{width}-viewport.png"))

        page.click("#save")
        page.wait_for_selector("text=Saved (version 3)")
        assert settings_mod.current(db)[1]["actions"]["reply_message"]["enabled"] is True
        assert page.is_checked('[name="actions.reply_message.enabled"]')
        assert not page.is_checked('[name="actions.reply_message.auto_replies"]')
    finally:
        context.close()
