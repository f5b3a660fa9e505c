"""The dry run and the worker decide with the same code: for every event type, with the
shipped settings and with each optional action switched on, the GHL calls the preview
announces are the calls the worker then makes against the fake GHL, in the same order."""

from __future__ import annotations

import re

import pytest

from bridge import settings as settings_mod
from bridge.events.webhook import from_webhook
from bridge.store import inbox
from bridge.sync.preview import plan_events
from bridge.sync.worker import Worker
from tests.helpers import LOCATION_ID, reply_payload
from tests.interest_helpers import (
    EMAIL,
    change_settings,
    interest_payload,
    lead_event_payload,
    switch_on_opportunity,
)

T = [f"2025-06-{day:02d}T10:00:00.000Z" for day in range(1, 20)]


def first_round() -> list[dict]:
    """Every event type once, for a contact GHL does not have yet."""
    return [
        reply_payload(timestamp=T[1], email_id="reply-1"),
        interest_payload("lead_interested", T[2]),
        interest_payload("lead_meeting_booked", T[3]),
        interest_payload("lead_interested", T[0]),  # older than what is applied: superseded
        interest_payload("lead_meeting_completed", T[4]),
        interest_payload("lead_closed", T[5]),
        interest_payload("Warm but busy", T[6]),  # a custom label
        reply_payload(event_type="auto_reply_received", timestamp=T[7], email_id="auto-1"),
        lead_event_payload("email_bounced", T[8]),
        lead_event_payload("lead_unsubscribed", T[9]),
        lead_event_payload("link_clicked", T[9]),  # a type the settings do not sync
    ]


def second_round() -> list[dict]:
    """The contact is known now: changed fields, a new reply, statuses moving on."""
    return [
        reply_payload(timestamp=T[10], email_id="reply-2", firstName="Jordan-Lee"),
        interest_payload("lead_not_interested", T[11]),
        interest_payload("lead_neutral", T[12]),
        interest_payload("lead_out_of_office", T[13]),
        interest_payload("lead_wrong_person", T[14]),
        interest_payload("lead_no_show", T[15]),
        interest_payload("lead_lost", T[16]),
        lead_event_payload("lead_unsubscribed", T[17]),
    ]


def shipped(db, fake):
    pass


def reply_notes(db, fake):
    change_settings(db, "actions.reply_note", enabled=True)


def reply_messages(db, fake):
    change_settings(db, "actions.reply_message", enabled=True, auto_replies=True)


def auto_replies(db, fake):
    change_settings(db, "events.auto_reply_received", enabled=True)


def bounces_with_dnd(db, fake):
    change_settings(db, "events.email_bounced", enabled=True, dnd=True)


def workflow(db, fake):
    workflow_id = fake.add_workflow("Hot leads")
    statuses = ["interested", "meeting_booked", "closed", "not_interested"]
    change_settings(
        db, "actions.workflow", enabled=True, workflow_id=workflow_id, statuses=statuses
    )


def opportunity(db, fake):
    switch_on_opportunity(db, fake)


def custom_field(db, fake):
    fake.add_custom_field("Icebreaker", "contact.icebreaker")
    _, current = settings_mod.current(db)
    current["field_map"].append({"instantly": "icebreaker", "ghl": "contact.icebreaker"})
    settings_mod.save(db, current)


def custom_labels(db, fake):
    change_settings(db, "interest", sync_custom_labels=True)


def everything(db, fake):
    switches = (
        reply_notes,
        reply_messages,
        auto_replies,
        bounces_with_dnd,
        workflow,
        opportunity,
        custom_labels,
    )
    for switch_on in switches:
        switch_on(db, fake)


VARIANTS = [
    shipped,
    reply_notes,
    reply_messages,
    auto_replies,
    bounces_with_dnd,
    workflow,
    opportunity,
    custom_field,
    custom_labels,
    everything,
]


def route(method: str, path: str) -> str:
    """A call with the ids GHL makes up (contacts, notes, opportunities) left out."""
    path = re.sub(r"^/contacts/(?!upsert$)[^/]+", "/contacts/{id}", path)
    path = re.sub(r"^/opportunities/(?!search$|pipelines$)[^/]+", "/opportunities/{id}", path)
    return f"{method} {path}"


def planned_and_made(db, config, fake, bodies):
    """For each delivery: the calls the preview announced, and the calls the worker made."""
    events = [from_webhook(body) for body in bodies]
    _, settings = settings_mod.current(db)
    plans = plan_events(db, events, settings, LOCATION_ID)
    worker = Worker(config, db=db)
    made = []
    for event in events:
        inbox.enqueue(db, event)
        before = len(fake.calls)
        worker.run(drain=True)
        made.append([route(c.method, c.path) for c in fake.calls[before:]])
    planned = [[route(c.method, c.path) for c in plan.calls] for plan in plans]
    return plans, planned, made


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.__name__)
def test_the_dry_run_announces_exactly_the_calls_the_worker_makes(db, config, fake_ghl, variant):
    variant(db, fake_ghl)
    for bodies in (first_round(), second_round()):
        plans, planned, made = planned_and_made(db, config, fake_ghl, bodies)
        for plan, announced, sent in zip(plans, planned, made, strict=True):
            assert announced == sent, (plan.event.event_type, plan.changes)
    assert fake_ghl.upserts_for(EMAIL) >= 1


def test_the_preview_writes_nothing_and_calls_nothing(db, fake_ghl):
    workflow(db, fake_ghl)
    before = list(db.conn.iterdump())
    calls_before = len(fake_ghl.calls)
    events = [from_webhook(body) for body in first_round()]
    plans = plan_events(db, events, settings_mod.current(db)[1], LOCATION_ID)
    assert len(plans) == len(events)
    assert list(db.conn.iterdump()) == before
    assert len(fake_ghl.calls) == calls_before


def test_the_preview_says_in_words_what_each_event_would_do(db, fake_ghl):
    reply_notes(db, fake_ghl)
    workflow(db, fake_ghl)
    events = [from_webhook(body) for body in first_round()]
    plans = {plan.event.event_type + plan.event.occurred_at: plan for plan in plan_events(
        db, events, settings_mod.current(db)[1], LOCATION_ID
    )}  # fmt: skip
    reply = plans["reply_received" + T[1]]
    assert reply.outcome == "done"
    assert reply.changes[0] == "upsert contact (firstName, lastName, companyName)"
    assert "add the reply as a note" in reply.changes
    interested = plans["lead_interested" + T[2]]
    assert any(line.startswith("add to workflow ") for line in interested.changes)
    assert interested.changes[-1] == "interest status none -> interested"
    booked = plans["lead_meeting_booked" + T[3]]
    assert "remove tags instantly-interested" in booked.changes
    older = plans["lead_interested" + T[0]]
    assert older.outcome == "superseded" and older.calls == []
    assert older.changes[0].startswith("none: interested at ")
    ignored = plans["link_clicked" + T[9]]
    assert ignored.changes == ["none: link_clicked is not synced in settings"]
