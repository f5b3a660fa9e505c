"""A location waiting for GHL's daily budget, everywhere a person looks (issue 17): /healthz's
`ghl_daily_budget` warning and each location's `ghl_budget`, the dashboard's row and the
single-location card, `status` and `status --json`, and /metrics' gauges. The budgets are
real rows, made by bridge/store/budget.py from the X-RateLimit-* headers GHL answers with."""

from __future__ import annotations

import html
import json
import time

import pytest

from bridge import create_app
from bridge.clients.budget import Budget, BudgetSpent
from bridge.setup import health
from bridge.store import db as store
from bridge.store import inbox
from tests.helpers import LOCATION_ID
from tests.test_location_pages import (
    ACME,
    ACME_CAMPAIGN,
    ACME_NAME,
    ACME_TOKEN,
    BETA,
    BETA_NAME,
    BETA_TOKEN,
    BETA_WORKSPACE,
    SECRETS,
    arrive,
    declare,
    page_of,
    scrape,
)

pytestmark = pytest.mark.admin

ACME_LABEL, BETA_LABEL = f"{ACME_NAME} ({ACME})", f"{BETA_NAME} ({BETA})"
# /healthz's keys from before there were budgets: monitors read them.
BRIDGE_KEYS = {
    "database",
    "queue",
    "oldest_pending_seconds",
    "oldest_due_seconds",
    "ghl_paused",
    "last_ghl_error",
    "ghl_failing_since",
    "ghl_failing_seconds",
    "ghl_retry_after_capped",
    "missing",
    "reconcile",
    "unrouted",
    "default_location",
    "locations",
    "status",
    "problems",
    "warnings",
    "failing_checks",
}
BUDGET_KEYS = {
    "daily_limit",
    "daily_remaining",
    "reserve",
    "held_since",
    "next_check_at",
    "limit",
    "window_seconds",
    "in_window",
    "reported_at",
    "message",
}


@pytest.fixture
def env(env):
    return {**env, "GHL_TOKEN_ACME": ACME_TOKEN, "GHL_TOKEN_BETA": BETA_TOKEN}


@pytest.fixture
def app(config, db):
    # /metrics reads the store afresh on every scrape, so a test sees what it just wrote.
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True, "BRIDGE_METRICS_CACHE_SECONDS": 0})
    yield app
    store.forget_cached()


def ghl_headers(daily_remaining: int, daily_limit: int = 200_000) -> dict[str, str]:
    """The X-RateLimit-* headers GHL puts on every answer."""
    return {
        "X-RateLimit-Max": "100",
        "X-RateLimit-Remaining": "99",
        "X-RateLimit-Interval-Milliseconds": "10000",
        "X-RateLimit-Daily-Remaining": str(daily_remaining),
        "X-RateLimit-Limit-Daily": str(daily_limit),
    }


def answered(db, location: str, daily_remaining: int, reserve: int = 1000) -> Budget:
    """A lane's budget after one call whose answer reported `daily_remaining`."""
    budget = Budget(db, location, for_sync=True)
    budget.reserve = reserve
    budget.settle(budget.acquire(), ghl_headers(daily_remaining))
    return budget


def held(db, location: str, daily_remaining: int = 812) -> Budget:
    """A location whose daily budget is down to the reserve: the next sync waits."""
    budget = answered(db, location, daily_remaining)
    with pytest.raises(BudgetSpent):
        budget.acquire()
    return budget


def overdue(db, event_id: int, seconds: float = health.BACKLOG_SECONDS + 120) -> None:
    db.execute(
        "UPDATE events SET next_attempt_at = ? WHERE id = ?", [time.time() - seconds, event_id]
    )
    db.conn.commit()


def row_of(page: str, location: str) -> str:
    """A location's row of the dashboard's table, from the page as text (unescaped)."""
    rows = page.split('<section class="card" id="locations">', 1)[1].split("</table>", 1)[0]
    return next(r for r in rows.split("<tr")[2:] if f"location={location}" in r)


@pytest.fixture
def agency(db, config):
    """Acme waiting for its daily budget with one event overdue, Beta reported and syncing,
    GHL_LOCATION_ID's location with no call yet."""
    declare(db)
    event_id = arrive(db, config, "ann@acme.example", campaign=ACME_CAMPAIGN)
    overdue(db, event_id)
    budgets = [held(db, ACME), answered(db, BETA, 150_000)]
    yield budgets
    for budget in budgets:
        budget.close()


def test_healthz_names_the_held_location_as_a_warning_not_a_backlog(agency, client):
    body = client.get("/healthz").get_json()
    assert set(body) == BRIDGE_KEYS
    assert body["status"] == "degraded"
    assert body["failing_checks"] == ["ghl_daily_budget"]
    assert body["problems"] == []
    # Acme's overdue event waits on purpose: it is no backlog.
    assert body["oldest_due_seconds"] is None
    acme = body["locations"][ACME]
    spent = acme["ghl_budget"]
    assert set(spent) == BUDGET_KEYS
    assert spent["daily_remaining"] == 812 and spent["daily_limit"] == 200_000
    assert spent["reserve"] == 1000
    assert (spent["limit"], spent["window_seconds"], spent["in_window"]) == (100, 10.0, 1)
    assert spent["held_since"] and spent["next_check_at"] and spent["reported_at"]
    expected = (
        f"GHL's daily budget for {ACME_LABEL} is nearly spent: 812 of 200,000 calls left,"
        " 1,000 kept in reserve; its events wait (none is dead-lettered) and resume by"
        " themselves when GHL reports the day's budget back"
        f" (next check {spent['next_check_at'][11:16]} UTC)"
    )
    assert spent["message"] == expected
    # The sentence names its location already: it is not prefixed with it again.
    assert body["warnings"] == [expected]
    assert (acme["status"], acme["warnings"]) == ("degraded", [expected])
    beta = body["locations"][BETA]["ghl_budget"]
    assert beta["daily_remaining"] == 150_000 and beta["held_since"] is None
    assert beta["message"] is None and beta["next_check_at"] is None
    assert body["locations"][BETA]["status"] == "ok"
    assert body["locations"][LOCATION_ID]["ghl_budget"] is None
    for secret in SECRETS:
        assert secret not in json.dumps(body)


def test_strict_healthz_answers_503_for_a_held_location(agency, client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz?strict=1").status_code == 503


def test_another_locations_overdue_event_is_still_a_backlog(agency, client, db, config):
    beta_event = arrive(db, config, "bob@beta.example", workspace=BETA_WORKSPACE)
    overdue(db, beta_event, health.BACKLOG_SECONDS + 60)
    body = client.get("/healthz").get_json()
    assert body["status"] == "unhealthy"
    assert body["failing_checks"] == ["backlog", "ghl_daily_budget"]
    assert body["oldest_due_seconds"] == pytest.approx(health.BACKLOG_SECONDS + 60, abs=5)
    assert body["problems"][0].startswith("the next due event has waited")


def test_an_event_not_routed_yet_is_still_a_backlog(agency, client, db):
    from bridge.events.webhook import from_webhook
    from tests.helpers import reply_payload

    waiting = inbox.enqueue(db, from_webhook(reply_payload(email_id="unrouted-1"))).event_id
    overdue(db, waiting, health.BACKLOG_SECONDS + 30)
    body = client.get("/healthz").get_json()
    assert "backlog" in body["failing_checks"]
    assert body["oldest_due_seconds"] == pytest.approx(health.BACKLOG_SECONDS + 30, abs=5)


def test_a_lapsed_lease_in_a_held_location_is_no_backlog_but_elsewhere_it_is(
    agency, client, db, config
):
    beta_event = arrive(db, config, "bob@beta.example", workspace=BETA_WORKSPACE)
    acme_event = db.execute("SELECT id FROM events WHERE location_id = ?", [ACME]).fetchone()[0]
    lapsed = time.time() - health.BACKLOG_SECONDS - 90
    db.execute(
        "UPDATE events SET status = 'processing', lease_until = ? WHERE id = ?",
        [lapsed, acme_event],
    )
    db.conn.commit()
    assert "backlog" not in client.get("/healthz").get_json()["failing_checks"]
    db.execute(
        "UPDATE events SET status = 'processing', lease_until = ? WHERE id = ?",
        [lapsed, beta_event],
    )
    db.conn.commit()
    body = client.get("/healthz").get_json()
    assert "backlog" in body["failing_checks"]
    assert body["oldest_due_seconds"] == pytest.approx(health.BACKLOG_SECONDS + 90, abs=5)


def test_the_hold_ends_when_ghl_reports_the_days_budget_back(agency, client, db):
    # The lane's probe, once its time has come, finds the day's budget back.
    probe = Budget(db, ACME, for_sync=True, clock=lambda: time.time() + 301)
    probe.reserve = 1000
    try:
        probe.settle(probe.acquire(), ghl_headers(199_990))
    finally:
        probe.close()
    body = client.get("/healthz").get_json()
    assert "ghl_daily_budget" not in body["failing_checks"] and body["warnings"] == []
    # Its overdue event is due for the worker again, and no worker runs here.
    assert body["failing_checks"] == ["backlog"]
    spent = body["locations"][ACME]["ghl_budget"]
    assert spent["held_since"] is None and spent["message"] is None
    assert spent["daily_remaining"] == 199_990
    samples = scrape(client)
    assert samples[("bridge_ghl_budget_held", (("location", ACME),))] == 0
    assert samples[("bridge_ghl_daily_remaining", (("location", ACME),))] == 199_990


def test_metrics_give_each_locations_budget_and_hold(agency, client):
    samples = scrape(client)
    assert samples[("bridge_ghl_budget_held", (("location", ACME),))] == 1
    assert samples[("bridge_ghl_budget_held", (("location", BETA),))] == 0
    assert samples[("bridge_ghl_budget_held", (("location", LOCATION_ID),))] == 0
    assert samples[("bridge_ghl_daily_remaining", (("location", ACME),))] == 812
    assert samples[("bridge_ghl_daily_remaining", (("location", BETA),))] == 150_000
    # Never reported: no sample rather than a made-up figure.
    assert ("bridge_ghl_daily_remaining", (("location", LOCATION_ID),)) not in samples
    check = (("check", "ghl_daily_budget"), ("state", "degraded"))
    assert samples[("bridge_health_check_failed", check)] == 1
    assert samples[("bridge_health_status", (("status", "degraded"),))] == 1
    assert samples[("bridge_queue_oldest_due_seconds", ())] == 0


def test_the_dashboard_row_says_the_location_waits_and_what_is_left(agency, logged_in):
    page = html.unescape(page_of(logged_in, "/"))
    assert "3 locations:" in page
    assert "1 waiting for GHL's daily budget" in page and "all writing" not in page
    acme = row_of(page, ACME)
    assert f"waiting for GHL's daily budget: GHL's daily budget for {ACME_LABEL}" in acme
    assert 'class="cut warn held"' in acme
    assert "GHL daily budget: 812 of 200,000 left" in acme
    beta = row_of(page, BETA)
    assert ">writing<" in beta and "GHL daily budget: 150,000 of 200,000 left" in beta
    assert "waiting" not in beta
    plain = row_of(page, LOCATION_ID)
    assert ">writing<" in plain and "GHL daily budget" not in plain
    banner = page.split('class="banner warn"', 1)[1].split("</div>", 1)[0]
    assert f"GHL's daily budget for {ACME_LABEL} is nearly spent" in banner


def test_status_says_the_location_waits_and_json_has_the_budget(agency, runner):
    result = runner.invoke(["status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    acme = next(line for line in lines if line.startswith(f"location {ACME_LABEL}:"))
    assert acme.startswith(
        f"location {ACME_LABEL}: degraded; queue 1, done 0, dead 0; waiting for GHL's daily"
        f" budget: GHL's daily budget for {ACME_LABEL} is nearly spent: 812 of 200,000 calls"
        " left, 1,000 kept in reserve;"
    )
    assert f"location {BETA_LABEL}: ok; queue 0, done 0, dead 0" in lines
    assert any(line.startswith("warning: GHL's daily budget for") for line in lines)
    as_json = json.loads(runner.invoke(["status", "--json"]).output)
    spent = as_json["locations"][ACME]["ghl_budget"]
    assert spent["daily_remaining"] == 812 and spent["held_since"]
    assert spent["message"].startswith(f"GHL's daily budget for {ACME_LABEL} is nearly spent")
    assert as_json["locations"][LOCATION_ID]["ghl_budget"] is None
    for secret in SECRETS:
        assert secret not in result.output


# --- one location: the card as before, plus the budget ------------------------------------


def test_a_single_held_location_shows_the_hold_on_the_card(logged_in, client, db, config):
    event_id = arrive(db, config, "cy@plain.example")
    overdue(db, event_id)
    budget = held(db, LOCATION_ID, daily_remaining=640)
    try:
        body = client.get("/healthz").get_json()
        label = body["locations"][LOCATION_ID]["label"]
        assert body["status"] == "degraded" and body["failing_checks"] == ["ghl_daily_budget"]
        assert body["warnings"][0].startswith(f"GHL's daily budget for {label} is nearly spent")
        page = page_of(logged_in, "/")
        assert 'id="locations"' not in page and "Unrouted (held)" not in page
        assert "Writing (not paused)." not in page
        card = html.unescape(page.split("<h2>GoHighLevel</h2>", 1)[1].split("</section>", 1)[0])
        assert (
            "waiting for GHL's daily budget: GHL's daily budget for"
            f" {label} is nearly spent: 640 of 200,000 calls left"
        ) in card
        assert "GHL daily budget: 640 of 200,000 left" in card
    finally:
        budget.close()


def test_a_single_location_syncing_shows_what_is_left(logged_in, db):
    budget = answered(db, LOCATION_ID, 187_345)
    try:
        page = page_of(logged_in, "/")
        card = page.split("<h2>GoHighLevel</h2>", 1)[1].split("</section>", 1)[0]
        assert "Writing (not paused)." in card
        assert "GHL daily budget: 187,345 of 200,000 left" in card
        assert "waiting for GHL" not in html.unescape(card)
    finally:
        budget.close()


def test_a_bridge_with_no_call_yet_says_nothing_of_a_budget(logged_in, client):
    page = page_of(logged_in, "/")
    assert "Writing (not paused)." in page and "GHL daily budget" not in page
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["locations"][LOCATION_ID]["ghl_budget"] is None
    assert ("bridge_ghl_budget_held", (("location", LOCATION_ID),)) in scrape(client)


def test_the_held_locations_due_events_are_stepped_over_through_the_lanes_index(agency, db):
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        assert health.oldest_due_age(db, only={BETA, ""}) is None
    finally:
        db.conn.set_trace_callback(None)
    heads = [sql for sql in statements if "next_attempt_at <=" in sql]
    assert len(heads) == 2
    for sql in heads:
        plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX idx_events_lane (location_id=? AND status=?" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
