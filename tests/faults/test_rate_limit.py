"""429: GHL says "Retry-After: N"; the worker sends nothing at all until N seconds have passed."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.faults.scenario import assert_synced_once, replies

pytestmark = pytest.mark.slow

RETRY_AFTER = 3


def test_429_holds_every_call_until_retry_after(stack):
    stack.configure()
    stack.start_web()
    sent = replies(6, emails=6, seed=41, prefix="q")
    assert [stack.post_event(r.body).status_code for r in sent] == [202] * len(sent)
    stack.fake.fail_next(
        1,
        429,
        headers={"Retry-After": str(RETRY_AFTER)},
        body={"statusCode": 429, "message": "Too many requests"},
    )
    stack.start_worker()
    stack.wait_all_final(len(sent), timeout=60)
    assert_synced_once(stack, sent)

    calls = list(stack.fake.calls)
    limited = [i for i, call in enumerate(calls) if call.status == 429]
    assert limited == [0], [c.status for c in calls]
    told_at = calls[0].at
    allowed_from = told_at + RETRY_AFTER
    early = [(c.method, c.path, round(c.at - told_at, 3)) for c in calls[1:] if c.at < allowed_from]
    assert early == [], f"requests before Retry-After ran out: {early}"
    first_after = calls[1].at - told_at
    # Waiting as told, not much longer (the worker looks at most every 5 s).
    assert first_after < RETRY_AFTER + 5.5, first_after
    row = stack.db().execute("SELECT attempts FROM events WHERE id = 1").fetchone()
    assert row[0] == 1, "a 429 does not use up one of the event's attempts"
    print(
        f"429 at t=0 with Retry-After: {RETRY_AFTER}; next request at t={first_after:.3f} s; "
        f"{len(calls) - 1} requests after it, none earlier"
    )


def test_the_worker_keeps_under_ghls_limit_without_being_told(stack):
    # 130 new contacts: one upsert each plus the bulk tag calls, more than GHL allows in 10 s
    # (the fake enforces 100 per 10 s per location).
    sent = replies(130, emails=130, seed=43, prefix="w")
    stack.configure()
    stack.start_web()
    assert [stack.post_event(r.body).status_code for r in sent] == [202] * len(sent)
    stack.start_worker()
    stack.wait_all_final(len(sent), timeout=60)
    figures = assert_synced_once(stack, sent)

    calls = list(stack.fake.calls)
    paths = Counter(call.path for call in calls)
    bulk = paths["/contacts/bulk/tags/update/add"]
    # A bulk call per batch and campaign (its tag), not one per contact.
    assert paths["/contacts/upsert"] == len(sent) and 1 <= bulk <= len(sent) // 10, paths
    assert figures.calls == len(sent) + bulk > 100, paths
    assert 429 not in figures.statuses, figures.statuses
    times = sorted(call.at for call in calls)
    busiest = max(sum(1 for t in times[i:] if t < start + 10.0) for i, start in enumerate(times))
    assert busiest <= 100, busiest
    print(f"{figures.calls} calls over {times[-1] - times[0]:.1f} s; busiest 10 s held {busiest}")
