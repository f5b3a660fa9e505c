"""GHL's budget per location, shared by every process that writes to it (issue 17).

A worker killed with SIGKILL and started again at once, and `instantly-ghl-bridge reconcile`
syncing while a worker starts beside it, must not overrun GHL's 100 requests / 10 s (the fake
answers 429 past it); a location whose daily budget is spent keeps its events waiting, says
so, and carries on by itself when the day's budget is back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.harness import Stack
from tests.faults.procs import wait_until
from tests.faults.scenario import assert_synced_once, replies
from tests.support.instantly_fake import FakeInstantly, populate
from tests.support.instantly_server import serving
from tests.support.threads import join_all

pytestmark = pytest.mark.slow

KILLS = 4


def statuses(stack: Stack) -> dict[int, int]:
    """How many of the fake GHL's answers had each status."""
    with stack.fake._lock:  # the server's threads append while we read
        found = [call.status for call in stack.fake.calls]
    return {status: found.count(status) for status in sorted(set(found))}


def post_all(stack: Stack, sent: list) -> None:
    assert [stack.post_event(r.body).status_code for r in sent] == [202] * len(sent)


def test_a_worker_killed_and_restarted_four_times_never_meets_a_429(stack):
    # 150 new contacts: 300 calls, three times what GHL allows in 10 s.
    stack.configure()
    stack.start_web()
    sent = replies(150, emails=150, seed=71, prefix="k")
    post_all(stack, sent)

    worker = stack.start_worker()
    for _ in range(KILLS):
        # Killed mid-run while GHL's window is full of its calls, and started again at
        # once: the new process must know what the old one spent. Progress is counted in
        # GHL calls, not events done: a batch finishes many events at once.
        progress = len(stack.fake.calls) + 25
        wait_until(lambda n=progress: len(stack.fake.calls) >= n, 60, "25 more GHL calls")
        worker.kill9()
        worker = stack.start_worker()
    assert stack.counts()["done"] < len(sent), "the queue drained before the last restart"
    counts = stack.wait_all_final(len(sent), timeout=120)

    answered = statuses(stack)
    assert 429 not in answered, f"GHL answered 429 after a restart: {answered}"
    assert counts["done"] == len(sent) and counts["dead"] == 0, counts
    figures = assert_synced_once(stack, sent, extra_passes=KILLS)
    print(f"{KILLS} kills and restarts; GHL answers {answered}; {figures.calls} calls")


def test_reconcile_syncing_alone_then_beside_a_worker_never_meets_a_429(stack):
    # Two writers on one location's budget: reconcile starts with no worker running, so it
    # syncs what it finds itself; a worker starts while it still does, with its own backlog.
    instantly = FakeInstantly(api_key=stack.secrets.instantly_api_key)
    populate(instantly, leads=120, replies=120)
    with serving(instantly) as instantly_url:
        stack.extra_env["INSTANTLY_BASE_URL"] = instantly_url
        stack.configure()
        stack.start_web()
        sent = replies(60, emails=60, seed=73, prefix="r")
        post_all(stack, sent)

        outcome: dict[str, Any] = {}
        reconcile = threading.Thread(
            target=lambda: outcome.update(
                done=stack.cli("reconcile", "--since", "2000-01-01T00:00:00Z", timeout=240)
            ),
            name="reconcile",
            daemon=True,
        )
        reconcile.start()
        wait_until(lambda: len(stack.fake.calls) >= 20, 60, "reconcile to sync on its own")
        assert reconcile.is_alive(), "reconcile finished before the worker could join it"
        stack.start_worker()
        join_all([reconcile], timeout=240)
        counts = stack.wait_all_final(len(sent) + 120, timeout=120)

    done = outcome["done"]
    assert done.returncode == 0, done.stdout + done.stderr
    answered = statuses(stack)
    assert 429 not in answered, f"GHL answered 429 with two writers: {answered}"
    assert counts["done"] == len(sent) + 120 and counts["dead"] == 0, counts
    assert_synced_once(stack, sent)
    polled = [f"lead{i:06d}@example.com" for i in range(120)]
    assert {email: stack.fake.upserts_for(email) for email in polled} == dict.fromkeys(polled, 1)
    print(f"reconcile and a worker beside it: GHL answers {answered}\n{done.stdout[-600:]}")


DAILY_LIMIT = 50
DAY_SECONDS = 25.0
RESERVE = 5
PROBE_SECONDS = 5.0


def budget_sentences(report: Any) -> Iterator[str]:
    """Every warning or problem in a health report that names the daily budget."""
    if isinstance(report, dict):
        for key, value in report.items():
            if key in ("warnings", "problems"):
                texts = value.values() if isinstance(value, dict) else value
                yield from (str(t) for t in texts if "daily budget" in str(t))
            else:
                yield from budget_sentences(value)
    elif isinstance(report, list):
        for item in report:
            yield from budget_sentences(item)


def test_a_spent_daily_budget_holds_events_says_so_and_resumes_by_itself(stack):
    location = stack.fake.default
    location.daily_limit, location.day_seconds = DAILY_LIMIT, DAY_SECONDS
    stack.configure(
        ghl_daily_reserve=RESERVE, ghl_daily_probe_seconds=PROBE_SECONDS, max_attempts=3
    )
    stack.start_web()
    # 60 new contacts: more calls than the day's 45 to sync (50 less the reserve), with
    # batched tags too (60 upserts and a bulk call); with two calls each, three days.
    sent = replies(60, emails=60, seed=79, prefix="d")
    post_all(stack, sent)
    stack.start_worker()
    wait_until(lambda: stack.fake.calls, 30, "the worker's first GHL call")
    day_ends = stack.fake.calls[0].at + DAY_SECONDS

    def held() -> tuple[dict, list[str]] | None:
        health = stack.request("GET", "/healthz").json()
        said = list(budget_sentences(health))
        return (health, said) if said else None

    health, said = wait_until(held, DAY_SECONDS - 5, "/healthz to say the daily budget is spent")
    waiting = stack.counts()
    assert time.monotonic() < day_ends, "only said once the day was back"
    assert waiting["pending"] > 0 and waiting["dead"] == 0, waiting
    # Waiting on purpose is worth a look, not an outage: its due events are no backlog.
    assert health["status"] == "degraded", health
    status = stack.cli("status", "--json")
    assert list(budget_sentences(json.loads(status.stdout))), status.stdout

    # Nobody replays anything: the day comes back and the worker carries on.
    counts = stack.wait_all_final(len(sent), timeout=3 * DAY_SECONDS + 2 * PROBE_SECONDS + 30)
    assert counts["done"] == len(sent) and counts["dead"] == 0, counts
    assert_synced_once(stack, sent)
    attempts = [row[0] for row in stack.db().execute("SELECT attempts FROM events")]
    assert max(attempts) <= 1, f"waiting for the day used up attempts: {attempts}"
    with stack.fake._lock:
        first_day = [c for c in stack.fake.calls if c.at < day_ends and 200 <= c.status < 300]
    print(
        f"held with {len(first_day)} calls the first day; /healthz said {said[0]!r}; "
        f"GHL answers {statuses(stack)}"
    )
