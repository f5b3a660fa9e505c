"""Disk trouble: while the web app cannot write its database, the webhook answers 503 (so
Instantly delivers again) and acknowledges nothing it did not store, and /healthz says the
database cannot be written.

How the writes are made to fail: the kernel refuses them. RLIMIT_FSIZE lowered to 0 on the
running gunicorn workers (prlimit(2), allowed on one's own processes without privileges)
makes every write(2) to a regular file fail with EFBIG, at the very call where a full disk
fails with ENOSPC; SQLite's WAL append fails and it reports "disk I/O error". The other
candidates do not fail a real process's writes here: chmod does not stop root, a small
tmpfs or loop mount needs privileges CI does not have, and a trigger that RAISEs is a
refusal by SQLite itself rather than failing storage (tests/test_webhooks.py covers that
one in-process). Python ignores SIGXFSZ, so the workers live on; their logs go to a pipe,
which the limit does not cover.
"""

from __future__ import annotations

import json
import resource

import pytest

from tests.faults.harness import Stack
from tests.faults.scenario import assert_synced_once, replies
from tests.support.threads import map_in_threads

pytestmark = pytest.mark.slow

NOT_STORED = {"error": "the event could not be stored; retry later"}


def set_file_size_limit(pids: list[int], soft: int | None) -> None:
    """Limit the size files may grow to by these processes' writes (None: no limit)."""
    for pid in pids:
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard if soft is None else soft, hard))


def acknowledged_but_missing(stack: Stack) -> list[tuple[int, str]]:
    """Every 2xx the webhook gave with an event id, whose event is not in the database."""
    stored = {row[0] for row in stack.db().execute("SELECT id FROM events")}
    missing = []
    for exchange in stack.exchanges:
        if exchange.path == "/webhooks/instantly" and 200 <= exchange.status < 300:
            event_id = _event_id(exchange.body)
            if event_id is not None and event_id not in stored:
                missing.append((exchange.status, exchange.body))
    return missing


def _event_id(body: str) -> int | None:
    try:
        return json.loads(body).get("event_id")
    except (ValueError, AttributeError):
        return None


def test_webhook_answers_503_while_the_database_cannot_be_written(stack):
    stack.configure()
    web = stack.start_web(workers=2, threads=2)
    stack.start_worker()
    before = replies(10, emails=10, seed=61, prefix="b")
    during = replies(20, emails=20, seed=62, prefix="x")
    assert [stack.post_event(r.body).status_code for r in before] == [202] * len(before)

    web_workers = web.children()
    assert len(web_workers) == 2, web_workers
    set_file_size_limit(web_workers, 0)
    try:
        refused = map_in_threads(lambda r: stack.post_event(r.body), during, 4, timeout=300)
        known = stack.post_event(before[0].body)  # stored before the trouble began
        health = stack.request("GET", "/healthz")
    finally:
        set_file_size_limit(web_workers, None)

    assert [(a.status_code, a.json()) for a in refused] == [(503, NOT_STORED)] * len(during)
    # Already stored, so "duplicate" is the truth even now; it needs no write.
    assert (known.status_code, known.json()["status"]) == (200, "duplicate")
    # Every read still works, so only a write tells /healthz the store is in trouble.
    assert health.status_code == 503, health.text
    assert any(
        p.startswith("database cannot be written: disk I/O error;")
        for p in health.json()["problems"]
    )
    keys = {row[0] for row in stack.db().execute("SELECT key FROM events")}
    assert not keys & {f"reply:{r.email_id}" for r in during}, "refused events were stored"
    assert acknowledged_but_missing(stack) == []

    # Instantly delivers the refused events again once the disk is fine.
    again = [stack.post_event(r.body).status_code for r in during]
    assert again == [202] * len(during)
    stack.wait_all_final(len(before) + len(during), timeout=60)
    assert_synced_once(stack, before + during)
    assert acknowledged_but_missing(stack) == []
    web_log = web.log()
    assert web_log.count("webhook not stored, answering 503") == len(during), web_log[-2000:]
    assert "Traceback" not in web_log
    print(
        f"during the trouble: {len(refused)} deliveries answered 503, /healthz "
        f"{health.status_code}; after: {len(again)} answered 202, all synced"
    )
