"""Pytest fixtures for tests that talk to GHL.

Load with `pytest_plugins = ["tests.support.fixtures"]` in a conftest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_responses import install


@pytest.fixture
def mocked_http() -> Iterator[responses.RequestsMock]:
    """The active `responses` mock; add Instantly (or other) routes to it beside the fake GHL."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def fake_ghl(mocked_http: responses.RequestsMock) -> Iterator[FakeGHL]:
    """A FakeGHL behind https://services.leadconnectorhq.com that checks requests against the spec.

    The test fails at teardown if any request broke the spec, even when the code under test
    handled the 422 quietly, and, once the test has added locations, if any request used one
    location's token for another.
    """
    fake = FakeGHL(validate=True)
    install(mocked_http, fake)
    yield fake
    if fake.spec_errors:
        pytest.fail(
            "GHL requests that the spec rejects:\n" + "\n".join(f"  {e}" for e in fake.spec_errors)
        )
    if len(fake.locations) > 1:
        fake.assert_no_cross_location_calls()
