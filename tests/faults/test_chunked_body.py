"""Body size through the real server: gunicorn decodes a chunked body itself, so the limit
must hold for a body that announces no length as it does for one that does."""

from __future__ import annotations

import json

import pytest

from bridge.web.errors import MAX_BODY_BYTES
from tests.helpers import reply_payload

pytestmark = pytest.mark.slow


def chunks(body: bytes, size: int = 64 * 1024):
    """A generator body: requests sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_gunicorn_refuses_an_oversized_chunked_body_like_one_with_a_length(stack):
    stack.configure()
    stack.start_web(workers=1, threads=2)
    # Cut at the limit, this body would still parse.
    big = json.dumps(reply_payload()).encode() + b" " * MAX_BODY_BYTES

    with_length = stack.post_event(big)
    chunked = stack.post_event(chunks(big))
    small = stack.post_event(chunks(json.dumps(reply_payload()).encode()))

    assert with_length.status_code == 413
    assert (chunked.status_code, chunked.json()) == (413, with_length.json())
    # The rest of a refused body is not read, so the connection cannot carry another
    # request: the answer says so, or the client would send its next one into the close.
    assert with_length.headers["Connection"] == chunked.headers["Connection"] == "close"
    assert small.status_code == 202, small.text
    assert stack.counts()["pending"] == 1
