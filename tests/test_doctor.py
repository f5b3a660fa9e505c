"""`instantly-ghl-bridge doctor` and the dashboard's checks, against healthy and broken setups."""

from __future__ import annotations

import pytest
import responses

from bridge import settings as settings_mod
from bridge.config import load_config
from bridge.setup import doctor, subscriptions
from bridge.store import state
from tests.helpers import LOCATION_ID, WEBHOOK_SECRET
from tests.web_helpers import (
    BRIDGE_URL,
    GHL,
    INSTANTLY,
    all_secrets,
    check_against_specs,
    ghl_custom_field,
    ghl_error,
    ghl_location,
    instantly_webhook,
    login,
    post,
)

pytestmark = pytest.mark.admin

SECRET_HEADERS = {"X-Bridge-Secret": WEBHOOK_SECRET}


@pytest.fixture
def replies_only(db):
    """Sync replies alone, so the webhook checks below are about one webhook (the default
    interest and unsubscribe webhooks are checked in test_default_settings_need_...)."""
    _, current = settings_mod.current(db)
    current["interest"]["enabled"] = False
    current["events"]["lead_unsubscribed"]["enabled"] = False
    settings_mod.save(db, current)


@pytest.fixture
def custom_field_map(db, replies_only):
    _, current = settings_mod.current(db)
    current["field_map"].append({"instantly": "icebreaker", "ghl": "contact.icebreaker"})
    settings_mod.save(db, current)
    state.put(db, subscriptions.WEBHOOK_URL_STATE, BRIDGE_URL)


def healthy(rsps, hooks=None, fields=None):
    rsps.get(f"{GHL}/locations/{LOCATION_ID}", json=ghl_location())
    rsps.get(
        f"{GHL}/locations/{LOCATION_ID}/customFields",
        json={
            "customFields": fields
            if fields is not None
            else [ghl_custom_field("contact.icebreaker", "Icebreaker", "cf_1")]
        },
    )
    rsps.get(f"{INSTANTLY}/api/v2/campaigns", json={"items": []})
    rsps.get(
        f"{INSTANTLY}/api/v2/webhooks",
        json={
            "items": hooks
            if hooks is not None
            else [instantly_webhook("w1", "reply_received", headers=SECRET_HEADERS)]
        },
    )


def by_name(checks):
    return {c.name: c for c in checks}


def test_healthy_setup_passes_every_check(config, custom_field_map):
    with responses.RequestsMock() as rsps:
        healthy(rsps)
        checks = doctor.run_checks(config)
    assert [(c.name, c.ok) for c in checks] == [
        ("Database", True),
        ("Webhook secret", True),
        ("Config page password", True),
        ("GHL token and location", True),
        ("GHL scopes", True),
        ("GHL writes", True),
        ("Field map custom fields", True),
        ("Workflow, pipeline and stage ids", True),
        ("Instantly API key", True),
        ("Instantly webhooks", True),
    ]
    found = by_name(checks)
    assert "Acme Dental" in found["GHL token and location"].detail
    assert found["Field map custom fields"].detail == "all 1 exist: contact.icebreaker"
    assert found["Instantly webhooks"].detail == "delivering: reply_received"
    assert not doctor.failed(checks)


def test_doctor_requests_and_answers_match_the_specs(config, custom_field_map):
    with responses.RequestsMock() as rsps:
        healthy(rsps)
        doctor.run_checks(config)
        calls = list(rsps.calls)
    for call in calls:
        assert call.request.headers["Authorization"].startswith("Bearer ")
        if call.request.url.startswith(INSTANTLY):
            assert "Mozilla/5.0" in call.request.headers["User-Agent"]
    check_against_specs(calls)


def test_nothing_configured_fails_with_a_fix_for_each(env, db):
    bare = {k: v for k, v in env.items() if k in ("BRIDGE_DATABASE", "BRIDGE_INSTANCE_PATH")}
    with responses.RequestsMock():  # no API is called without credentials
        checks = doctor.run_checks(load_config(bare))
    found = by_name(checks)
    for name in [
        "Webhook secret",
        "Config page password",
        "GHL token and location",
        "Instantly API key",
    ]:
        assert found[name].ok is False and found[name].fix, name
    assert found["GHL scopes"].ok is None
    assert found["Instantly webhooks"].ok is None
    assert found["Field map custom fields"].ok is True  # defaults use standard fields only


def test_unmigrated_database_says_run_migrate(env, tmp_path):
    fresh = load_config({**env, "BRIDGE_DATABASE": str(tmp_path / "new.sqlite3")})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps)
        found = by_name(doctor.run_checks(fresh))
    assert found["Database"].ok is False
    assert found["Database"].fix == "run `instantly-ghl-bridge migrate`"
    assert found["Field map custom fields"].ok is None


def test_ghl_token_refused(config, custom_field_map):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps)
        rsps.replace(
            responses.GET,
            f"{GHL}/locations/{LOCATION_ID}",
            json=ghl_error(401, "Invalid JWT"),
            status=401,
        )
        found = by_name(doctor.run_checks(config))
    check = found["GHL token and location"]
    assert check.ok is False
    assert "401" in check.detail and "Invalid JWT" in check.detail
    assert "Private Integration" in check.fix
    assert found["GHL scopes"].ok is None
    assert found["Field map custom fields"].ok is None


def test_missing_scope_is_named(config, custom_field_map):
    with responses.RequestsMock() as rsps:
        healthy(rsps)
        rsps.replace(
            responses.GET,
            f"{GHL}/locations/{LOCATION_ID}/customFields",
            json=ghl_error(401, "The token is not authorized for this scope."),
            status=401,
        )
        found = by_name(doctor.run_checks(config))
    assert found["GHL scopes"].ok is False
    assert "failing: locations/customFields.readonly (401" in found["GHL scopes"].detail
    assert found["Field map custom fields"].ok is None


def test_custom_field_missing_from_the_location(config, custom_field_map):
    with responses.RequestsMock() as rsps:
        healthy(rsps, fields=[ghl_custom_field("contact.other", "Other", "cf_9")])
        found = by_name(doctor.run_checks(config))
    check = found["Field map custom fields"]
    assert (check.ok, check.detail) == (False, "not in the GHL location: contact.icebreaker")
    assert "Custom Fields" in check.fix


def test_paused_ghl_writes_fail_the_writes_check(config, db, custom_field_map):
    state.put(
        db,
        state.GHL_PAUSE,
        {"reason": "GHL answered 403 (scope)", "since": "2026-01-05", "probe_at": 0},
    )
    with responses.RequestsMock() as rsps:
        healthy(rsps)
        found = by_name(doctor.run_checks(config))
    assert found["GHL writes"].ok is False
    assert "contacts.write" in found["GHL writes"].fix


# --- the ids of the workflow and opportunity actions -----------------------------------------


def ghl_workflow(workflow_id: str, name: str) -> dict:
    """A `WorkflowSchema` as GET /workflows/ lists it."""
    return {
        "id": workflow_id,
        "name": name,
        "status": "published",
        "version": 1,
        "createdAt": "2026-01-05T10:00:00.000Z",
        "updatedAt": "2026-01-05T10:00:00.000Z",
        "locationId": LOCATION_ID,
    }


def ghl_pipeline(pipeline_id: str, name: str, stages: dict[str, str]) -> dict:
    """A pipeline as GET /opportunities/pipelines lists it, its stages with ids and names."""
    return {
        "id": pipeline_id,
        "name": name,
        "stages": [{"id": k, "name": v, "position": i} for i, (k, v) in enumerate(stages.items())],
        "showInFunnel": True,
        "showInPieChart": True,
        "locationId": LOCATION_ID,
    }


@pytest.fixture
def actions_on(db, replies_only):
    """The workflow and the opportunity actions switched on, with ids GHL lists below."""
    _, current = settings_mod.current(db)
    current["actions"]["workflow"].update(enabled=True, workflow_id="wf_follow_up")
    opportunity = current["actions"]["opportunity"]
    opportunity.update(enabled=True, pipeline_id="pl_sales", stage_id="st_new")
    opportunity["stages"]["closed"] = "st_won"
    settings_mod.save(db, current)
    return current


def ghl_lists(rsps, workflows=None, pipelines=None):
    rsps.get(
        f"{GHL}/workflows/",
        json={
            "workflows": [ghl_workflow("wf_follow_up", "Follow-up")]
            if workflows is None
            else workflows
        },
    )
    rsps.get(
        f"{GHL}/opportunities/pipelines",
        json={
            "pipelines": [
                ghl_pipeline("pl_sales", "Sales", {"st_new": "New", "st_won": "Won"}),
                ghl_pipeline("pl_partners", "Partners", {"st_intro": "Intro"}),
            ]
            if pipelines is None
            else pipelines
        },
    )


def test_action_ids_ghl_lists_pass(config, actions_on):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps, fields=[])
        ghl_lists(rsps)
        check = by_name(doctor.run_checks(config))["Workflow, pipeline and stage ids"]
    assert check.ok is True
    assert check.detail == (
        "GHL lists every one set (workflow.workflow_id, opportunity.pipeline_id, "
        "opportunity.stage_id, opportunity.stages.closed)"
    )


def test_default_settings_name_no_action_ids(config, replies_only):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps, fields=[])
        check = by_name(doctor.run_checks(config))["Workflow, pipeline and stage ids"]
    assert (check.ok, check.detail) == (True, "the settings name no workflow, pipeline or stage")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"workflow": {"workflow_id": "wf_folow_up"}},
            "actions.workflow.workflow_id: wf_folow_up is not a workflow in GHL; "
            "did you mean wf_follow_up (Follow-up)?",
        ),
        (
            {"opportunity": {"pipeline_id": "Sales"}},
            "actions.opportunity.pipeline_id: Sales is not a pipeline in GHL; "
            "did you mean pl_sales (Sales)?",
        ),
        (
            {"opportunity": {"stage_id": "st_intro"}},
            "actions.opportunity.stage_id: st_intro is a stage of the pipeline 'Partners', "
            "not of the chosen pipeline 'Sales'",
        ),
        (
            {"opportunity": {"stages": {"closed": "st_gone"}}},
            "actions.opportunity.stages.closed: st_gone is not a stage of the pipeline 'Sales'; "
            "did you mean st_won (Won) or st_new (New)?",
        ),
    ],
)
def test_an_id_ghl_does_not_list_fails_with_the_fix(config, db, actions_on, change, message):
    for action, values in change.items():
        target = actions_on["actions"][action]
        for key, value in values.items():
            if isinstance(value, dict):
                target[key].update(value)
            else:
                target[key] = value
    settings_mod.save(db, actions_on)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps, fields=[])
        ghl_lists(rsps)
        check = by_name(doctor.run_checks(config))["Workflow, pipeline and stage ids"]
    assert check.ok is False
    assert check.detail == message
    assert check.fix.startswith("choose them again on the settings page")


def test_a_switched_off_action_with_an_unknown_id_only_says_so(config, db, actions_on):
    actions_on["actions"]["workflow"].update(enabled=False, workflow_id="wf_deleted")
    settings_mod.save(db, actions_on)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps, fields=[])
        ghl_lists(rsps)
        check = by_name(doctor.run_checks(config))["Workflow, pipeline and stage ids"]
    assert check.ok is True
    assert "actions.workflow.workflow_id: wf_deleted is not a workflow in GHL" in check.detail
    assert "the action is off" in check.detail


def test_action_ids_are_not_checked_when_their_scope_fails(config, actions_on):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps, fields=[])
        ghl_lists(rsps)
        rsps.replace(
            responses.GET,
            f"{GHL}/workflows/",
            json=ghl_error(401, "The token is not authorized for this scope."),
            status=401,
        )
        found = by_name(doctor.run_checks(config))
    assert found["GHL scopes"].ok is False
    assert "workflows.readonly (401" in found["GHL scopes"].detail
    check = found["Workflow, pipeline and stage ids"]
    assert (check.ok, check.detail) == (None, "not checked: fix GHL scopes first")


def test_cli_prints_the_unknown_workflow_and_its_fix(runner, db, actions_on):
    actions_on["actions"]["workflow"]["workflow_id"] = "wf_nope"
    settings_mod.save(db, actions_on)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps, fields=[])
        ghl_lists(rsps)
        result = runner.invoke(["doctor"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert (
        "✗ Workflow, pipeline and stage ids: actions.workflow.workflow_id: wf_nope is not a "
        "workflow in GHL" in lines
    )
    assert (
        "    fix: choose them again on the settings page, which lists GHL's workflows, "
        "pipelines and stages (or create them in GHL)" in lines
    )


@pytest.mark.parametrize(
    ("status", "text"),
    [(401, "the API key was refused"), (403, "forbidden"), (402, "no active paid plan")],
)
def test_instantly_key_refused(config, custom_field_map, status, text):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps)
        rsps.replace(
            responses.GET,
            f"{INSTANTLY}/api/v2/campaigns",
            json={"statusCode": status, "error": "x", "message": "nope"},
            status=status,
        )
        found = by_name(doctor.run_checks(config))
    assert found["Instantly API key"].ok is False
    assert text in found["Instantly API key"].detail
    assert found["Instantly webhooks"].ok is None


@pytest.mark.parametrize(
    ("hooks", "detail", "fix_tail"),
    [
        (
            [],
            "no webhook to https://bridge.example.com/webhooks/instantly for: reply_received",
            BRIDGE_URL,
        ),
        (
            [instantly_webhook("w1", "reply_received", headers=SECRET_HEADERS, status=-1)],
            "disabled by Instantly after failed deliveries: reply_received",
            "--resume",
        ),
        (
            [instantly_webhook("w1", "reply_received", headers={"X-Bridge-Secret": "old"})],
            "not sending our X-Bridge-Secret: reply_received",
            BRIDGE_URL,
        ),
        (
            [instantly_webhook("w1", "reply_received", headers=None)],
            "not sending our X-Bridge-Secret: reply_received",
            BRIDGE_URL,
        ),
        (
            [
                instantly_webhook(
                    "w1",
                    "reply_received",
                    url="https://elsewhere.example/hook",
                    headers=SECRET_HEADERS,
                )
            ],
            "no webhook to",
            BRIDGE_URL,
        ),
        (
            [instantly_webhook("w1", "email_opened", headers=SECRET_HEADERS)],
            "no webhook to",
            BRIDGE_URL,
        ),
    ],
)
def test_broken_webhooks_fail_with_the_register_fix(
    config, custom_field_map, hooks, detail, fix_tail
):
    with responses.RequestsMock() as rsps:
        healthy(rsps, hooks=hooks)
        check = by_name(doctor.run_checks(config))["Instantly webhooks"]
    assert check.ok is False
    assert detail in check.detail
    assert check.fix.startswith("run `instantly-ghl-bridge webhook register --url")
    assert fix_tail in check.fix
    assert WEBHOOK_SECRET not in check.detail


def test_an_all_events_webhook_covers_every_type(config, custom_field_map):
    with responses.RequestsMock() as rsps:
        healthy(
            rsps,
            hooks=[
                instantly_webhook("w1", "all_events", headers={"x-bridge-secret": WEBHOOK_SECRET})
            ],
        )
        assert by_name(doctor.run_checks(config))["Instantly webhooks"].ok is True


def test_without_a_saved_url_any_bridge_path_counts(config, db, replies_only):
    with responses.RequestsMock() as rsps:
        healthy(
            rsps,
            hooks=[
                instantly_webhook(
                    "w1",
                    "reply_received",
                    url="https://other.example/webhooks/instantly",
                    headers=SECRET_HEADERS,
                )
            ],
        )
        check = by_name(doctor.run_checks(config))["Instantly webhooks"]
    assert check.ok is True


def test_bridge_public_url_names_the_webhooks_that_count(env, db, replies_only):
    config = load_config({**env, "BRIDGE_PUBLIC_URL": "https://bridge.example.com"})
    state.put(db, subscriptions.WEBHOOK_URL_STATE, "https://old.example/webhooks/instantly")
    elsewhere = instantly_webhook(
        "w1", "reply_received", url="https://old.example/webhooks/instantly", headers=SECRET_HEADERS
    )
    with responses.RequestsMock() as rsps:
        healthy(rsps, hooks=[elsewhere])
        check = by_name(doctor.run_checks(config))["Instantly webhooks"]
    assert check.ok is False
    assert f"no webhook to {BRIDGE_URL} for: reply_received" in check.detail
    assert check.fix == f"run `instantly-ghl-bridge webhook register --url {BRIDGE_URL}`"


def test_default_settings_need_the_interest_and_unsubscribe_webhooks(config, db):
    state.put(db, subscriptions.WEBHOOK_URL_STATE, BRIDGE_URL)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps, hooks=[instantly_webhook("w1", "reply_received", headers=SECRET_HEADERS)])
        check = by_name(doctor.run_checks(config))["Instantly webhooks"]
    assert check.ok is False
    assert check.detail == (
        "delivering: reply_received; no webhook to https://bridge.example.com/webhooks/instantly"
        " for: lead_closed, lead_interested, lead_meeting_booked, lead_meeting_completed,"
        " lead_neutral, lead_no_show, lead_not_interested, lead_out_of_office,"
        " lead_unsubscribed, lead_wrong_person; no webhook exists for lead_lost"
        " (reconciliation finds them)"
    )


def test_an_api_that_echoes_a_token_cannot_leak_it(config, custom_field_map):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(rsps)
        rsps.replace(
            responses.GET,
            f"{GHL}/locations/{LOCATION_ID}",
            json=ghl_error(401, f"bad token {config.ghl_token}"),
            status=401,
        )
        checks = doctor.run_checks(config)
    text = doctor.format_text(checks)
    for secret in all_secrets():
        assert secret not in text
    assert "[redacted]" in text


# --- the CLI and the dashboard show the same checks ----------------------------------------


def test_cli_healthy_exits_zero(runner, custom_field_map):
    with responses.RequestsMock() as rsps:
        healthy(rsps)
        result = runner.invoke(["doctor"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("✓ Database: migrated")
    assert result.output.rstrip().endswith("all checks passed")


def test_cli_broken_exits_non_zero_with_fixes(runner, custom_field_map):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        healthy(
            rsps,
            hooks=[instantly_webhook("w1", "reply_received", headers=SECRET_HEADERS, status=-1)],
        )
        rsps.replace(
            responses.GET,
            f"{GHL}/locations/{LOCATION_ID}",
            json=ghl_error(401, "Invalid JWT"),
            status=401,
        )
        result = runner.invoke(["doctor"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "✗ GHL token and location: GET /locations/{id}: GHL 401: Invalid JWT" in lines
    assert "– GHL scopes: not checked: fix the GHL token and location first" in lines
    assert any(
        line.startswith("    fix: run `instantly-ghl-bridge webhook register --url")
        and line.endswith("--resume`")
        for line in lines
    )
    assert lines[-1] == "2 of 10 checks failed"


def test_cli_bad_url_is_a_usage_error(runner):
    result = runner.invoke(["doctor", "--url", "ftp://x"])
    assert result.exit_code == 2
    assert "not an http(s) URL" in result.output


def test_dashboard_runs_the_same_checks_and_shows_them(client, db, custom_field_map):
    login(client)
    assert "Not run yet" in client.get("/").get_data(as_text=True)
    with responses.RequestsMock() as rsps:
        healthy(rsps, fields=[])
        response = post(client, "/doctor")
    page = client.get(response.location).get_data(as_text=True)
    assert "1 of 10 checks failed: see the fixes below." in page
    assert "Field map custom fields</strong>: not in the GHL location: contact.icebreaker" in page
    assert "Fix: create them in GHL" in page
    for secret in all_secrets():
        assert secret not in page
