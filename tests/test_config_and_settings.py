"""Configuration from the environment, and the mapping settings' validation."""

from __future__ import annotations

import pytest

from bridge import create_app
from bridge import settings as settings_mod
from bridge.config import ConfigError, load_config, read_key_file


def test_key_file_skips_comment_and_blank_lines(tmp_path):
    path = tmp_path / "instantly.key"
    path.write_text("# Instantly API key, workspace Acme\n\n   # rotated 2026-01\n  key-abc123  \n")
    config = load_config(
        {"INSTANTLY_API_KEY_FILE": str(path), "BRIDGE_INSTANCE_PATH": str(tmp_path)}
    )
    assert config.instantly_api_key == "key-abc123"


def test_key_file_with_only_comments_names_the_setting(tmp_path):
    path = tmp_path / "empty.key"
    path.write_text("# nothing here\n\n")
    with pytest.raises(ConfigError, match="INSTANTLY_API_KEY_FILE"):
        read_key_file(path)


def test_env_key_wins_over_key_file(tmp_path):
    config = load_config(
        {
            "INSTANTLY_API_KEY": "direct",
            "INSTANTLY_API_KEY_FILE": "/nonexistent",
            "BRIDGE_INSTANCE_PATH": str(tmp_path),
        }
    )
    assert config.instantly_api_key == "direct"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"GHL_BASE_URL": "ftp://x"}, "GHL_BASE_URL"),
        ({"BRIDGE_LEASE_SECONDS": "soon"}, "BRIDGE_LEASE_SECONDS"),
        ({"BRIDGE_LEASE_SECONDS": "0"}, "BRIDGE_LEASE_SECONDS"),
        ({"BRIDGE_LEASE_SECONDS": "nan"}, "BRIDGE_LEASE_SECONDS"),
    ],
)
def test_bad_environment_values_name_the_setting(tmp_path, env, name):
    with pytest.raises(ConfigError, match=name):
        load_config({**env, "BRIDGE_INSTANCE_PATH": str(tmp_path)})


def test_defaults_are_sensible(tmp_path):
    config = load_config({"BRIDGE_INSTANCE_PATH": str(tmp_path)})
    assert config.database == str(tmp_path / "bridge.sqlite3")
    assert config.ghl_base_url == "https://services.leadconnectorhq.com"
    assert config.instantly_base_url == "https://api.instantly.ai"
    assert set(config.missing()) == {
        "GHL_TOKEN",
        "GHL_LOCATION_ID",
        "BRIDGE_WEBHOOK_SECRET",
        "INSTANTLY_API_KEY",
    }


def test_generated_secret_key_is_shared_by_every_process(tmp_path):
    first = load_config({"BRIDGE_INSTANCE_PATH": str(tmp_path)}).secret_key
    second = load_config({"BRIDGE_INSTANCE_PATH": str(tmp_path)}).secret_key
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_shipped_defaults_validate():
    settings = settings_mod.load_defaults()
    assert settings["events"]["reply_received"]["enabled"] is True
    assert {"instantly": "firstName", "ghl": "firstName"} in settings["field_map"]


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (
            lambda s: s["sync"].update(max_attempts=0),
            "sync.max_attempts",
            "greater than or equal to 1",
        ),
        (
            lambda s: s["events"]["reply_received"].update(tags=["x-{campaign}"]),
            "events.reply_received.tags.0",
            "unknown placeholder {campaign}",
        ),
        (
            lambda s: s["events"]["reply_received"].update(tags=["x-{campaign_name"]),
            "events.reply_received.tags.0",
            "bad template",
        ),
        (
            lambda s: s["events"]["reply_received"].update(tags=["x-{campaign_name:{step}}"]),
            "events.reply_received.tags.0",
            "placeholder {campaign_name:{step}} in 'x-{campaign_name:{step}}' is not allowed",
        ),
        (
            lambda s: s["events"]["lead_unsubscribed"].update(
                tags=["ok", "x-{campaign_name:{step.__class__.__mro__}}"]
            ),
            "events.lead_unsubscribed.tags.1",
            "placeholder {campaign_name:{step.__class__.__mro__}} in",
        ),
        (
            lambda s: s["interest"].update(custom_label_tags=["l-{label!r}"]),
            "interest.custom_label_tags.0",
            "placeholder {label!r} in",
        ),
        (
            lambda s: s["actions"]["opportunity"].update(name="{name:>99999}"),
            "actions.opportunity.name",
            "placeholder {name:>99999} in",
        ),
        (
            lambda s: s["events"].update(email_opened={"enabled": True}),
            "events.email_opened",
            "Must be one of",
        ),
        (
            lambda s: s["field_map"].append({"instantly": "city", "ghl": "hometown"}),
            "field_map.5.ghl",
            "neither a GHL standard field",
        ),
        (
            lambda s: s["field_map"].append({"instantly": "x", "ghl": "firstName"}),
            "field_map.5.ghl",
            "mapped twice",
        ),
        (lambda s: s.update(colour="blue"), "colour", "Unknown field"),
    ],
)
def test_bad_settings_name_the_setting(change, path, words):
    settings = settings_mod.load_defaults()
    change(settings)
    with pytest.raises(settings_mod.SettingsError) as caught:
        settings_mod.validate_settings(settings)
    assert path in caught.value.messages, caught.value.messages
    assert words in " ".join(caught.value.messages[path])
    assert path in str(caught.value)


def test_custom_field_targets_are_allowed():
    settings = settings_mod.load_defaults()
    settings["field_map"].append({"instantly": "icebreaker", "ghl": "contact.icebreaker"})
    assert settings_mod.validate_settings(settings)["field_map"][-1]["ghl"] == "contact.icebreaker"


def test_toml_round_trip_keeps_every_setting():
    settings = settings_mod.load_defaults()
    assert settings_mod.parse_toml(settings_mod.to_toml(settings)) == settings


def test_malformed_toml_is_reported():
    with pytest.raises(settings_mod.SettingsError, match="toml"):
        settings_mod.parse_toml("[sync\nsource = 1")


def test_save_bumps_the_version_the_worker_polls(db):
    version, settings = settings_mod.current(db)
    settings["sync"]["source"] = "Cold email"
    assert settings_mod.save(db, settings) == version + 1
    assert settings_mod.version(db) == version + 1
    cache = settings_mod.SettingsCache()
    assert cache.get(db)["sync"]["source"] == "Cold email"


def test_a_stored_tag_template_with_a_format_spec_stops_start_up_naming_it(config, db):
    db.execute(
        "UPDATE settings SET body = json_set(body, '$.events.reply_received.tags[1]', ?)",
        ["x-{campaign_name:{step}}"],
    )
    with pytest.raises(settings_mod.SettingsError, match="events.reply_received.tags.1"):
        create_app({"BRIDGE_CONFIG": config, "TESTING": True})


def test_a_bad_stored_setting_stops_start_up_naming_it(config, db):
    db.execute("UPDATE settings SET body = json_set(body, '$.sync.max_attempts', -3)")
    with pytest.raises(settings_mod.SettingsError, match="sync.max_attempts"):
        create_app({"BRIDGE_CONFIG": config, "TESTING": True})
