"""Route every request to the Instantly base URL through a FakeInstantly (with `responses`)."""

from __future__ import annotations

import re

import responses

from tests.support.instantly_fake import BASE_URL, FakeInstantly

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def install(rsps: responses.RequestsMock, fake: FakeInstantly, base_url: str = BASE_URL) -> None:
    """Every method, every path: a write the bridge should never make still reaches the
    fake, which records it for `fake.writes()`."""
    pattern = re.compile(re.escape(base_url.rstrip("/")) + r"(/.*)?")

    def callback(request):
        return fake.handle(request.method, request.url, dict(request.headers), request.body)

    for method in METHODS:
        rsps.add_callback(method, pattern, callback=callback)
