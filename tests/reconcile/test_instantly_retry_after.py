"""Reconciliation's Instantly client obeys a 429's Retry-After up to the same cap as GHL's."""

from __future__ import annotations

from bridge.clients.ratelimit import MAX_RETRY_AFTER_SECONDS
from tests.support.instantly_fake import TOO_MANY


def test_a_429_asking_for_years_waits_the_cap_then_reads_on(fake_instantly, instantly, clock):
    fake_instantly.add_campaign("Q1")
    fake_instantly.fail_next(
        "GET", "/api/v2/campaigns", 429, TOO_MANY, headers={"Retry-After": "1e9"}
    )
    started = clock.now
    page = instantly.list_campaigns()
    assert [c["name"] for c in page.items] == ["Q1"]
    assert [c.status for c in fake_instantly.calls] == [429, 200]
    assert clock.now - started == MAX_RETRY_AFTER_SECONDS
