"""A 429's Retry-After is obeyed up to a cap: one absurd answer (1e9 s, a date in 2058)
must never hold every later call for years, and it shows in /healthz."""

from __future__ import annotations

import email.utils
import math
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
from hypothesis import given
from hypothesis import strategies as st

from bridge.clients.budget import Budget
from bridge.clients.ghl import GHLClient, GHLRateLimited
from bridge.clients.ratelimit import (
    MAX_RETRY_AFTER_SECONDS,
    SlidingWindowLimiter,
    read_retry_after,
    retry_after_seconds,
)
from bridge.setup.health import CAPPED_WAIT_WARNING_SECONDS, report
from bridge.store import inbox, state
from bridge.sync.worker import Worker
from tests.helpers import GHL_TOKEN, LOCATION_ID, post_webhook, reply_payload
from tests.support.clock import FakeClock
from tests.support.ghl_responses import GHL_BASE_URL

CAP = MAX_RETRY_AFTER_SECONDS
TOO_MANY = {"statusCode": 429, "message": "Too many requests"}


def answer(**headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 429
    response.headers.update(headers)
    return response


def http_date(delta: timedelta) -> str:
    return email.utils.format_datetime(datetime.now(UTC) + delta, usegmt=True)


header_values = st.one_of(
    st.text(),
    st.floats().map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e9"]),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: email.utils.format_datetime(d, True)),
)


@given(retry_after=header_values, interval=st.none() | header_values)
def test_any_header_gives_no_wait_or_one_within_the_cap(retry_after, interval):
    headers = {"Retry-After": retry_after}
    if interval is not None:
        headers["X-RateLimit-Interval-Milliseconds"] = interval
    seconds = retry_after_seconds(answer(**headers))
    assert seconds is None or 0.0 <= seconds <= CAP


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "1e9"},
        {"Retry-After": "inf"},
        {"Retry-After": "Infinity"},
        {"Retry-After": "1e999"},
        {"Retry-After": http_date(timedelta(days=365 * 32))},
        {"X-RateLimit-Interval-Milliseconds": "1e12"},
    ],
)
def test_an_absurd_wait_is_capped_and_says_what_was_asked(headers):
    ((name, value),) = headers.items()
    wait = read_retry_after(answer(**headers))
    assert wait.seconds == CAP
    assert wait.asked == f"{name}: {value}"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("-5", 0.0),
        ("-inf", 0.0),
        (http_date(-timedelta(days=3)), 0.0),
        ("7", 7.0),
        (str(CAP), CAP),
        ("nan", None),
        ("soon", None),
    ],
)
def test_a_wait_within_the_cap_is_kept_and_nothing_is_reported(value, seconds):
    wait = read_retry_after(answer(**{"Retry-After": value}))
    assert (wait.seconds, wait.asked) == (seconds, None)


def test_an_hour_ahead_as_a_date_is_capped():
    wait = read_retry_after(answer(**{"Retry-After": http_date(timedelta(hours=1))}))
    assert wait.seconds == CAP and wait.asked.startswith("Retry-After: ")


@pytest.mark.parametrize("seconds", [1e9, math.inf, math.nan, -3.0])
def test_the_limiter_never_blocks_longer_than_the_cap(seconds):
    clock = FakeClock(1000.0)
    limiter = SlidingWindowLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    limiter.block_for(seconds)
    waited = limiter.acquire()
    assert 0.0 <= waited <= CAP
    assert waited == (CAP if seconds > CAP else 0.0)


def test_a_ghl_429_asking_for_years_blocks_the_client_for_the_cap_only(mocked_http):
    clock = FakeClock(1000.0)
    budget = Budget(None, LOCATION_ID, clock=clock, sleep=clock.sleep)
    client = GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID, budget=budget)
    upsert = f"{GHL_BASE_URL}/contacts/upsert"
    mocked_http.add(
        responses.POST, upsert, status=429, json=TOO_MANY, headers={"Retry-After": "1e9"}
    )
    with pytest.raises(GHLRateLimited) as raised:
        client.upsert_contact({"email": "a@example.com"})
    assert raised.value.retry_after == CAP
    assert raised.value.asked == "Retry-After: 1e9"
    assert budget.delay() == CAP
    mocked_http.replace(responses.POST, upsert, json={"contact": {"id": "c1"}, "new": True})
    assert client.upsert_contact({"email": "a@example.com"}) == ("c1", True)
    assert clock.now == pytest.approx(1_000.0 + CAP), "the next call went out at the cap"


def test_the_worker_retries_at_the_cap_syncs_the_others_and_health_says_why(
    client, db, config, fake_ghl
):
    clock = FakeClock(1000.0)
    budget = Budget(None, LOCATION_ID, clock=clock, sleep=clock.sleep)
    ghl = GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID, budget=budget)
    worker = Worker(config, client=ghl, db=db)
    sleeps = []

    def sleep(seconds: float) -> None:
        # Time passes only on the budget's clock; a block of years would never end here.
        sleeps.append(seconds)
        clock.sleep(seconds)
        if len(sleeps) > 1_000:
            worker.stop()

    worker.sleep = sleep
    fake_ghl.fail_next(1, 429, headers={"Retry-After": "1e9"}, body=TOO_MANY)
    post_webhook(client, reply_payload())
    before = time.time()
    worker.run(drain=True)
    # A reply arriving during the wait syncs once the capped wait ends (one in the same
    # batch would be handed back with the first, for the same wait).
    post_webhook(client, reply_payload(email_id="r2", lead_email="other@example.com"))
    worker.run(drain=True)

    first, second = inbox.get(db, 1), inbox.get(db, 2)
    assert second["status"] == "done", "the other event synced once the capped wait ended"
    assert first["status"] == "pending" and first["attempts"] == 0
    assert before + CAP <= first["next_attempt_at"] <= time.time() + CAP
    assert sum(sleeps) == pytest.approx(CAP)
    capped = state.get(db, state.scoped(state.GHL_RETRY_AFTER_CAPPED, LOCATION_ID))
    assert (capped["asked"], capped["waited_seconds"]) == ("Retry-After: 1e9", CAP)
    # Degraded, not down: the bridge kept working, with the cap's wait.
    health = client.get("/healthz")
    assert (health.status_code, health.json["status"]) == (200, "degraded")
    assert health.json["ghl_retry_after_capped"] == capped
    (warning,) = [w for w in health.json["warnings"] if "Retry-After: 1e9" in w]
    assert capped["at"] in warning and f"{CAP:.0f} s" in warning


def test_a_capped_wait_stops_being_a_warning_after_a_while(db, config):
    state.put(
        db,
        state.scoped(state.GHL_RETRY_AFTER_CAPPED, LOCATION_ID),
        {"asked": "Retry-After: 1e9", "waited_seconds": CAP, "at": "2026-01-05T10:00:00.000Z"},
    )
    at = datetime(2026, 1, 5, 10, tzinfo=UTC).timestamp()
    soon = report(db, config, now=at + 60)
    assert any("Retry-After: 1e9" in w for w in soon["warnings"])
    later = report(db, config, now=at + CAPPED_WAIT_WARNING_SECONDS + 1)
    assert not any("Retry-After" in w for w in later["warnings"])
    assert later["ghl_retry_after_capped"]["asked"] == "Retry-After: 1e9"
