"""Concurrency: several web workers receive while the worker syncs and CLI commands run, all
on one SQLite file. No "database is locked" reaches a client or a log; nothing is lost."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from tests.faults.harness import Stack
from tests.faults.scenario import assert_synced_once, replies
from tests.support.instantly_fake import FakeInstantly, populate
from tests.support.instantly_server import serving
from tests.support.threads import map_in_threads

pytestmark = pytest.mark.slow

# Commands run over and over, each as its own process on the same database, while webhooks
# arrive and the worker syncs. Add one here to put it under the same load.
# Each with the most runs it gets; the loops also stop once the deliveries are in.
CONCURRENT_COMMANDS: list[tuple[list[str], int]] = [
    (["replay"], 100),  # a writer: its UPDATE takes the write lock even when nothing is dead
    (["status", "--json"], 100),  # a reader of every table the health report uses
    # Polls the fake Instantly and enqueues what it finds into the same inbox, while the
    # worker syncs it: the same keys, the same tables, another process. Each run makes up
    # to 3 calls to GET /emails, which Instantly allows 20 times a minute for the whole
    # workspace; separate processes do not pace each other, so the runs are few.
    (["reconcile", "--since", "2000-01-01T00:00:00Z", "--no-sync"], 5),
]


def run_repeatedly(stack: Stack, command: list[str], runs: int, stop: threading.Event) -> None:
    for _ in range(runs):
        if stop.is_set():
            return
        stack.cli(*command)


def test_web_workers_worker_and_cli_share_one_database(stack):
    instantly = FakeInstantly(api_key=stack.secrets.instantly_api_key)
    populate(instantly, leads=300, interested_every=10, replies=20)
    with serving(instantly) as instantly_url:
        stack.extra_env["INSTANTLY_BASE_URL"] = instantly_url
        check_shared_database(stack)
    polled = list(stack.db().query("SELECT status FROM events WHERE source = 'poll'"))
    assert len(polled) == 20 + 30, "each reply and each interested lead, once"
    assert {row["status"] for row in polled} == {"done"}


def check_shared_database(stack):
    stack.configure()
    stack.start_web(workers=3, threads=4)
    stack.start_worker()
    sent = replies(400, emails=30, seed=53, prefix="k")
    again = random.Random(53).sample(sent, 100)  # redelivered while the rest arrive
    deliveries = [*sent, *again]
    random.Random(54).shuffle(deliveries)

    stop = threading.Event()
    loops = [
        threading.Thread(target=run_repeatedly, args=(stack, command, runs, stop), daemon=True)
        for command, runs in CONCURRENT_COMMANDS
    ]
    for loop in loops:
        loop.start()
    started = time.monotonic()
    try:
        answers = map_in_threads(lambda r: stack.post_event(r.body), deliveries, 16, timeout=300)
        posting = time.monotonic() - started
        statuses = Counter(a.status_code for a in answers)
        refused = Counter(a.text for a in answers if a.status_code not in (200, 202))
        assert set(statuses) <= {200, 202}, (statuses, refused)
        assert statuses[202] == len(sent) and statuses[200] == len(again), statuses
        assert not [a.text for a in answers if "locked" in a.text.lower()]
        stack.wait_all_final(len(sent), timeout=60)
    finally:
        stop.set()
        for loop in loops:
            loop.join(timeout=60)
    assert not [loop.name for loop in loops if loop.is_alive()], "command loops did not stop"

    assert_synced_once(stack, sent)

    runs = Counter(" ".join(args) for args, _, _ in stack.cli_runs)
    failed = [(args, code, out[-500:]) for args, code, out in stack.cli_runs if code != 0]
    assert not failed, failed
    assert all(runs[" ".join(c)] >= 2 for c, _ in CONCURRENT_COMMANDS), runs
    for name, text in stack.logs().items():
        assert "database is locked" not in text, name
        assert "Traceback" not in text, name
    print(
        f"{len(deliveries)} deliveries in {posting:.1f} s to 3 web workers x 4 threads: "
        f"{dict(statuses)}; concurrent command runs {dict(runs)}; queue {stack.counts()}"
    )
