"""The GHL ids and custom field keys in the settings, against what GHL lists."""

from __future__ import annotations

import pytest

from bridge import settings as settings_mod
from bridge.locations.registry import Location
from bridge.setup import ghl_refs

LISTS = ghl_refs.lists_from(
    [{"id": "contact.icebreaker", "name": "Icebreaker"}, {"id": "contact.industry", "name": "X"}],
    [{"id": "wf_follow_up", "name": "Follow-up", "status": "published"}],
    [
        {
            "id": "pl_sales",
            "name": "Sales",
            "stages": [{"id": "st_new", "name": "New"}, {"id": "st_won", "name": "Won"}],
        },
        {"id": "pl_partners", "name": "Partners", "stages": [{"id": "st_intro", "name": "Intro"}]},
    ],
)
UNLOADED = ghl_refs.GhlLists()


def settings_with(
    field_map=(), workflow: dict | None = None, opportunity: dict | None = None
) -> dict:
    current = settings_mod.load_defaults()
    current["field_map"] += [{"instantly": "x", "ghl": key} for key in field_map]
    current["actions"]["workflow"].update(workflow or {})
    stages = (opportunity or {}).pop("stages", {})
    current["actions"]["opportunity"].update(opportunity or {})
    current["actions"]["opportunity"]["stages"].update(stages)
    return settings_mod.validate_settings(current)


def test_known_references_pass():
    found = ghl_refs.check(
        settings_with(
            ["contact.icebreaker", "city"],
            {"enabled": True, "workflow_id": "wf_follow_up"},
            {"enabled": True, "pipeline_id": "pl_sales", "stage_id": "st_new"},
        ),
        LISTS,
    )
    assert (found.errors, found.warnings, found.unchecked) == ({}, {}, {})


def test_a_mistyped_custom_field_key_suggests_the_close_one():
    found = ghl_refs.check(settings_with(["contact.icebreakr"]), LISTS)
    assert found.errors == {
        "field_map.5.ghl": [
            "contact.icebreakr is not a custom field of this GHL location; "
            "did you mean contact.icebreaker?"
        ]
    }


def test_a_key_like_nothing_gets_no_suggestion():
    found = ghl_refs.check(settings_with(["contact.zzzz_qqqq"]), LISTS)
    assert found.errors == {
        "field_map.5.ghl": ["contact.zzzz_qqqq is not a custom field of this GHL location"]
    }


def test_a_name_typed_for_an_id_suggests_the_id():
    found = ghl_refs.check(
        settings_with(workflow={"enabled": True, "workflow_id": "follow-up"}), LISTS
    )
    assert found.errors["actions.workflow.workflow_id"] == [
        "follow-up is not a workflow in GHL; did you mean wf_follow_up (Follow-up)?"
    ]


@pytest.mark.parametrize(
    ("opportunity", "path", "message"),
    [
        (
            {"pipeline_id": "pl_sales", "stage_id": "st_intro"},
            "actions.opportunity.stage_id",
            "st_intro is a stage of the pipeline 'Partners', not of the chosen pipeline 'Sales'",
        ),
        (
            {"pipeline_id": "pl_sales", "stage_id": "st_new", "stages": {"closed": "Won"}},
            "actions.opportunity.stages.closed",
            "Won is not a stage of the pipeline 'Sales'; did you mean st_won (Won)?",
        ),
        (
            {"pipeline_id": "pl_gone", "stage_id": "st_new"},
            "actions.opportunity.pipeline_id",
            "pl_gone is not a pipeline in GHL",
        ),
    ],
)
def test_pipeline_and_stage_mistakes(opportunity, path, message):
    found = ghl_refs.check(settings_with(opportunity={"enabled": True, **opportunity}), LISTS)
    assert found.errors == {path: [message]}


def test_a_switched_off_action_warns_instead():
    found = ghl_refs.check(settings_with(workflow={"workflow_id": "wf_gone"}), LISTS)
    assert found.errors == {}
    assert found.warnings == {
        "actions.workflow.workflow_id": [
            "wf_gone is not a workflow in GHL (saved, as the action is off: fix it before "
            "switching it on)"
        ]
    }


def test_lists_that_could_not_be_loaded_leave_values_unchecked():
    found = ghl_refs.check(
        settings_with(
            ["contact.anything"],
            {"enabled": True, "workflow_id": "wf_typed"},
            {"enabled": True, "pipeline_id": "pl_typed", "stage_id": "st_typed"},
        ),
        UNLOADED,
    )
    assert found.errors == {} and found.warnings == {}
    assert found.unchecked == {
        "field_map.5.ghl": [
            "contact.anything not checked: GHL's custom fields could not be loaded"
        ],
        "actions.workflow.workflow_id": [
            "wf_typed not checked: GHL's workflows could not be loaded"
        ],
        "actions.opportunity.pipeline_id": [
            "pl_typed not checked: GHL's pipelines could not be loaded"
        ],
        "actions.opportunity.stage_id": [
            "st_typed not checked: GHL's pipelines could not be loaded"
        ],
    }


def test_ghl_answers_are_shaped_without_tripping_on_missing_names():
    assert ghl_refs.custom_field_items(
        [{"fieldKey": "contact.a", "name": ""}, {"fieldKey": "opportunity.b"}, {"name": "no key"}]
    ) == [{"id": "contact.a", "name": "contact.a"}]
    assert ghl_refs.workflow_items([{"id": "w1"}, {"name": "no id"}]) == [
        {"id": "w1", "name": "w1", "status": ""}
    ]
    assert ghl_refs.pipeline_items([{"id": "p1", "stages": [{"id": "s1"}, "junk", {}]}]) == [
        {"id": "p1", "name": "", "stages": [{"id": "s1", "name": "s1"}]}
    ]


# --- per location ---------------------------------------------------------------------------

CLIENT_LISTS = ghl_refs.lists_from([{"id": "contact.implant", "name": "Implant"}], [], [])


def agency(overrides: dict) -> dict:
    current = settings_with(["contact.icebreaker"])
    current["locations"] = [{"id": "loc_client", "name": "Client", "overrides": overrides}]
    return settings_mod.validate_settings(current)


def test_the_bridges_value_wrong_for_one_location_is_named_after_it():
    settings = agency({})
    location = Location("loc_client", "Client", token="tok")
    target = ghl_refs.targets(settings, [location])[0]
    assert target == ghl_refs.Target("loc_client", "Client (loc_client)", {}, 0)
    found = ghl_refs.check_location(settings, target, CLIENT_LISTS, named=True)
    assert found.errors == {
        "field_map.5.ghl": [
            "Client (loc_client): contact.icebreaker is not a custom field of this GHL location"
        ]
    }
    # Alone, the location needs no name in the message.
    alone = ghl_refs.check_location(settings, target, CLIENT_LISTS)
    assert alone.errors["field_map.5.ghl"][0].startswith("contact.icebreaker is not")


def test_a_value_the_location_overrides_is_reported_under_its_overrides():
    overrides = {
        "field_map": [{"instantly": "x", "ghl": "contact.implnt"}],
        "actions": {"workflow": {"enabled": True, "workflow_id": "wf_gone"}},
    }
    settings = agency(overrides)
    target = ghl_refs.Target("loc_client", "Client", overrides, 0)
    found = ghl_refs.check_location(settings, target, CLIENT_LISTS, named=True)
    assert found.errors == {
        "locations.0.overrides.field_map.0.ghl": [
            "contact.implnt is not a custom field of this GHL location; did you mean "
            "contact.implant?"
        ],
        "locations.0.overrides.actions.workflow.workflow_id": [
            "wf_gone is not a workflow in GHL (GHL lists none)"
        ],
    }


def test_a_location_whose_lists_did_not_load_leaves_its_values_unchecked():
    settings = agency({})
    target = ghl_refs.Target("loc_client", "Client", {}, 0)
    found = ghl_refs.check_location(settings, target, UNLOADED, named=True)
    assert found.errors == {}
    assert found.unchecked == {
        "field_map.5.ghl": [
            "Client: contact.icebreaker not checked: GHL's custom fields could not be loaded"
        ]
    }
