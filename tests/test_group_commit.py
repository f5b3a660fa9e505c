"""Group commit: concurrent webhook writes share transactions, each answered after its commit,
and each checked against the settings in force when it commits."""

from __future__ import annotations

import copy
import fcntl
import os
import sqlite3
import threading

import pytest

from bridge import settings as settings_mod
from bridge.events.webhook import from_webhook
from bridge.store import db as store
from bridge.store import group_commit, inbox
from tests.helpers import post_webhook, reply_payload
from tests.support.threads import join_all


def event(n: int, email_id: str | None = None):
    return from_webhook(
        reply_payload(lead_email=f"lead{n}@example.com", email_id=email_id or f"id-{n}")
    )


def test_concurrent_deliveries_are_each_stored_once(db, config):
    group = group_commit.GroupCommit(config.database)
    results: dict[int, inbox.Enqueued] = {}
    start = threading.Barrier(8)

    def deliver(n: int) -> None:
        start.wait()
        for k in range(25):
            results[n * 100 + k] = group.enqueue(event(n * 100 + k))

    threads = [threading.Thread(target=deliver, args=(n,), daemon=True) for n in range(8)]
    for thread in threads:
        thread.start()
    join_all(threads, timeout=30)

    assert len(results) == 200 and all(r.created for r in results.values())
    assert len({r.event_id for r in results.values()}) == 200
    rows = {r["key"]: r["id"] for r in db.query("SELECT id, key FROM events")}
    assert rows == {f"reply:id-{n}": r.event_id for n, r in results.items()}
    assert 1 <= group.batches <= 200


def test_the_same_delivery_at_once_is_created_by_exactly_one_caller(db, config):
    group = group_commit.GroupCommit(config.database)
    start = threading.Barrier(6)
    answers: list[inbox.Enqueued] = []

    def deliver() -> None:
        start.wait()
        answers.append(group.enqueue(event(1, email_id="same")))

    threads = [threading.Thread(target=deliver, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    join_all(threads, timeout=30)

    assert sorted(a.created for a in answers) == [False] * 5 + [True]
    assert len({a.event_id for a in answers}) == 1
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_a_failed_transaction_is_raised_to_its_caller_and_stores_nothing(db, config, monkeypatch):
    group = group_commit.GroupCommit(config.database)
    real = inbox.enqueue_many

    def failing(database, events, now=None):
        if any(ev.key == "reply:bad" for ev in events):
            raise sqlite3.OperationalError("disk I/O error")
        return real(database, events, now)

    monkeypatch.setattr(inbox, "enqueue_many", failing)
    with pytest.raises(sqlite3.OperationalError):
        group.enqueue(event(1, email_id="bad"))
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    assert group.enqueue(event(2)).created  # the next delivery gets a fresh connection


def test_the_writer_lock_holds_other_processes_off(config, db):
    lock = store.writer(config.database)
    assert store.writer(config.database) is lock
    other = os.open(config.database + ".write-lock", os.O_RDWR | os.O_CREAT)
    try:
        with lock, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again afterwards
        fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        os.close(other)


def _switch_replies(db, enabled: bool) -> None:
    _, current = settings_mod.current(db)
    current = copy.deepcopy(current)
    current["events"]["reply_received"]["enabled"] = enabled
    settings_mod.save(db, current)


def test_a_type_switched_off_after_the_web_read_settings_is_ignored_at_commit(client, db):
    assert post_webhook(client, reply_payload(email_id="before")).status_code == 202
    _switch_replies(db, enabled=False)  # the web process still holds the old settings
    answer = post_webhook(client, reply_payload(email_id="after"))
    assert (answer.status_code, answer.json["status"]) == (200, "ignored")
    assert [r[0] for r in db.execute("SELECT key FROM events")] == ["reply:before"]


def test_a_type_switched_on_after_the_web_read_settings_is_stored_at_once(client, db):
    _switch_replies(db, enabled=False)
    assert post_webhook(client, reply_payload(email_id="off")).json["status"] == "ignored"
    _switch_replies(db, enabled=True)
    assert post_webhook(client, reply_payload(email_id="on")).status_code == 202
    assert [r[0] for r in db.execute("SELECT key FROM events")] == ["reply:on"]


def test_a_malformed_delivery_of_a_type_switched_off_meanwhile_is_ignored(client, db):
    post_webhook(client, reply_payload(email_id="warm"))
    _switch_replies(db, enabled=False)
    body = reply_payload(email_id="no-lead")
    del body["lead_email"], body["email"]
    answer = post_webhook(client, body)
    assert (answer.status_code, answer.json["status"]) == (200, "ignored")


def test_many_events_in_one_statement_get_their_own_ids_in_order(db):
    first = inbox.enqueue_many(db, [event(n) for n in range(5)])
    assert [a.created for a in first] == [True] * 5
    rows = dict(db.execute("SELECT key, id FROM events").fetchall())
    assert [a.event_id for a in first] == [rows[f"reply:id-{n}"] for n in range(5)]

    # Known keys, a key twice in one batch and new keys, mixed.
    again = inbox.enqueue_many(db, [event(7), event(2), event(8), event(7), event(4)])
    rows = dict(db.execute("SELECT key, id FROM events").fetchall())
    assert [(a.event_id, a.created) for a in again] == [
        (rows["reply:id-7"], True),
        (rows["reply:id-2"], False),
        (rows["reply:id-8"], True),
        (rows["reply:id-7"], False),
        (rows["reply:id-4"], False),
    ]
    none_new = inbox.enqueue_many(db, [event(1), event(8)])
    assert [(a.event_id, a.created) for a in none_new] == [
        (rows["reply:id-1"], False),
        (rows["reply:id-8"], False),
    ]
    assert inbox.enqueue_many(db, []) == []
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 7


def test_a_batch_larger_than_one_statement_takes_is_split(db, monkeypatch):
    monkeypatch.setattr(inbox, "MAX_BATCH", 3)
    answers = inbox.enqueue_many(db, [event(n) for n in range(8)] + [event(0)])
    rows = dict(db.execute("SELECT key, id FROM events").fetchall())
    assert [(a.event_id, a.created) for a in answers] == [
        (rows[f"reply:id-{n}"], True) for n in range(8)
    ] + [(rows["reply:id-0"], False)]


def test_the_wal_is_synced_after_the_commit_outside_the_writers_lock(config, db, monkeypatch):
    group = group_commit.GroupCommit(config.database)
    seen: list[dict] = []
    real = store._datasync

    def spy(fd: int) -> None:
        other = os.open(config.database + ".write-lock", os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
            fcntl.flock(other, fcntl.LOCK_UN)
        finally:
            os.close(other)
        with sqlite3.connect(config.database) as reader:
            keys = [r[0] for r in reader.execute("SELECT key FROM events")]
        seen.append({"file": os.readlink(f"/proc/self/fd/{fd}"), "committed": keys})
        real(fd)

    monkeypatch.setattr(store, "_datasync", spy)
    answer = group.enqueue(event(1))
    assert answer.created
    assert seen == [
        {"file": os.path.realpath(config.database) + "-wal", "committed": ["reply:id-1"]}
    ]
    assert group._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: no fsync inside
    assert store.connect(config.database).execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_failed_sync_answers_503_and_the_redelivery_is_a_duplicate(client, db, monkeypatch):
    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    real = store._datasync
    monkeypatch.setattr(store, "_datasync", failing)
    first = post_webhook(client, reply_payload(email_id="unsynced"))
    assert first.status_code == 503 and "could not be stored" in first.json["error"]
    monkeypatch.setattr(store, "_datasync", real)
    again = post_webhook(client, reply_payload(email_id="unsynced"))
    assert (again.status_code, again.json["status"]) == (200, "duplicate")


def _enqueue_in_thread(group, ev):
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(group.enqueue(ev)), daemon=True)
    thread.start()
    return thread, answers


def test_a_writer_waits_for_an_announced_delivery_and_commits_both_at_once(config, db, monkeypatch):
    monkeypatch.setattr(group_commit, "COMMIT_DELAY_SECONDS", 60.0)  # the arrival ends the wait
    group = group_commit.GroupCommit(config.database)
    with group.arrival() as arrival:
        thread, answers = _enqueue_in_thread(group, event(1))  # the writer: waits for ours
        thread.join(timeout=0.2)
        assert thread.is_alive() and db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
        ours = arrival.enqueue(event(2))
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert answers[0].created and ours.created
    assert group.batches == 1  # one statement, one fsync for both


def test_a_withdrawn_delivery_releases_the_waiting_writer(config, db, monkeypatch):
    monkeypatch.setattr(group_commit, "COMMIT_DELAY_SECONDS", 60.0)
    group = group_commit.GroupCommit(config.database)
    with group.arrival():
        thread, answers = _enqueue_in_thread(group, event(1))
        thread.join(timeout=0.2)
        assert thread.is_alive()
    # Leaving the block without enqueueing (a 400, an ignored type) withdraws it.
    thread.join(timeout=30)
    assert not thread.is_alive() and answers[0].created and group.batches == 1


def test_a_writer_waits_no_longer_than_the_delay_for_a_late_delivery(config, db, monkeypatch):
    monkeypatch.setattr(group_commit, "COMMIT_DELAY_SECONDS", 0.01)
    group = group_commit.GroupCommit(config.database)
    with group.arrival() as late:
        assert group.enqueue(event(1)).created  # committed after the delay, without ours
        assert late.enqueue(event(2)).created
    assert group.batches == 2
    with group.arrival() as twice:
        assert twice.enqueue(event(3)).created
        assert not twice.enqueue(event(3)).created  # counted once however often it is used
    assert group._announced == 0


def test_a_writer_alone_does_not_wait(config, db, monkeypatch):
    monkeypatch.setattr(group_commit, "COMMIT_DELAY_SECONDS", 60.0)
    group = group_commit.GroupCommit(config.database)
    answers: list = []

    def deliver() -> None:
        with group.arrival() as only:
            answers.append(only.enqueue(event(1)))

    thread = threading.Thread(target=deliver, daemon=True)
    thread.start()
    thread.join(timeout=30)  # with the 60 s delay, a wait would still be under way
    assert not thread.is_alive() and answers[0].created


def test_the_reconcilers_query_by_email_is_served_by_the_status_index(db):
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT email, event_type FROM events"
        " WHERE status IN ('pending', 'processing') AND email IN (?, ?)",
        ["a@example.com", "b@example.com"],
    ).fetchall()
    assert "idx_events_status_next_attempt_at" in " ".join(str(step[-1]) for step in plan)
    # A webhook's insert writes the two full indexes and the lanes' (queued rows, by
    # location); the other partial indexes hold leased, finished or held rows only, which a
    # new pending row never is.
    indexes = {row[1]: row[4] for row in db.execute("PRAGMA index_list(events)")}
    assert indexes == {
        "idx_events_key": 0,
        "idx_events_status_next_attempt_at": 0,
        "idx_events_lane": 1,
        "idx_events_leased_email": 1,
        "idx_events_finished_updated": 1,
        "idx_events_held": 1,
    }
