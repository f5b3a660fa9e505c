"""Interest events and custom labels at the webhook, and the settings that steer them."""

from __future__ import annotations

import json

import pytest

from bridge import settings as settings_mod
from bridge.events import types as event_types
from bridge.store import db as store
from tests.helpers import post_webhook, reply_payload
from tests.interest_helpers import change_settings, interest_payload, lead_event_payload

INSTANTLY_INTEREST_EVENTS = [
    "lead_interested",
    "lead_not_interested",
    "lead_neutral",
    "lead_meeting_booked",
    "lead_meeting_completed",
    "lead_closed",
    "lead_out_of_office",
    "lead_wrong_person",
    "lead_no_show",
]


def stored_types(db):
    return [r[0] for r in db.execute("SELECT event_type FROM events ORDER BY id")]


# --- the webhook --------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", INSTANTLY_INTEREST_EVENTS)
def test_every_instantly_interest_event_is_accepted(client, db, event_type):
    response = post_webhook(client, interest_payload(event_type, "2025-06-11T10:46:06.862Z"))
    assert (response.status_code, response.json["status"]) == (202, "accepted")
    assert stored_types(db) == [event_type]


def test_interest_events_are_ignored_when_interest_sync_is_off(client, db):
    change_settings(db, "interest", enabled=False)
    response = post_webhook(client, interest_payload("lead_interested", "2025-06-11T10:46:06Z"))
    assert (response.status_code, response.json["status"]) == (200, "ignored")
    assert stored_types(db) == []


def test_a_custom_label_is_acknowledged_and_ignored_by_default(client, db):
    response = post_webhook(client, interest_payload("Hot Lead", "2025-06-11T10:46:06Z"))
    assert (response.status_code, response.json["status"]) == (200, "ignored")
    assert stored_types(db) == []


def test_a_custom_label_is_accepted_when_labels_sync(client, db):
    change_settings(db, "interest", sync_custom_labels=True)
    response = post_webhook(client, interest_payload("Hot Lead", "2025-06-11T10:46:06Z"))
    assert (response.status_code, response.json["status"]) == (202, "accepted")
    assert stored_types(db) == ["Hot Lead"]


@pytest.mark.parametrize("event_type", ["email_opened", "link_clicked", "campaign_completed"])
def test_instantly_event_types_are_never_taken_for_custom_labels(client, db, event_type):
    change_settings(db, "interest", sync_custom_labels=True)
    response = post_webhook(client, lead_event_payload(event_type, "2025-06-11T10:46:06Z"))
    assert (response.status_code, response.json["status"]) == (200, "ignored")


def test_every_event_type_in_instantlys_webhook_schema_is_known(tmp_path):
    from tests.support.specs import SPECS_DIR, specs_available

    if not specs_available():
        pytest.skip(f"../shared/specs not found: {SPECS_DIR} (set BRIDGE_SPECS_DIR)")
    spec = json.loads((SPECS_DIR / "instantly" / "api_v2.openapi.json").read_text())
    enum = spec["components"]["schemas"]["Webhook"]["properties"]["event_type"]["enum"]
    subscribable = set(enum) - {"all_events"}
    assert subscribable <= event_types.INSTANTLY_EVENT_TYPES
    assert not any(event_types.is_custom_label(name) for name in subscribable)


def test_unsubscribes_sync_and_bounces_and_auto_replies_do_not_by_default(client, db):
    unsub = post_webhook(client, lead_event_payload("lead_unsubscribed", "2025-06-12T08:00:00Z"))
    bounce = post_webhook(client, lead_event_payload("email_bounced", "2025-06-12T08:00:00Z"))
    auto = post_webhook(client, reply_payload(event_type="auto_reply_received", email_id="auto-1"))
    assert unsub.json["status"] == "accepted"
    assert bounce.json["status"] == "ignored"
    assert auto.json["status"] == "ignored"


# --- statuses, codes and labels ----------------------------------------------------------


def test_each_numeric_interest_code_names_an_event_the_worker_syncs():
    codes = {1: "interested", 2: "meeting_booked", 3: "meeting_completed", 4: "closed",
             0: "out_of_office", -1: "not_interested", -2: "wrong_person", -3: "lost",
             -4: "no_show"}  # fmt: skip
    for code, status in codes.items():
        assert event_types.status_for_code(code) == status
        event_type = event_types.EVENT_BY_STATUS[status]
        assert event_types.interest_status(event_type) == status
        assert not event_types.is_custom_label(event_type)


def test_a_custom_label_is_a_status_of_its_own():
    assert event_types.interest_status("Hot Lead") == "label:Hot Lead"
    assert event_types.label_of("label:Hot Lead") == "Hot Lead"
    assert event_types.interest_status("reply_received") is None
    assert event_types.label_of("interested") == ""


# --- settings -----------------------------------------------------------------------------


def test_shipped_defaults_for_interest_and_actions():
    defaults = settings_mod.load_defaults()
    assert defaults["interest"]["enabled"] is True
    assert defaults["interest"]["tags"]["interested"] == ["instantly-interested"]
    assert defaults["interest"]["tags"]["closed"] == ["instantly-won"]
    assert defaults["interest"]["sync_custom_labels"] is False
    assert defaults["interest"]["custom_label_tags"] == ["instantly-label-{label}"]
    assert defaults["events"]["lead_unsubscribed"] == {
        "enabled": True,
        "dnd": True,
        "tags": ["instantly-unsubscribed"],
    }
    assert defaults["events"]["email_bounced"]["enabled"] is False
    assert defaults["events"]["auto_reply_received"]["enabled"] is False
    actions = defaults["actions"]
    assert not any(actions[name]["enabled"] for name in ("reply_note", "workflow", "opportunity"))


def test_the_schema_fills_what_stored_settings_lack():
    loaded = settings_mod.validate_settings({})
    assert loaded["interest"] == settings_mod.load_defaults()["interest"]
    assert loaded["actions"] == settings_mod.load_defaults()["actions"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"actions": {"workflow": {"enabled": True}}},
         "actions.workflow.workflow_id: required when enabled"),
        ({"actions": {"opportunity": {"enabled": True}}},
         "actions.opportunity.pipeline_id: required when enabled"),
        ({"actions": {"opportunity": {"enabled": True, "pipeline_id": "p1",
                                      "stages": {"interested": "s1"}, "statuses": ["interested", "closed"]}}},
         "actions.opportunity.stage_id: required when enabled, unless each chosen status has its own stage (none for closed"),
        ({"actions": {"workflow": {"statuses": ["hot"]}}},
         "actions.workflow.statuses.0: unknown status 'hot'"),
        ({"actions": {"opportunity": {"ghl_status": {"closed": "done"}}}},
         "actions.opportunity.ghl_status.closed: Must be one of"),
        ({"actions": {"opportunity": {"name": "{company}"}}},
         "actions.opportunity.name: unknown placeholder {company}"),
        ({"events": {"reply_received": {"dnd": True}}},
         "events.reply_received.dnd: only lead_unsubscribed and email_bounced can set DND"),
        ({"events": {"lead_interested": {"enabled": True}}},
         "events.lead_interested: Must be one of: reply_received, auto_reply_received, "
         "lead_unsubscribed, email_bounced. Interest statuses are set under [interest]."),
        ({"interest": {"tags": {"interested": ["{label}"]}}},
         "interest.tags.interested.0: unknown placeholder {label}"),
        ({"interest": {"tags": {"hot": ["x"]}}}, "interest.tags.hot: Unknown field."),
        ({"interest": {"custom_label_tags": ["x-{nope}"]}},
         "interest.custom_label_tags.0: unknown placeholder {nope}"),
    ],
)  # fmt: skip
def test_bad_interest_and_action_settings_name_the_setting(raw, message):
    with pytest.raises(settings_mod.SettingsError) as caught:
        settings_mod.validate_settings(raw)
    assert message in str(caught.value)


def test_enabled_actions_with_what_they_need_validate():
    loaded = settings_mod.validate_settings(
        {
            "actions": {
                "workflow": {"enabled": True, "workflow_id": "wf_1"},
                "opportunity": {
                    "enabled": True,
                    "pipeline_id": "pl_1",
                    "stage_id": "st_default",
                    "stages": {"closed": "st_won"},
                },
            },
            "interest": {"custom_label_tags": ["label-{label}", "{campaign_name}"]},
        }
    )
    opportunity = loaded["actions"]["opportunity"]
    assert settings_mod.stage_for(opportunity, "closed") == "st_won"
    assert settings_mod.stage_for(opportunity, "interested") == "st_default"


def test_settings_round_trip_through_toml():
    defaults = settings_mod.load_defaults()
    assert settings_mod.parse_toml(settings_mod.to_toml(defaults)) == defaults


def test_settings_stored_before_this_release_gain_the_new_event_sections(config):
    database = store.connect(config.database)
    store.load_migrations().apply(database, stop_before="m010_interest_and_actions")
    old = {
        "sync": {"source": "Instantly"},
        "events": {"reply_received": {"enabled": False, "tags": ["mine"]}},
        "field_map": [],
    }
    database["settings"].insert({"id": 1, "version": 3, "body": json.dumps(old), "updated_at": ""})
    assert store.migrate(database)[:2] == ["m010_interest_and_actions", "m020_reconcile_runs"]
    version, current = settings_mod.current(database)
    assert version == 4, "a new version, so running processes reload their settings"
    assert current["events"]["reply_received"] == {"enabled": False, "tags": ["mine"], "dnd": False}
    assert current["events"]["lead_unsubscribed"] == {
        "enabled": True,
        "dnd": True,
        "tags": ["instantly-unsubscribed"],
    }
    assert current["events"]["email_bounced"]["enabled"] is False
    assert current["interest"]["enabled"] is True
    database.close()
