"""A backlog of one location synced in batches: each contact written as alone, the tags that
several contacts miss alike added in one POST /contacts/bulk/tags/update/add, each contact
GHL did not confirm tagged on its own, and a lone event costing what it always did. Every
request is checked against GHL's spec by the fake_ghl fixture (validate=True)."""

from __future__ import annotations

import dataclasses
import logging
import time

from bridge import settings as settings_mod
from bridge.clients.ghl import GHLClient
from bridge.events.webhook import from_webhook
from bridge.store import contacts, inbox, state
from bridge.sync import lanes
from bridge.sync.worker import Worker
from tests.helpers import LOCATION_ID, post_webhook, reply_payload
from tests.interest_helpers import interest_payload

BULK = ("POST", "/contacts/bulk/tags/update/add")
UPSERT = ("POST", "/contacts/upsert")
TAGS = ("POST", "/contacts/{id}/tags")
REPLIED = "instantly-replied"
CAMPAIGN = "instantly-campaign-trust attorneys q4"
FOLLOW_UP = "instantly-campaign-follow-up"


def lead(n: int) -> str:
    return f"lead{n:03d}@example.com"


def reply(n: int, **overrides) -> dict:
    """A reply of lead n, with an id of its own (several per lead with `email_id`)."""
    return reply_payload(
        **{"email": lead(n), "lead_email": lead(n), "email_id": f"reply-{n}", **overrides}
    )


def queue(client, bodies) -> list[int]:
    ids = []
    for body in bodies:
        answer = post_webhook(client, body)
        assert answer.json["status"] == "accepted", answer.json
        ids.append(answer.json["event_id"])
    return ids


def counts(fake) -> dict[str, int]:
    return {
        "upserts": len(fake.calls_to(*UPSERT)),
        "tags": len(fake.calls_to(*TAGS)),
        "bulk": len(fake.calls_to(*BULK)),
        "all": len(fake.calls),
    }


def statuses(db) -> dict[str, int]:
    return {k: v for k, v in inbox.counts(db).items() if v}


def synced_once(client, worker, fake, n: int) -> None:
    """n leads known to the bridge and GHL, with the reply's tags; GHL's log cleared."""
    queue(client, [reply(i) for i in range(n)])
    worker.run(drain=True)
    assert statuses(worker.db) == {"done": n}
    fake.calls.clear()


def follow_ups(client, n: int) -> list[int]:
    """A second reply of each of n known leads, in another campaign: one tag missing each."""
    return queue(
        client, [reply(i, email_id=f"second-{i}", campaign_name="Follow-up") for i in range(n)]
    )


def assert_map_holds_only_what_ghl_has(db, fake, deleted: tuple[str, ...] = ()) -> None:
    """Every tag the map records for a contact is on it in GHL (`deleted`: the emails whose
    contact was deleted in GHL and not written again yet, whose map is stale as it is today)."""
    for row in db.query("SELECT email FROM contacts"):
        if row["email"] in deleted:
            continue
        record = contacts.get(db, LOCATION_ID, row["email"])
        in_ghl = fake.contacts.get(record.contact_id)
        assert in_ghl is not None, row["email"]
        assert set(record.tags) <= set(in_ghl["tags"]), row["email"]


def test_fifty_new_contacts_with_the_same_tags_cost_fifty_upserts_and_one_tag_call(
    client, db, worker, fake_ghl
):
    queue(client, [reply(i) for i in range(50)])
    assert worker.run(drain=True) == 50
    assert counts(fake_ghl) == {"upserts": 50, "tags": 0, "bulk": 1, "all": 51}
    (bulk,) = fake_ghl.calls_to(*BULK)
    assert bulk.json["tags"] == [REPLIED, CAMPAIGN] and len(bulk.json["contacts"]) == 50
    assert statuses(db) == {"done": 50}
    for i in range(50):
        contact = fake_ghl.contact_by_email(lead(i))
        assert sorted(contact["tags"]) == sorted([REPLIED, CAMPAIGN])
        assert contacts.get(db, LOCATION_ID, lead(i)).tags == sorted([REPLIED, CAMPAIGN])


def test_the_shared_call_is_logged_once_and_each_event_says_where(client, db, worker, fake_ghl):
    first, *others = queue(client, [reply(i) for i in range(3)])
    worker.run(drain=True)
    bulk_rows = list(db.query("SELECT event_id FROM ghl_calls WHERE path LIKE '%/bulk/%'"))
    assert bulk_rows == [{"event_id": first}], "one row: /metrics and the log count calls made"
    for event_id in (first, *others):
        note = inbox.get(db, event_id)["last_error"]
        assert note == f"tags added by the one GHL call for 3 events, listed on event {first}"


def test_mixed_tag_sets_make_one_tag_call_per_set(client, db, worker, fake_ghl):
    campaigns = ["Alpha", "Beta", "Gamma"]
    queue(client, [reply(i, campaign_name=campaigns[i % 3]) for i in range(30)])
    worker.run(drain=True)
    assert counts(fake_ghl) == {"upserts": 30, "tags": 0, "bulk": 3, "all": 33}
    sent = sorted(
        (tuple(c.json["tags"]), len(c.json["contacts"])) for c in fake_ghl.calls_to(*BULK)
    )
    assert sent == [
        ((REPLIED, "instantly-campaign-alpha"), 10),
        ((REPLIED, "instantly-campaign-beta"), 10),
        ((REPLIED, "instantly-campaign-gamma"), 10),
    ]
    assert statuses(db) == {"done": 30}


def test_a_tag_set_only_one_event_needs_goes_in_its_own_call(client, db, worker, fake_ghl):
    queue(client, [reply(0), reply(1), reply(2, campaign_name="Solo")])
    worker.run(drain=True)
    assert counts(fake_ghl) == {"upserts": 3, "tags": 1, "bulk": 1, "all": 5}
    (own,) = fake_ghl.calls_to(*TAGS)
    assert own.json == {"tags": [REPLIED, "instantly-campaign-solo"]}


def test_a_contact_the_bulk_call_does_not_confirm_is_synced_on_its_own(
    client, db, worker, fake_ghl
):
    synced_once(client, worker, fake_ghl, 5)
    gone = contacts.get(db, LOCATION_ID, lead(2)).contact_id
    fake_ghl.delete_contact(gone)
    ids = follow_ups(client, 5)
    worker.run(drain=True)

    (bulk,) = fake_ghl.calls_to(*BULK)
    assert len(bulk.json["contacts"]) == 5
    # The one GHL answered "contact is deleted" for took today's path: its own tag call (400
    # Contact not found), then the contact written afresh and tagged.
    assert [(c.method, c.path, c.status) for c in fake_ghl.calls[1:]] == [
        ("POST", f"/contacts/{gone}/tags", 400),
        ("POST", "/contacts/upsert", 200),
        ("POST", f"/contacts/{fake_ghl.contact_by_email(lead(2))['id']}/tags", 201),
    ]
    assert statuses(db) == {"done": 10}
    note = inbox.get(db, ids[2])["last_error"]
    assert "did not confirm" in note and "contact is deleted" in note
    for i in range(5):
        record = contacts.get(db, LOCATION_ID, lead(i))
        assert FOLLOW_UP in record.tags
        assert record.contact_id == fake_ghl.contact_by_email(lead(i))["id"]
    assert_map_holds_only_what_ghl_has(db, fake_ghl)


def test_the_map_records_only_the_tags_ghl_confirmed(client, db, worker, fake_ghl, monkeypatch):
    synced_once(client, worker, fake_ghl, 4)
    gone = contacts.get(db, LOCATION_ID, lead(1)).contact_id
    fake_ghl.delete_contact(gone)
    ids = follow_ups(client, 4)
    real = GHLClient.bulk_add_tags

    def then_fail_the_next_call(self, contact_ids, tags):
        answer = real(self, contact_ids, tags)
        fake_ghl.fail_next(1, 503)  # the unconfirmed contact's own try fails too
        return answer

    monkeypatch.setattr(GHLClient, "bulk_add_tags", then_fail_the_next_call)
    worker.run(drain=True)

    assert [inbox.get(db, i)["status"] for i in ids] == ["done", "pending", "done", "done"]
    assert "GHL 503" in inbox.get(db, ids[1])["last_error"]
    assert FOLLOW_UP not in contacts.get(db, LOCATION_ID, lead(1)).tags
    for i in (0, 2, 3):
        assert FOLLOW_UP in contacts.get(db, LOCATION_ID, lead(i)).tags
    assert_map_holds_only_what_ghl_has(db, fake_ghl, deleted=(lead(1),))


def test_a_429_for_the_bulk_call_is_one_call_and_every_event_waits_without_an_attempt(
    client, db, worker, fake_ghl
):
    synced_once(client, worker, fake_ghl, 6)
    ids = follow_ups(client, 6)
    fake_ghl.fail_next(1, 429, headers={"Retry-After": "7"}, body={"statusCode": 429})
    worker.sleep = lambda seconds: worker.stop()
    worker.run(drain=True)

    assert counts(fake_ghl) == {"upserts": 0, "tags": 0, "bulk": 1, "all": 1}
    for event_id in ids:
        row = inbox.get(db, event_id)
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert row["next_attempt_at"] - time.time() > 6
        assert "GHL 429" in row["last_error"]
    assert worker.client.budget.delay() > 6, "the location waits, not only these events"


def test_a_503_for_the_bulk_call_is_one_call_then_each_retries_with_backoff(
    client, db, worker, fake_ghl
):
    synced_once(client, worker, fake_ghl, 6)
    ids = follow_ups(client, 6)
    fake_ghl.fail_next(1, 503)
    worker.run(drain=True)

    assert counts(fake_ghl) == {"upserts": 0, "tags": 0, "bulk": 1, "all": 1}
    rows = [inbox.get(db, i) for i in ids]
    assert {(r["status"], r["attempts"]) for r in rows} == {("pending", 1)}
    assert all("GHL 503" in r["last_error"] and r["next_attempt_at"] > time.time() for r in rows)
    assert state.get(db, state.scoped(state.GHL_LAST_ERROR, LOCATION_ID))["status"] == 503
    assert all(FOLLOW_UP not in contacts.get(db, LOCATION_ID, lead(i)).tags for i in range(6))

    db.execute("UPDATE events SET next_attempt_at = 0")
    worker.run(drain=True)
    assert counts(fake_ghl) == {"upserts": 0, "tags": 0, "bulk": 2, "all": 2}
    assert statuses(db) == {"done": 12}


def test_a_bulk_request_refused_as_a_whole_falls_back_to_one_call_per_event(
    client, db, worker, fake_ghl
):
    synced_once(client, worker, fake_ghl, 3)
    follow_ups(client, 3)
    fake_ghl.fail_next(1, 422, body={"statusCode": 422, "message": ["contacts must be an array"]})
    worker.run(drain=True)
    assert counts(fake_ghl) == {"upserts": 0, "tags": 3, "bulk": 1, "all": 4}
    assert statuses(db) == {"done": 6}


def test_a_single_event_costs_what_it_costs_today(client, db, worker, fake_ghl):
    queue(client, [reply(0)])
    worker.run(drain=True)
    assert counts(fake_ghl) == {"upserts": 1, "tags": 1, "bulk": 0, "all": 2}, "new contact"
    fake_ghl.calls.clear()
    queue(client, [reply(0, email_id="again", timestamp="2025-11-25T09:00:00.000Z")])
    worker.run(drain=True)
    assert counts(fake_ghl)["all"] == 0, "a repeat"
    queue(client, [reply(0, email_id="new-tag", campaign_name="Follow-up")])
    worker.run(drain=True)
    assert counts(fake_ghl) == {"upserts": 0, "tags": 1, "bulk": 0, "all": 1}, "a new tag"


def test_a_batch_takes_each_contacts_first_event_only(db):
    def enqueue(n: int, **overrides) -> int:
        event = from_webhook(reply(n, **overrides))
        return inbox.enqueue(db, event, now=100.0 + len(overrides)).event_id

    a1, b1, a2, c1 = enqueue(0), enqueue(1), enqueue(0, email_id="a2"), enqueue(2)
    db.execute("UPDATE events SET location_id = ?", [LOCATION_ID])
    claimed = inbox.claim_batch(db, LOCATION_ID, 10, lease_seconds=60, now=200.0, owner="me")
    assert [row["id"] for row in claimed] == [a1, b1, c1]
    assert {(r["status"], r["lease_owner"], r["attempts"]) for r in claimed} == {
        ("processing", "me", 1)
    }
    assert inbox.claim_batch(db, LOCATION_ID, 10, now=200.0) == [], "a2 waits for a1"
    inbox.finish(db, a1, "done")
    assert [row["id"] for row in inbox.claim_batch(db, LOCATION_ID, 10, now=200.0)] == [a2]
    assert inbox.claim_batch(db, "elsewhere", 10, now=500.0) == []


def test_two_events_of_one_contact_in_a_backlog_apply_in_order(client, db, worker, fake_ghl):
    t1, t2 = "2025-06-11T10:00:00.000Z", "2025-06-12T10:00:00.000Z"
    bodies = [
        interest_payload("lead_interested", t1, email=lead(i), lead_email=lead(i)) for i in range(4)
    ]
    bodies.insert(2, interest_payload("lead_meeting_booked", t2, email=lead(0), lead_email=lead(0)))
    ids = queue(client, bodies)
    worker.run(drain=True)

    assert [inbox.get(db, i)["status"] for i in ids] == ["done"] * 5, "none superseded"
    record = contacts.get(db, LOCATION_ID, lead(0))
    assert (record.interest_status, record.interest_at) == ("meeting_booked", t2)
    assert fake_ghl.contact_by_email(lead(0))["tags"] == ["instantly-meeting-booked"]
    # The first status went in the batch's one call; the second after it, on its own.
    bulk = fake_ghl.calls_to(*BULK)
    assert [(c.json["tags"], len(c.json["contacts"])) for c in bulk] == [
        (["instantly-interested"], 4)
    ]
    (own,) = fake_ghl.calls_to(*TAGS)
    assert own.json == {"tags": ["instantly-meeting-booked"]}
    assert fake_ghl.calls.index(bulk[0]) < fake_ghl.calls.index(own)
    for i in range(1, 4):
        assert contacts.get(db, LOCATION_ID, lead(i)).interest_status == "interested"


def test_interest_statuses_share_the_call_and_still_drop_the_previous_status(
    client, db, worker, fake_ghl
):
    t1, t2 = "2025-06-11T10:00:00.000Z", "2025-06-12T10:00:00.000Z"
    queue(
        client,
        [
            interest_payload("lead_interested", t1, email=lead(i), lead_email=lead(i))
            for i in range(5)
        ],
    )
    worker.run(drain=True)
    fake_ghl.calls.clear()
    queue(
        client,
        [
            interest_payload("lead_meeting_booked", t2, email=lead(i), lead_email=lead(i))
            for i in range(5)
        ],
    )
    worker.run(drain=True)

    # The new status's tag first, in one call for all five; then each old tag removed.
    ids = [contacts.get(db, LOCATION_ID, lead(i)).contact_id for i in range(5)]
    assert [(c.method, c.path) for c in fake_ghl.calls] == [BULK] + [
        ("DELETE", f"/contacts/{contact_id}/tags") for contact_id in ids
    ]
    for i in range(5):
        assert fake_ghl.contact_by_email(lead(i))["tags"] == ["instantly-meeting-booked"]
        record = contacts.get(db, LOCATION_ID, lead(i))
        assert (record.interest_status, record.interest_tags) == (
            "meeting_booked",
            ["instantly-meeting-booked"],
        )


def test_a_crash_in_the_middle_marks_nothing_done_that_ghl_did_not_confirm(
    client, db, worker, fake_ghl, monkeypatch
):
    ids = queue(client, [reply(i) for i in range(5)])
    real = contacts.record_tags
    recorded = []

    def crash_on_the_third(db_, record, added):
        if len(recorded) == 2:
            raise RuntimeError("disk gone")
        recorded.append(record.email)
        real(db_, record, added)

    monkeypatch.setattr(contacts, "record_tags", crash_on_the_third)
    worker.run(drain=True)

    rows = [inbox.get(db, i) for i in ids]
    assert {r["status"] for r in rows} == {"pending"}, "none is done"
    assert all("internal error: RuntimeError: disk gone" in r["last_error"] for r in rows)
    assert_map_holds_only_what_ghl_has(db, fake_ghl)
    assert [lead(i) for i in range(5) if contacts.get(db, LOCATION_ID, lead(i)).tags] == recorded

    monkeypatch.setattr(contacts, "record_tags", real)
    db.execute("UPDATE events SET next_attempt_at = 0")
    worker.run(drain=True)
    assert statuses(db) == {"done": 5}
    (again,) = fake_ghl.calls_to(*BULK)[1:]
    assert len(again.json["contacts"]) == 3, "only the contacts not recorded are tagged again"
    assert_map_holds_only_what_ghl_has(db, fake_ghl)


def test_a_crash_on_one_event_after_the_tags_leaves_the_others_done(
    client, db, worker, fake_ghl, monkeypatch
):
    ids = queue(client, [reply(i) for i in range(4)])
    single = lanes.sync_event  # the batch ends each event through the single path

    def crash_for_lead_two(db_, event, settings, client_):
        if event.email == lead(2):
            raise RuntimeError("bug")
        return single(db_, event, settings, client_)

    monkeypatch.setattr(lanes, "sync_event", crash_for_lead_two)
    worker.run(drain=True)
    assert [inbox.get(db, i)["status"] for i in ids] == ["done", "done", "pending", "done"]
    assert inbox.get(db, ids[2])["attempts"] == 1
    assert_map_holds_only_what_ghl_has(db, fake_ghl)


def test_the_batch_keeps_its_leases_while_it_runs(client, db, config, fake_ghl, monkeypatch):
    worker = Worker(dataclasses.replace(config, lease_seconds=0.3), db=db)
    ids = queue(client, [reply(i) for i in range(4)])
    real = fake_ghl.handle
    seen = []

    def slow_upserts(method, path, *rest):
        if path == "/contacts/upsert":
            time.sleep(0.15)
            # Every event of the batch not finished yet is still leased to this worker.
            waiting = db.execute(
                "SELECT MIN(lease_until) FROM events WHERE status = 'processing'"
            ).fetchone()[0]
            seen.append(waiting - time.time())
        return real(method, path, *rest)

    monkeypatch.setattr(fake_ghl, "handle", slow_upserts)
    worker.run(drain=True)
    assert len(seen) == 4 and min(seen) > 0, seen
    assert [inbox.get(db, i)["status"] for i in ids] == ["done"] * 4


def test_a_worker_stopping_hands_back_what_its_batch_has_left(
    client, db, worker, fake_ghl, monkeypatch
):
    ids = queue(client, [reply(i) for i in range(5)])
    real = fake_ghl.handle

    def stop_at_the_second_upsert(method, path, *rest):
        if len(fake_ghl.calls_to(*UPSERT)) == 1:
            worker.stop()
        return real(method, path, *rest)

    monkeypatch.setattr(fake_ghl, "handle", stop_at_the_second_upsert)
    worker.run(drain=True)
    rows = [inbox.get(db, i) for i in ids]
    assert counts(fake_ghl) == {"upserts": 2, "tags": 0, "bulk": 0, "all": 2}
    assert {(r["status"], r["attempts"], r["next_attempt_at"] <= time.time()) for r in rows} == {
        ("pending", 0, True)
    }, "due at once, no attempt counted"


def test_the_daily_budget_holds_the_batch_without_attempts_or_a_pause(
    client, db, worker, fake_ghl, caplog
):
    _, current = settings_mod.current(db)
    current["sync"]["ghl_daily_reserve"] = 2
    settings_mod.save(db, current)
    fake_ghl.default.daily_limit = 5
    ids = queue(client, [reply(i) for i in range(6)])
    with caplog.at_level(logging.WARNING, logger="bridge.worker"):
        worker.run(drain=True)

    # Three upserts spend the day down to its reserve of 2; the rest wait for the next check.
    assert counts(fake_ghl) == {"upserts": 3, "tags": 0, "bulk": 0, "all": 3}
    rows = [inbox.get(db, i) for i in ids]
    assert {(r["status"], r["attempts"]) for r in rows} == {("pending", 0)}
    assert all("daily budget" in r["last_error"] for r in rows)
    assert all(r["next_attempt_at"] > time.time() + 60 for r in rows)
    assert state.get(db, state.scoped(state.GHL_PAUSE, LOCATION_ID)) is None
    assert any("leaving its queue for the running worker" in m for m in caplog.messages)
