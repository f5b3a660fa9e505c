"""Group commit: concurrent webhook writes share transactions, each answered after its commit."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading

import pytest

from bridge import db as store
from bridge import group_commit, inbox
from bridge.events import from_webhook
from tests.helpers import reply_payload


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
