"""Every answer carries the headers that keep the page out of frames, stop content sniffing
and keep its paths out of other sites' Referer: pages, redirects, JSON, the webhook."""

from __future__ import annotations

import pytest

from tests.helpers import WEBHOOK_SECRET, reply_payload
from tests.web_helpers import login

pytestmark = pytest.mark.admin

EXPECTED = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/login", {}, 200),
        ("GET", "/", {}, 302),
        ("GET", "/healthz", {}, None),
        ("GET", "/metrics", {}, 200),
        ("POST", "/webhooks/instantly", {"json": reply_payload()}, 401),
        (
            "POST",
            "/webhooks/instantly",
            {"json": reply_payload(), "headers": {"X-Bridge-Secret": WEBHOOK_SECRET}},
            202,
        ),
        ("GET", "/no-such-page", {}, 404),
        ("GET", "/webhooks/instantly", {}, 405),
    ],
)
def test_every_answer_carries_the_security_headers(client, method, path, kwargs, status):
    response = client.open(path, method=method, **kwargs)
    if status is not None:
        assert response.status_code == status
    assert {name: response.headers.get(name) for name in EXPECTED} == EXPECTED


def test_logged_in_pages_carry_them_too(client):
    login(client)
    for path in ("/", "/events", "/dead", "/settings", "/settings/export"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert {name: response.headers.get(name) for name in EXPECTED} == EXPECTED, path
