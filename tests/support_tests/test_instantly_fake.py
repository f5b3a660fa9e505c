"""The fake Instantly answers like the spec and the field notes say the real one does."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import timedelta

import pytest

from tests.support.clock import FakeClock
from tests.support.instantly_fake import (
    API_KEY,
    BASE_URL,
    EPOCH,
    TOO_MANY,
    FakeInstantly,
    populate,
    stamp,
)
from tests.support.specs import instantly_spec, specs_available

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)", "Authorization": f"Bearer {API_KEY}"}


def call(fake, method, path, body=None, headers=BROWSER):
    data = json.dumps(body).encode() if body is not None else None
    status, _, text = fake.handle(method, BASE_URL + path, dict(headers), data)
    return status, (json.loads(text) if text.startswith(("{", "[")) else text)


@pytest.fixture
def fake():
    made = FakeInstantly(clock=FakeClock())
    populate(made, leads=30, campaigns=2, interested_every=10, replies=5)
    made.add_list("Imported")
    made.add_label("Hot Lead", 7, "positive")
    return made


@pytest.mark.skipif(not specs_available(), reason="../shared/specs is absent")
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v2/emails?email_type=received&sort_order=asc&limit=100", None),
        ("POST", "/api/v2/leads/list", {"limit": 100, "in_campaign": True}),
        ("POST", "/api/v2/leads/list", {"limit": 10, "filter": "FILTER_LEAD_INTERESTED"}),
        ("GET", "/api/v2/campaigns?limit=100", None),
        ("GET", "/api/v2/lead-lists?limit=100", None),
        ("GET", "/api/v2/lead-labels?limit=100", None),
    ],
)
def test_answers_match_the_spec(fake, method, path, body):
    status, answer = call(fake, method, path, body)
    assert status == 200 and answer["items"]
    assert instantly_spec().validate_response(method, path.split("?")[0], 200, answer) == []


def test_a_request_the_spec_rejects_answers_400_and_is_kept(fake):
    if not specs_available():
        pytest.skip("../shared/specs is absent")
    status, answer = call(fake, "GET", "/api/v2/emails?email_type=everything", None)
    assert status == 400 and "email_type" in answer["message"]
    assert fake.spec_errors


def test_limit_above_100_is_a_400():
    made = FakeInstantly(validate=False)  # the fake's own check, spec or no spec
    status, answer = call(made, "POST", "/api/v2/leads/list", {"limit": 200})
    assert status == 400 and "limit" in answer["message"]


def test_no_browser_user_agent_gets_cloudflare_403_and_no_key_401(fake):
    assert call(
        fake, "GET", "/api/v2/campaigns", headers={"Authorization": f"Bearer {API_KEY}"}
    ) == (403, "error code: 1010")
    assert call(fake, "GET", "/api/v2/campaigns", headers={"User-Agent": "Mozilla/5.0"})[0] == 401


def test_emails_allow_20_requests_a_minute():
    clock = FakeClock()
    made = FakeInstantly(clock=clock)
    answers = [call(made, "GET", "/api/v2/emails?limit=10")[0] for _ in range(21)]
    assert answers == [200] * 20 + [429]
    assert call(made, "GET", "/api/v2/emails?limit=10")[1] == TOO_MANY
    clock.now += 60
    assert call(made, "GET", "/api/v2/emails?limit=10")[0] == 200


def test_paging_carries_a_cursor_on_the_last_page_and_ends_empty(fake):
    seen, cursor = [], None
    while True:
        body = {"limit": 100, "campaign": fake.campaigns[0]["id"]}
        if cursor:
            body["starting_after"] = cursor
        _, page = call(fake, "POST", "/api/v2/leads/list", body)
        if not page["items"]:
            assert "next_starting_after" not in page
            break
        seen += page["items"]
        cursor = page["next_starting_after"]
    assert len(seen) == 15 and len({lead["id"] for lead in seen}) == 15


def test_filters_and_contacts(fake):
    _, interested = call(
        fake, "POST", "/api/v2/leads/list", {"limit": 100, "filter": "FILTER_LEAD_INTERESTED"}
    )
    assert [lead["lt_interest_status"] for lead in interested["items"]] == [1, 1, 1]
    _, found = call(
        fake, "POST", "/api/v2/leads/list", {"limit": 100, "contacts": ["LEAD000004@example.com"]}
    )
    assert [lead["email"] for lead in found["items"]] == ["lead000004@example.com"]
    _, replies = call(
        fake,
        "GET",
        f"/api/v2/emails?email_type=received&sort_order=asc&min_timestamp_created={stamp(EPOCH + timedelta(days=1, seconds=2))}",
    )
    assert len(replies["items"]) == 3


def test_writes_are_recorded(fake):
    call(fake, "POST", "/api/v2/leads", {"email": "x@example.com"})
    call(fake, "POST", "/api/v2/leads/list", {"limit": 1})
    assert [(c.method, c.path) for c in fake.writes()] == [("POST", "/api/v2/leads")]


@pytest.mark.slow
def test_the_server_module_serves_a_generated_workspace():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.instantly_server",
            "--leads",
            "1000",
            "--no-validate",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        request = urllib.request.Request(
            url + "/api/v2/leads/list",
            data=json.dumps({"limit": 100}).encode(),
            headers={**BROWSER, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            page = json.loads(answer.read())
        assert len(page["items"]) == 100 and page["next_starting_after"]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # closes the pipes too
