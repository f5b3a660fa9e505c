"""Group commit: concurrent webhook writes share transactions, each answered after its commit,
and each checked against the settings in force when it commits."""

from __future__ import annotations

import copy
import fcntl
import os
import sqlite3
import threading

import pytest

from bridge import db as store
from bridge import group_commit, inbox
from bridge import settings as settings_mod
from bridge.events import from_webhook
from tests.helpers import post_webhook, reply_payload


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

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

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

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a.created for a in answers) == [False] * 5 + [True]
    assert len({a.event_id for a in answers}) == 1
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_a_failed_transaction_is_raised_to_its_caller_and_stores_nothing(db, config, monkeypatch):
    group = group_commit.GroupCommit(config.database)
    real = inbox.enqueue

    def failing(database, ev, now=None):
        if ev.key == "reply:bad":
            raise sqlite3.OperationalError("disk I/O error")
        return real(database, ev, now)

    monkeypatch.setattr(inbox, "enqueue", failing)
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
