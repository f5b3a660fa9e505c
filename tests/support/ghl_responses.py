"""Route `requests` calls to GHL into a FakeGHL, through the `responses` library."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import responses
from requests import PreparedRequest

from tests.support.ghl_fake import FakeGHL

GHL_BASE_URL = "https://services.leadconnectorhq.com"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def install(rsps: responses.RequestsMock, fake: FakeGHL, base_url: str = GHL_BASE_URL) -> None:
    """Answer every request under `base_url` (any method, any path) with `fake`."""
    base = urlsplit(base_url.rstrip("/"))
    url_pattern = re.compile(re.escape(base_url.rstrip("/")) + r"(?:[/?].*)?$")

    def callback(request: PreparedRequest) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url or "")
        path = parts.path[len(base.path) :] or "/"
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        status, headers, answer = fake.handle(
            request.method or "GET",
            path,
            parse_qs(parts.query, keep_blank_values=True),
            dict(request.headers),
            body,
        )
        return status, headers, json.dumps(answer)

    for method in METHODS:
        rsps.add_callback(method, url_pattern, callback=callback, content_type="application/json")


@contextmanager
def installed(fake: FakeGHL, base_url: str = GHL_BASE_URL) -> Iterator[responses.RequestsMock]:
    """A `responses` mock answering GHL with `fake`; on leaving, fails the test on any request
    the spec rejects and on any cross-location call (what the fake_ghl fixture does for one)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        install(rsps, fake, base_url)
        yield rsps
    assert not fake.spec_errors, "GHL requests that the spec rejects:\n" + "\n".join(
        f"  {e}" for e in fake.spec_errors
    )
    fake.assert_no_cross_location_calls()
