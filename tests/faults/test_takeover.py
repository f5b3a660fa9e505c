"""A worker killed with SIGKILL while it holds an event: the next worker takes the event at
once, not when the dead one's lease (5 minutes by default) would have expired. And a
worker stopped with SIGTERM finishes its event, hands back what it holds, and exits."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.harness import Stack
from tests.faults.procs import Proc, wait_until
from tests.faults.scenario import replies

pytestmark = pytest.mark.slow

TAKEOVER_WITHIN = 5.0
GHL_DELAY = 1.0  # every GHL call takes this long, so the worker is caught holding an event


def slow_ghl(stack: Stack, delay: float) -> None:
    handle = stack.fake.handle

    def slowly(*args):
        time.sleep(delay)
        return handle(*args)

    stack.fake.handle = slowly


def held(stack: Stack) -> list[tuple[int, str]]:
    return [
        (row[0], row[1])
        for row in stack.db().execute(
            "SELECT id, lease_owner FROM events WHERE status = 'processing'"
        )
    ]


def worker_holding_events(stack: Stack, seed: int) -> tuple[Proc, list[int], str]:
    """Three replies queued, GHL slow, a worker started: it, the events it holds (one batch:
    it claims all that are due), its id."""
    stack.configure()  # the default lease: 300 s
    stack.start_web()
    sent = replies(3, emails=3, seed=seed, prefix=f"s{seed}")
    assert [stack.post_event(r.body).status_code for r in sent] == [202] * 3
    slow_ghl(stack, GHL_DELAY)
    worker = stack.start_worker()
    holding = wait_until(lambda: held(stack), 20, "the worker to hold events")
    owners = {owner for _, owner in holding}
    assert len(owners) == 1, holding
    return worker, [event_id for event_id, _ in holding], owners.pop()


def statuses(stack: Stack, event_ids: list[int]) -> set[str]:
    marks = ",".join("?" * len(event_ids))
    rows = stack.db().execute(f"SELECT status FROM events WHERE id IN ({marks})", event_ids)
    return {row[0] for row in rows}


def test_a_killed_workers_event_is_taken_over_at_once(stack: Stack) -> None:
    first, event_ids, owner = worker_holding_events(stack, seed=31)
    assert owner
    first.kill9()

    started = time.monotonic()
    stack.start_worker()
    # The next worker claims them at once (each GHL call takes GHL_DELAY, so the takeover
    # is timed to the claim, not to the batch's end).
    wait_until(
        lambda: (
            statuses(stack, event_ids) == {"done"}
            or any(held_by != owner for _, held_by in held(stack))
        ),
        30,
        "the next worker to take the events",
    )
    took = time.monotonic() - started
    assert took < TAKEOVER_WITHIN, f"the dead worker's events waited {took:.1f} s"
    wait_until(lambda: statuses(stack, event_ids) == {"done"}, 60, f"events {event_ids} done")
    assert "leased by a worker that died" in stack.workers[-1].log()
    stack.wait_all_final(3, timeout=60)


# Ctrl-C on `instantly-ghl-bridge run` sends SIGINT to the group and `instantly-ghl-bridge run` then SIGTERMs the
# worker: two signals at once once left the worker waiting on itself for ever.
@pytest.mark.parametrize(
    "signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGTERM]], ids=["term", "int+term"]
)
def test_stopping_finishes_the_event_in_hand_releases_and_exits(
    stack: Stack, signals: list[int]
) -> None:
    worker, event_ids, _ = worker_holding_events(stack, seed=32)
    worker.ended_by_test = True
    for sig in signals:
        worker.popen.send_signal(sig)
    worker.popen.wait(timeout=10)  # exits within 10 s, or this raises

    # Each finished, or handed back: never held.
    assert statuses(stack, event_ids) <= {"done", "pending"}, statuses(stack, event_ids)
    assert held(stack) == []
    assert list((stack.workdir / "bridge.sqlite3.owners").iterdir()) == []
