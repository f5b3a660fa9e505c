"""The sync core on its own: Events straight into sync_event, a real GHLClient against the
fake GHL (every request checked against the spec), no webhook, no worker, no Flask."""

from __future__ import annotations

import pytest

from bridge import settings as settings_mod
from bridge.clients.ghl import GHLClient
from bridge.events import polled
from bridge.events.event import Event
from bridge.events.webhook import from_webhook
from bridge.store import contacts, ghl_writes
from bridge.sync.dispatch import sync_event
from bridge.sync.reply_note import marker
from tests.helpers import LOCATION_ID, reply_payload
from tests.interest_helpers import (
    EMAIL,
    assert_moved_from_interested_to_booked,
    calls,
    change_settings,
    interest_payload,
)

T1, T2, T3 = "2025-06-11T10:00:00.000Z", "2025-06-12T10:00:00.000Z", "2025-06-13T10:00:00.000Z"
REPLY_TAGS = ["instantly-campaign-trust attorneys q4", "instantly-replied"]
LEAD_FIELDS = {"firstName": "Jordan", "lastName": "Lead", "companyName": "Lead & Co"}
# The same lead as a REST Lead, the way polling sees it.
REST_LEAD = {
    "email": EMAIL,
    "first_name": "Jordan",
    "last_name": "Lead",
    "company_name": "Lead & Co",
}


@pytest.fixture
def ghl(config, fake_ghl):
    """A real GHL client; its requests reach the fake through `responses`."""
    return GHLClient(config.ghl_base_url, config.ghl_token, config.ghl_location_id)


def settings(db):
    return settings_mod.current(db)[1]


def sync(db, event, ghl):
    return sync_event(db, event, settings(db), ghl)


def reply(**overrides):
    return from_webhook(reply_payload(**overrides))


def status_event(event_type, timestamp):
    return from_webhook(interest_payload(event_type, timestamp))


# --- plain events -----------------------------------------------------------------------


def test_a_first_reply_creates_one_contact_with_its_rendered_tags(db, ghl, fake_ghl):
    outcome = sync(db, reply(), ghl)

    contact = fake_ghl.contact_by_email(EMAIL)
    assert outcome.status == "done" and outcome.contact_id == contact["id"]
    assert len(fake_ghl.contacts) == 1 and fake_ghl.upserts_for(EMAIL) == 1
    assert sorted(contact["tags"]) == REPLY_TAGS
    assert calls(fake_ghl) == [
        ("POST", "/contacts/upsert",
         {"locationId": "loc_test", "email": EMAIL, **LEAD_FIELDS, "source": "Instantly"}),
        ("POST", f"/contacts/{contact['id']}/tags",
         {"tags": ["instantly-replied", "instantly-campaign-trust attorneys q4"]}),
    ]  # fmt: skip
    record = contacts.get(db, LOCATION_ID, EMAIL)
    assert record.contact_id == contact["id"]
    assert record.fields == LEAD_FIELDS
    assert record.tags == REPLY_TAGS


def test_the_upsert_body_never_carries_tags(db, ghl, fake_ghl):
    sync(db, reply(), ghl)

    (upsert,) = fake_ghl.calls_to("POST", "/contacts/upsert")
    assert "tags" not in upsert.json


def test_the_same_event_synced_again_makes_no_call(db, ghl, fake_ghl):
    event = reply()
    first = sync(db, event, ghl)
    fake_ghl.calls.clear()

    again = sync(db, event, ghl)

    assert fake_ghl.calls == []
    assert again.status == "done" and again.contact_id == first.contact_id
    assert contacts.get(db, LOCATION_ID, EMAIL).tags == REPLY_TAGS


def test_the_same_reply_found_by_polling_makes_no_call(db, ghl, fake_ghl):
    sync(db, reply(), ghl)
    fake_ghl.calls.clear()
    payload = reply_payload()
    found = polled.reply_event(
        {
            "id": payload["email_id"],
            "lead": EMAIL,
            "campaign_id": payload["campaign_id"],
            "timestamp_created": payload["timestamp"],
            "subject": payload["reply_subject"],
            "body": {"text": payload["reply_text"]},
        },
        "reply_received",
        REST_LEAD,
        payload["campaign_name"],
    )

    assert found.key == reply().key
    assert sync(db, found, ghl).status == "done"
    assert fake_ghl.calls == []


def test_a_tag_only_change_on_a_known_contact_is_one_call(db, ghl, fake_ghl):
    sync(db, reply(), ghl)
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    fake_ghl.calls.clear()

    sync(db, reply(email_id="second-reply", campaign_name="Follow-up"), ghl)

    assert calls(fake_ghl) == [
        ("POST", f"/contacts/{contact_id}/tags", {"tags": ["instantly-campaign-follow-up"]})
    ]
    assert sorted(fake_ghl.contact_by_email(EMAIL)["tags"]) == [
        "instantly-campaign-follow-up",
        *REPLY_TAGS,
    ]
    assert contacts.get(db, LOCATION_ID, EMAIL).tags == [
        "instantly-campaign-follow-up",
        *REPLY_TAGS,
    ]


@pytest.mark.parametrize(
    "event_type",
    [
        "email_opened",  # no rule in the settings
        "email_bounced",  # a rule, switched off by default
        "Hot prospect",  # a custom label, while sync_custom_labels is off
    ],
)
def test_an_event_type_not_synced_is_ignored_without_a_call(db, ghl, fake_ghl, event_type):
    event = Event(
        key=f"{event_type}:1",
        event_type=event_type,
        email=EMAIL,
        payload={"event_type": event_type, "lead_email": EMAIL, **LEAD_FIELDS},
        occurred_at=T1,
    )

    outcome = sync(db, event, ghl)

    assert outcome.status == "ignored" and outcome.contact_id is None
    assert fake_ghl.calls == []
    assert contacts.get(db, LOCATION_ID, EMAIL) is None


# --- interest statuses ------------------------------------------------------------------


def test_statuses_arriving_in_event_time_order_each_apply(db, ghl, fake_ghl):
    applied = []
    for event_type, at in [
        ("lead_interested", T1),
        ("lead_meeting_booked", T2),
        ("lead_closed", T3),
    ]:
        outcome = sync(db, status_event(event_type, at), ghl)
        record = contacts.get(db, LOCATION_ID, EMAIL)
        applied.append((outcome.status, record.interest_status, record.interest_at))

    assert applied == [
        ("done", "interested", T1),
        ("done", "meeting_booked", T2),
        ("done", "closed", T3),
    ]
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-won"]
    assert contacts.get(db, LOCATION_ID, EMAIL).interest_tags == ["instantly-won"]


def test_an_older_status_is_superseded_without_a_call(db, ghl, fake_ghl):
    newer = sync(db, status_event("lead_meeting_booked", T2), ghl)
    fake_ghl.calls.clear()
    older = polled.interest_event(REST_LEAD, "lead_interested", "Trust Attorneys Q4", T1)

    outcome = sync(db, older, ghl)

    assert outcome.status == "superseded" and outcome.contact_id == newer.contact_id
    assert outcome.note == (
        f"interested at {T1} is older than meeting_booked at {T2}, already applied"
    )
    assert fake_ghl.calls == []
    record = contacts.get(db, LOCATION_ID, EMAIL)
    assert (record.interest_status, record.interest_at) == ("meeting_booked", T2)
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-meeting-booked"]


def test_a_newer_status_removes_the_previous_statuses_tags_and_only_those(db, ghl, fake_ghl):
    sync(db, reply(), ghl)
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    ghl.add_tags(contact_id, ["vip"])  # a tag someone added in GHL
    sync(db, status_event("lead_interested", T1), ghl)
    fake_ghl.calls.clear()

    outcome = sync(db, status_event("lead_meeting_booked", T2), ghl)

    assert outcome.status == "done"
    assert_moved_from_interested_to_booked(fake_ghl, contact_id)
    record = contacts.get(db, LOCATION_ID, EMAIL)
    assert record.interest_tags == ["instantly-meeting-booked"]
    assert "instantly-interested" not in record.tags


# --- GHL changed behind the bridge's back -----------------------------------------------


def test_a_contact_deleted_in_ghl_is_written_afresh_once(db, ghl, fake_ghl):
    sync(db, reply(), ghl)
    old_id = fake_ghl.contact_by_email(EMAIL)["id"]
    fake_ghl.delete_contact(old_id)
    fake_ghl.calls.clear()

    outcome = sync(db, reply(email_id="second-reply", campaign_name="Follow-up"), ghl)

    contact = fake_ghl.contact_by_email(EMAIL)
    assert contact["id"] != old_id and outcome.contact_id == contact["id"]
    assert len(fake_ghl.contacts) == 1 and fake_ghl.upserts_for(EMAIL) == 1
    assert [(c.method, c.path, c.status) for c in fake_ghl.calls] == [
        ("POST", f"/contacts/{old_id}/tags", 400),
        ("POST", "/contacts/upsert", 200),
        ("POST", f"/contacts/{contact['id']}/tags", 201),
    ]
    assert set(contact["tags"]) == {"instantly-replied", "instantly-campaign-follow-up"}
    record = contacts.get(db, LOCATION_ID, EMAIL)
    assert record.contact_id == contact["id"]
    assert record.tags == ["instantly-campaign-follow-up", "instantly-replied"]


# --- actions ----------------------------------------------------------------------------


def test_the_reply_note_is_added_once_even_when_synced_twice(db, ghl, fake_ghl):
    change_settings(db, "actions.reply_note", enabled=True)
    event = reply()

    sync(db, event, ghl)
    fake_ghl.calls.clear()
    sync(db, event, ghl)

    assert fake_ghl.calls == []
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    (note,) = fake_ghl.notes[contact_id]
    assert marker(event) in note["body"]
    assert "Sure, how about 11/26 9am ET?" in note["body"]
    write = ghl_writes.get(db, LOCATION_ID, f"note:{event.key}")
    assert write.done and write.ghl_id == note["id"]


def test_no_reply_note_while_the_action_is_off(db, ghl, fake_ghl):
    sync(db, reply(), ghl)

    assert fake_ghl.notes == {}
    assert fake_ghl.calls_to("POST", "/contacts/{contactId}/notes") == []
