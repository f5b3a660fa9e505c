"""The settings form: built from the schema, validated like start-up, saved live, TOML in/out."""

from __future__ import annotations

import io
import re
import tomllib

import pytest
import requests
import responses
from markupsafe import escape
from marshmallow import Schema, fields, validate
from werkzeug.datastructures import MultiDict

from bridge import settings as settings_mod
from bridge.settings import SettingsCache
from bridge.web.admin import forms, lookups
from tests.helpers import LOCATION_ID
from tests.web_helpers import (
    GHL,
    INSTANTLY,
    csrf_token,
    form_row,
    ghl_custom_field,
    ghl_error,
    login,
    post,
)

pytestmark = pytest.mark.admin


@pytest.fixture
def ghl_fields():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(
            f"{GHL}/locations/{LOCATION_ID}/customFields",
            json={"customFields": [ghl_custom_field("contact.icebreaker", "Icebreaker", "cf_1")]},
        )
        yield rsps


def form_of(page: str) -> MultiDict:
    """What a browser would submit for the settings form as rendered (no JS)."""
    start = page.index('id="settings-form"')
    body = page[start : page.index("</form>", start)]
    data = MultiDict()
    for tag in re.findall(r"<(?:input|textarea|select)[^>]*>", body):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or 'type="submit"' in tag or "add_row" in tag:
            continue
        name = name.group(1)
        if tag.startswith("<input"):
            if 'type="checkbox"' in tag:
                if " checked" in tag:
                    value = re.search(r'value="([^"]*)"', tag)
                    data.add(name, value.group(1) if value else "on")
                continue
            value = re.search(r'value="([^"]*)"', tag)
            data.add(name, _unescape(value.group(1)) if value else "")
        elif tag.startswith("<textarea"):
            text = body[body.index(tag) + len(tag) : body.index("</textarea>", body.index(tag))]
            data.add(name, _unescape(text))
        else:
            select = body[body.index(tag) : body.index("</select>", body.index(tag))]
            chosen = re.search(r'<option value="([^"]*)" selected', select)
            data.add(name, chosen.group(1) if chosen else "")
    return data


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


def save(client, data: MultiDict):
    data = MultiDict(data)
    data.setlist("csrf_token", [csrf_token(client, "/")])
    return client.post("/settings", data=data)


def test_form_renders_every_setting_from_the_schema(logged_in, ghl_fields):
    page = logged_in.get("/settings").get_data(as_text=True)
    for name in [
        "sync.source",
        "sync.max_attempts",
        "sync.backoff_base_seconds",
        "sync.backoff_max_seconds",
        "events.reply_received.enabled",
        "events.reply_received.tags",
        "field_map.0.instantly",
        "field_map.4.ghl",
    ]:
        assert f'name="{name}"' in page, name
    assert (
        'type="checkbox" id="f-events.reply_received.enabled" name="events.reply_received.enabled" checked'
        in page
    )
    assert "instantly-campaign-{campaign_name}" in page
    assert 'list="pick-ghl_field"' in page
    assert '<option value="contact.icebreaker" label="custom field: Icebreaker">' in page
    assert '<option value="firstName" label="standard field">' in page


def test_unchanged_form_saves_the_same_settings(logged_in, db, ghl_fields):
    before = settings_mod.current(db)[1]
    response = save(logged_in, form_of(logged_in.get("/settings").get_data(as_text=True)))
    assert response.status_code == 302, response.get_data(as_text=True)
    version, after = settings_mod.current(db)
    assert version == 2
    assert after == before


def test_a_valid_save_reaches_a_running_worker_without_restart(logged_in, db, ghl_fields):
    worker_cache = SettingsCache()
    assert worker_cache.get(db)["events"]["reply_received"]["tags"][0] == "instantly-replied"
    data = form_of(logged_in.get("/settings").get_data(as_text=True))
    data["events.reply_received.tags"] = "replied-{campaign_id}\nlead"
    data["sync.max_attempts"] = "4"
    data["field_map.5.instantly"] = "icebreaker"
    data["field_map.5.ghl"] = "contact.icebreaker"
    data["field_map.1._remove"] = "on"
    response = save(logged_in, data)
    assert response.status_code == 302
    page = logged_in.get(response.location).get_data(as_text=True)
    assert "Saved (version 2)" in page
    live = worker_cache.get(db)
    assert live["events"]["reply_received"]["tags"] == ["replied-{campaign_id}", "lead"]
    assert live["sync"]["max_attempts"] == 4
    assert {"instantly": "icebreaker", "ghl": "contact.icebreaker"} in live["field_map"]
    assert {"instantly": "lastName", "ghl": "lastName"} not in live["field_map"]


def test_disabling_an_event_type_is_saved(logged_in, db, ghl_fields):
    data = form_of(logged_in.get("/settings").get_data(as_text=True))
    del data["events.reply_received.enabled"]
    assert save(logged_in, data).status_code == 302
    assert settings_mod.current(db)[1]["events"]["reply_received"]["enabled"] is False


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sync.max_attempts", "0", "greater than or equal to 1"),
        ("sync.max_attempts", "ten", "Not a valid integer"),
        ("sync.backoff_base_seconds", "", "Not a valid number"),
        ("events.reply_received.tags", "ok\ncampaign-{nope}", "unknown placeholder {nope}"),
        ("field_map.0.ghl", "favouriteColour", "neither a GHL standard field"),
        ("field_map.1.ghl", "firstName", "'firstName' is mapped twice"),
    ],
)
def test_invalid_values_are_refused_with_the_error_beside_the_field(
    logged_in, db, ghl_fields, field, value, message
):
    data = form_of(logged_in.get("/settings").get_data(as_text=True))
    data[field] = value
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Not saved: fix the fields marked below." in page
    message = str(escape(message))
    assert message in page
    assert settings_mod.version(db) == 1
    # The error sits in the block of the field that caused it, and the typed value stays.
    if field.startswith("field_map"):
        index = int(field.split(".")[1])
        row = form_row(page, f"field_map.{index}.instantly")
        assert message in row
    else:
        block = page[page.index(f'id="w-{field}"') :]
        block = block[: block.index("</div>")]
        assert message in block
        assert (
            "has-error" in page[page.index(f'id="w-{field}"') - 40 : page.index(f'id="w-{field}"')]
        )


def test_add_a_row_shows_another_blank_row_without_saving(logged_in, db, ghl_fields):
    data = form_of(logged_in.get("/settings").get_data(as_text=True))
    data["add_row"] = "field_map"
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'name="field_map.6.instantly"' in page and 'name="field_map.7.instantly"' not in page
    assert 'name="field_map._blanks" value="2"' in page
    assert settings_mod.version(db) == 1


def test_a_save_over_someone_elses_newer_save_is_refused(logged_in, db, ghl_fields):
    data = form_of(logged_in.get("/settings").get_data(as_text=True))
    _, current = settings_mod.current(db)
    settings_mod.save(db, {**current, "sync": {**current["sync"], "source": "Other tab"}})
    data["sync.source"] = "Mine"
    response = save(logged_in, data)
    assert response.status_code == 409
    assert "changed elsewhere" in response.get_data(as_text=True)
    assert settings_mod.current(db)[1]["sync"]["source"] == "Other tab"


def test_missing_version_is_a_400(logged_in, ghl_fields):
    data = form_of(logged_in.get("/settings").get_data(as_text=True))
    del data["version"]
    response = save(logged_in, data)
    assert response.status_code == 400
    assert "no settings version" in response.get_data(as_text=True)


def test_export_then_import_round_trip(logged_in, db, ghl_fields):
    _, original = settings_mod.current(db)
    exported = logged_in.get("/settings/export")
    assert exported.headers["Content-Disposition"] == 'attachment; filename="bridge-settings.toml"'
    text = exported.get_data(as_text=True)
    assert settings_mod.parse_toml(text) == original
    changed = text.replace('source = "Instantly"', 'source = "Imported"')
    response = post(
        logged_in,
        "/settings/import",
        {"file": (io.BytesIO(changed.encode()), "bridge-settings.toml")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    version, now = settings_mod.current(db)
    assert (version, now["sync"]["source"]) == (2, "Imported")
    assert {k: v for k, v in now.items() if k != "sync"} == {
        k: v for k, v in original.items() if k != "sync"
    }


def test_import_of_the_defaults_file_is_accepted(logged_in, db, ghl_fields):
    text = settings_mod.DEFAULTS_FILE.read_text()
    response = post(logged_in, "/settings/import", {"toml": text})
    assert response.status_code == 302
    assert settings_mod.current(db)[1] == settings_mod.load_defaults()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sync\nsource = 1", "toml:"),
        (
            "[sync]\nmax_attempts = 0",
            "sync.max_attempts: Must be greater than or equal to 1 and less than",
        ),
        ('[[field_map]]\ninstantly = "x"\nghl = "nope"', "field_map.0.ghl:"),
    ],
)
def test_bad_import_is_refused_with_the_setting_named(logged_in, db, ghl_fields, text, message):
    response = post(logged_in, "/settings/import", {"toml": text})
    assert response.status_code == 400
    assert str(escape(message)) in response.get_data(as_text=True)
    assert settings_mod.version(db) == 1


@pytest.mark.parametrize(("opening", "depth"), [("[", 120_000), ("{a=", 80_000)])
def test_import_nested_too_deeply_is_a_400_that_says_so(logged_in, db, ghl_fields, opening, depth):
    # tomllib parses by recursion: this deep (under the upload's size limit), arrays or
    # inline tables exhaust Python's stack long before the end.
    text = "x = " + opening * depth
    response = post(logged_in, "/settings/import", {"toml": text})
    assert response.status_code == 400
    assert "toml: the settings file is nested too deeply" in response.get_data(as_text=True)
    assert settings_mod.version(db) == 1


def test_empty_or_binary_import_is_a_400(logged_in, ghl_fields):
    assert post(logged_in, "/settings/import", {"toml": "  "}).status_code == 400
    response = post(
        logged_in,
        "/settings/import",
        {"file": (io.BytesIO(b"\xff\xfe\x00"), "x.toml")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "not UTF-8" in response.get_data(as_text=True)


def test_page_works_when_ghl_is_unreachable(logged_in, db):
    refused = ghl_error(401, "The token is not authorized for this scope.")
    with responses.RequestsMock() as rsps:
        # The lists the form's pickers need: custom fields, workflows, pipelines.
        rsps.get(f"{GHL}/locations/{LOCATION_ID}/customFields", json=refused, status=401)
        rsps.get(f"{GHL}/workflows/", json=refused, status=401)
        rsps.get(f"{GHL}/opportunities/pipelines", json=refused, status=401)
        # The reconciliation scope's pickers: Instantly campaigns and lead lists.
        unreachable = requests.ConnectionError("connection refused")
        rsps.get("https://api.instantly.ai/api/v2/campaigns", body=unreachable)
        rsps.get("https://api.instantly.ai/api/v2/lead-lists", body=unreachable)
        page = logged_in.get("/settings")
        again = logged_in.get("/settings")
        # A failure is not remembered: opening the page again asks again.
        assert len(rsps.calls) == 10
    text = page.get_data(as_text=True)
    assert page.status_code == again.status_code == 200
    assert "Some lists could not be loaded" in text
    assert "not authorized for this scope" in text
    assert '<option value="firstName" label="standard field">' in text


def test_page_works_when_ghl_is_not_configured(env, db):
    from bridge import create_app
    from bridge.config import load_config

    bare = {k: v for k, v in env.items() if k not in ("GHL_TOKEN", "GHL_LOCATION_ID")}
    client = create_app({"BRIDGE_CONFIG": load_config(bare), "TESTING": True}).test_client()
    login(client)
    with responses.RequestsMock():  # any HTTP call would fail the test
        page = client.get("/settings").get_data(as_text=True)
    assert "GHL is not configured" in page


def test_reload_lists_fetches_them_again(logged_in, ghl_fields):
    logged_in.get("/settings")
    post(logged_in, "/settings/refresh-lists")
    logged_in.get("/settings")
    fetched = [c for c in ghl_fields.calls if "customFields" in c.request.url]
    assert len(fetched) == 2


# --- the form follows whatever the schema holds ---------------------------------------------


class Stage(Schema):
    pipeline_id = fields.String(load_default=None, allow_none=True)
    stage_id = fields.String(load_default=None, allow_none=True)


class Label(Schema):
    tags = fields.List(fields.String(), load_default=list)
    notify = fields.Boolean(load_default=False)


class Future(Schema):
    """A schema shaped like sections other issues add: choices, free keys, pickers."""

    mode = fields.String(load_default="tags", validate=validate.OneOf(["tags", "notes"]))
    interval_minutes = fields.Integer(load_default=15)
    campaigns = fields.List(fields.String(), load_default=list)
    opportunity = fields.Nested(Stage, load_default=lambda: Stage().load({}))
    labels = fields.Dict(keys=fields.String(), values=fields.Nested(Label), load_default=dict)
    per_status = fields.Dict(
        keys=fields.String(validate=validate.OneOf(["interested", "not_interested"])),
        values=fields.List(fields.String()),
        load_default=dict,
    )


def test_form_widgets_follow_the_schema():
    values = Future().load(
        {
            "labels": {"Hot lead": {"tags": ["hot"], "notify": True}},
            "per_status": {"interested": ["i"]},
        }
    )
    widgets, leftover = forms.build(Future(), values, {"labels.Hot lead.tags.0": ["too short"]})
    by_name = {w.name: w for w in widgets}
    assert by_name["mode"].kind == "select" and by_name["mode"].choices == ["tags", "notes"]
    assert by_name["interval_minutes"].kind == "number"
    assert (by_name["campaigns"].kind, by_name["campaigns"].picker) == (
        "lines",
        "instantly_campaign",
    )
    section = by_name["opportunity"]
    assert section.kind == "section"
    assert [(c.name, c.picker, c.optional) for c in section.children] == [
        ("pipeline_id", "ghl_pipeline", True),
        ("stage_id", "ghl_stage", True),
    ]
    labels = by_name["labels"]
    assert labels.kind == "rows" and labels.keyed
    assert [c.name for c in labels.columns] == ["tags", "notify"]
    assert labels.rows == [{"tags": "hot", "notify": True, "_key": "Hot lead"}]
    assert labels.row_errors == [["too short"]]
    per_status = by_name["per_status"]
    assert [(c.name, c.kind, c.value) for c in per_status.children] == [
        ("interested", "lines", ["i"]),
        ("not_interested", "lines", []),
    ]
    assert leftover == []
    assert forms.pickers(widgets) == {"instantly_campaign", "ghl_pipeline", "ghl_stage"}


def test_posted_form_reads_back_into_the_schema_shape():
    form = MultiDict(
        [
            ("mode", "notes"),
            ("interval_minutes", " 30 "),
            ("campaigns", "c1"),
            ("campaigns", "c2\n\n c3 "),
            ("opportunity.pipeline_id", "p1"),
            ("opportunity.stage_id", ""),
            ("labels.0._key", "Hot lead"),
            ("labels.0.tags", "hot\nwarm"),
            ("labels.0.notify", "on"),
            ("labels.1._key", "Gone"),
            ("labels.1.tags", "x"),
            ("labels.1._remove", "on"),
            ("labels.2._key", ""),
            ("labels.2.tags", ""),
            ("per_status.interested", "yes"),
        ]
    )
    raw, problems = forms.parse(Future(), form)
    assert problems == {}
    assert Future().load(raw) == {
        "mode": "notes",
        "interval_minutes": 30,
        "campaigns": ["c1", "c2", "c3"],
        "opportunity": {"pipeline_id": "p1", "stage_id": None},
        "labels": {"Hot lead": {"tags": ["hot", "warm"], "notify": True}},
        "per_status": {"interested": ["yes"], "not_interested": []},
    }


def test_campaign_picker_offers_checkboxes_and_keeps_unknown_ids(app, logged_in, db):
    lookups_seen = lookups.Lookup("instantly_campaign", [("c1", "Q1 outreach"), ("c2", "Q2")])
    with app.test_request_context():
        from flask import render_template_string

        widget = forms.build(Future(), Future().load({"campaigns": ["c2", "gone"]}))[0][2]
        html = render_template_string(
            '{% from "_settings_form.html" import render %}{{ render(w, l) }}',
            w=widget,
            l={"instantly_campaign": lookups_seen},
        )
    assert 'name="campaigns" value="c1" >' in html
    assert 'name="campaigns" value="c2" checked>' in html
    assert ">gone</textarea>" in html


def test_export_leaves_out_unset_optional_values():
    text = settings_mod.to_toml({"a": None, "b": {"c": None, "d": 1}, "e": [{"f": None, "g": "x"}]})
    assert tomllib.loads(text) == {"b": {"d": 1}, "e": [{"g": "x"}]}


def test_names_from_ghl_are_escaped_in_the_pickers(logged_in):
    with responses.RequestsMock() as rsps:
        rsps.get(
            f"{GHL}/locations/{LOCATION_ID}/customFields",
            json={
                "customFields": [ghl_custom_field("contact.x", "<script>alert(1)</script>", "cf")]
            },
        )
        page = logged_in.get("/settings").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "custom field: &lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- GHL's lists on the page, and the checks when saving ------------------------------------


@pytest.fixture
def ghl(fake_ghl, mocked_http):
    """A GHL location with a custom field, two workflows and two pipelines; Instantly
    answers with empty lists."""
    fake_ghl.add_custom_field("icebreaker", "Icebreaker")
    fake_ghl.workflow = fake_ghl.add_workflow("Replied follow-up")
    fake_ghl.add_workflow("Nurture", status="draft")
    fake_ghl.sales = fake_ghl.add_pipeline("Sales", ["New", "Won"])
    fake_ghl.partners = fake_ghl.add_pipeline("Partners", ["Intro"])
    mocked_http.get(f"{INSTANTLY}/api/v2/campaigns", json={"items": []})
    mocked_http.get(f"{INSTANTLY}/api/v2/lead-lists", json={"items": []})
    return fake_ghl


def page_of(client) -> str:
    return client.get("/settings").get_data(as_text=True)


def block(page: str, path: str) -> str:
    """The rendered block of one field: from its id to the end of its div."""
    start = page.index(f'id="w-{path}"')
    return page[start : page.index("\n</div>", start)]


def test_statuses_are_checkbox_lists(logged_in, ghl):
    page = page_of(logged_in)
    for path in ["actions.workflow.statuses", "actions.opportunity.statuses"]:
        assert f'<textarea id="f-{path}"' not in page
    section = block(page, "actions.workflow.statuses")
    assert 'type="checkbox" name="actions.workflow.statuses" value="interested" checked>' in section
    assert 'type="checkbox" name="actions.workflow.statuses" value="lost" >' in section
    assert "> Won (closed)</label>" in section


def test_ticking_statuses_saves_them(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    data.setlist("actions.workflow.statuses", ["closed", "no_show"])
    assert save(logged_in, data).status_code == 302
    assert settings_mod.current(db)[1]["actions"]["workflow"]["statuses"] == ["closed", "no_show"]


def test_workflow_pipeline_and_stages_are_selects_from_ghl(logged_in, ghl):
    page = page_of(logged_in)
    workflow = block(page, "actions.workflow.workflow_id")
    assert '<select id="f-actions.workflow.workflow_id"' in workflow
    assert f'<option value="{ghl.workflow}" >Replied follow-up (published)</option>' in workflow
    assert "Nurture (draft)" in workflow
    pipeline = block(page, "actions.opportunity.pipeline_id")
    assert f'<option value="{ghl.sales["id"]}" >Sales</option>' in pipeline
    # Each stage names its pipeline twice: in words for a page without scripts, and as
    # data-pipeline for the inline script that shows only the chosen pipeline's.
    new, won = ghl.sales["stages"]
    for path in ["actions.opportunity.stage_id", "actions.opportunity.stages.closed"]:
        stage = block(page, path)
        assert 'data-picker="ghl_stage"' in stage
        assert (
            f'<option value="{won["id"]}"  data-pipeline="{ghl.sales["id"]}">Sales › Won</option>'
            in stage
        )
        intro = ghl.partners["stages"][0]["id"]
        assert f'data-pipeline="{ghl.partners["id"]}">Partners › Intro</option>' in stage
        assert intro in stage
    assert 'select[data-picker="ghl_stage"]' in page  # the script


def test_choosing_from_ghl_lists_saves_the_ids(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    new, won = ghl.sales["stages"]
    data["actions.workflow.enabled"] = "on"
    data["actions.workflow.workflow_id"] = ghl.workflow
    data["actions.opportunity.enabled"] = "on"
    data["actions.opportunity.pipeline_id"] = ghl.sales["id"]
    data["actions.opportunity.stage_id"] = new["id"]
    data["actions.opportunity.stages.closed"] = won["id"]
    response = save(logged_in, data)
    assert response.status_code == 302, response.get_data(as_text=True)
    actions = settings_mod.current(db)[1]["actions"]
    assert actions["workflow"]["workflow_id"] == ghl.workflow
    assert actions["opportunity"]["stages"]["closed"] == won["id"]
    # Reopened, the page shows them chosen, with no warning.
    page = page_of(logged_in)
    assert f'<option value="{ghl.workflow}" selected>' in block(
        page, "actions.workflow.workflow_id"
    )
    assert "not in GHL" not in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "actions.workflow.workflow_id",
            "replied follow-up",
            "replied follow-up is not a workflow in GHL; did you mean {workflow} "
            "(Replied follow-up)?",
        ),
        ("actions.opportunity.pipeline_id", "pl_gone", "pl_gone is not a pipeline in GHL"),
        (
            "actions.opportunity.stage_id",
            "{intro}",
            "{intro} is a stage of the pipeline 'Partners', not of the chosen pipeline 'Sales'",
        ),
        (
            "actions.opportunity.stages.closed",
            "st_nope",
            "st_nope is not a stage of the pipeline 'Sales'",
        ),
    ],
)
def test_an_id_ghl_does_not_list_is_refused_beside_its_field(
    logged_in, db, ghl, field, value, message
):
    ids = {"workflow": ghl.workflow, "intro": ghl.partners["stages"][0]["id"]}
    data = form_of(page_of(logged_in))
    data["actions.workflow.enabled"] = "on"
    data["actions.workflow.workflow_id"] = ghl.workflow
    data["actions.opportunity.enabled"] = "on"
    data["actions.opportunity.pipeline_id"] = ghl.sales["id"]
    data["actions.opportunity.stage_id"] = ghl.sales["stages"][0]["id"]
    data[field] = value.format(**ids)
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Not saved: fix the fields marked below." in page
    here = block(page, field)
    assert str(escape(message.format(**ids))) in here
    assert "has-error" in page[page.index(f'id="w-{field}"') - 40 : page.index(f'id="w-{field}"')]
    # What was posted stays chosen, marked, so it can be corrected.
    assert f'<option value="{escape(value.format(**ids))}" selected' in here
    assert settings_mod.version(db) == 1


def test_an_unknown_custom_field_is_refused_with_a_did_you_mean(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    data["field_map.5.instantly"] = "icebreaker"
    data["field_map.5.ghl"] = "contact.icebreakr"
    response = save(logged_in, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    row = form_row(page, "field_map.5.instantly")
    assert (
        "GHL field: contact.icebreakr is not a custom field of this GHL location; "
        "did you mean contact.icebreaker?" in row
    )
    assert 'href="#s-field_map" class="bad"' in page  # the jump list points at it
    assert settings_mod.version(db) == 1


def test_a_custom_field_made_in_ghl_after_the_list_was_cached_is_accepted(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    ghl.add_custom_field("linkedin_url", "LinkedIn")
    data["field_map.5.instantly"] = "linkedin"
    data["field_map.5.ghl"] = "contact.linkedin_url"
    assert save(logged_in, data).status_code == 302
    assert len(ghl.calls_to("GET", "/locations/{id}/customFields")) == 2


def test_a_switched_off_action_with_an_unknown_id_is_saved_with_a_warning(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    data["actions.workflow.workflow_id"] = "wf_gone"
    response = save(logged_in, data)
    assert response.status_code == 302
    page = logged_in.get(response.location).get_data(as_text=True)
    assert "Saved (version 2)" in page
    assert "Saved with warnings: actions.workflow.workflow_id: wf_gone is not a workflow" in page
    here = block(page, "actions.workflow.workflow_id")
    assert '<option value="wf_gone" selected>wf_gone (not in GHL)</option>' in here
    assert 'class="warnings"' in here and "the action is off" in here


def refused_by_ghl(rsps) -> None:
    refused = ghl_error(401, "The token is not authorized for this scope.")
    rsps.get(f"{GHL}/locations/{LOCATION_ID}/customFields", json=refused, status=401)
    rsps.get(f"{GHL}/workflows/", json=refused, status=401)
    rsps.get(f"{GHL}/opportunities/pipelines", json=refused, status=401)
    rsps.get(f"{INSTANTLY}/api/v2/campaigns", json={"items": []})
    rsps.get(f"{INSTANTLY}/api/v2/lead-lists", json={"items": []})


def test_typed_ids_are_accepted_with_a_warning_when_ghl_lists_cannot_load(logged_in, db):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        refused_by_ghl(rsps)
        page = page_of(logged_in)
        here = block(page, "actions.workflow.workflow_id")
        assert '<input type="text" id="f-actions.workflow.workflow_id"' in here
        assert "GHL's list could not be loaded, so type the id" in here
        assert "GHL field: the list could not be loaded" in page
        data = form_of(page)
        data["actions.workflow.enabled"] = "on"
        data["actions.workflow.workflow_id"] = "wf_typed_by_hand"
        data["field_map.5.instantly"] = "icebreaker"
        data["field_map.5.ghl"] = "contact.icebreaker"
        response = save(logged_in, data)
        assert response.status_code == 302, response.get_data(as_text=True)
        after = logged_in.get(response.location).get_data(as_text=True)
    saved = settings_mod.current(db)[1]
    assert saved["actions"]["workflow"]["workflow_id"] == "wf_typed_by_hand"
    assert saved["field_map"][-1]["ghl"] == "contact.icebreaker"
    assert 'class="banner warn' in after
    assert (
        "Not checked against GHL, as its lists could not be loaded: field_map.5.ghl, "
        "actions.workflow.workflow_id. Save again once GHL answers to check them." in after
    )
    # One line a person reads, the answer as GHL gave it on hover.
    assert (
        '<li>GHL workflows: <span title="GHL 401: The token is not authorized for this scope.">'
        "GHL 401: token rejected (The token is not authorized for this scope.)</span></li>"
    ) in after
    assert after.count("<li>GHL pipelines and stages: <span") == 1  # one fetch, two lists


def test_a_failed_list_is_fetched_again_when_the_page_is_opened_again(logged_in, ghl):
    ghl.fail_next(1, 503)  # the first request of the page: the custom fields
    first = page_of(logged_in)
    assert "Some lists could not be loaded" in first
    second = page_of(logged_in)
    assert "Some lists could not be loaded" not in second
    assert '<option value="contact.icebreaker" label="custom field: Icebreaker">' in second
    assert len(ghl.calls_to("GET", "/locations/{id}/customFields")) == 2


def test_whole_numbers_show_as_integers(logged_in, ghl):
    page = page_of(logged_in)
    assert 'name="sync.backoff_base_seconds" value="30" step="any"' in page
    assert 'name="sync.backoff_max_seconds" value="3600" step="any"' in page
    assert 'name="sync.max_attempts" value="10" step="1"' in page
    start = page.index('id="settings-form"')
    form = page[start : page.index("</form>", start)]
    assert 'name="reconcile.interval_minutes" value="15"' in form
    assert not re.search(r'value="\d+\.0"', form)


def test_do_not_disturb_shows_only_on_unsubscribes_and_bounces(logged_in, db, ghl):
    page = page_of(logged_in)
    for event_type in settings_mod.SYNCABLE_EVENTS:
        shown = f'name="events.{event_type}.dnd"' in page
        assert shown == (event_type in settings_mod.DND_EVENTS), event_type
    assert "<strong>Do not disturb</strong>" in block(page, "events.lead_unsubscribed.dnd")
    # A crafted post of the hidden box changes nothing and is no error.
    data = form_of(page)
    data["events.reply_received.dnd"] = "on"
    assert save(logged_in, data).status_code == 302
    assert settings_mod.current(db)[1]["events"]["reply_received"]["dnd"] is False


def test_labels_are_words(logged_in, ghl):
    page = page_of(logged_in)
    for words in [
        "<legend>GHL opportunity status</legend>",
        "<legend>Stage per status</legend>",
        ">Default stage</label>",
        ">Tries before dead-lettering</label>",
        "<legend>Reply received</legend>",
        ">Won (closed)</label>",
    ]:
        assert words in page, words
    for machine in ["Dnd", "Ghl status", "Stage id", "Workflow id", "Pipeline id"]:
        assert f">{machine}<" not in page, machine


def test_every_field_has_help(logged_in, ghl):
    """Walks the schema as the form does: each field, section and column says what it is."""
    page = page_of(logged_in)
    widgets, _ = forms.build(settings_mod.SettingsSchema(), settings_mod.load_defaults())
    missing = []

    def walk(items, columns=False):
        for w in items:
            if w.kind == "record":  # a location's card: its fields carry the help
                walk(w.children)
                continue
            if not w.help:
                missing.append(w.pattern or w.path)
            elif columns:
                assert f"<strong>{escape(w.label)}</strong>: {escape(w.help)}" in page, w.path
            elif w.kind in ("section", "rows", "records"):
                start = page.index(f'id="s-{w.path}"')
                assert str(escape(w.help)) in page[start : start + 2000], w.path
            else:
                assert str(escape(w.help)) in block(page, w.path), w.path
            walk(w.children)
            walk(w.columns, columns=True)

    walk(widgets)
    assert missing == []


def test_the_page_has_a_jump_list_and_a_save_bar(logged_in, ghl):
    page = page_of(logged_in)
    nav = page[
        page.index('<ul class="jump">') : page.index("</ul>", page.index('<ul class="jump">'))
    ]
    for section in ["sync", "reconcile", "events", "field_map", "interest", "actions"]:
        assert f'href="#s-{section}"' in nav
        assert f'<fieldset id="s-{section}"' in page
    form = page[
        page.index('id="settings-form"') : page.index("</form>", page.index('id="settings-form"'))
    ]
    assert '<div class="savebar"><button type="submit" id="save">' in form


# --- replies in GHL's inbox (issue 18) ----------------------------------------------------

REPLY_MESSAGE_WARNING = (
    "Answering from GHL sends from GHL&#39;s own email, not from the Instantly mailbox the lead"
    " wrote to; each message carries the Unibox link to answer there."
)


def test_the_reply_message_action_is_two_labelled_checkboxes_under_its_warning(logged_in, ghl):
    page = page_of(logged_in)
    start = page.index('<fieldset id="s-actions.reply_message"')
    section = page[start : page.index("</fieldset>", start)]

    assert "<legend>Replies in GHL&#39;s inbox</legend>" in section
    warning = f'<p class="warnings" role="note">{REPLY_MESSAGE_WARNING}</p>'
    # The warning sits above the boxes, where it is read before ticking them.
    assert section.index(warning) < section.index('id="w-actions.reply_message.enabled"')
    for path, label in [
        ("actions.reply_message.enabled", "Add each reply to the contact&#39;s GHL conversation"),
        ("actions.reply_message.auto_replies", "Automatic replies too"),
    ]:
        assert (
            f'<label><input type="checkbox" id="f-{path}" name="{path}" >'
            f" <strong>{label}</strong></label>"
        ) in block(section, path)
    # Inside the actions section, after the reply note.
    assert page.index('id="s-actions"') < start
    assert page.index('id="s-actions.reply_note"') < start


def test_ticking_the_reply_message_boxes_saves_them(logged_in, db, ghl):
    data = form_of(page_of(logged_in))
    data["actions.reply_message.enabled"] = "on"
    data["actions.reply_message.auto_replies"] = "on"
    assert save(logged_in, data).status_code == 302
    assert settings_mod.current(db)[1]["actions"]["reply_message"] == {
        "enabled": True,
        "auto_replies": True,
    }
    page = page_of(logged_in)
    for path in ("actions.reply_message.enabled", "actions.reply_message.auto_replies"):
        assert f'id="f-{path}" name="{path}" checked>' in block(page, path)

    data = form_of(page)
    del data["actions.reply_message.enabled"]
    assert save(logged_in, data).status_code == 302
    assert settings_mod.current(db)[1]["actions"]["reply_message"]["enabled"] is False
