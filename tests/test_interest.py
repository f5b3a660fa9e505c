"""Interest statuses in GHL: the latest status's tags only, in event-time order, with the
fewest calls. Every GHL request is checked against the spec by the fake_ghl fixture."""

from __future__ import annotations

import pytest

from bridge.events import types as event_types
from bridge.events.event import Event
from bridge.store import contacts, inbox
from tests.helpers import LOCATION_ID, deliver, post_webhook, reply_payload, sample_payloads
from tests.interest_helpers import (
    EMAIL,
    assert_moved_from_interested_to_booked,
    calls,
    change_settings,
    interest_payload,
)

T1, T2, T3 = "2025-06-11T10:00:00.000Z", "2025-06-12T10:00:00.000Z", "2025-06-13T10:00:00.000Z"


def event_row(db, event_id):
    row = inbox.get(db, event_id)
    return row["status"], row["last_error"]


def test_a_first_status_on_a_new_contact_is_an_upsert_and_its_tags(client, db, worker, fake_ghl):
    deliver(client, worker, interest_payload("lead_interested", T1))
    contact = fake_ghl.contact_by_email(EMAIL)
    assert calls(fake_ghl) == [
        ("POST", "/contacts/upsert", {"locationId": "loc_test", "email": EMAIL,
                                      "firstName": "Jordan", "lastName": "Lead",
                                      "companyName": "Lead & Co", "source": "Instantly"}),
        ("POST", f"/contacts/{contact['id']}/tags", {"tags": ["instantly-interested"]}),
    ]  # fmt: skip
    record = contacts.get(db, LOCATION_ID, EMAIL)
    assert (record.interest_status, record.interest_at) == ("interested", T1)
    assert record.interest_tags == ["instantly-interested"]


def test_a_status_change_removes_the_previous_status_tag_and_only_it(client, db, worker, fake_ghl):
    deliver(client, worker, reply_payload())
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    fake_ghl.handle(
        "POST",
        f"/contacts/{contact_id}/tags",
        {},
        {"Authorization": "Bearer ghl-test-token", "Version": "2021-07-28"},
        b'{"tags": ["vip"]}',
    )  # a tag someone added in GHL
    deliver(client, worker, interest_payload("lead_interested", T1))
    fake_ghl.calls.clear()

    deliver(client, worker, interest_payload("lead_meeting_booked", T2))

    assert_moved_from_interested_to_booked(fake_ghl, contact_id)
    record = contacts.get(db, LOCATION_ID, EMAIL)
    assert record.interest_status == "meeting_booked"
    assert "instantly-interested" not in record.tags
    assert "instantly-meeting-booked" in record.tags


def test_the_same_status_again_costs_no_call(client, db, worker, fake_ghl):
    deliver(client, worker, interest_payload("lead_interested", T1))
    fake_ghl.calls.clear()
    answer = deliver(client, worker, interest_payload("lead_interested", T2))
    assert fake_ghl.calls == []
    assert event_row(db, answer.json["event_id"])[0] == "done"
    assert contacts.get(db, LOCATION_ID, EMAIL).interest_at == T2, "the newer time is remembered"


def test_an_older_status_arriving_late_is_superseded_without_a_call(client, db, worker, fake_ghl):
    deliver(client, worker, interest_payload("lead_meeting_booked", T2))
    fake_ghl.calls.clear()

    answer = deliver(client, worker, interest_payload("lead_interested", T1))

    assert fake_ghl.calls == []
    status, note = event_row(db, answer.json["event_id"])
    assert status == "superseded"
    assert note == f"interested at {T1} is older than meeting_booked at {T2}, already applied"
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-meeting-booked"]
    record = contacts.get(db, LOCATION_ID, EMAIL)
    assert (record.interest_status, record.interest_at) == ("meeting_booked", T2)


def test_out_of_order_deliveries_end_on_the_newest_status(client, db, worker, fake_ghl):
    for event_type, at in [
        ("lead_meeting_completed", T3),
        ("lead_interested", T1),
        ("lead_meeting_booked", T2),
    ]:
        deliver(client, worker, interest_payload(event_type, at))
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-meeting-completed"]
    assert [r[0] for r in db.execute("SELECT status FROM events ORDER BY id")] == [
        "done",
        "superseded",
        "superseded",
    ]


def test_another_status_at_the_same_moment_does_not_flip_the_first(client, db, worker, fake_ghl):
    deliver(client, worker, interest_payload("lead_interested", T1))
    fake_ghl.calls.clear()
    answer = deliver(client, worker, interest_payload("lead_neutral", T1))
    assert fake_ghl.calls == []
    assert event_row(db, answer.json["event_id"])[0] == "superseded"


def test_a_tag_both_statuses_use_is_kept(client, db, worker, fake_ghl):
    change_settings(
        db,
        "interest.tags",
        interested=["instantly-interested", "warm"],
        meeting_booked=["instantly-meeting-booked", "warm"],
    )
    deliver(client, worker, interest_payload("lead_interested", T1))
    fake_ghl.calls.clear()
    deliver(client, worker, interest_payload("lead_meeting_booked", T2))
    removed = fake_ghl.calls_to("DELETE", "/contacts/{id}/tags")
    assert [c.json for c in removed] == [{"tags": ["instantly-interested"]}]
    assert sorted(fake_ghl.contact_by_email(EMAIL)["tags"]) == ["instantly-meeting-booked", "warm"]


def test_the_tag_a_status_added_is_removed_even_after_its_settings_changed(
    client, db, worker, fake_ghl
):
    change_settings(db, "interest.tags", interested=["hot-{campaign_name}"])
    deliver(client, worker, interest_payload("lead_interested", T1))
    change_settings(db, "interest.tags", interested=["something-else"])
    deliver(client, worker, interest_payload("lead_not_interested", T2))
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-not-interested"]


def test_a_custom_label_is_a_status_with_its_own_tags(client, db, worker, fake_ghl):
    change_settings(db, "interest", sync_custom_labels=True)
    deliver(client, worker, interest_payload("lead_interested", T1))
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    fake_ghl.calls.clear()

    deliver(client, worker, interest_payload("Hot Lead", T2))
    assert calls(fake_ghl) == [
        ("POST", f"/contacts/{contact_id}/tags", {"tags": ["instantly-label-hot lead"]}),
        ("DELETE", f"/contacts/{contact_id}/tags", {"tags": ["instantly-interested"]}),
    ]
    assert contacts.get(db, LOCATION_ID, EMAIL).interest_status == "label:Hot Lead"

    deliver(client, worker, interest_payload("lead_meeting_booked", T3))
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-meeting-booked"]


def test_a_queued_label_is_ignored_once_label_sync_is_switched_off(client, db, worker, fake_ghl):
    change_settings(db, "interest", sync_custom_labels=True)
    answer = post_webhook(client, interest_payload("Hot Lead", T1))
    change_settings(db, "interest", sync_custom_labels=False)
    worker.run(drain=True)
    assert fake_ghl.calls == []
    assert event_row(db, answer.json["event_id"]) == (
        "ignored",
        "Hot Lead is not synced in settings",
    )


@pytest.mark.parametrize("code", sorted(event_types.STATUS_BY_CODE))
def test_a_polled_numeric_status_syncs_like_the_webhook(db, worker, fake_ghl, code):
    """The reconciler turns lt_interest_status into the event type named for its status
    and feeds the inbox with source="poll"; the worker treats it like a webhook."""
    status = event_types.status_for_code(code)
    event_type = event_types.EVENT_BY_STATUS[status]
    body = interest_payload(event_type, T1)
    inbox.enqueue(db, Event(f"poll:{event_type}:{EMAIL}:{T1}", event_type, EMAIL, body,
                            body["campaign_id"], body["campaign_name"], T1, "poll"))  # fmt: skip
    worker.run(drain=True)
    expected = "instantly-won" if status == "closed" else "instantly-" + status.replace("_", "-")
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == [expected]
    assert contacts.get(db, LOCATION_ID, EMAIL).interest_status == status


def test_reconciliation_of_a_status_already_applied_costs_nothing(client, db, worker, fake_ghl):
    deliver(client, worker, interest_payload("lead_interested", T1))
    fake_ghl.calls.clear()
    body = interest_payload("lead_interested", T1)
    inbox.enqueue(db, Event(f"poll:lead_interested:{EMAIL}:{T1}", "lead_interested", EMAIL, body,
                            body["campaign_id"], body["campaign_name"], T1, "poll"))  # fmt: skip
    worker.run(drain=True)
    assert fake_ghl.calls == []
    assert inbox.counts(db)["done"] == 2


def test_a_failed_tag_removal_keeps_the_old_status_until_ghl_confirms(
    client, db, config, worker, fake_ghl
):
    deliver(client, worker, interest_payload("lead_interested", T1))
    remove_tags = worker.client.remove_tags

    def gateway_error_once(*args):
        worker.client.remove_tags = remove_tags
        fake_ghl.fail_next(1, 503)
        return remove_tags(*args)

    worker.client.remove_tags = gateway_error_once
    answer = deliver(client, worker, interest_payload("lead_meeting_booked", T2))

    assert event_row(db, answer.json["event_id"])[0] == "pending"
    record = contacts.get(db, LOCATION_ID, EMAIL)
    assert (record.interest_status, record.interest_at) == ("interested", T1)
    assert sorted(fake_ghl.contact_by_email(EMAIL)["tags"]) == [
        "instantly-interested",
        "instantly-meeting-booked",
    ], "added first: a failure leaves both statuses' tags, never neither"

    fake_ghl.calls.clear()
    db.execute("UPDATE events SET next_attempt_at = 0")
    worker.run(drain=True)
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    assert calls(fake_ghl) == [
        ("DELETE", f"/contacts/{contact_id}/tags", {"tags": ["instantly-interested"]})
    ]
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-meeting-booked"]
    assert contacts.get(db, LOCATION_ID, EMAIL).interest_status == "meeting_booked"


def test_a_status_is_not_remembered_when_its_tags_never_reached_ghl(client, db, worker, fake_ghl):
    deliver(client, worker, interest_payload("lead_interested", T1))
    fake_ghl.fail_next(1, 500)
    answer = deliver(client, worker, interest_payload("lead_meeting_booked", T2))
    assert event_row(db, answer.json["event_id"])[0] == "pending"
    assert contacts.get(db, LOCATION_ID, EMAIL).interest_status == "interested"
    # The late older event must not be judged against a status GHL never got.
    deliver(client, worker, interest_payload("lead_neutral", T1.replace("10:00", "11:00")))
    assert contacts.get(db, LOCATION_ID, EMAIL).interest_status == "neutral"


@pytest.mark.parametrize(
    ("name", "body"),
    [(n, b) for n, b in sample_payloads() if b.get("event_type", "").startswith("lead_")]
    or [
        pytest.param(
            "",
            {},
            marks=pytest.mark.skip(reason="../shared/specs/instantly/webhook-samples not found"),
        )
    ],
)
def test_each_captured_interest_delivery_syncs_its_status(client, db, worker, fake_ghl, name, body):
    answer = deliver(client, worker, body)
    assert answer.json["status"] == "accepted", name
    email = body["lead_email"].strip().lower()
    status = event_types.status_for_event(body["event_type"])
    expected = "instantly-" + status.replace("_", "-")
    assert fake_ghl.contact_by_email(email)["tags"] == [expected]
    assert fake_ghl.upserts_for(email) == 1
    assert inbox.counts(db)["done"] == 1


def test_a_stale_status_is_settled_even_while_ghl_is_down(db, fake_ghl, worker):
    """The superseded decision comes before any GHL call, so an outage cannot hold up a
    stale event."""
    body = interest_payload("lead_meeting_booked", T2)
    inbox.enqueue(db, Event("k2", "lead_meeting_booked", EMAIL, body, "", "", T2, "webhook"))
    worker.run(drain=True)
    fake_ghl.fail_for(3600, 503)
    calls_before = len(fake_ghl.calls)
    body = interest_payload("lead_interested", T1)
    stale = inbox.enqueue(db, Event("k1", "lead_interested", EMAIL, body, "", "", T1, "webhook"))
    worker.run(drain=True)
    assert inbox.get(db, stale.event_id)["status"] == "superseded"
    assert len(fake_ghl.calls) == calls_before


def test_the_ghl_calls_for_a_reply_a_repeat_a_status_change_and_a_late_status(
    client, db, worker, fake_ghl
):
    """The call budget with the shipped settings, in the order the calls are made."""

    def step(body):
        fake_ghl.calls.clear()
        deliver(client, worker, body)
        return [(c.method, c.path) for c in fake_ghl.calls]

    first_reply = step(reply_payload())
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    tags = f"/contacts/{contact_id}/tags"
    assert first_reply == [("POST", "/contacts/upsert"), ("POST", tags)]
    assert step(reply_payload()) == []
    assert step(interest_payload("lead_interested", T1)) == [("POST", tags)]
    assert step(interest_payload("lead_interested", T2)) == []
    assert step(interest_payload("lead_meeting_booked", T3)) == [("POST", tags), ("DELETE", tags)]
    assert step(interest_payload("lead_not_interested", T2)) == []
