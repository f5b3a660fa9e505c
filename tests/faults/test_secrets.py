"""Secrets: a whole run with known secret values, and none of them in any log line, answer,
error body, health report or CLI output, even when GHL's errors echo the token back."""

from __future__ import annotations

import json

import pytest

from bridge.store import state
from tests.faults.harness import LOCATION_ID
from tests.faults.leaks import CHECKED_URLS, assert_no_secret_shown, find_leaks
from tests.faults.procs import wait_until
from tests.faults.scenario import replies

pytestmark = pytest.mark.slow


def echoing(status: int, token: str) -> dict:
    """An error body from a gateway that echoes the request's Authorization header."""
    return {
        "statusCode": status,
        "message": f"request failed upstream (Authorization: Bearer {token})",
    }


def test_no_secret_shown_anywhere_during_a_full_run(stack):
    secrets = stack.secrets
    stack.configure(max_attempts=3, backoff_base_seconds=0.2, backoff_max_seconds=0.5)
    stack.start_web()
    good = replies(4, emails=4, seed=71, prefix="s")

    # Webhooks: right, wrong and odd deliveries.
    assert stack.post_event(good[0].body).status_code == 202
    assert stack.post_event(good[0].body).status_code == 200
    assert stack.post_event(good[1].body, secret="wrong-secret").status_code == 401
    assert stack.post_event(good[1].body, secret="").status_code == 401
    assert stack.post_event(good[1].body, secret=secrets.webhook_secret.upper()).status_code == 401
    # The right value under another header name is still "missing", and not echoed.
    other_header = {"X-Webhook-Secret": secrets.webhook_secret}
    assert stack.post_event(good[1].body, secret="", headers=other_header).status_code == 401
    lower = {"x-bridge-secret": secrets.webhook_secret}
    assert stack.post_event(good[1].body, secret="", headers=lower).status_code == 202
    for body in (b"{", b"\xff\xfe{}", b'{"event_type": NaN}', b"[1]", b'{"event_type": 7}'):
        assert stack.post_event(body).status_code == 400
    assert stack.request("GET", "/webhooks/instantly").status_code == 405
    assert stack.request("GET", "/nowhere").status_code == 404

    # GHL trouble whose error bodies carry the token: a retried 500, a dead-lettering 422.
    stack.fake.fail_next(1, 500, body=echoing(500, secrets.ghl_token))
    stack.fake.fail_next(1, 422, body=echoing(422, secrets.ghl_token))
    assert stack.post_event(good[2].body).status_code == 202
    stack.start_worker()
    counts = stack.wait_all_final(3, timeout=30)
    assert counts["done"] == 2 and counts["dead"] == 1, counts
    health = stack.request("GET", "/healthz").json()
    assert health["last_ghl_error"]["status"] == 422

    # A refused token pauses writes; the reason is shown on /healthz and by `instantly-ghl-bridge status`.
    stack.fake.fail_next(1, 401, body=echoing(401, secrets.ghl_token))
    assert stack.post_event(good[3].body).status_code == 202
    wait_until(
        lambda: state.get(stack.db(), state.scoped(state.GHL_PAUSE, LOCATION_ID)),
        30,
        "GHL writes to pause",
    )
    paused = stack.request("GET", "/healthz")
    assert paused.status_code == 503 and "401" in paused.json()["ghl_paused"]["reason"]

    status = stack.cli("status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["queue"]["dead"] == 1
    assert stack.cli("status").returncode == 0
    assert stack.cli("replay", "999").returncode == 0

    searched = assert_no_secret_shown(stack)
    # The search itself works: the token is in the fake's record of what it answered.
    assert find_leaks({"ghl_token": secrets.ghl_token}, {"fake": str(stack.fake.calls)})
    print(f"searched {searched} logs, answers and outputs (pages: {CHECKED_URLS}); no secret")
