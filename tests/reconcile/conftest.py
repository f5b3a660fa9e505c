"""Fixtures for reconciliation: a fake Instantly behind `responses`, a fake clock, a client."""

from __future__ import annotations

import copy

import pytest

from bridge.clients.instantly import (
    EMAILS_RATE_LIMIT,
    EMAILS_RATE_WINDOW_SECONDS,
    RATE_LIMIT,
    RATE_WINDOW_SECONDS,
    InstantlyClient,
)
from bridge.clients.ratelimit import SlidingWindowLimiter
from bridge.events.types import STATUS_BY_EVENT, is_custom_label
from tests.support.clock import FakeClock
from tests.support.instantly_fake import API_KEY, BASE_URL, FakeInstantly
from tests.support.instantly_responses import install


@pytest.fixture
def clock():
    return FakeClock(10_000.0)


@pytest.fixture
def fake_instantly(mocked_http, clock):
    """A FakeInstantly at https://api.instantly.ai. Fails the test at teardown if the bridge
    sent a request the spec rejects, or any call that could write to Instantly."""
    fake = FakeInstantly(clock=clock)
    install(mocked_http, fake)
    yield fake
    writes = [f"{c.method} {c.path}" for c in fake.writes()]
    assert not writes, f"the bridge must never write to Instantly, but sent: {writes}"
    assert not fake.spec_errors, "requests the Instantly spec rejects:\n" + "\n".join(
        fake.spec_errors
    )


@pytest.fixture
def instantly(fake_instantly, clock):
    """The bridge's client, paced by the fake clock."""
    return InstantlyClient(
        BASE_URL,
        API_KEY,
        limiter=SlidingWindowLimiter(RATE_LIMIT, RATE_WINDOW_SECONDS, clock, clock.sleep),
        emails_limiter=SlidingWindowLimiter(
            EMAILS_RATE_LIMIT, EMAILS_RATE_WINDOW_SECONDS, clock, clock.sleep
        ),
        sleep=clock.sleep,
    )


def with_events(settings: dict, **rules: list[str]) -> dict:
    """Settings that also sync these event types: interest events and custom labels
    through the [interest] section, other events with the tags given."""
    out = copy.deepcopy(settings)
    for event_type, tags in rules.items():
        if event_type in STATUS_BY_EVENT:
            out["interest"]["enabled"] = True
        elif is_custom_label(event_type):
            out["interest"]["enabled"] = out["interest"]["sync_custom_labels"] = True
        else:
            out["events"][event_type] = {"enabled": True, "tags": tags}
    return out


def without_interest(settings: dict) -> dict:
    out = copy.deepcopy(settings)
    out["interest"]["enabled"] = False
    return out
