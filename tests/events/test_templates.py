"""Tag templates: plain `{name}` placeholders, filled without str.format, so a payload
value can never become a format spec, an attribute lookup or a page-long tag."""

from __future__ import annotations

import pytest

from bridge.events import template
from bridge.events.webhook import from_webhook
from bridge.sync.opportunity import opportunity_name
from bridge.sync.steps import MAX_TAG_LENGTH, render_tags, tag_values
from tests.helpers import reply_payload

# What settings validation now refuses, as a database may still hold one from before, and
# how it renders: the braces as text, a plain {name} among them filled.
SPEC_TEMPLATES = [
    ("x-{campaign_name:{step}}", "x-{campaign_name:z>20000000}"),
    ("x-{campaign_name:{step.__class__.__mro__}}", "x-{campaign_name:{step.__class__.__mro__}"),
    ("x-{step!r}", "x-{step!r}"),
    ("x-{step.__class__}", "x-{step.__class__}"),
    ("x-{step[0]}", "x-{step[0]}"),
    ("x-{}", "x-{}"),
]


@pytest.mark.parametrize(("text", "tag"), SPEC_TEMPLATES)
def test_a_stored_template_with_a_spec_renders_as_text_never_as_a_spec(text, tag):
    event = from_webhook(reply_payload(step="Z>20000000"))
    assert render_tags([text], event) == [tag]


def test_plain_placeholders_fill_and_doubled_braces_stay_literal():
    values = {"campaign_name": "Q1", "step": "2"}
    assert template.fill("c-{campaign_name}-{step}-{variant}", values) == "c-Q1-2-"
    assert template.fill("{{step}}-{{{step}}}", values) == "{step}-{2}"
    assert template.names("{{step}}-{campaign_name}-{x:y}") == ["campaign_name"]


def test_a_value_is_never_read_as_a_template():
    event = from_webhook(reply_payload(campaign_name="{step:>50} {{x}}", step="9"))
    assert render_tags(["c-{campaign_name}"], event) == ["c-{step:>50} {{x}}"]


def test_a_rendered_tag_is_cut_to_the_maximum_length():
    event = from_webhook(reply_payload(campaign_name="Long " * 10_000))
    (tag,) = render_tags(["instantly-campaign-{campaign_name}"], event)
    assert len(tag) <= MAX_TAG_LENGTH
    assert tag.startswith("instantly-campaign-long long") and not tag.endswith(" ")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x-{campaign_name:{step}}", "placeholder {campaign_name:{step}} in"),
        ("x-{step.__class__}", "placeholder {step.__class__} in"),
        ("x-{step", "is never closed"),
        ("x-}", "a single '}'"),
    ],
)
def test_check_names_the_placeholder_that_is_not_plain(text, words):
    with pytest.raises(template.BadTemplate) as caught:
        template.check(text)
    assert words in str(caught.value)


def test_the_campaign_is_the_leads_campaign_when_a_custom_variable_shadows_campaign_id():
    # api-notes: a lead's custom variable `campaign_id` arrives in campaign_id; the lead's
    # own `campaign` still carries the real campaign.
    event = from_webhook(reply_payload(campaign_id="lead-custom-value", campaign="real-campaign"))
    assert event.campaign_id == "real-campaign"
    assert tag_values(event)["campaign_id"] == "real-campaign"
    plain = from_webhook(reply_payload())
    assert plain.campaign_id == "f1631d04-7c81-4444-84bb-73a3a0c3a44b"


def test_an_opportunity_name_template_with_a_spec_renders_as_text():
    event = from_webhook(reply_payload(firstName="Ada", lastName="Lovelace", step="Z>20000000"))
    name = opportunity_name("{name}: {campaign_name:{step}} ({status})", event, "interested")
    # No str.format: the braces stay as text; {step} is no opportunity placeholder.
    assert name == "Ada Lovelace: {campaign_name:} (interested)"
