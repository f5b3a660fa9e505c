"""The settings page edits locations, Instantly workspaces and routes; a location's token
may be typed on it (stored encrypted, never shown again); GHL's lists on the page and in
the save-time checks are each location's own, fetched with its own token."""

from __future__ import annotations

import pytest
from markupsafe import escape

from bridge import settings as settings_mod
from bridge.locations import tokens
from bridge.store import state
from bridge.web.admin import lookups
from tests.helpers import LOCATION_ID
from tests.test_admin_settings import block, form_of, save
from tests.web_helpers import INSTANTLY, form_row, post

pytestmark = pytest.mark.admin

CLIENT = "ve9EPM428h8vShlRW1KT"
CLIENT_NAME = "Brightwater Orthodontics"
CLIENT_TOKEN = "pit-client-b-0f3e9a7c-only-theirs-91d2"
ACME_TOKEN = "pit-acme-from-env-6b1d44c0"
WORKSPACE = "3f0c6d1e-8a7b-4c2d-9e5f-000000000b0b"


@pytest.fixture
def env(env):
    """The bridge's environment holds one location token variable, GHL_TOKEN_ACME."""
    return {**env, "GHL_TOKEN_ACME": ACME_TOKEN}


@pytest.fixture
def ghl(fake_ghl, mocked_http):
    """GHL_LOCATION_ID's location with the custom field icebreaker, and a client location
    with implant_interest instead; each answers only its own token (the fake_ghl fixture
    fails the test on any cross-location call)."""
    fake_ghl.add_custom_field("icebreaker", "Icebreaker")
    client = fake_ghl.add_location(CLIENT, CLIENT_TOKEN, name=CLIENT_NAME)
    client.add_custom_field("implant_interest", "Implant interest")
    fake_ghl.client = client
    mocked_http.get(f"{INSTANTLY}/api/v2/campaigns", json={"items": []})
    mocked_http.get(f"{INSTANTLY}/api/v2/lead-lists", json={"items": []})
    return fake_ghl


def with_locations(db, *entries: dict, routing: dict | None = None, workspaces=()) -> dict:
    _, current = settings_mod.current(db)
    current["locations"] = list(entries)
    current["instantly"] = {"workspaces": list(workspaces)}
    if routing is not None:
        current["routing"] = routing
    settings_mod.save(db, current)
    return settings_mod.current(db)[1]


def client_entry(**extra) -> dict:
    return {"id": CLIENT, "name": CLIENT_NAME, **extra}


def page_of(client, query: str = "") -> str:
    response = client.get("/settings" + query)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def card(page: str, index: int) -> str:
    start = page.index(f'<fieldset id="s-locations.{index}"')
    return page[start : page.index("</fieldset>", start)]


# --- the form ---------------------------------------------------------------------------------


def test_each_location_is_a_card_with_its_routes_overrides_and_the_default_route(
    logged_in, db, ghl
):
    with_locations(
        db,
        client_entry(
            campaigns=["camp-1", "camp-2"],
            workspaces=[WORKSPACE],
            overrides={"events": {"reply_received": {"tags": ["replied", "bw-{campaign_name}"]}}},
        ),
        routing={"default_location": "none"},
        workspaces=[{"id": WORKSPACE, "name": "Brightwater outreach", "key_env": ""}],
    )
    page = page_of(logged_in)
    here = card(page, 0)
    assert f"<legend>{CLIENT_NAME}</legend>" in here
    assert f'name="locations.0.id" value="{CLIENT}"' in here
    assert ">camp-1\ncamp-2</textarea>" in here
    assert f">{WORKSPACE}</textarea>" in here
    overrides = block(page, "locations.0.overrides")
    assert "[events.reply_received]" in overrides and "bw-{campaign_name}" in overrides
    assert 'name="locations.0._token" value=""' in here and 'type="password"' in here
    assert f'name="instantly.workspaces.0.id" value="{WORKSPACE}"' in page
    routing = block(page, "routing.default_location")
    assert f'<option value="" >GHL_LOCATION_ID\'s location ({LOCATION_ID})</option>' in (
        routing.replace("&#39;", "'")
    )
    assert f'<option value="{CLIENT}" >{CLIENT_NAME} ({CLIENT})</option>' in routing
    assert '<option value="none" selected>hold (none)' in routing
    # Every location the bridge serves, GHL_LOCATION_ID's too, and where its token comes from.
    start = page.index('<ul class="served')
    served = page[start : page.index("</ul>", start)]
    assert f"<li><strong>GHL_LOCATION_ID ({LOCATION_ID})</strong>: token from GHL_TOKEN" in served
    assert (
        f"<li><strong>{CLIENT_NAME} ({CLIENT})</strong>: token from the settings page "
        '<span class="bad">(see its card below)</span>'
    ) in served
    assert "no token: set token_env" in here


def test_unchanged_form_with_locations_saves_the_same_settings(logged_in, db, ghl, config):
    before = with_locations(
        db,
        client_entry(
            campaigns=["camp-1"],
            overrides={
                "sync": {"max_attempts": 3},
                "field_map": [{"instantly": "firstName", "ghl": "firstName"}],
            },
        ),
        {"id": "acme_loc_0000000001", "name": "Acme", "token_env": "GHL_TOKEN_ACME"},
        routing={"default_location": CLIENT},
        workspaces=[{"id": WORKSPACE, "name": "W", "key_env": ""}],
    )
    tokens.store(db, config.secret_key, CLIENT, CLIENT_TOKEN)
    ghl.add_location("acme_loc_0000000001", ACME_TOKEN, name="Acme")
    response = save(logged_in, form_of(page_of(logged_in)))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert settings_mod.current(db) == (3, before)
    assert tokens.read(db, config.secret_key, CLIENT) == CLIENT_TOKEN  # untouched


def test_a_location_added_on_the_page_is_saved_with_its_token_encrypted(logged_in, db, ghl, config):
    data = form_of(page_of(logged_in))
    data["locations.0.id"] = CLIENT
    data["locations.0.name"] = CLIENT_NAME
    data["locations.0.campaigns"] = "camp-1\n camp-2 \n"
    data["locations.0.overrides"] = '[events.reply_received]\ntags = ["bw-{campaign_name}"]\n'
    data["locations.0._token"] = f"  {CLIENT_TOKEN} "
    data["routing.default_location"] = "none"
    response = save(logged_in, data)
    assert response.status_code == 302, response.get_data(as_text=True)
    saved = settings_mod.current(db)[1]
    assert saved["locations"] == [
        {
            "id": CLIENT,
            "name": CLIENT_NAME,
            "token_env": "",
            "workspaces": [],
            "campaigns": ["camp-1", "camp-2"],
            "overrides": {"events": {"reply_received": {"tags": ["bw-{campaign_name}"]}}},
        }
    ]
    assert saved["routing"]["default_location"] == "none"
    assert tokens.read(db, config.secret_key, CLIENT) == CLIENT_TOKEN
    row = db.execute("SELECT token FROM location_tokens WHERE location_id = ?", [CLIENT]).fetchone()
    assert CLIENT_TOKEN not in row[0]  # encrypted at rest
    # The save checked the new location's settings with the token just typed.
    assert ghl.client.calls_to("GET", "/locations/{id}/customFields")
    after = logged_in.get(response.location).get_data(as_text=True)
    assert f"The token of {CLIENT_NAME} is stored (encrypted)." in after
    assert "stored (encrypted)" in card(after, 0)
    assert 'name="locations.0._forget_token"' in card(after, 0)
    assert CLIENT_TOKEN not in after


def test_a_stored_token_is_in_no_page_and_no_export(logged_in, db, ghl, config, runner):
    with_locations(db, client_entry())
    tokens.store(db, config.secret_key, CLIENT, CLIENT_TOKEN)
    shown = [
        logged_in.get(path).get_data(as_text=True)
        for path in ["/settings", f"/settings?location={CLIENT}", "/settings/export", "/"]
    ]
    shown.append(runner.invoke(["settings", "export"]).output)
    for text in shown:
        assert CLIENT_TOKEN not in text
    assert f'id = "{CLIENT}"' in shown[2]  # the location is exported, without its token


def test_removing_a_location_forgets_its_stored_token(logged_in, db, ghl, config):
    with_locations(db, client_entry())
    tokens.store(db, config.secret_key, CLIENT, CLIENT_TOKEN)
    data = form_of(page_of(logged_in))
    data["locations.0._remove"] = "on"
    assert save(logged_in, data).status_code == 302
    assert settings_mod.current(db)[1]["locations"] == []
    assert tokens.stored(db) == set()


def test_forget_drops_the_token_and_keeps_the_location(logged_in, db, ghl, config):
    with_locations(db, client_entry())
    tokens.store(db, config.secret_key, CLIENT, CLIENT_TOKEN)
    data = form_of(page_of(logged_in))
    data["locations.0._forget_token"] = "on"
    response = save(logged_in, data)
    assert response.status_code == 302
    assert tokens.stored(db) == set()
    assert [e["id"] for e in settings_mod.current(db)[1]["locations"]] == [CLIENT]
    after = logged_in.get(response.location).get_data(as_text=True)
    assert f"The token of {CLIENT} is forgotten." in after
    assert "no token: set token_env" in card(after, 0)


def test_a_token_typed_over_a_stored_one_replaces_it(logged_in, db, ghl, config):
    with_locations(db, client_entry())
    tokens.store(db, config.secret_key, CLIENT, "pit-the-old-one")
    data = form_of(page_of(logged_in))
    data["locations.0._token"] = CLIENT_TOKEN
    data["locations.0._forget_token"] = "on"
    assert save(logged_in, data).status_code == 302
    assert tokens.read(db, config.secret_key, CLIENT) == CLIENT_TOKEN


def test_a_token_longer_than_any_ghl_token_is_refused(logged_in, db, ghl):
    with_locations(db, client_entry())
    data = form_of(page_of(logged_in))
    data["locations.0._token"] = "x" * 5000
    response = save(logged_in, data)
    assert response.status_code == 400
    assert "Token: longer than any GHL token (2048 characters at most)" in card(
        response.get_data(as_text=True), 0
    )
    assert tokens.stored(db) == set()


def test_add_another_shows_one_more_blank_card_without_saving(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    data["add_row"] = "locations"
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'name="locations.1.id"' in page and 'name="locations.2.id"' not in page
    assert 'name="locations._blanks" value="2"' in page
    assert settings_mod.version(db) == 1


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        (
            {"locations.1.id": "other_loc_000000001", "locations.1.campaigns": "camp-1"},
            "locations.1.campaigns",
            f"campaign 'camp-1' is already routed to {CLIENT_NAME} (locations.0); one location "
            "per campaign",
        ),
        (
            {"locations.0.overrides": "[sync]\nnope = 1"},
            "locations.0.overrides",
            "sync.nope: Unknown field.",
        ),
        (
            {"locations.0.overrides": "[retention]\nevent_days = 100"},
            "locations.0.overrides",
            "retention: retention cannot be overridden per location",
        ),
        ({"locations.0.overrides": "[events"}, "locations.0.overrides", "not valid TOML:"),
        (
            {"locations.0.token_env": "GHL_TOKEN_NOPE"},
            "locations.0.token_env",
            "GHL_TOKEN_NOPE is not set in the bridge's environment",
        ),
        (
            {"locations.0.token_env": "not a name"},
            "locations.0.token_env",
            "'not a name' is not an environment variable name",
        ),
        (
            {"routing.default_location": "loc_nope"},
            "routing.default_location",
            "'loc_nope' is not a declared location",
        ),
    ],
)
def test_a_bad_location_setting_is_refused_beside_its_field(
    logged_in, db, ghl, changes, path, message
):
    with_locations(db, client_entry(campaigns=["camp-1"]))
    data = form_of(page_of(logged_in))
    for name, value in changes.items():
        data[name] = value
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Not saved: fix the fields marked below." in page
    assert str(escape(message)) in block(page, path)
    assert 'href="#s-' + path.split(".")[0] + '" class="bad"' in page
    assert settings_mod.version(db) == 2


def test_an_unknown_default_location_stays_chosen_to_be_corrected(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    data["routing.default_location"] = "loc_nope"
    page = save(logged_in, data).get_data(as_text=True)
    assert '<option value="loc_nope" selected>loc_nope (not declared)</option>' in block(
        page, "routing.default_location"
    )


def test_a_workspace_key_variable_that_is_not_set_is_refused_in_its_row(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    data["instantly.workspaces.0.id"] = WORKSPACE
    data["instantly.workspaces.0.key_env"] = "INSTANTLY_KEY_NOPE"
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    row = form_row(page, "instantly.workspaces.0.id")
    assert "API key variable: INSTANTLY_KEY_NOPE is not set in the bridge&#39;s environment" in row


def test_a_token_variable_that_is_set_is_accepted(logged_in, db, ghl):
    ghl.add_location("acme_loc_0000000001", ACME_TOKEN, name="Acme")
    data = form_of(page_of(logged_in))
    data["locations.0.id"] = "acme_loc_0000000001"
    data["locations.0.token_env"] = "GHL_TOKEN_ACME"
    assert save(logged_in, data).status_code == 302
    # The save checked Acme's settings against Acme's lists, with the variable's token.
    assert ghl.location("acme_loc_0000000001").calls_to("GET", "/locations/{id}/customFields")


def test_a_token_typed_where_a_variable_holds_it_is_refused_and_not_echoed(logged_in, db, ghl):
    with_locations(db, client_entry(token_env="GHL_TOKEN_ACME"))
    data = form_of(page_of(logged_in))
    data["locations.0._token"] = CLIENT_TOKEN
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert (
        "Token: this location reads its token from GHL_TOKEN_ACME; empty the token variable "
        "to use a token typed here"
    ) in card(page, 0)
    assert CLIENT_TOKEN not in page
    assert tokens.stored(db) == set()


def test_a_token_for_a_card_without_an_id_is_refused(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    data["locations.0._token"] = CLIENT_TOKEN
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "a token was typed for a location without an id" in page
    assert CLIENT_TOKEN not in page


def test_a_token_this_secret_key_cannot_read_is_explained_beside_its_location(logged_in, db, ghl):
    with_locations(db, client_entry())
    tokens.store(db, "the-key-before-it-was-rotated", CLIENT, CLIENT_TOKEN)
    for query in ["", f"?location={CLIENT}"]:
        page = page_of(logged_in, query)
        here = card(page, 0)
        assert "cannot be decrypted with this BRIDGE_SECRET_KEY" in here
        assert "stored (encrypted)" in here and 'name="locations.0._forget_token"' in here
    # Its lists cannot be fetched; the page says why and GHL is not asked with no token.
    assert "GHL custom fields of " in page and "cannot be decrypted" in page
    assert not ghl.client.calls
    # Typing the token again mends it.
    data = form_of(page_of(logged_in))
    data["locations.0._token"] = CLIENT_TOKEN
    assert save(logged_in, data).status_code == 302
    assert "cannot be decrypted" not in page_of(logged_in)


# --- each location's own GHL lists ----------------------------------------------------------


def test_the_pickers_show_the_chosen_locations_lists(logged_in, db, ghl, config):
    with_locations(db, client_entry())
    tokens.store(db, config.secret_key, CLIENT, CLIENT_TOKEN)
    own = page_of(logged_in)
    assert 'value="contact.icebreaker" label="custom field: Icebreaker"' in own
    assert "contact.implant_interest" not in own
    assert f'<option value="{CLIENT}" >{CLIENT_NAME} ({CLIENT})</option>' in own  # the chooser
    theirs = page_of(logged_in, f"?location={CLIENT}")
    assert 'value="contact.implant_interest" label="custom field: Implant interest"' in theirs
    assert "contact.icebreaker" not in theirs
    assert f'<input type="hidden" name="lists_location" value="{CLIENT}">' in theirs
    # Cached per location, each fetched once, with its own token.
    for location_id in (LOCATION_ID, CLIENT):
        name = state.scoped(lookups.STATE_PREFIX + "ghl_custom_fields", location_id)
        assert state.get(db, name)["items"]
        location = ghl.location(location_id)
        assert len(location.calls_to("GET", "/locations/{id}/customFields")) == 1


def test_reload_lists_fetches_them_again_and_stays_on_the_chosen_location(
    logged_in, db, ghl, config
):
    with_locations(db, client_entry())
    tokens.store(db, config.secret_key, CLIENT, CLIENT_TOKEN)
    page_of(logged_in, f"?location={CLIENT}")
    response = post(logged_in, "/settings/refresh-lists", {"location": CLIENT})
    assert response.location == f"/settings?location={CLIENT}"
    logged_in.get(response.location)
    assert len(ghl.client.calls_to("GET", "/locations/{id}/customFields")) == 2


def test_a_save_checks_each_location_against_its_own_custom_fields(logged_in, db, ghl, config):
    with_locations(db, client_entry())
    tokens.store(db, config.secret_key, CLIENT, CLIENT_TOKEN)
    data = form_of(page_of(logged_in))
    data["field_map.5.instantly"] = "icebreaker"
    data["field_map.5.ghl"] = "contact.icebreaker"
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    row = form_row(page, "field_map.5.instantly")
    assert (
        f"GHL field: {CLIENT_NAME} ({CLIENT}): contact.icebreaker is not a custom field of "
        "this GHL location"
    ) in row
    assert f"{LOCATION_ID}: contact.icebreaker" not in page  # GHL_LOCATION_ID's has it
    # The client's own field map (an override) makes it right for both.
    data["locations.0.overrides"] = (
        '[[field_map]]\ninstantly = "firstName"\nghl = "firstName"\n'
        '[[field_map]]\ninstantly = "implant"\nghl = "contact.implant_interest"\n'
    )
    assert save(logged_in, data).status_code == 302


def test_an_override_naming_a_field_its_location_lacks_is_refused_beside_the_override(
    logged_in, db, ghl, config
):
    with_locations(db, client_entry())
    tokens.store(db, config.secret_key, CLIENT, CLIENT_TOKEN)
    data = form_of(page_of(logged_in))
    data["locations.0.overrides"] = (
        '[[field_map]]\ninstantly = "x"\nghl = "contact.implant_intrest"\n'
    )
    response = save(logged_in, data)
    assert response.status_code == 400
    assert (
        "field_map.0.ghl: contact.implant_intrest is not a custom field of this GHL location; "
        "did you mean contact.implant_interest?"
    ) in block(response.get_data(as_text=True), "locations.0.overrides")


# --- import refuses what the environment lacks ------------------------------------------------

UNSET_VARIABLES = (
    f'[[locations]]\nid = "{CLIENT}"\ntoken_env = "GHL_TOKEN_NOPE"\n'
    f'[[instantly.workspaces]]\nid = "{WORKSPACE}"\nkey_env = "INSTANTLY_KEY_NOPE"\n'
)
UNSET_LINES = [
    "locations.0.token_env: GHL_TOKEN_NOPE is not set in the bridge's environment",
    "instantly.workspaces.0.key_env: INSTANTLY_KEY_NOPE is not set in the bridge's environment",
]


def test_import_refuses_variables_the_bridge_does_not_have(logged_in, db, ghl):
    response = post(logged_in, "/settings/import", {"toml": UNSET_VARIABLES})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    for line in UNSET_LINES:
        assert str(escape(line)) in page
    assert settings_mod.version(db) == 1
    fine = UNSET_VARIABLES.replace("GHL_TOKEN_NOPE", "GHL_TOKEN_ACME").replace(
        'key_env = "INSTANTLY_KEY_NOPE"', ""
    )
    assert post(logged_in, "/settings/import", {"toml": fine}).status_code == 302
    assert settings_mod.current(db)[1]["locations"][0]["token_env"] == "GHL_TOKEN_ACME"


def test_cli_import_refuses_them_with_the_same_lines(runner, db, tmp_path):
    bad = tmp_path / "agency.toml"
    bad.write_text(UNSET_VARIABLES)
    result = runner.invoke(["settings", "import", str(bad)])
    assert result.exit_code == 1
    assert result.output == f"Error: {bad} not imported:\n  " + "\n  ".join(UNSET_LINES) + "\n"
    assert settings_mod.version(db) == 1
