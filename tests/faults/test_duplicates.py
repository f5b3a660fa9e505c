"""Duplicates: every reply delivered three times, some at the same instant, some late."""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict

import pytest

from tests.faults.harness import Stack
from tests.faults.scenario import Reply, assert_synced_once, replies
from tests.support.threads import map_in_threads

pytestmark = pytest.mark.slow


def deliver(stack: Stack, reply: Reply, together: threading.Barrier | None = None):
    if together is not None:
        together.wait(timeout=30)  # all copies of this reply leave at the same instant
    response = stack.post_event(reply.body)
    return reply.email_id, response.status_code, response.json()


def test_each_reply_delivered_three_times_reaches_ghl_once(stack):
    stack.configure()
    stack.start_web(workers=2, threads=4)
    stack.start_worker()
    sent = replies(240, emails=30, seed=11)
    rng = random.Random(11)
    bursts = sent[:80]  # three copies at once, to two web workers
    late = sent[80:160]  # two copies now, the third after the reply is synced
    spread = sent[160:]  # three copies scattered among the others

    # A burst's three copies sit next to each other in the pool's queue, so three threads take
    # them together and the barrier releases them at once; at most one burst is ever
    # half-taken, so twelve threads cannot deadlock on barriers.
    groups = [[(reply, threading.Barrier(3))] * 3 for reply in bursts]
    groups += [[(reply, None)] for reply in [*late, *late, *spread, *spread, *spread]]
    rng.shuffle(groups)
    queued = [(r, b) for group in groups for r, b in group]
    answers = map_in_threads(lambda rb: deliver(stack, *rb), queued, 12, timeout=120)

    stack.wait_all_final(len(sent), timeout=60)
    answers += map_in_threads(lambda r: deliver(stack, r), late, 4, timeout=120)

    by_reply: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for email_id, status, body in answers:
        by_reply[email_id].append((status, body))
    assert len(by_reply) == len(sent)
    for email_id, got in by_reply.items():
        statuses = sorted(status for status, _ in got)
        assert statuses == [200, 200, 202], (email_id, got)
        assert sorted(body["status"] for _, body in got) == ["accepted", "duplicate", "duplicate"]
        assert len({body["event_id"] for _, body in got}) == 1, (email_id, got)
    assert stack.counts()["done"] == len(sent)

    figures = assert_synced_once(stack, sent)
    print(
        f"answers {Counter(status for _, status, _ in answers)}; GHL calls {figures.calls} "
        f"{dict(figures.statuses)}; upserts {sum(figures.upserts_per_email.values())} "
        f"for {len(figures.upserts_per_email)} leads"
    )
