"""Webhook in, GHL out: the calls the worker makes, checked against GHL's spec (fake_ghl)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from bridge import settings as settings_mod
from bridge.events import types as event_types
from bridge.store import contacts, inbox, state
from bridge.sync.worker import Worker
from tests.helpers import LOCATION_ID, post_webhook, reply_payload, sample_params

EMAIL = "jordan.lead@example.com"


def drain(worker):
    return worker.run(drain=True)


def test_first_reply_makes_one_upsert_and_one_add_tags(client, db, worker, fake_ghl):
    post_webhook(client, reply_payload())
    assert drain(worker) == 1
    upsert, add_tags = fake_ghl.calls
    assert (upsert.method, upsert.path) == ("POST", "/contacts/upsert")
    assert upsert.json == {
        "locationId": "loc_test",
        "email": EMAIL,
        "firstName": "Jordan",
        "lastName": "Lead",
        "companyName": "Lead & Co",
        "source": "Instantly",
    }
    contact = fake_ghl.contact_by_email(EMAIL)
    assert (add_tags.method, add_tags.path) == ("POST", f"/contacts/{contact['id']}/tags")
    assert add_tags.json == {"tags": ["instantly-replied", "instantly-campaign-trust attorneys q4"]}
    assert sorted(contact["tags"]) == ["instantly-campaign-trust attorneys q4", "instantly-replied"]
    row = db.execute("SELECT status, contact_id FROM events").fetchone()
    assert row == ("done", contact["id"])


def test_same_delivery_three_times_makes_one_contact_and_two_calls(client, db, worker, fake_ghl):
    for _ in range(3):
        post_webhook(client, reply_payload())
    drain(worker)
    assert fake_ghl.upserts_for(EMAIL) == 1
    assert len(fake_ghl.calls) == 2


def test_tags_are_never_sent_in_an_upsert_and_existing_tags_survive(client, db, worker, fake_ghl):
    fake_ghl.handle(
        "POST",
        "/contacts/upsert",
        {},
        {"Authorization": "Bearer ghl-test-token", "Version": "2021-07-28"},
        json.dumps(
            {"locationId": "loc_test", "email": EMAIL, "tags": ["vip", "met at expo"]}
        ).encode(),
    )
    fake_ghl.calls.clear()
    post_webhook(client, reply_payload())
    drain(worker)
    assert all("tags" not in c.json for c in fake_ghl.calls_to("POST", "/contacts/upsert"))
    assert {"vip", "met at expo", "instantly-replied"} <= set(
        fake_ghl.contact_by_email(EMAIL)["tags"]
    )


def test_a_known_contact_with_the_same_fields_costs_nothing(client, db, worker, fake_ghl):
    post_webhook(client, reply_payload())
    drain(worker)
    fake_ghl.calls.clear()
    post_webhook(
        client, reply_payload(email_id="second-reply", timestamp="2025-11-25T09:00:00.000Z")
    )
    drain(worker)
    assert fake_ghl.calls == []


def test_a_new_tag_on_a_known_contact_is_one_call(client, db, worker, fake_ghl):
    post_webhook(client, reply_payload())
    drain(worker)
    fake_ghl.calls.clear()
    post_webhook(client, reply_payload(email_id="other", campaign_name="Follow-up"))
    drain(worker)
    (call,) = fake_ghl.calls
    assert call.method == "POST" and call.path.endswith("/tags")
    assert call.json == {"tags": ["instantly-campaign-follow-up"]}


def test_changed_lead_fields_upsert_again_without_blanking_others(client, db, worker, fake_ghl):
    post_webhook(client, reply_payload())
    drain(worker)
    fake_ghl.calls.clear()
    post_webhook(client, reply_payload(email_id="other", companyName="New Co", lastName=""))
    drain(worker)
    (upsert,) = fake_ghl.calls_to("POST", "/contacts/upsert")
    assert upsert.json["companyName"] == "New Co"
    assert "lastName" not in upsert.json
    assert fake_ghl.contact_by_email(EMAIL)["lastName"] == "Lead"


def test_custom_fields_are_resolved_once_and_sent_by_id(client, db, worker, fake_ghl):
    field_id = fake_ghl.add_custom_field("contact.icebreaker", "Icebreaker")
    _, current = settings_mod.current(db)
    current["field_map"].append({"instantly": "personalization", "ghl": "contact.icebreaker"})
    settings_mod.save(db, current)
    post_webhook(client, reply_payload(personalization="Loved your talk"))
    post_webhook(
        client,
        reply_payload(
            email="b@example.com", lead_email="b@example.com", email_id="r2", personalization="Hi"
        ),
    )
    drain(worker)
    assert len(fake_ghl.calls_to("GET", "/locations/{locationId}/customFields")) == 1
    upserts = fake_ghl.calls_to("POST", "/contacts/upsert")
    assert upserts[0].json["customFields"] == [{"id": field_id, "field_value": "Loved your talk"}]


def test_a_missing_custom_field_dead_letters_with_a_clear_message(client, db, worker, fake_ghl):
    _, current = settings_mod.current(db)
    current["field_map"].append({"instantly": "personalization", "ghl": "contact.nope"})
    settings_mod.save(db, current)
    post_webhook(client, reply_payload(personalization="x"))
    drain(worker)
    row = db.execute("SELECT status, last_error FROM events").fetchone()
    assert row[0] == "dead" and "contact.nope does not exist" in row[1]


def test_server_errors_are_retried_with_backoff_then_succeed(client, db, worker, fake_ghl):
    fake_ghl.fail_next(1, 503)
    post_webhook(client, reply_payload())
    drain(worker)
    row = inbox.get(db, 1)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert "GHL 503" in row["last_error"]
    assert row["next_attempt_at"] > 0
    assert state.get(db, state.scoped(state.GHL_LAST_ERROR, LOCATION_ID))["status"] == 503
    db.execute("UPDATE events SET next_attempt_at = 0")
    drain(worker)
    assert inbox.get(db, 1)["status"] == "done"
    assert fake_ghl.upserts_for(EMAIL) == 1


def test_after_max_attempts_the_event_is_dead_and_replay_brings_it_home(
    client, db, worker, fake_ghl
):
    _, current = settings_mod.current(db)
    current["sync"]["max_attempts"] = 3
    settings_mod.save(db, current)
    fake_ghl.fail_next(3, 500)
    post_webhook(client, reply_payload())
    for _ in range(3):
        db.execute("UPDATE events SET next_attempt_at = 0")
        drain(worker)
    row = inbox.get(db, 1)
    assert row["status"] == "dead"
    assert "gave up after 3 attempts" in row["last_error"]
    assert inbox.replay(db) == 1
    drain(worker)
    assert inbox.get(db, 1)["status"] == "done"


def test_a_rejected_request_is_dead_at_once_with_ghls_message(client, db, worker, fake_ghl):
    fake_ghl.fail_next(
        1,
        422,
        body={
            "statusCode": 422,
            "message": ["email must be an email"],
            "error": "Unprocessable Entity",
        },
    )
    post_webhook(client, reply_payload())
    drain(worker)
    row = inbox.get(db, 1)
    assert row["status"] == "dead" and "email must be an email" in row["last_error"]
    assert row["attempts"] == 1


def test_a_field_ghl_refuses_is_dropped_and_the_contact_still_written(client, db, worker, fake_ghl):
    fake_ghl.fail_next(
        1, 400, body={"statusCode": 400, "message": "phone must be a valid phone number"}
    )
    post_webhook(client, reply_payload(phone="12"))
    drain(worker)
    first, second = fake_ghl.calls_to("POST", "/contacts/upsert")
    assert first.json["phone"] == "12" and "phone" not in second.json
    assert inbox.get(db, 1)["status"] == "done"


def test_401_pauses_writes_keeps_events_and_resumes(client, db, worker, fake_ghl):
    fake_ghl.fail_next(
        1,
        401,
        body={
            "statusCode": 401,
            "message": "Invalid token: access token is invalid",
            "error": "Unauthorized",
        },
    )
    post_webhook(client, reply_payload())
    post_webhook(client, reply_payload(email_id="r2"))
    drain(worker)
    assert len(fake_ghl.calls) == 1, "no further writes once the token is refused"
    pause = state.get(db, state.scoped(state.GHL_PAUSE, LOCATION_ID))
    assert "401" in pause["reason"]
    assert inbox.counts(db)["pending"] == 2 and inbox.counts(db)["dead"] == 0
    assert inbox.get(db, 1)["attempts"] == 0
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json["ghl_paused"]["reason"] == pause["reason"]
    state.put(db, state.scoped(state.GHL_PAUSE, LOCATION_ID), {**pause, "probe_at": 0})
    db.execute("UPDATE events SET next_attempt_at = 0")
    drain(worker)
    assert state.get(db, state.scoped(state.GHL_PAUSE, LOCATION_ID)) is None
    assert inbox.counts(db)["done"] == 2


def test_429_waits_for_retry_after_and_does_not_use_an_attempt(client, db, worker, fake_ghl):
    fake_ghl.fail_next(
        1,
        429,
        headers={"Retry-After": "7"},
        body={"statusCode": 429, "message": "Too many requests"},
    )
    post_webhook(client, reply_payload())
    post_webhook(client, reply_payload(email_id="r2", lead_email="other@example.com"))
    waits = []

    def sleep(seconds):
        waits.append((seconds, worker.client.budget.delay()))
        worker.stop()

    worker.sleep = sleep
    drain(worker)
    row = inbox.get(db, 1)
    assert row["status"] == "pending" and row["attempts"] == 0
    assert row["next_attempt_at"] - time.time() > 6
    ((slept, blocked_for),) = waits
    assert slept == 5.0 and 6 < blocked_for <= 7, "the next event waits for Retry-After too"
    assert len(fake_ghl.calls) == 1


def test_worker_killed_after_the_upsert_finishes_the_event_without_a_second_contact(
    client, db, config, worker, fake_ghl
):
    post_webhook(client, reply_payload())
    row = inbox.claim_next(db, lease_seconds=60)
    # The first worker wrote the contact, then died before tagging it.
    worker.client.upsert_contact({"email": EMAIL, "firstName": "Jordan"})
    assert inbox.claim_next(db, lease_seconds=60) is None, "the lease protects the event"
    db.execute("UPDATE events SET lease_until = 0 WHERE id = ?", [row["id"]])
    drain(Worker(config, db=db))
    assert inbox.get(db, row["id"])["status"] == "done"
    assert len([c for c in fake_ghl.contacts.values() if c["email"] == EMAIL]) == 1
    assert "instantly-replied" in fake_ghl.contact_by_email(EMAIL)["tags"]


def test_worker_killed_after_recording_the_contact_does_not_upsert_again(
    client, db, config, worker, fake_ghl
):
    post_webhook(client, reply_payload())
    row = inbox.claim_next(db, lease_seconds=60)
    contact_id, _ = worker.client.upsert_contact(
        {
            "email": EMAIL,
            "firstName": "Jordan",
            "lastName": "Lead",
            "companyName": "Lead & Co",
            "source": "Instantly",
        }
    )
    contacts.record_upsert(
        db,
        LOCATION_ID,
        EMAIL,
        contact_id,
        {"firstName": "Jordan", "lastName": "Lead", "companyName": "Lead & Co"},
    )
    db.execute("UPDATE events SET lease_until = 0 WHERE id = ?", [row["id"]])
    drain(Worker(config, db=db))
    assert fake_ghl.upserts_for(EMAIL) == 1
    assert inbox.get(db, row["id"])["attempts"] == 2


def test_without_ghl_credentials_events_stay_queued(env, db, client):
    from bridge.config import load_config

    post_webhook(client, reply_payload())
    idle = Worker(load_config({**env, "GHL_TOKEN": ""}), db=db)
    assert idle.run(drain=True) == 0
    assert inbox.counts(db)["pending"] == 1


def test_every_call_is_in_the_sync_log(client, db, worker, fake_ghl):
    post_webhook(client, reply_payload())
    drain(worker)
    log = list(db.query("SELECT event_id, method, path, status FROM ghl_calls ORDER BY id"))
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    assert log == [
        {"event_id": 1, "method": "POST", "path": "/contacts/upsert", "status": 200},
        {"event_id": 1, "method": "POST", "path": f"/contacts/{contact_id}/tags", "status": 201},
    ]


@pytest.mark.parametrize(("name", "body"), sample_params())
def test_each_captured_payload_shape_syncs(client, db, worker, fake_ghl, name, body):
    answer = post_webhook(client, body)
    drain(worker)
    if answer.json.get("status") != "accepted":
        assert answer.json["status"] == "ignored", name
        assert fake_ghl.calls == []
        return
    email = (body.get("lead_email") or body["email"]).strip().lower()
    contact = fake_ghl.contact_by_email(email)
    assert contact is not None, name
    assert fake_ghl.upserts_for(email) == 1
    status = event_types.status_for_event(body["event_type"])
    # Interest events sync too (their status's tag); tests/test_interest.py covers them.
    expected = f"instantly-{status.replace('_', '-')}" if status else "instantly-replied"
    assert expected in contact["tags"]
    assert inbox.counts(db)["done"] == 1


def test_a_contact_deleted_in_ghl_is_written_again(client, db, worker, fake_ghl):
    post_webhook(client, reply_payload())
    drain(worker)
    old_id = fake_ghl.contact_by_email(EMAIL)["id"]
    fake_ghl.delete_contact(old_id)
    post_webhook(client, reply_payload(email_id="r2", campaign_name="Follow-up"))
    drain(worker)
    contact = fake_ghl.contact_by_email(EMAIL)
    assert contact["id"] != old_id
    assert set(contact["tags"]) == {"instantly-replied", "instantly-campaign-follow-up"}
    assert inbox.get(db, 2)["status"] == "done"
    assert contacts.get(db, LOCATION_ID, EMAIL).contact_id == contact["id"]


def test_a_database_error_does_not_end_the_worker(client, db, worker, fake_ghl, monkeypatch):
    post_webhook(client, reply_payload())
    real_claim = inbox.claim_next
    failures = iter([sqlite3.OperationalError("disk I/O error")])

    def flaky_claim(*args, **kwargs):
        for exc in failures:
            raise exc
        row = real_claim(*args, **kwargs)
        if row is None:
            worker.stop()
        return row

    slept = []
    monkeypatch.setattr(inbox, "claim_next", flaky_claim)
    worker.sleep = slept.append
    assert worker.run() == 1
    assert slept[0] == 5.0
    assert inbox.get(db, 1)["status"] == "done"
