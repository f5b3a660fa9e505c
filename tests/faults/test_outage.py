"""Outage: GHL answers 503 for a while. The worker backs off, then everything syncs; an
outage longer than the retries ends in the dead-letter list, and `instantly-ghl-bridge replay` recovers it."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from tests.faults.harness import Stack
from tests.faults.procs import wait_until
from tests.faults.scenario import assert_synced_once, replies

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 5.0
BASE = 0.2
CAP = 2.0


def min_gap(attempt: int) -> float:
    """The shortest wait backoff allows after failed attempt `attempt` (jitter is +-50%)."""
    return 0.5 * min(CAP, BASE * 2 ** (attempt - 1))


def upsert_times(stack: Stack) -> dict[str, list[tuple[float, int]]]:
    """Per lead, (time the fake received it, status) of every upsert, in order."""
    out: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for call in stack.fake.calls_to("POST", "/contacts/upsert"):
        out[call.json["email"]].append((call.at, call.status))
    return out


def test_outage_is_retried_with_growing_gaps_then_everything_syncs(stack):
    stack.configure(max_attempts=30, backoff_base_seconds=BASE, backoff_max_seconds=CAP)
    stack.start_web()
    sent = replies(8, emails=8, seed=31, prefix="o")
    stack.fake.fail_for(OUTAGE_SECONDS, 503)
    outage_ends = stack.fake.clock() + OUTAGE_SECONDS
    assert [stack.post_event(r.body).status_code for r in sent] == [202] * len(sent)
    stack.start_worker()
    stack.wait_all_final(len(sent), timeout=60)
    assert_synced_once(stack, sent)

    during = [c for c in stack.fake.calls if c.at < outage_ends]
    assert during and all(c.status == 503 for c in during)
    gaps_seen = {}
    for email, calls in upsert_times(stack).items():
        times = [at for at, _ in calls]
        assert [status for _, status in calls][-1] == 200 and times[-1] >= outage_ends
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        # Each wait is at least the backoff floor for its attempt: not a hot loop.
        for attempt, gap in enumerate(gaps, start=1):
            assert gap >= 0.9 * min_gap(attempt), (email, attempt, [round(g, 3) for g in gaps])
        gaps_seen[email] = [round(g, 2) for g in gaps]
    # How many tries the floors let into the outage, per event; a hot loop makes hundreds.
    most, elapsed = 1, 0.0
    while elapsed + min_gap(most) <= OUTAGE_SECONDS:
        elapsed += min_gap(most)
        most += 1
    assert len(during) <= most * len(sent), (len(during), most)
    print(
        f"calls during the {OUTAGE_SECONDS} s outage: {len(during)} for {len(sent)} events "
        f"(backoff allows at most {most} each); gaps between attempts per event: {gaps_seen}"
    )


def test_outage_longer_than_the_retries_dead_letters_then_replay_brings_them_home(stack):
    stack.configure(max_attempts=3, backoff_base_seconds=BASE, backoff_max_seconds=1.0)
    stack.start_web()
    stack.start_worker()
    stack.fake.fail_for(300, 503)  # longer than the test: only the test ends it
    sent = replies(6, emails=6, seed=37, prefix="d")
    assert [stack.post_event(r.body).status_code for r in sent] == [202] * len(sent)

    wait_until(lambda: stack.counts()["dead"] == len(sent), 30, "every event to be dead")
    tries = {email: len(calls) for email, calls in upsert_times(stack).items()}
    assert tries == {r.email: 3 for r in sent}, "each event tried exactly max_attempts times"
    status = stack.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["queue"]["dead"] == len(sent)
    assert all("gave up after 3 attempts" in row["last_error"] for row in report["dead"])

    stack.fake.fail_for(0, 503)  # GHL is back
    replay = stack.cli("replay")
    assert replay.returncode == 0 and f"queued {len(sent)} dead events again" in replay.stdout
    counts = stack.wait_all_final(len(sent), timeout=30)
    assert counts["done"] == len(sent) and counts["dead"] == 0
    assert_synced_once(stack, sent)
