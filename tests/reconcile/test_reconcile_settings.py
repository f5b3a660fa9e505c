"""The [reconcile] settings: shipped defaults, validation naming the setting."""

from __future__ import annotations

import pytest

from bridge import settings as settings_mod
from bridge.events import types as event_types


def test_defaults_file_documents_and_sets_the_reconcile_section():
    assert settings_mod.load_defaults()["reconcile"] == {
        "enabled": True,
        "interval_minutes": 15,
        "overlap_minutes": 10,
        "first_run_days": 30,
        "campaigns": [],
        "lists": [],
    }


def test_settings_stored_before_reconciliation_existed_get_its_defaults():
    assert settings_mod.validate_settings({})["reconcile"]["interval_minutes"] == 15


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"interval_minutes": 0}, "reconcile.interval_minutes"),
        ({"overlap_minutes": -1}, "reconcile.overlap_minutes"),
        ({"first_run_days": "soon"}, "reconcile.first_run_days"),
        ({"campaigns": [""]}, "reconcile.campaigns.0"),
        ({"lists": "abc"}, "reconcile.lists"),
        ({"intervall_minutes": 5}, "reconcile.intervall_minutes"),
    ],
)
def test_bad_reconcile_settings_name_the_setting(section, path):
    with pytest.raises(settings_mod.SettingsError) as caught:
        settings_mod.validate_settings({"reconcile": section})
    assert path in caught.value.messages


def test_the_webhook_and_polling_share_one_rule_for_what_is_synced():
    settings = settings_mod.validate_settings(
        {"events": {"reply_received": {"enabled": False}}, "interest": {"enabled": False}}
    )
    assert not event_types.is_synced(settings, "reply_received")
    assert not event_types.is_synced(settings, "lead_interested")
    settings["events"]["reply_received"]["enabled"] = True
    settings["interest"]["enabled"] = True
    assert event_types.is_synced(settings, "reply_received")
    assert event_types.is_synced(settings, "lead_interested")
