"""Choices for the settings form: from GHL (the fake) and Instantly, cached, never required."""

from __future__ import annotations

import pytest
import responses

from bridge.web.admin import lookups
from tests.web_helpers import INSTANTLY

pytestmark = pytest.mark.admin

ALL_PICKERS = set(lookups.PICKERS)


def test_ghl_pickers_list_custom_fields_workflows_pipelines_and_stages(
    db, config, fake_ghl, mocked_http
):
    fake_ghl.add_custom_field("icebreaker", "Icebreaker")
    workflow = fake_ghl.add_workflow("Replied follow-up")
    pipeline = fake_ghl.add_pipeline("Instantly", ["Replied", "Interested"])
    mocked_http.get(f"{INSTANTLY}/api/v2/campaigns", json={"items": []})
    mocked_http.get(f"{INSTANTLY}/api/v2/lead-lists", json={"items": []})
    found = lookups.load(db, config, ALL_PICKERS)
    assert all(found[name].error is None for name in ALL_PICKERS), found
    assert ("contact.icebreaker", "custom field: Icebreaker") in found["ghl_field"].options
    assert ("firstName", "standard field") in found["ghl_field"].options
    assert found["ghl_workflow"].options == [(workflow, "Replied follow-up (published)")]
    assert found["ghl_pipeline"].options == [(pipeline["id"], "Instantly")]
    assert found["ghl_stage"].options == [
        (pipeline["stages"][0]["id"], "Instantly › Replied"),
        (pipeline["stages"][1]["id"], "Instantly › Interested"),
    ]
    # Pipelines and stages come from one call.
    assert len(fake_ghl.calls_to("GET", "/opportunities/pipelines")) == 1


def test_instantly_pickers_list_campaigns_and_lead_lists_across_pages(
    db, config, fake_ghl, mocked_http
):
    mocked_http.get(
        f"{INSTANTLY}/api/v2/campaigns",
        json={"items": [{"id": "c1", "name": "Q1 outreach"}], "next_starting_after": "c1"},
    )
    mocked_http.get(f"{INSTANTLY}/api/v2/campaigns", json={"items": [{"id": "c2", "name": "Q2"}]})
    mocked_http.get(
        f"{INSTANTLY}/api/v2/lead-lists", json={"items": [{"id": "l1", "name": "Dentists"}]}
    )
    found = lookups.load(db, config, {"instantly_campaign", "instantly_list"})
    assert found["instantly_campaign"].options == [("c1", "Q1 outreach"), ("c2", "Q2")]
    assert found["instantly_list"].options == [("l1", "Dentists")]


def test_lists_are_cached_for_ten_minutes(db, config, fake_ghl):
    now = [1000.0]
    lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])
    now[0] += lookups.CACHE_SECONDS - 1
    lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])
    assert len(fake_ghl.calls_to("GET", "/workflows/")) == 1
    now[0] += 2
    lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])
    assert len(fake_ghl.calls_to("GET", "/workflows/")) == 2
    lookups.load(db, config, {"ghl_workflow"}, refresh=True, clock=lambda: now[0])
    assert len(fake_ghl.calls_to("GET", "/workflows/")) == 3


def test_a_failure_is_shown_and_retried_on_the_next_load(db, config, fake_ghl):
    now = [1000.0]
    fake_ghl.fail_next(1, 503)
    first = lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])["ghl_workflow"]
    assert first.options == [] and "503" in first.error
    # No time passes: the page opened again asks GHL again, and now gets the list.
    again = lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])["ghl_workflow"]
    assert again.error is None
    assert len(fake_ghl.calls_to("GET", "/workflows/")) == 2


def test_a_failed_refresh_keeps_asking_and_then_caches_the_list(db, config, fake_ghl):
    now = [1000.0]
    lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])
    now[0] += lookups.CACHE_SECONDS + 1
    fake_ghl.fail_next(2, 502)
    for _ in range(2):
        failed = lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])
        assert "502" in failed["ghl_workflow"].error
    lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])
    lookups.load(db, config, {"ghl_workflow"}, clock=lambda: now[0])
    assert len(fake_ghl.calls_to("GET", "/workflows/")) == 4  # 1 + 2 failed + 1, then cached


def test_a_failure_cached_by_an_older_version_is_not_served(db, config, fake_ghl):
    from bridge.store import state

    name = lookups.cache_name("ghl_workflows", lookups.env_location(config))
    state.put(db, name, {"at": 1000.0, "items": [], "error": "x"})
    found = lookups.load(db, config, {"ghl_workflow"}, clock=lambda: 1001.0)["ghl_workflow"]
    assert found.error is None
    assert len(fake_ghl.calls_to("GET", "/workflows/")) == 1


def test_a_403_from_instantly_is_an_error_not_an_empty_list(db, config, mocked_http):
    mocked_http.get(f"{INSTANTLY}/api/v2/campaigns", body="error code: 1010", status=403)
    found = lookups.load(db, config, {"instantly_campaign"})["instantly_campaign"]
    assert found.options == [] and "forbidden" in found.error


def test_unconfigured_apis_are_never_called(db, env):
    from bridge.config import load_config

    bare = load_config(
        {k: v for k, v in env.items() if k not in ("GHL_TOKEN", "INSTANTLY_API_KEY")}
    )
    with responses.RequestsMock():
        found = lookups.load(db, bare, ALL_PICKERS)
    assert "GHL is not configured" in found["ghl_workflow"].error
    assert "Instantly is not configured" in found["instantly_list"].error
    assert found["instantly_field"].error is None and found["instantly_field"].options


def test_each_locations_lists_are_fetched_with_its_token_and_cached_apart(db, config, fake_ghl):
    from bridge.locations.registry import Location
    from bridge.store import state

    fake_ghl.add_workflow("Ours")
    client = fake_ghl.add_location("loc_client", "tok-client", name="Client")
    theirs = client.add_workflow("Theirs")
    location = Location("loc_client", "Client", token="tok-client")
    found = lookups.load(db, config, {"ghl_workflow"}, location=location)["ghl_workflow"]
    assert found.options == [(theirs, "Theirs (published)")]
    own = lookups.load(db, config, {"ghl_workflow"})["ghl_workflow"]
    assert [label for _, label in own.options] == ["Ours (published)"]
    # Each cached under its own location's name: asked again, neither is fetched.
    lookups.load(db, config, {"ghl_workflow"}, location=location)
    lookups.load(db, config, {"ghl_workflow"})
    assert len(client.calls_to("GET", "/workflows/")) == 1
    assert len(fake_ghl.default.calls_to("GET", "/workflows/")) == 1
    assert state.get(db, "lookup:ghl_workflows:loc_client")["items"][0]["name"] == "Theirs"
    assert state.get(db, "lookup:ghl_workflows:loc_test")["items"][0]["name"] == "Ours"


def test_a_location_without_a_usable_token_is_never_asked(db, config, fake_ghl):
    from bridge.locations.registry import Location

    broken = Location("loc_client", "Client", token="", problem="location Client: no token")
    found = lookups.load(db, config, {"ghl_workflow", "ghl_field"}, location=broken)
    assert found["ghl_workflow"].error == "location Client: no token: type the value"
    assert lookups.failures(found, "Client") == [
        ("GHL custom fields of Client", "location Client: no token: type the value"),
        ("GHL workflows of Client", "location Client: no token: type the value"),
    ]
    assert fake_ghl.calls == []
