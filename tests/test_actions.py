"""The optional actions: reply notes, workflows, opportunities, DND, auto-replies. Each
off by default, each once, whatever duplicates, retries and uncertain calls happen.
Every GHL request is checked against the spec by the fake_ghl fixture."""

from __future__ import annotations

import pytest

from bridge.clients.ghl import GHLTransient
from bridge.events.event import Event
from bridge.events.webhook import from_webhook
from bridge.store import ghl_writes, inbox
from bridge.sync.reply_note import marker
from tests.helpers import LOCATION_ID, deliver, post_webhook, reply_payload, retry_due, routes
from tests.interest_helpers import (
    EMAIL,
    change_settings,
    interest_payload,
    lead_event_payload,
    switch_on_opportunity,
)

T1, T2, T3 = "2025-06-11T10:00:00.000Z", "2025-06-12T10:00:00.000Z", "2025-06-13T10:00:00.000Z"


def fail_after_ghl_answers(worker, name):
    """Make client.<name> reach GHL, then lose the answer once (a timeout on the way back)."""
    original = getattr(worker.client, name)

    def lost_answer(*args):
        setattr(worker.client, name, original)
        original(*args)
        raise GHLTransient(0, "ReadTimeout: the answer never came")

    setattr(worker.client, name, lost_answer)


def fail_before_ghl_stores(worker, fake, name, status=503):
    """Make client.<name> fail once at GHL's gateway: nothing is stored."""
    original = getattr(worker.client, name)

    def gateway_error(*args):
        setattr(worker.client, name, original)
        fake.fail_next(1, status)
        return original(*args)

    setattr(worker.client, name, gateway_error)


# --- reply notes --------------------------------------------------------------------------


def test_no_note_unless_switched_on(client, db, worker, fake_ghl):
    deliver(client, worker, reply_payload())
    assert routes(fake_ghl) == ["POST /contacts/upsert", "POST /contacts/{contactId}/tags"]
    assert fake_ghl.notes == {}


def test_a_reply_becomes_one_note(client, db, worker, fake_ghl):
    change_settings(db, "actions.reply_note", enabled=True)
    deliver(client, worker, reply_payload())
    assert routes(fake_ghl) == [
        "POST /contacts/upsert",
        "POST /contacts/{contactId}/tags",
        "POST /contacts/{contactId}/notes",
    ]
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    (note,) = fake_ghl.notes[contact_id]
    assert note["body"].startswith("Reply in Instantly: Re: Your thoughts?\n\nSure, how about")
    assert "Unibox: https://app.instantly.ai/app/unibox?thread_search=thread:abc" in note["body"]
    assert "Campaign: Trust Attorneys Q4 (step 1)" in note["body"]
    assert note["body"].endswith(
        "[instantly-ghl-bridge reply:019ab465-0036-7b51-9914-3353686e7dc1]"
    )


def test_duplicate_deliveries_replays_and_reconciliation_add_no_second_note(
    client, db, worker, fake_ghl
):
    change_settings(db, "actions.reply_note", enabled=True)
    first = deliver(client, worker, reply_payload())
    fake_ghl.calls.clear()

    deliver(client, worker, reply_payload())  # Instantly delivers again
    polled = from_webhook(reply_payload())  # polling finds the same reply: same key
    inbox.enqueue(db, Event(polled.key, polled.event_type, polled.email, polled.payload,
                            polled.campaign_id, polled.campaign_name, polled.occurred_at, "poll"))  # fmt: skip
    inbox.replay(db, [first.json["event_id"]])  # someone replays the done event
    worker.run(drain=True)

    assert fake_ghl.calls == []
    assert sum(len(notes) for notes in fake_ghl.notes.values()) == 1


def test_a_note_whose_answer_was_lost_is_found_not_written_twice(client, db, worker, fake_ghl):
    change_settings(db, "actions.reply_note", enabled=True)
    fail_after_ghl_answers(worker, "create_note")
    answer = deliver(client, worker, reply_payload())
    assert inbox.get(db, answer.json["event_id"])["status"] == "pending"
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    assert len(fake_ghl.notes[contact_id]) == 1, "GHL stored it; the bridge does not know"
    fake_ghl.calls.clear()

    retry_due(db, worker)

    assert routes(fake_ghl) == ["GET /contacts/{contactId}/notes"]
    assert len(fake_ghl.notes[contact_id]) == 1
    assert inbox.get(db, answer.json["event_id"])["status"] == "done"
    write = ghl_writes.get(db, LOCATION_ID, f"note:{from_webhook(reply_payload()).key}")
    assert write.done and write.ghl_id == fake_ghl.notes[contact_id][0]["id"]


def test_a_note_that_never_reached_ghl_is_written_once_on_retry(client, db, worker, fake_ghl):
    change_settings(db, "actions.reply_note", enabled=True)
    fail_before_ghl_stores(worker, fake_ghl, "create_note")
    deliver(client, worker, reply_payload())
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    assert fake_ghl.notes.get(contact_id, []) == []
    fake_ghl.calls.clear()

    retry_due(db, worker)

    assert routes(fake_ghl) == [
        "GET /contacts/{contactId}/notes",
        "POST /contacts/{contactId}/notes",
    ]
    assert len(fake_ghl.notes[contact_id]) == 1


def test_a_look_finds_only_this_replys_marker(client, db, worker, fake_ghl):
    change_settings(db, "actions.reply_note", enabled=True)
    deliver(client, worker, reply_payload())
    other = reply_payload(email_id="another-reply", reply_text="Also: Friday?")
    fail_before_ghl_stores(worker, fake_ghl, "create_note")  # the first try fails at the gateway
    deliver(client, worker, other)
    retry_due(db, worker)
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    bodies = [n["body"] for n in fake_ghl.notes[contact_id]]
    assert len(bodies) == 2
    assert marker(from_webhook(other)) in bodies[1]


def test_auto_replies_sync_only_when_switched_on_with_their_own_tag_and_no_note(
    client, db, worker, fake_ghl
):
    change_settings(db, "actions.reply_note", enabled=True)
    auto = reply_payload(event_type="auto_reply_received", email_id="ooo-1",
                         reply_text="I am out of office until Monday.")  # fmt: skip
    assert post_webhook(client, auto).json["status"] == "ignored"

    change_settings(db, "events.auto_reply_received", enabled=True)
    deliver(client, worker, auto)
    assert routes(fake_ghl) == ["POST /contacts/upsert", "POST /contacts/{contactId}/tags"]
    assert fake_ghl.contact_by_email(EMAIL)["tags"] == ["instantly-auto-reply"]
    assert fake_ghl.notes == {}


# --- workflow -----------------------------------------------------------------------------


def test_no_workflow_unless_switched_on(client, db, worker, fake_ghl):
    fake_ghl.add_workflow("Hot leads")
    deliver(client, worker, interest_payload("lead_interested", T1))
    assert fake_ghl.workflow_enrollments == []


def test_a_chosen_status_enrols_the_contact_once(client, db, worker, fake_ghl):
    workflow_id = fake_ghl.add_workflow("Hot leads")
    change_settings(db, "actions.workflow", enabled=True, workflow_id=workflow_id,
                    statuses=["interested", "meeting_booked"])  # fmt: skip
    deliver(client, worker, interest_payload("lead_neutral", T1))
    assert fake_ghl.workflow_enrollments == []

    deliver(client, worker, interest_payload("lead_interested", T2))
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    assert fake_ghl.workflow_enrollments == [(contact_id, workflow_id)]
    (call,) = fake_ghl.calls_to("POST", "/contacts/{contactId}/workflow/{workflowId}")
    assert call.path == f"/contacts/{contact_id}/workflow/{workflow_id}" and call.json == {}

    deliver(client, worker, interest_payload("lead_interested", T2))  # duplicate delivery
    deliver(client, worker, interest_payload("lead_meeting_booked", T3))  # another chosen one
    assert fake_ghl.workflow_enrollments == [(contact_id, workflow_id)]


def test_a_failed_enrolment_is_completed_on_retry_without_redoing_the_tags(
    client, db, worker, fake_ghl
):
    workflow_id = fake_ghl.add_workflow("Hot leads")
    change_settings(db, "actions.workflow", enabled=True, workflow_id=workflow_id)
    fail_before_ghl_stores(worker, fake_ghl, "add_to_workflow")
    answer = deliver(client, worker, interest_payload("lead_interested", T1))
    assert inbox.get(db, answer.json["event_id"])["status"] == "pending"
    fake_ghl.calls.clear()

    retry_due(db, worker)

    assert routes(fake_ghl) == ["POST /contacts/{contactId}/workflow/{workflowId}"]
    assert len(fake_ghl.workflow_enrollments) == 1
    assert inbox.get(db, answer.json["event_id"])["status"] == "done"


# --- opportunity --------------------------------------------------------------------------


@pytest.fixture
def pipeline(db, fake_ghl):
    return switch_on_opportunity(db, fake_ghl)


def the_opportunity(fake):
    (opportunity,) = fake.opportunities.values()
    return opportunity


def test_no_opportunity_unless_switched_on(client, db, worker, fake_ghl):
    deliver(client, worker, interest_payload("lead_interested", T1))
    assert fake_ghl.opportunities == {}
    assert not any("opportunities" in c.path for c in fake_ghl.calls)


def test_the_first_chosen_status_creates_the_opportunity(client, db, worker, fake_ghl, pipeline):
    pipeline_id, stage = pipeline
    deliver(client, worker, interest_payload("lead_interested", T1))
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    assert routes(fake_ghl) == [
        "POST /contacts/upsert",
        "POST /contacts/{contactId}/tags",
        "GET /opportunities/search",
        "POST /opportunities/",
    ]
    (create,) = fake_ghl.calls_to("POST", "/opportunities/")
    assert create.json == {
        "locationId": "loc_test",
        "pipelineId": pipeline_id,
        "name": "Jordan Lead (Instantly)",
        "contactId": contact_id,
        "pipelineStageId": stage["Interested"],
        "status": "open",
    }
    (search,) = fake_ghl.calls_to("GET", "/opportunities/search")
    assert search.query == {
        "location_id": ["loc_test"],
        "contact_id": [contact_id],
        "pipeline_id": [pipeline_id],
        "status": ["all"],
    }


def test_an_interest_event_without_a_name_uses_the_name_the_reply_brought(
    client, db, worker, fake_ghl, pipeline
):
    deliver(client, worker, reply_payload())  # Jordan Lead, written to GHL and the contact map
    nameless = interest_payload("lead_interested", T1)
    for field in ("firstName", "lastName"):
        nameless.pop(field)
    deliver(client, worker, nameless)
    (create,) = fake_ghl.calls_to("POST", "/opportunities/")
    assert create.json["name"] == "Jordan Lead (Instantly)"


def test_with_no_name_anywhere_the_opportunity_is_named_by_email(
    client, db, worker, fake_ghl, pipeline
):
    nameless = interest_payload("lead_interested", T1)
    for field in ("firstName", "lastName"):
        nameless.pop(field)
    deliver(client, worker, nameless)
    (create,) = fake_ghl.calls_to("POST", "/opportunities/")
    assert create.json["name"] == f"{EMAIL} (Instantly)"


def test_later_statuses_move_it_and_never_create_another(client, db, worker, fake_ghl, pipeline):
    _, stage = pipeline
    deliver(client, worker, interest_payload("lead_interested", T1))
    opportunity_id = the_opportunity(fake_ghl)["id"]
    fake_ghl.calls.clear()

    deliver(client, worker, interest_payload("lead_meeting_booked", T2))
    (move,) = fake_ghl.calls_to("PUT", "/opportunities/{id}")
    assert move.path == f"/opportunities/{opportunity_id}"
    assert move.json == {"pipelineStageId": stage["Booked"], "status": "open"}
    assert len(fake_ghl.calls_to("POST", "/opportunities/")) == 0

    deliver(client, worker, interest_payload("lead_closed", T3))
    opportunity = the_opportunity(fake_ghl)
    assert (opportunity["pipelineStageId"], opportunity["status"]) == (stage["Won"], "won")
    fake_ghl.calls.clear()

    deliver(client, worker, interest_payload("lead_closed", T3))  # duplicate delivery
    deliver(client, worker, interest_payload("lead_meeting_booked", T2))  # late, older
    deliver(client, worker, interest_payload("lead_closed", T3.replace("13T", "14T")))  # again
    assert fake_ghl.calls == []
    assert the_opportunity(fake_ghl)["pipelineStageId"] == stage["Won"]


def test_a_status_not_chosen_leaves_the_opportunity_alone(client, db, worker, fake_ghl, pipeline):
    deliver(client, worker, interest_payload("lead_interested", T1))
    fake_ghl.calls.clear()
    deliver(client, worker, interest_payload("lead_out_of_office", T2))
    assert routes(fake_ghl) == [
        "POST /contacts/{contactId}/tags",
        "DELETE /contacts/{contactId}/tags",
    ]


def test_a_create_whose_answer_was_lost_is_adopted_not_repeated(
    client, db, worker, fake_ghl, pipeline
):
    fail_after_ghl_answers(worker, "create_opportunity")
    answer = deliver(client, worker, interest_payload("lead_interested", T1))
    assert inbox.get(db, answer.json["event_id"])["status"] == "pending"
    fake_ghl.calls.clear()

    retry_due(db, worker)

    assert routes(fake_ghl) == ["GET /opportunities/search"]
    opportunity = the_opportunity(fake_ghl)
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    write = ghl_writes.get(db, LOCATION_ID, f"opportunity:{contact_id}:{opportunity['pipelineId']}")
    assert write.done and write.ghl_id == opportunity["id"]


def test_an_opportunity_made_by_hand_is_adopted_and_moved(client, db, worker, fake_ghl, pipeline):
    pipeline_id, stage = pipeline
    contact_id = worker.client.upsert_contact({"email": EMAIL})[0]
    by_hand = worker.client.create_opportunity({"pipelineId": pipeline_id, "name": "Jordan",
                                                "status": "open", "contactId": contact_id,
                                                "pipelineStageId": stage["New"]})  # fmt: skip
    fake_ghl.calls.clear()
    deliver(client, worker, interest_payload("lead_meeting_booked", T1))
    assert [r for r in routes(fake_ghl) if "opportunities" in r] == [
        "GET /opportunities/search",
        "PUT /opportunities/{id}",
    ]
    assert the_opportunity(fake_ghl)["id"] == by_hand
    assert the_opportunity(fake_ghl)["pipelineStageId"] == stage["Booked"]


def test_an_opportunity_deleted_in_ghl_is_created_afresh(client, db, worker, fake_ghl, pipeline):
    _, stage = pipeline
    deliver(client, worker, interest_payload("lead_interested", T1))
    fake_ghl.opportunities.clear()  # someone deleted it in GHL
    answer = deliver(client, worker, interest_payload("lead_meeting_booked", T2))
    assert inbox.get(db, answer.json["event_id"])["status"] == "done"
    assert the_opportunity(fake_ghl)["pipelineStageId"] == stage["Booked"]


def test_a_wrong_stage_is_dead_lettered_with_ghls_message(client, db, worker, fake_ghl, pipeline):
    change_settings(db, "actions.opportunity", stages={"meeting_booked": "no-such-stage"})
    deliver(client, worker, interest_payload("lead_interested", T1))
    answer = deliver(client, worker, interest_payload("lead_meeting_booked", T2))
    row = inbox.get(db, answer.json["event_id"])
    assert row["status"] == "dead" and "Pipeline stage not found" in row["last_error"]
    assert len(fake_ghl.opportunities) == 1


# --- do not disturb -----------------------------------------------------------------------


def test_an_unsubscribe_sets_email_dnd_once(client, db, worker, fake_ghl):
    deliver(client, worker, lead_event_payload("lead_unsubscribed", T1))
    contact = fake_ghl.contact_by_email(EMAIL)
    assert routes(fake_ghl) == [
        "POST /contacts/upsert",
        "POST /contacts/{contactId}/tags",
        "PUT /contacts/{contactId}",
    ]
    (update,) = fake_ghl.calls_to("PUT", "/contacts/{contactId}")
    assert update.json == {
        "dndSettings": {
            "Email": {
                "status": "active",
                "message": "Unsubscribed in Instantly (campaign Trust Attorneys Q4) on 2025-06-11;"
                " set by instantly-ghl-bridge",
            }
        }
    }
    assert contact["dndSettings"]["Email"]["status"] == "active"
    assert contact["tags"] == ["instantly-unsubscribed"]
    fake_ghl.calls.clear()

    deliver(client, worker, lead_event_payload("lead_unsubscribed", T2, campaign_id="c2"))
    assert fake_ghl.calls == []


def test_dnd_can_be_switched_off_for_unsubscribes(client, db, worker, fake_ghl):
    change_settings(db, "events.lead_unsubscribed", dnd=False)
    deliver(client, worker, lead_event_payload("lead_unsubscribed", T1))
    assert fake_ghl.calls_to("PUT", "/contacts/{contactId}") == []
    assert "dndSettings" not in fake_ghl.contact_by_email(EMAIL)


def test_bounces_set_dnd_only_when_asked(client, db, worker, fake_ghl):
    assert post_webhook(client, lead_event_payload("email_bounced", T1)).json["status"] == (
        "ignored"
    )
    change_settings(db, "events.email_bounced", enabled=True)
    deliver(client, worker, lead_event_payload("email_bounced", T1))
    assert fake_ghl.calls_to("PUT", "/contacts/{contactId}") == []

    change_settings(db, "events.email_bounced", dnd=True)
    deliver(client, worker, lead_event_payload("email_bounced", T2))
    (update,) = fake_ghl.calls_to("PUT", "/contacts/{contactId}")
    assert update.json["dndSettings"]["Email"]["message"].startswith("Email bounced in Instantly")
