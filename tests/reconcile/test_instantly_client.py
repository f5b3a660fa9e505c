"""The Instantly client: read only, paced, retried, and never quiet about an error."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.clients.instantly import (
    EMAILS_PATH,
    EMAILS_RATE_LIMIT,
    MAX_TRIES,
    InstantlyAuthError,
    InstantlyClient,
    InstantlyRejected,
    InstantlyTransient,
    pages,
)
from bridge.clients.ratelimit import MAX_RETRY_AFTER_SECONDS, SlidingWindowLimiter
from tests.support.instantly_fake import API_KEY, BASE_URL, EPOCH, TOO_MANY


def test_every_call_sends_a_browser_user_agent_and_the_key(fake_instantly, instantly):
    fake_instantly.add_campaign("Q1")
    instantly.list_campaigns()
    instantly.list_leads(in_campaign=True)
    instantly.list_emails(email_type="received")
    assert len(fake_instantly.calls) == 3
    for call in fake_instantly.calls:
        assert call.status == 200
        assert call.headers["user-agent"].startswith("Mozilla/5.0")
        assert call.headers["authorization"] == f"Bearer {API_KEY}"


def test_a_403_is_an_error_never_an_empty_result(fake_instantly, instantly):
    fake_instantly.add_campaign("Q1")
    fake_instantly.fail_next("GET", "/api/v2/campaigns", 403, "error code: 1010")
    with pytest.raises(InstantlyAuthError) as raised:
        instantly.list_campaigns()
    assert raised.value.status == 403
    assert "not an empty result" in str(raised.value)
    assert len(fake_instantly.calls) == 1  # not retried: the same key fails again


def test_without_a_browser_user_agent_the_fake_answers_like_cloudflare(fake_instantly):
    client = InstantlyClient(BASE_URL, API_KEY)
    client.session.headers["User-Agent"] = "python-requests/2.32"
    with pytest.raises(InstantlyAuthError, match="1010"):
        client.list_campaigns()


# A wait asking for years is a broken answer: reconciliation waits GHL's cap instead.
@pytest.mark.parametrize(
    ("retry_after", "wait"), [("7", 7), ("1e9", MAX_RETRY_AFTER_SECONDS)], ids=["7 s", "years"]
)
def test_429_waits_and_tries_again(fake_instantly, instantly, clock, retry_after, wait):
    fake_instantly.add_campaign("Q1")
    fake_instantly.fail_next(
        "GET", "/api/v2/campaigns", 429, TOO_MANY, headers={"Retry-After": retry_after}
    )
    started = clock.now
    page = instantly.list_campaigns()
    assert [c["name"] for c in page.items] == ["Q1"]
    assert [c.status for c in fake_instantly.calls] == [429, 200]
    assert fake_instantly.calls[1].at - fake_instantly.calls[0].at >= wait
    assert clock.now - started == wait


def test_429_on_emails_without_retry_after_waits_a_whole_window(fake_instantly, instantly):
    fake_instantly.fail_next("GET", EMAILS_PATH, 429, TOO_MANY)
    instantly.list_emails(email_type="received")
    first, second = fake_instantly.calls
    assert second.at - first.at >= 60


def test_server_errors_are_retried_with_backoff_then_reported(fake_instantly, instantly, clock):
    fake_instantly.fail_next("POST", "/api/v2/leads/list", 502, times=2)
    assert instantly.list_leads(in_campaign=True).items == []
    assert [c.status for c in fake_instantly.calls] == [502, 502, 200]
    fake_instantly.fail_next("POST", "/api/v2/leads/list", 500, times=MAX_TRIES)
    with pytest.raises(InstantlyTransient) as raised:
        instantly.list_leads(in_campaign=True)
    assert raised.value.status == 500
    assert clock.slept[:2] == [2.0, 4.0]


def test_a_bad_request_is_rejected_at_once(fake_instantly, instantly):
    fake_instantly.fail_next(
        "POST",
        "/api/v2/leads/list",
        400,
        {"statusCode": 400, "error": "Bad Request", "message": "body/limit must be <= 100"},
    )
    with pytest.raises(InstantlyRejected, match="limit must be <= 100"):
        instantly.list_leads(in_campaign=True)
    assert len(fake_instantly.calls) == 1


def test_an_answer_without_items_is_an_error_not_an_empty_page(fake_instantly, instantly):
    fake_instantly.fail_next("GET", "/api/v2/lead-lists", 200, {"data": []})
    with pytest.raises(InstantlyTransient, match="no list of items"):
        instantly.list_lead_lists()


def test_the_key_never_appears_in_an_error(fake_instantly, instantly):
    echo = {"statusCode": 401, "error": "Unauthorized", "message": f"key {API_KEY} revoked"}
    fake_instantly.fail_next("GET", "/api/v2/campaigns", 401, echo)
    with pytest.raises(InstantlyAuthError) as raised:
        instantly.list_campaigns()
    assert API_KEY not in str(raised.value)
    assert "[redacted]" in str(raised.value)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v2/leads"),
        ("PATCH", "/api/v2/leads/123"),
        ("DELETE", "/api/v2/leads/123"),
        ("POST", "/api/v2/campaigns/123/activate"),
        ("POST", "/api/v2/leads/update-interest-status"),
    ],
)
def test_the_client_refuses_to_write_to_instantly(fake_instantly, instantly, method, path):
    with pytest.raises(ValueError, match="never writes"):
        instantly._request(method, path, json={})
    assert fake_instantly.calls == []


def test_leads_list_limit_above_100_is_refused_before_sending(fake_instantly, instantly):
    with pytest.raises(ValueError, match="<= 100"):
        instantly.list_leads(limit=200)
    assert fake_instantly.calls == []


def test_paging_stops_on_the_empty_page_even_when_the_last_page_has_a_cursor(
    fake_instantly, instantly
):
    campaign = fake_instantly.add_campaign("Q1")
    for i in range(250):
        fake_instantly.add_lead(f"p{i}@example.com", campaign=campaign["id"])
    got = [
        page for page in pages(lambda cursor: instantly.list_leads(cursor, campaign=campaign["id"]))
    ]
    assert [len(p.items) for p in got] == [100, 100, 50]
    assert got[-1].next_starting_after is not None
    calls = fake_instantly.calls_to("POST", "/api/v2/leads/list")
    assert len(calls) == 4  # three pages and the empty one
    assert [c.json.get("starting_after") for c in calls] == [
        None,
        got[0].items[-1]["id"],
        got[1].items[-1]["id"],
        got[2].items[-1]["id"],
    ]
    assert all(c.json["limit"] == 100 for c in calls)


def test_leads_are_looked_up_100_emails_a_call(fake_instantly, instantly):
    emails = [f"l{i}@example.com" for i in range(150)]
    for email in emails:
        fake_instantly.add_lead(email)
    found = list(instantly.leads_by_email(emails))
    assert sorted(lead["email"] for lead in found) == sorted(emails)
    bodies = [c.json for c in fake_instantly.calls_to("POST", "/api/v2/leads/list")]
    assert all(len(b["contacts"]) <= 100 for b in bodies)
    assert sorted({len(b["contacts"]) for b in bodies}) == [50, 100]


def test_emails_limiter_arithmetic_18_per_minute(clock):
    limiter = SlidingWindowLimiter(EMAILS_RATE_LIMIT, 60.0, clock, clock.sleep)
    start = clock.now
    waits = [limiter.acquire() for _ in range(EMAILS_RATE_LIMIT)]
    assert waits == [0.0] * EMAILS_RATE_LIMIT and clock.now == start
    assert limiter.delay() == 60.0
    clock.sleep(15.0)
    assert limiter.delay() == 45.0  # the window slides with the clock
    assert limiter.acquire() == 45.0
    assert clock.now == start + 60.0
    # The first minute's calls have left the window: 17 more slots are free at once.
    assert [limiter.acquire() for _ in range(EMAILS_RATE_LIMIT - 1)] == [0.0] * 17
    assert limiter.delay() == 60.0


def test_paging_through_many_reply_pages_never_meets_the_20_per_minute_limit(
    fake_instantly, instantly, clock
):
    for i in range(4000):
        fake_instantly.add_reply(f"r{i}@example.com", EPOCH + timedelta(seconds=i))
    got = list(pages(lambda c: instantly.list_emails(c, email_type="received", sort_order="asc")))
    assert sum(len(p.items) for p in got) == 4000
    calls = fake_instantly.calls_to("GET", EMAILS_PATH)
    assert len(calls) == 41
    assert all(c.status == 200 for c in calls)  # never a 429
    times = [c.at for c in calls]
    busiest = max(sum(1 for t in times if start <= t < start + 60) for start in times)
    assert busiest == EMAILS_RATE_LIMIT <= 20
