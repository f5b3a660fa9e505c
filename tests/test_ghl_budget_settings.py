"""sync.ghl_daily_reserve and sync.ghl_daily_probe_seconds: defaults from
config/defaults.toml, their ranges, the settings page's fields with help, and a location's
overrides, checked like any other sync setting."""

from __future__ import annotations

import tomllib

import pytest
from markupsafe import escape

from bridge import settings as settings_mod
from bridge.clients.budget import Budget
from bridge.clients.ghl import GHLClient
from bridge.locations.registry import Location
from bridge.sync.lanes import Lane
from tests.helpers import LOCATION_ID
from tests.test_admin_settings import block, form_of, save
from tests.test_settings_locations import client_entry, page_of, with_locations
from tests.web_helpers import INSTANTLY

pytestmark = pytest.mark.admin


@pytest.fixture
def ghl(fake_ghl, mocked_http):
    """GHL_LOCATION_ID's location and a client location, each answering its own token."""
    fake_ghl.add_location(client_entry()["id"], "pit-client-b-budget-7c1e", name="Brightwater")
    mocked_http.get(f"{INSTANTLY}/api/v2/campaigns", json={"items": []})
    mocked_http.get(f"{INSTANTLY}/api/v2/lead-lists", json={"items": []})
    return fake_ghl


def test_defaults_file_documents_and_sets_both():
    text = settings_mod.DEFAULTS_FILE.read_text(encoding="utf-8")
    sync = tomllib.loads(text)["sync"]
    assert sync["ghl_daily_reserve"] == 1000
    assert sync["ghl_daily_probe_seconds"] == 300
    # Each is introduced by a comment saying what it is for.
    before_reserve = text[: text.index("ghl_daily_reserve =")].splitlines()[-1]
    before_probe = text[: text.index("ghl_daily_probe_seconds =")].splitlines()[-1]
    assert before_reserve.startswith("#") and before_probe.startswith("#")
    assert "kept back from syncing" in text and "to\n# see if it is back" in text
    loaded = settings_mod.load_defaults()["sync"]
    assert loaded["ghl_daily_reserve"] == 1000
    assert loaded["ghl_daily_probe_seconds"] == 300.0


def test_settings_stored_before_them_load_with_the_defaults():
    sync = settings_mod.validate_settings({"sync": {"max_attempts": 3}})["sync"]
    assert sync["ghl_daily_reserve"] == 1000
    assert sync["ghl_daily_probe_seconds"] == 300.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ghl_daily_reserve", 0),
        ("ghl_daily_reserve", 100_000),
        ("ghl_daily_probe_seconds", 5),
        ("ghl_daily_probe_seconds", 3600),
    ],
)
def test_the_ends_of_each_range_are_accepted(name, value):
    assert settings_mod.validate_settings({"sync": {name: value}})["sync"][name] == value


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ghl_daily_reserve", -1, "Must be greater than or equal to 0"),
        ("ghl_daily_reserve", 100_001, "less than or equal to 100000"),
        ("ghl_daily_reserve", "lots", "Not a valid integer."),
        ("ghl_daily_probe_seconds", 4.9, "Must be greater than or equal to 5"),
        ("ghl_daily_probe_seconds", 3601, "less than or equal to 3600"),
        ("ghl_daily_probe_seconds", "soon", "Not a valid number."),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_setting(name, value, message):
    with pytest.raises(settings_mod.SettingsError) as caught:
        settings_mod.validate_settings({"sync": {name: value}})
    assert list(caught.value.messages) == [f"sync.{name}"]
    assert message in " ".join(caught.value.messages[f"sync.{name}"])


def test_the_settings_page_shows_both_with_help_and_saves_them(logged_in, db, ghl):
    page = page_of(logged_in)
    reserve = block(page, "sync.ghl_daily_reserve")
    assert "GHL daily calls kept in reserve" in reserve
    assert str(escape("Calls of GHL's daily budget per location kept back from syncing")) in reserve
    assert 'name="sync.ghl_daily_reserve" value="1000" step="1"' in reserve
    probe = block(page, "sync.ghl_daily_probe_seconds")
    assert "Check for the daily budget every (seconds)" in probe
    assert "one call this often" in probe
    assert 'name="sync.ghl_daily_probe_seconds" value="300" step="any"' in probe

    data = form_of(page)
    data["sync.ghl_daily_reserve"] = "2500"
    data["sync.ghl_daily_probe_seconds"] = "60"
    response = save(logged_in, data)
    assert response.status_code == 302, response.get_data(as_text=True)
    sync = settings_mod.current(db)[1]["sync"]
    assert (sync["ghl_daily_reserve"], sync["ghl_daily_probe_seconds"]) == (2500, 60.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sync.ghl_daily_reserve", "-5", "Must be greater than or equal to 0"),
        ("sync.ghl_daily_probe_seconds", "1", "Must be greater than or equal to 5"),
        ("sync.ghl_daily_reserve", "lots", "Not a valid integer."),
    ],
)
def test_a_bad_value_on_the_page_is_refused_beside_its_field(
    logged_in,
    db,
    ghl,
    field,
    value,
    message,
):
    data = form_of(page_of(logged_in))
    data[field] = value
    response = save(logged_in, data)
    assert response.status_code == 400
    assert message in block(response.get_data(as_text=True), field)
    assert settings_mod.version(db) == 1


def test_a_location_may_override_them(db, ghl):
    current = with_locations(
        db,
        client_entry(
            overrides={"sync": {"ghl_daily_reserve": 5000, "ghl_daily_probe_seconds": 30}}
        ),
    )
    location = current["locations"][0]
    theirs = settings_mod.for_location(current, location["overrides"])["sync"]
    assert (theirs["ghl_daily_reserve"], theirs["ghl_daily_probe_seconds"]) == (5000, 30.0)
    # The rest of [sync] is the bridge's, and the bridge's own stay the defaults.
    assert theirs["max_attempts"] == current["sync"]["max_attempts"]
    assert current["sync"]["ghl_daily_reserve"] == 1000


def test_an_override_out_of_range_is_refused_beside_the_overrides(logged_in, db, ghl):
    with_locations(db, client_entry())
    data = form_of(page_of(logged_in))
    data["locations.0.overrides"] = "[sync]\nghl_daily_probe_seconds = 2\n"
    response = save(logged_in, data)
    assert response.status_code == 400
    assert "sync.ghl_daily_probe_seconds: Must be greater than or equal to 5" in block(
        response.get_data(as_text=True), "locations.0.overrides"
    )
    assert settings_mod.version(db) == 2


def test_a_locations_lane_keeps_its_overridden_reserve_and_probe(db, ghl):
    overrides = {"sync": {"ghl_daily_reserve": 5000, "ghl_daily_probe_seconds": 30}}
    current = with_locations(db, client_entry(overrides=overrides))
    lanes = []
    for location_id, theirs in ((client_entry()["id"], overrides), (LOCATION_ID, {})):
        budget = Budget(db, location_id, for_sync=True)
        client = GHLClient("https://ghl.invalid", "pit-unused", location_id, budget=budget)
        location = Location(id=location_id, name="", token="pit-unused", overrides=theirs)
        lane = Lane(db, location, client, 300.0, lambda: None)
        lane.settings(current)
        lanes.append((budget.reserve, budget.probe_seconds))
        budget.close()
    assert lanes == [(5000, 30.0), (1000, 300.0)]
