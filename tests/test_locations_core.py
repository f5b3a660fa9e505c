"""The core of several GHL locations in one bridge (issue 16): routes, the registry, tokens
kept encrypted, the store per location, adoption of a single-location database, the
webhook's workspace, and lanes that keep one location's trouble to itself."""

from __future__ import annotations

import threading
import time

import pytest

from bridge import settings as settings_mod
from bridge.config import load_config
from bridge.events.webhook import from_webhook
from bridge.locations import registry, tokens
from bridge.store import adopt, contacts, inbox, state
from bridge.store import db as store
from bridge.sync.worker import Worker
from tests.helpers import LOCATION_ID, post_webhook, reply_payload

ACME, BETA = "acmeLocation000000001", "betaLocation000000002"
CAMPAIGN_ACME, CAMPAIGN_BETA = "c-acme-1111", "c-beta-2222"
WORKSPACE_BETA = "ws-beta"


def agency_settings(**routing) -> dict:
    defaults = settings_mod.load_defaults()
    return settings_mod.validate_settings(
        {
            **defaults,
            "locations": [
                {
                    "id": ACME,
                    "name": "Acme Dental",
                    "token_env": "GHL_TOKEN_ACME",
                    "campaigns": [CAMPAIGN_ACME],
                    "overrides": {"events": {"reply_received": {"tags": ["acme-replied"]}}},
                },
                {
                    "id": BETA,
                    "name": "Beta Law",
                    "token_env": "GHL_TOKEN_BETA",
                    "workspaces": [WORKSPACE_BETA],
                },
            ],
            "routing": routing,
        }
    )


@pytest.fixture
def agency_env(env):
    return {**env, "GHL_TOKEN_ACME": "pit-acme-token-0001", "GHL_TOKEN_BETA": "pit-beta-token-0002"}


@pytest.fixture
def agency(agency_env, db):
    """The agency's settings saved, a config that sees its tokens."""
    settings_mod.save(db, agency_settings())
    return load_config(agency_env)


# --- routes ---------------------------------------------------------------------------------


def test_a_campaign_route_wins_over_a_workspace_route_and_the_rest_goes_to_the_default(
    agency_env,
):
    served = registry.build(load_config(agency_env), agency_settings())
    assert [loc.id for loc in served.locations] == [LOCATION_ID, ACME, BETA]
    # Acme's campaign, even when it runs in Beta's workspace.
    assert served.route(CAMPAIGN_ACME, WORKSPACE_BETA) == ACME
    assert served.route("another", WORKSPACE_BETA) == BETA
    assert served.route("another", "another-ws") == LOCATION_ID


def test_with_no_default_an_event_no_route_claims_has_no_location(agency_env):
    served = registry.build(load_config(agency_env), agency_settings(default_location="none"))
    assert served.route("another", "another-ws") is None
    without_env = {k: v for k, v in agency_env.items() if k != "GHL_LOCATION_ID"}
    assert registry.build(load_config(without_env), agency_settings()).route("x", "y") is None


def test_a_location_without_its_token_says_which_variable_is_missing(env):
    served = registry.build(load_config({**env, "GHL_TOKEN_ACME": "t-acme"}), agency_settings())
    beta = served.get(BETA)
    assert beta.token == "" and beta.problem == (
        "location Beta Law: GHL_TOKEN_BETA is not set in the bridge's environment"
    )
    assert served.get(ACME).problem is None
    problems = registry.environment_problems(load_config(env), agency_settings())
    assert problems == {
        "locations.0.token_env": ["GHL_TOKEN_ACME is not set in the bridge's environment"],
        "locations.1.token_env": ["GHL_TOKEN_BETA is not set in the bridge's environment"],
    }


def test_one_token_given_to_two_locations_is_used_by_the_first_only(env):
    same = load_config({**env, "GHL_TOKEN_ACME": "pit-same", "GHL_TOKEN_BETA": "pit-same"})
    served = registry.build(same, agency_settings())
    assert served.get(ACME).token == "pit-same"
    beta = served.get(BETA)
    assert beta.token == "" and beta.problem == (
        "location Beta Law: its token (GHL_TOKEN_BETA) is the same as location Acme Dental"
        f" ({ACME})'s (GHL_TOKEN_ACME); a token belongs to one sub-account, so give each"
        " location its own"
    )


def test_routes_that_contradict_each_other_are_named():
    defaults = settings_mod.load_defaults()
    twice = [{"id": ACME, "campaigns": ["c1"]}, {"id": BETA, "name": "B", "campaigns": ["c1"]}]
    with pytest.raises(settings_mod.SettingsError) as caught:
        settings_mod.validate_settings({**defaults, "locations": twice})
    assert caught.value.messages == {
        "locations.1.campaigns": [
            f"campaign 'c1' is already routed to {ACME} (locations.0); one location per campaign"
        ]
    }
    with pytest.raises(settings_mod.SettingsError) as caught:
        settings_mod.validate_settings({**defaults, "routing": {"default_location": "nowhere"}})
    assert list(caught.value.messages) == ["routing.default_location"]
    override = [{"id": ACME, "overrides": {"events": {"reply_received": {"tagz": ["x"]}}}}]
    with pytest.raises(settings_mod.SettingsError) as caught:
        settings_mod.validate_settings({**defaults, "locations": override})
    assert caught.value.messages == {
        "locations.0.overrides.events.reply_received.tagz": ["Unknown field."]
    }


# --- tokens ---------------------------------------------------------------------------------


def test_a_page_token_is_stored_encrypted_and_a_wrong_key_is_a_clear_problem(env, db):
    tokens.store(db, "key-one", ACME, "pit-acme-secret-token")
    stored = db.execute("SELECT token FROM location_tokens").fetchone()[0]
    assert "pit-acme-secret-token" not in stored
    assert tokens.read(db, "key-one", ACME) == "pit-acme-secret-token"
    page_only = settings_mod.validate_settings(
        {**settings_mod.load_defaults(), "locations": [{"id": ACME, "name": "Acme Dental"}]}
    )
    served = registry.build(load_config({**env, "BRIDGE_SECRET_KEY": "key-one"}), page_only, db)
    assert served.get(ACME).token == "pit-acme-secret-token"
    changed = registry.build(load_config({**env, "BRIDGE_SECRET_KEY": "key-two"}), page_only, db)
    acme = changed.get(ACME)
    assert acme.token == "" and "location Acme Dental: its token stored from the settings page" in (
        acme.problem
    )
    assert "pit-acme" not in acme.problem


# --- the store ------------------------------------------------------------------------------


def test_the_same_email_in_two_locations_is_two_contacts(db):
    contacts.record_upsert(db, ACME, "jo@example.com", "c-acme", {"firstName": "Jo"})
    contacts.record_upsert(db, BETA, "jo@example.com", "c-beta", {})
    contacts.record_tags(db, contacts.get(db, ACME, "jo@example.com"), ["acme-replied"])
    assert contacts.get(db, ACME, "jo@example.com").tags == ["acme-replied"]
    assert contacts.get(db, BETA, "jo@example.com").contact_id == "c-beta"
    assert contacts.get(db, BETA, "jo@example.com").tags == []
    contacts.forget(db, BETA, "jo@example.com")
    assert contacts.get(db, ACME, "jo@example.com") is not None


def _enqueue(db, email: str, campaign: str = "", workspace: str = "") -> int:
    payload = reply_payload(
        lead_email=email, campaign_id=campaign, email_id=f"e-{email}-{campaign}"
    )
    payload.pop("campaign", None)
    event = from_webhook(payload, workspace=workspace)
    return inbox.enqueue(db, event).event_id


def test_events_are_routed_held_and_replayed_when_a_route_exists(agency_env, db):
    served = registry.build(load_config(agency_env), agency_settings(default_location="none"))
    acme = _enqueue(db, "a@example.com", CAMPAIGN_ACME)
    lost = _enqueue(db, "b@example.com", "c-unknown", "ws-unknown")
    assert inbox.route_pending(db, served.route) == inbox.Routed(1, 1, frozenset({ACME}))
    assert inbox.get(db, acme)["location_id"] == ACME
    held = inbox.get(db, lost)
    assert held["status"] == "unrouted" and held["location_id"] is None
    assert "no route claims campaign c-unknown or workspace ws-unknown" in held["last_error"]
    assert [row["id"] for row in inbox.unrouted(db)] == [lost]
    assert inbox.counts(db)["unrouted"] == 1
    # Nothing more to route: no transaction is taken for it.
    assert inbox.route_pending(db, served.route) == inbox.Routed()
    assert inbox.replay(db, unrouted=True) == 1
    assert inbox.route_pending(db, lambda c, w: BETA) == inbox.Routed(1, 0, frozenset({BETA}))
    assert inbox.get(db, lost)["location_id"] == BETA
    assert inbox.counts(db)["unrouted"] == 0


def test_a_lane_claims_only_its_location_and_one_contact_per_location(db):
    first = _enqueue(db, "jo@example.com", CAMPAIGN_ACME)
    second = _enqueue(db, "jo@example.com", CAMPAIGN_BETA)
    db.execute("UPDATE events SET location_id = ? WHERE id = ?", [ACME, first])
    db.execute("UPDATE events SET location_id = ? WHERE id = ?", [BETA, second])
    assert inbox.claim_next(db, location_id="elsewhere") is None
    assert inbox.claim_next(db, location_id=BETA)["id"] == second
    # The same email leased in Beta does not hold Acme's contact of that email.
    assert inbox.claim_next(db, location_id=ACME)["id"] == first


def test_routes_changed_route_the_queue_again(db):
    queued = _enqueue(db, "a@example.com")
    inbox.route_pending(db, lambda c, w: ACME)
    assert inbox.unroute_pending(db) == 1
    inbox.route_pending(db, lambda c, w: BETA)
    assert inbox.get(db, queued)["location_id"] == BETA


def test_a_single_location_database_is_adopted_by_ghl_location_id_once(config):
    database = store.connect(config.database)
    store.load_migrations().apply(database, stop_before="m042_locations")
    database["contacts"].insert({"email": "old@example.com", "contact_id": "c-old", "tags": "[]"})
    database["ghl_writes"].insert(
        {"key": "note:reply:1", "kind": "note", "contact_id": "c-old", "state": "done"}
    )
    database["state"].insert({"name": state.GHL_PAUSE, "value": '{"reason": "x", "probe_at": 0}'})
    store.migrate(database)
    assert adopt.adopt_single_location(database, LOCATION_ID) is True
    assert contacts.get(database, LOCATION_ID, "old@example.com").contact_id == "c-old"
    assert database.execute("SELECT location_id FROM ghl_writes").fetchall() == [(LOCATION_ID,)]
    assert state.get(database, state.GHL_PAUSE) is None
    assert state.get(database, state.scoped(state.GHL_PAUSE, LOCATION_ID))["reason"] == "x"
    # Once: nothing is left for a later GHL_LOCATION_ID, and looking writes nothing.
    changes = database.conn.total_changes
    assert adopt.adopt_single_location(database, "another") is False
    assert database.conn.total_changes == changes
    assert contacts.get(database, LOCATION_ID, "old@example.com") is not None


# --- the webhook's workspace ----------------------------------------------------------------


def test_the_workspace_in_the_url_wins_over_one_a_custom_variable_wrote(client, db):
    body = reply_payload(workspace="ws-written-by-a-custom-variable")
    answer = post_webhook(client, body, query_string={"workspace": WORKSPACE_BETA})
    assert answer.status_code == 202
    assert inbox.get(db, answer.get_json()["event_id"])["workspace_id"] == WORKSPACE_BETA
    plain = post_webhook(client, reply_payload(email_id="e-2", workspace="ws-body"))
    assert inbox.get(db, plain.get_json()["event_id"])["workspace_id"] == "ws-body"


def test_a_workspace_no_id_looks_like_is_refused_with_a_message(client):
    answer = post_webhook(client, reply_payload(), query_string={"workspace": "<script>"})
    assert answer.status_code == 400
    assert (
        "workspace query parameter must be an Instantly workspace id"
        in (answer.get_json()["error"])
    )


# --- lanes ----------------------------------------------------------------------------------


@pytest.fixture
def agency_ghl(fake_ghl):
    fake_ghl.add_location(ACME, "pit-acme-token-0001", "Acme Dental")
    fake_ghl.add_location(BETA, "pit-beta-token-0002", "Beta Law")
    return fake_ghl


def test_each_location_gets_its_events_with_its_own_settings(agency, db, agency_ghl):
    _enqueue(db, "jo@example.com", CAMPAIGN_ACME)
    _enqueue(db, "jo@example.com", "c-other", WORKSPACE_BETA)
    _enqueue(db, "sam@example.com")
    assert Worker(agency, db=db).run(drain=True) == 3
    acme, beta = agency_ghl.location(ACME), agency_ghl.location(BETA)
    assert acme.contact_by_email("jo@example.com")["tags"] == ["acme-replied"]
    assert "instantly-replied" in beta.contact_by_email("jo@example.com")["tags"]
    assert agency_ghl.default.contact_by_email("sam@example.com") is not None
    assert acme.contact_by_email("sam@example.com") is None
    rows = db.execute("SELECT location_id, email FROM contacts ORDER BY 1, 2").fetchall()
    assert sorted(rows) == sorted(
        [(ACME, "jo@example.com"), (BETA, "jo@example.com"), (LOCATION_ID, "sam@example.com")]
    )
    agency_ghl.assert_no_cross_location_calls()


def test_a_location_in_an_outage_delays_only_its_own_events(agency, db, agency_ghl):
    agency_ghl.location(ACME).fail_for(3600, 503)
    for i in range(3):
        _enqueue(db, f"acme{i}@example.com", CAMPAIGN_ACME)
    for i in range(5):
        _enqueue(db, f"beta{i}@example.com", "c-other", WORKSPACE_BETA)
    worker = Worker(agency, db=db)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = db.execute(
                "SELECT COUNT(*) FROM events WHERE location_id = ? AND status = 'done'", [BETA]
            ).fetchone()[0]
            tried = state.get(db, state.scoped(state.GHL_FAILING_SINCE, ACME))
            if done == 5 and tried:
                break
            time.sleep(0.05)
    finally:
        worker.stop()
        runner.join(15)
    assert not runner.is_alive()
    assert done == 5
    waiting = db.execute(
        "SELECT status, attempts FROM events WHERE location_id = ? ORDER BY id", [ACME]
    ).fetchall()
    # Acme's events wait, each tried at most once so far (its backoff is 30 s); none is lost.
    assert [row[0] for row in waiting] == ["pending"] * 3
    assert all(row[1] <= 1 for row in waiting)
    failing = state.get(db, state.scoped(state.GHL_FAILING_SINCE, ACME))
    assert failing["status"] == 503
    assert state.get(db, state.scoped(state.GHL_FAILING_SINCE, BETA)) is None
    agency_ghl.assert_no_cross_location_calls()
