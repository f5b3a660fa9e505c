"""Several GHL locations everywhere a person looks (issue 16): the dashboard's row per
location and its held events, the events and dead-letter lists' location column and
filter, /healthz's and /metrics' per-location state, and `status` / `replay --unrouted`.
Events are routed by the bridge's own routes (inbox.route_pending with the registry)."""

from __future__ import annotations

import dataclasses
import html
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import create_app
from bridge import settings as settings_mod
from bridge.events.webhook import from_webhook
from bridge.setup import health
from bridge.store import db as store
from bridge.store import inbox, state
from bridge.sync.worker import Worker
from tests.helpers import GHL_TOKEN, LOCATION_ID, reply_payload
from tests.web_helpers import all_secrets, post

pytestmark = pytest.mark.admin

ACME, BETA = "ve9EPM428h8vShlRW1KT", "Qm3xT7bWcN2pLs8dK4vY"
# A client's name as agencies write them: long, with an ampersand.
ACME_NAME = "Acme Dental & Orthodontics of Greater Northern New England (Portland office)"
BETA_NAME = "Beta Roofing"
ACME_TOKEN = "pit-acme-4a1f9c0e-7d2b-4e55-9a31-b0c8d7e6f5a4"
BETA_TOKEN = "pit-beta-0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
ACME_CAMPAIGN = "7b1e2c3d-0000-4000-8000-00000000acme"
BETA_WORKSPACE = "5d4c3b2a-0000-4000-8000-00000000beta"
STRAY_CAMPAIGN = "9f9f9f9f-0000-4000-8000-0000000stray"
SECRETS = [*all_secrets(), ACME_TOKEN, BETA_TOKEN]


@pytest.fixture
def env(env):
    return {**env, "GHL_TOKEN_ACME": ACME_TOKEN, "GHL_TOKEN_BETA": BETA_TOKEN}


@pytest.fixture
def app(config, db):
    # /metrics reads the store afresh on every scrape, so a test sees what it just wrote.
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True, "BRIDGE_METRICS_CACHE_SECONDS": 0})
    yield app
    store.forget_cached()


def declare(db, default_location: str = "") -> None:
    """Acme by campaign, Beta by workspace, besides GHL_LOCATION_ID's location."""
    _, current = settings_mod.current(db)
    current["locations"] = [
        {
            "id": ACME,
            "name": ACME_NAME,
            "token_env": "GHL_TOKEN_ACME",
            "campaigns": [ACME_CAMPAIGN],
        },
        {
            "id": BETA,
            "name": BETA_NAME,
            "token_env": "GHL_TOKEN_BETA",
            "workspaces": [BETA_WORKSPACE],
        },
    ]
    current["routing"] = {"default_location": default_location}
    settings_mod.save(db, current)


@pytest.fixture
def agency(db):
    declare(db)


def arrive(db, config, email: str, campaign: str = "", workspace: str = "") -> int:
    """An event as the webhook stores it, then routed as the worker routes it."""
    payload = reply_payload(email_id=f"id-{email}", lead_email=email, email=email)
    if campaign:
        payload["campaign_id"] = campaign
    event = dataclasses.replace(from_webhook(payload), workspace_id=workspace)
    event_id = inbox.enqueue(db, event).event_id
    inbox.route_pending(db, health.served_registry(db, config).route)
    return event_id


def page_of(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    body = response.get_data(as_text=True)
    for secret in SECRETS:
        assert secret not in body, path
    return body


def scrape(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").get_data(as_text=True)
    for secret in SECRETS:
        assert secret not in text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def pause(db, location: str, reason: str) -> None:
    state.put(
        db,
        state.scoped(state.GHL_PAUSE, location),
        {"reason": reason, "since": "2026-01-05T10:00:00+00:00", "probe_at": 0},
    )


# --- routes decide the location each list shows --------------------------------------------


def test_events_list_names_each_location_and_filters_by_it(agency, logged_in, db, config):
    acme = arrive(db, config, "ann@acme.example", campaign=ACME_CAMPAIGN)
    beta = arrive(db, config, "bob@beta.example", workspace=BETA_WORKSPACE)
    plain = arrive(db, config, "cy@plain.example")
    assert [inbox.get(db, i)["location_id"] for i in (acme, beta, plain)] == [
        ACME,
        BETA,
        LOCATION_ID,
    ]
    # One finished before m042 recorded locations: GHL_LOCATION_ID's.
    old = inbox.enqueue(db, from_webhook(reply_payload(email_id="old", lead_email="old@x.example")))
    inbox.finish(db, old.event_id, "done", contact_id="c_old")

    every = page_of(logged_in, "/events")
    assert "<th>Location</th>" in every
    assert f'title="{html.escape(ACME_NAME)} ({ACME})"' in every
    assert f'title="{BETA_NAME} ({BETA})"' in every
    assert '<select name="location"' in every

    acme_only = page_of(logged_in, f"/events?location={ACME}")
    assert "ann@acme.example" in acme_only
    assert "bob@beta.example" not in acme_only and "cy@plain.example" not in acme_only
    assert f'<option value="{ACME}" selected>' in acme_only
    plain_only = page_of(logged_in, f"/events?location={LOCATION_ID}")
    assert "cy@plain.example" in plain_only and "old@x.example" in plain_only
    assert "ann@acme.example" not in plain_only
    # Filters combine, and the pager keeps the location.
    assert "bob@beta.example" in page_of(logged_in, f"/events?location={BETA}&status=pending")
    assert "bob@beta.example" not in page_of(logged_in, f"/events?location={BETA}&status=done")


@pytest.mark.parametrize("value", ["nope", "x" * 300, "<script>"])
def test_an_unknown_location_filter_is_a_400_naming_it(agency, logged_in, value):
    for path in ("/events", "/dead"):
        response = logged_in.get(path, query_string={"location": value})
        assert response.status_code == 400, path
        body = response.get_data(as_text=True)
        assert f"unknown location {value[:40]!r}" in html.unescape(body)
        assert "<script>" not in body


def test_a_location_no_longer_declared_still_filters_its_history(agency, logged_in, db, config):
    event_id = arrive(db, config, "ann@acme.example", campaign=ACME_CAMPAIGN)
    inbox.finish(db, event_id, "done", contact_id="c_ann")
    declare_only_env = settings_mod.current(db)[1]
    declare_only_env["locations"] = []
    settings_mod.save(db, declare_only_env)
    page = page_of(logged_in, f"/events?location={ACME}")
    assert "ann@acme.example" in page
    assert f'<option value="{ACME}" selected>{ACME} (no longer declared)</option>' in page


def test_contact_links_go_to_the_events_own_location(agency, logged_in, db, config):
    event_id = arrive(db, config, "ann@acme.example", campaign=ACME_CAMPAIGN)
    inbox.finish(db, event_id, "done", contact_id="cont_acme_1")
    link = f"https://app.gohighlevel.com/v2/location/{ACME}/contacts/detail/cont_acme_1"
    assert link in page_of(logged_in, "/events")
    detail = page_of(logged_in, f"/events/{event_id}")
    assert link in detail and f"{html.escape(ACME_NAME)} ({ACME})</a>" in detail


def test_dead_letters_name_the_location_and_filter_by_it(agency, logged_in, db, config):
    for email, where in (
        ("ann@acme.example", {"campaign": ACME_CAMPAIGN}),
        ("bob@beta.example", {"workspace": BETA_WORKSPACE}),
    ):
        inbox.dead(db, arrive(db, config, email, **where), "GHL 422: phone is invalid")
    every = page_of(logged_in, "/dead")
    assert "ann@acme.example" in every and "bob@beta.example" in every
    assert f'title="{BETA_NAME} ({BETA})"' in every
    assert "Replay all 2 dead events (every location)" in every
    beta = page_of(logged_in, f"/dead?location={BETA}")
    assert "bob@beta.example" in beta and "ann@acme.example" not in beta
    assert "1 dead event of this location" in beta
    assert f'name="next" value="/dead?location={BETA}"' in beta
    assert "No dead events of this location." in page_of(logged_in, f"/dead?location={LOCATION_ID}")


# --- one location paused: only that one says so ---------------------------------------------


def test_a_paused_location_is_the_only_one_shown_paused(agency, logged_in, client, db, config):
    arrive(db, config, "ann@acme.example", campaign=ACME_CAMPAIGN)
    dead = arrive(db, config, "bob@beta.example", workspace=BETA_WORKSPACE)
    inbox.dead(db, dead, "GHL 422: phone is invalid")
    pause(db, ACME, "GHL answered 401 (Invalid JWT): check GHL_TOKEN_ACME")
    state.put(
        db,
        state.scoped(state.GHL_LAST_ERROR, BETA),
        {"status": 503, "message": "Service Unavailable", "at": "2026-01-05T10:00:00"},
    )

    page = page_of(logged_in, "/")
    assert "3 locations:" in page and "1 paused" in page
    rows = page.split('<section class="card" id="locations">', 1)[1].split("</table>", 1)[0]
    acme_row, beta_row, plain_row = (
        next(r for r in rows.split("<tr")[2:] if f"location={loc}" in r)
        for loc in (ACME, BETA, LOCATION_ID)
    )
    assert "<strong>paused</strong>: GHL answered 401 (Invalid JWT)" in acme_row
    assert ">writing<" in beta_row and ">writing<" in plain_row
    assert "paused" not in beta_row and "paused" not in plain_row
    assert "GHL 503: Service Unavailable" in beta_row
    assert f'href="/dead?location={BETA}">1</a>' in beta_row
    assert 'data-label="Queue">1<' in acme_row

    body = client.get("/healthz").get_json()
    assert body["status"] == "unhealthy" and body["failing_checks"] == ["dead_events", "ghl_paused"]
    assert body["problems"] == [
        f"location {ACME_NAME} ({ACME}): GHL writes paused: GHL answered 401 (Invalid JWT):"
        " check GHL_TOKEN_ACME; the bridge tries again every minute and resumes by itself"
    ]
    blocks = body["locations"]
    assert set(blocks) == {LOCATION_ID, ACME, BETA}
    assert (blocks[ACME]["status"], blocks[BETA]["status"], blocks[LOCATION_ID]["status"]) == (
        "unhealthy",
        "degraded",
        "ok",
    )
    assert blocks[ACME]["ghl_paused"]["reason"].startswith("GHL answered 401")
    assert blocks[BETA]["ghl_paused"] is None and blocks[BETA]["queue"]["dead"] == 1
    assert blocks[BETA]["last_ghl_error"]["status"] == 503
    assert blocks[ACME]["label"] == f"{ACME_NAME} ({ACME})"
    # The keys from before locations: a paused location's pause, the latest error.
    assert body["ghl_paused"]["reason"].startswith("GHL answered 401")
    assert body["last_ghl_error"]["status"] == 503

    samples = scrape(client)
    assert samples[("bridge_ghl_paused", (("location", ACME),))] == 1
    assert samples[("bridge_ghl_paused", (("location", BETA),))] == 0
    assert samples[("bridge_ghl_paused", (("location", LOCATION_ID),))] == 0
    assert samples[("bridge_queue_depth", (("location", ACME),))] == 1
    assert samples[("bridge_queue_depth", (("location", BETA),))] == 0
    dead_beta = (("event_type", "reply_received"), ("location", BETA), ("status", "dead"))
    assert samples[("bridge_events", dead_beta)] == 1


def test_a_location_failing_long_is_named_and_sets_the_bridge_gauge(agency, client, db, config):
    at = "2026-01-05T10:00:00+00:00"
    state.put(db, state.scoped(state.GHL_FAILING_SINCE, BETA), {"at": at, "status": 503})
    body = client.get("/healthz").get_json()
    assert body["status"] == "unhealthy" and body["failing_checks"] == ["ghl_failing"]
    assert body["problems"][0].startswith(
        f"location {BETA_NAME} ({BETA}): every GHL call has failed"
    )
    assert body["locations"][BETA]["ghl_failing_since"]["at"] == at
    assert body["locations"][ACME]["ghl_failing_since"] is None
    assert body["ghl_failing_since"]["at"] == at
    assert body["ghl_failing_seconds"] == body["locations"][BETA]["ghl_failing_seconds"] > 300
    # Read a moment later than /healthz's, so a fraction of a second apart.
    scraped = scrape(client)[("bridge_ghl_failing_seconds", ())]
    assert scraped == pytest.approx(body["ghl_failing_seconds"], abs=2)


def test_a_location_without_its_token_is_a_problem_naming_it(agency, client, db, config, env):
    missing = {k: v for k, v in env.items() if k != "GHL_TOKEN_BETA"}
    without = dataclasses.replace(config, environ=missing)
    app = create_app({"BRIDGE_CONFIG": without, "TESTING": True})
    body = app.test_client().get("/healthz").get_json()
    assert body["failing_checks"] == ["ghl_credentials_missing"]
    assert "GHL_TOKEN_BETA is not set" in body["problems"][0]
    assert body["locations"][BETA]["status"] == "unhealthy"
    assert body["locations"][ACME]["status"] == "ok"


# --- held events: counted, listed with why, replayed ----------------------------------------


def test_held_events_are_counted_listed_and_replayed(logged_in, client, db, config):
    declare(db, default_location="none")
    held = arrive(
        db, config, "stray@nowhere.example", campaign=STRAY_CAMPAIGN, workspace="ws-unknown"
    )
    assert inbox.get(db, held)["status"] == inbox.UNROUTED

    dashboard = page_of(logged_in, "/")
    assert 'Unrouted (held): <b class="warn">1</b>' in dashboard
    assert 'href="/unrouted"' in dashboard
    assert "1 event is held: no route claims their campaign or workspace" in dashboard

    listed = page_of(logged_in, "/unrouted")
    assert "no route claims their campaign or workspace and there is no default location" in listed
    assert "Add a route on the" in listed and "then Replay" in listed
    assert STRAY_CAMPAIGN in listed and "ws-unknown" in listed and "Trust Attorneys Q4" in listed
    assert "Replay the held event" in listed
    assert html.escape("held: no route claims it") in page_of(logged_in, f"/events/{held}")

    body = client.get("/healthz").get_json()
    assert (body["status"], body["unrouted"], body["failing_checks"]) == (
        "degraded",
        1,
        ["unrouted_events"],
    )
    assert body["warnings"] == [health.unrouted_warning(1)]
    assert "add a route on the settings page, then Replay" in body["warnings"][0]
    samples = scrape(client)
    assert samples[("bridge_unrouted_events", ())] == 1
    held_series = (("event_type", "reply_received"), ("location", ""), ("status", "unrouted"))
    assert samples[("bridge_events", held_series)] == 1

    # A route for its campaign, then Replay: it is routed there.
    _, current = settings_mod.current(db)
    current["locations"][0]["campaigns"].append(STRAY_CAMPAIGN)
    settings_mod.save(db, current)
    replayed = post(logged_in, "/unrouted/replay", follow_redirects=True)
    assert replayed.status_code == 200
    assert "1 held event queued again" in replayed.get_data(as_text=True)
    assert inbox.get(db, held)["status"] == inbox.PENDING
    inbox.route_pending(db, health.served_registry(db, config).route)
    assert inbox.get(db, held)["location_id"] == ACME
    assert "No held events" in page_of(logged_in, "/unrouted")
    assert client.get("/healthz").get_json()["unrouted"] == 0


def test_replay_needs_the_forms_csrf_token(logged_in, db, config):
    declare(db, default_location="none")
    held = arrive(db, config, "stray@nowhere.example", campaign=STRAY_CAMPAIGN)
    assert logged_in.post("/unrouted/replay").status_code == 400
    assert inbox.get(db, held)["status"] == inbox.UNROUTED


# --- one location: the dashboard says nothing new ------------------------------------------


def test_a_single_location_dashboard_has_no_location_table_or_held_line(logged_in, db, config):
    arrive(db, config, "cy@plain.example")
    page = page_of(logged_in, "/")
    assert 'id="locations"' not in page and "Unrouted (held)" not in page
    assert "<th>Location</th>" not in page
    assert "Writing (not paused)." in page
    events = page_of(logged_in, "/events")
    assert "<th>Location</th>" not in events and 'name="location"' not in events
    # The filter still answers, for a link from elsewhere.
    assert "cy@plain.example" in page_of(logged_in, f"/events?location={LOCATION_ID}")


def test_a_single_location_healthz_keeps_its_keys(client, db, config):
    pause(db, LOCATION_ID, "GHL answered 401")
    body = client.get("/healthz").get_json()
    assert body["problems"][0].startswith("GHL writes paused: GHL answered 401")
    assert body["ghl_paused"]["reason"] == "GHL answered 401"
    assert list(body["locations"]) == [LOCATION_ID]
    assert body["locations"][LOCATION_ID]["status"] == "unhealthy"
    assert body["unrouted"] == 0
    assert GHL_TOKEN not in json.dumps(body)


# --- the command line -----------------------------------------------------------------------


def test_status_prints_each_location_and_the_held_count(runner, db, config):
    declare(db, default_location="none")
    arrive(db, config, "ann@acme.example", campaign=ACME_CAMPAIGN)
    arrive(db, config, "stray@nowhere.example", campaign=STRAY_CAMPAIGN)
    pause(db, BETA, "GHL answered 403 (The token does not have access to this location.)")
    result = runner.invoke(["status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"location {ACME_NAME} ({ACME}): ok; queue 1, done 0, dead 0" in lines
    assert any(
        line.startswith(
            f"location {BETA_NAME} ({BETA}): unhealthy; queue 0, done 0, dead 0;"
            " paused: GHL answered 403"
        )
        for line in lines
    ), lines
    assert "unrouted: 1 held; add a route, then `instantly-ghl-bridge replay --unrouted`" in lines
    for secret in SECRETS:
        assert secret not in result.output

    as_json = json.loads(runner.invoke(["status", "--json"]).output)
    assert as_json["unrouted"] == 1
    assert as_json["locations"][BETA]["ghl_paused"]["reason"].startswith("GHL answered 403")
    assert as_json["locations"][ACME]["queue"]["pending"] == 1


def test_replay_unrouted_queues_the_held_events_again(runner, db, config):
    declare(db, default_location="none")
    held = arrive(db, config, "stray@nowhere.example", campaign=STRAY_CAMPAIGN)
    dead = arrive(db, config, "ann@acme.example", campaign=ACME_CAMPAIGN)
    inbox.dead(db, dead, "GHL 422")
    result = runner.invoke(["replay", "--unrouted"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("queued 1 held event again")
    assert inbox.get(db, held)["status"] == inbox.PENDING
    assert inbox.get(db, dead)["status"] == inbox.DEAD, "dead events wait for their own replay"
    refused = runner.invoke(["replay", "--unrouted", str(dead)])
    assert refused.exit_code == 2 and "not both" in refused.output


# --- end to end: the worker syncs two locations, GHL refuses one's token ------------------


def test_a_refused_token_pauses_only_its_location_on_every_page(
    agency, logged_in, client, db, config, env, fake_ghl
):
    fake_ghl.add_location(ACME, ACME_TOKEN, name=ACME_NAME)
    # Beta's variable holds a token GHL no longer accepts: 401 for every Beta call.
    fake_ghl.add_location(BETA, "pit-beta-the-current-one", name=BETA_NAME)
    acme = arrive(db, config, "ann@acme.example", campaign=ACME_CAMPAIGN)
    beta = arrive(db, config, "bob@beta.example", workspace=BETA_WORKSPACE)
    Worker(config, db=db).run(drain=True)
    assert inbox.get(db, acme)["status"] == inbox.DONE
    assert fake_ghl.location(ACME).contact_by_email("ann@acme.example") is not None
    assert inbox.get(db, beta)["status"] == inbox.PENDING
    assert state.get(db, state.scoped(state.GHL_PAUSE, BETA)) is not None
    assert state.get(db, state.scoped(state.GHL_PAUSE, ACME)) is None

    body = client.get("/healthz").get_json()
    assert body["failing_checks"] == ["ghl_paused"]
    assert body["problems"][0].startswith(f"location {BETA_NAME} ({BETA}): GHL writes paused")
    assert body["locations"][ACME]["status"] == "ok"
    assert body["locations"][ACME]["queue"]["done"] == 1
    assert body["locations"][BETA]["queue"]["pending"] == 1
    samples = scrape(client)
    assert samples[("bridge_ghl_paused", (("location", BETA),))] == 1
    assert samples[("bridge_ghl_paused", (("location", ACME),))] == 0
    done = (("event_type", "reply_received"), ("location", ACME), ("status", "done"))
    assert samples[("bridge_events", done)] == 1

    page = page_of(logged_in, "/")
    assert "1 paused" in page
    contact = inbox.get(db, acme)["contact_id"]
    assert f"/v2/location/{ACME}/contacts/detail/{contact}" in page
    assert "pit-beta-the-current-one" not in page


def test_stored_settings_that_no_longer_validate_are_a_problem_not_a_500(logged_in, client, db):
    body = json.loads(db.execute("SELECT body FROM settings WHERE id = 1").fetchone()[0])
    body["locations"] = [{"id": ACME, "overrides": {"retention": {}}}]
    db.execute(
        "UPDATE settings SET body = ?, version = version + 1 WHERE id = 1", [json.dumps(body)]
    )
    health_body = client.get("/healthz").get_json()
    assert "settings_invalid" in health_body["failing_checks"]
    problem = next(p for p in health_body["problems"] if p.startswith("stored settings"))
    assert "locations.0.overrides" in problem and "settings import FILE" in problem
    # The pages open, with GHL_LOCATION_ID's location alone.
    assert "stored settings are not valid" in page_of(logged_in, "/")
    assert "<th>Location</th>" not in page_of(logged_in, "/events")
