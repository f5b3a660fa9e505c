"""Reconciliation of an agency's bridge: one pass per Instantly workspace, each with its own
key, its events tagged with their workspace, its watermark its own (issue 16)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from bridge import settings as settings_mod
from bridge.clients.instantly import InstantlyClient
from bridge.locations import registry
from bridge.reconcile.reconciler import REPLIES, WATERMARK_PREFIX, Options, watermark
from bridge.reconcile.runs import last_run, run_recorded
from bridge.reconcile.scheduler import ReconcileScheduler
from bridge.store import contacts, state
from tests.reconcile.conftest import without_interest
from tests.support.instantly_fake import BASE_URL, FakeInstantly, stamp
from tests.support.instantly_responses import install
from tests.support.instantly_workspaces import InstantlyWorkspaces

KEY_A, KEY_B = "instantly-key-acme-51f0c2", "instantly-key-beta-9d3e77"
WS_A, WS_B = "0a1b2c3d-aaaa-4000-8000-00000000000a", "0a1b2c3d-bbbb-4000-8000-00000000000b"
LOC_A, LOC_B = "locAcmeDental0000001", "locBetaLaw0000000002"
NOW = datetime.now(UTC)


@pytest.fixture
def env(env):
    return {**env, "INSTANTLY_KEY_A": KEY_A, "INSTANTLY_KEY_B": KEY_B, "GHL_TOKEN_B": "tok-b"}


@pytest.fixture
def fakes(mocked_http, clock):
    """Two workspaces behind one Instantly address, each answering only its own key."""
    acme = FakeInstantly(KEY_A, clock=clock, organization=WS_A, id_tag="aaaa")
    beta = FakeInstantly(KEY_B, clock=clock, organization=WS_B, id_tag="bbbb")
    both = InstantlyWorkspaces({WS_A: acme, WS_B: beta})
    install(mocked_http, both)
    yield acme, beta
    both.assert_keys_known()
    for fake in (acme, beta):
        assert not fake.writes(), "reconciliation never writes to Instantly"
        assert not fake.spec_errors, fake.spec_errors


def agency_settings(db, key_b: str = "INSTANTLY_KEY_B", **reconcile) -> dict:
    """Two declared workspaces, each routed to its own location."""
    _, current = settings_mod.current(db)
    current["instantly"]["workspaces"] = [
        {"id": WS_A, "name": "Acme outreach", "key_env": "INSTANTLY_KEY_A"},
        {"id": WS_B, "name": "Beta outreach", "key_env": key_b},
    ]
    current["locations"] = [
        {"id": LOC_A, "name": "Acme Dental", "token_env": "GHL_TOKEN", "workspaces": [WS_A]},
        {"id": LOC_B, "name": "Beta Law", "token_env": "GHL_TOKEN_B", "workspaces": [WS_B]},
    ]
    current["reconcile"].update(reconcile)
    settings_mod.save(db, current)
    return settings_mod.current(db)[1]


def run(db, config, settings, options: Options | None = None):
    return run_recorded(
        db,
        lambda workspace: InstantlyClient(BASE_URL, workspace.key),
        settings,
        options or Options(),
        "cli",
        registry=registry.build(config, settings, db),
    )


def replies(fake: FakeInstantly, prefix: str, count: int) -> list[dict]:
    campaign = fake.add_campaign(f"{prefix} campaign")
    made = []
    for i in range(count):
        address = f"{prefix}{i}@example.com"
        fake.add_lead(address, campaign=campaign["id"], first_name=prefix.title())
        made.append(fake.add_reply(address, NOW - timedelta(hours=count - i), campaign["id"]))
    return made


def test_each_workspace_is_polled_with_its_own_key_and_its_events_carry_it(db, config, fakes):
    acme, beta = fakes
    replies(acme, "ada", 2)
    replies(beta, "bob", 3)
    summary = run(db, config, without_interest(agency_settings(db)))
    assert summary.status == "ok", summary.errors
    for fake, key in ((acme, KEY_A), (beta, KEY_B)):
        assert fake.calls, "every workspace is polled"
        assert {c.headers["authorization"] for c in fake.calls} == {f"Bearer {key}"}
    rows = db.execute("SELECT email, workspace_id, source FROM events ORDER BY email").fetchall()
    assert rows == [
        *[(f"ada{i}@example.com", WS_A, "poll") for i in range(2)],
        *[(f"bob{i}@example.com", WS_B, "poll") for i in range(3)],
    ]
    assert [(p.workspace.id, p.summary.replies.new) for p in summary.parts] == [
        (WS_A, 2),
        (WS_B, 3),
    ]
    assert summary.totals()["new"] == 5


def test_watermarks_are_per_workspace_and_move_independently(db, config, fakes):
    acme, beta = fakes
    newest_a = replies(acme, "ada", 2)[-1]["timestamp_created"]
    newest_b = replies(beta, "bob", 1)[-1]["timestamp_created"]
    settings = without_interest(agency_settings(db))
    run(db, config, settings)
    assert state.get(db, f"{WATERMARK_PREFIX}{REPLIES}:{WS_A}") == newest_a
    assert state.get(db, f"{WATERMARK_PREFIX}{REPLIES}:{WS_B}") == newest_b
    assert watermark(db, REPLIES) is None  # the undeclared workspace's name is untouched

    later = acme.add_reply("ada0@example.com", NOW - timedelta(minutes=5), email_id=None)
    beta.fail_next(
        "GET",
        "/api/v2/emails",
        401,
        {"statusCode": 401, "error": "Unauthorized", "message": "Invalid API key"},
    )
    summary = run(db, config, settings)
    assert summary.status == "error"
    assert state.get(db, f"{WATERMARK_PREFIX}{REPLIES}:{WS_A}") == later["timestamp_created"]
    assert state.get(db, f"{WATERMARK_PREFIX}{REPLIES}:{WS_B}") == newest_b
    recorded = last_run(db)
    assert recorded["status"] == "error" and recorded["events_new"] == 1
    assert len(recorded["errors"]) == 1
    assert recorded["errors"][0].startswith(
        f"workspace Beta outreach ({WS_B}): Instantly 401: the API key was refused"
    )
    assert KEY_B not in json.dumps(recorded)


def test_a_workspace_without_its_key_is_skipped_with_the_reason(db, config, fakes):
    acme, beta = fakes
    replies(acme, "ada", 1)
    replies(beta, "bob", 1)
    settings = without_interest(agency_settings(db, key_b="INSTANTLY_KEY_GONE"))
    summary = run(db, config, settings)
    assert beta.calls == []
    assert [p.skipped for p in summary.parts] == [
        None,
        "workspace Beta outreach: INSTANTLY_KEY_GONE is not set",
    ]
    assert db.execute("SELECT email FROM events").fetchall() == [("ada0@example.com",)]
    assert summary.status == "error"
    assert last_run(db)["errors"] == ["workspace Beta outreach: INSTANTLY_KEY_GONE is not set"]


def test_the_undeclared_workspace_keeps_its_watermark_and_tags_by_organization(
    db, fake_instantly, instantly
):
    """INSTANTLY_API_KEY alone, as before issue 16: the same state name, and each event
    names the workspace Instantly gave it."""
    reply = fake_instantly.add_reply("ada@example.com", NOW - timedelta(hours=1))
    state.put(db, WATERMARK_PREFIX + REPLIES, stamp(NOW - timedelta(days=1)))
    summary = run_recorded(
        db, instantly, without_interest(settings_mod.current(db)[1]), Options(), "cli"
    )
    assert summary.status == "ok" and summary.totals()["new"] == 1
    assert state.get(db, WATERMARK_PREFIX + REPLIES) == reply["timestamp_created"]
    assert db.execute("SELECT workspace_id FROM events").fetchall() == [
        (fake_instantly.organization,)
    ]


def test_statuses_cover_the_routed_campaigns_each_workspace_can_see(db, config, fakes):
    acme, beta = fakes
    listed = acme.add_campaign("Listed in settings")
    routed_a, routed_b = acme.add_campaign("Acme spring"), beta.add_campaign("Beta spring")
    for fake, campaign, address in (
        (acme, routed_a, "ann@example.com"),
        (beta, routed_b, "ann@example.com"),
    ):
        fake.add_lead(
            address,
            campaign=campaign["id"],
            lt_interest_status=1,
            timestamp_last_interest_change=stamp(NOW - timedelta(hours=1)),
        )
    settings = agency_settings(db, campaigns=[listed["id"]])
    settings["locations"][0]["campaigns"] = [routed_a["id"]]
    settings["locations"][1]["campaigns"] = [routed_b["id"]]
    settings_mod.save(db, settings)
    settings = settings_mod.current(db)[1]
    # Acme Dental already holds Ann as interested; Beta Law's Ann is another contact.
    contacts.record_upsert(db, LOC_A, "ann@example.com", "contact-a", {})
    db.execute(
        "UPDATE contacts SET interest_status = 'interested', interest_at = ? WHERE location_id = ?",
        [stamp(NOW), LOC_A],
    )
    summary = run(db, config, settings, Options(replies=False))
    assert summary.status == "ok", summary.errors

    def scanned(fake):
        return {c.json.get("campaign") for c in fake.calls_to("POST", "/api/v2/leads/list")}

    assert scanned(acme) == {listed["id"], routed_a["id"]}
    assert scanned(beta) == {listed["id"], routed_b["id"]}
    assert db.execute("SELECT email, event_type, workspace_id FROM events").fetchall() == [
        ("ann@example.com", "lead_interested", WS_B)
    ]


def test_cli_prints_a_block_per_workspace_and_the_totals(runner, db, env, fakes):
    acme, beta = fakes
    replies(acme, "ada", 2)
    replies(beta, "bob", 1)
    settings_mod.save(db, without_interest(agency_settings(db)))
    result = runner.invoke(["reconcile", "--no-sync"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines.index(f"Workspace Acme outreach ({WS_A}):") < lines.index(
        f"Workspace Beta outreach ({WS_B}):"
    )
    assert "All workspaces:" in lines
    totals = lines[lines.index("All workspaces:") :]
    assert any(
        line.split()[:2] == ["new", "(enqueued)"] and line.split()[-1] == "3" for line in totals
    )
    assert lines[-1] == "status: ok"
    for key in (KEY_A, KEY_B):
        assert key not in result.output


def test_a_dry_run_plans_each_event_in_its_location_or_says_it_would_be_held(runner, db, fakes):
    acme, beta = fakes
    replies(acme, "ada", 1)
    replies(beta, "bob", 1)
    settings = without_interest(agency_settings(db))
    settings["locations"] = settings["locations"][:1]  # Beta's workspace has no route
    settings["routing"]["default_location"] = "none"
    settings_mod.save(db, settings)
    result = runner.invoke(["reconcile", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    planned = {e["email"]: e for e in json.loads(result.output)["would_enqueue"]}
    assert planned["ada0@example.com"]["location_id"] == LOC_A
    assert planned["ada0@example.com"]["ghl_calls"][0] == "POST /contacts/upsert"
    assert planned["bob0@example.com"]["location_id"] is None
    assert planned["bob0@example.com"]["ghl_calls"] == []
    assert planned["bob0@example.com"]["ghl_changes"][0].startswith("none: held (unrouted)")


def test_the_worker_schedule_polls_every_workspace_with_its_key(db, config, fakes):
    acme, beta = fakes
    replies(acme, "ada", 1)
    replies(beta, "bob", 1)
    settings_mod.save(db, without_interest(agency_settings(db)))
    made = ReconcileScheduler(
        config,
        scheduler=BackgroundScheduler(timezone=UTC),
        client_factory=lambda workspace, sleep: InstantlyClient(BASE_URL, workspace.key),
    )
    try:
        assert made.start() is True  # the declared workspaces' keys are enough
        made.run_once("schedule")
    finally:
        made.shutdown()
    assert last_run(db)["status"] == "ok" and last_run(db)["events_new"] == 2
    assert db.execute("SELECT workspace_id FROM events ORDER BY email").fetchall() == [
        (WS_A,),
        (WS_B,),
    ]
