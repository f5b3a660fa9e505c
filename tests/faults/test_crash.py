"""Crash: the worker is killed with SIGKILL at random moments and started again."""

from __future__ import annotations

import contextlib
import random
import time

import pytest

from tests.faults.procs import wait_until
from tests.faults.scenario import assert_synced_once, replies
from tests.support.threads import map_in_threads

pytestmark = pytest.mark.slow

KILLS = 6
# Short, so an event held by a killed worker comes back within the test.
LEASE_SECONDS = "1.5"


def test_worker_killed_at_random_moments_loses_nothing_and_doubles_nothing(stack):
    stack.configure(max_attempts=100, backoff_base_seconds=0.2, backoff_max_seconds=2)
    stack.start_web()
    # 20 leads, so about 60 GHL calls: the run is spent syncing, not waiting on GHL's limit.
    sent = replies(300, emails=20, seed=23, prefix="c")
    answers = map_in_threads(lambda r: stack.post_event(r.body).status_code, sent, 8, timeout=300)
    assert answers == [202] * len(sent)

    db = stack.db()
    rng = random.Random(23)
    interrupted: list[list[int]] = []  # per kill: the events it left in flight

    def held_now() -> set[int]:
        return {r[0] for r in db.execute("SELECT id FROM events WHERE status = 'processing'")}

    for _ in range(KILLS):
        if stack.counts()["pending"] == 0:
            break  # nothing left to interrupt
        # A random moment of this worker's run: after a random number of events, while one
        # is in flight, a random part of the way through it (before, during or after its
        # GHL calls, or between GHL's answer and the bridge's record of it).
        target = stack.counts()["done"] + rng.randint(5, 40)
        already_held = held_now()
        worker = stack.start_worker(BRIDGE_LEASE_SECONDS=LEASE_SECONDS)
        wait_until(
            lambda target=target: stack.counts()["done"] >= target or not stack.counts()["pending"],
            30,
            "the restarted worker to make progress",
            interval=0.005,
        )
        with contextlib.suppress(AssertionError):  # none in flight: kill it where it is
            wait_until(lambda held=already_held: held_now() - held, 1.0, "", interval=0.001)
        time.sleep(rng.uniform(0.0, 0.01))
        worker.kill9()
        interrupted.append(sorted(held_now() - already_held))
    kills = len(interrupted)
    assert kills >= 4, f"the queue drained after {kills} kills; send more events"

    stack.start_worker(BRIDGE_LEASE_SECONDS=LEASE_SECONDS)
    counts = stack.wait_all_final(len(sent), timeout=90)
    assert counts["done"] == len(sent), counts

    held_ids = sorted({event_id for ids in interrupted for event_id in ids})
    # Events a killed worker held were taken again once their lease ran out.
    assert held_ids, "no kill landed while an event was in flight; the lease path went untested"
    retaken = {
        row[0]: row[1]
        for row in db.execute(
            f"SELECT id, attempts FROM events WHERE id IN ({','.join('?' * len(held_ids))})",
            held_ids,
        )
    }
    assert all(attempts >= 2 for attempts in retaken.values()), retaken

    figures = assert_synced_once(stack, sent, extra_passes=kills)
    extra = sum(figures.upserts_per_email.values()) - len(figures.upserts_per_email)
    print(
        f"kills {kills}, events each kill left in flight {interrupted} "
        f"(attempts afterwards {retaken}), upserts beyond one per lead "
        f"{extra}, GHL calls {figures.calls} {dict(figures.statuses)}"
    )
