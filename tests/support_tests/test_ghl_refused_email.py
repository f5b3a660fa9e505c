"""FakeGHL.refuse_email: one address GHL will not take, for a dead letter on demand."""

from __future__ import annotations

import json

import pytest

from bridge.clients.ghl import GHLClient, GHLRejected
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_responses import install


def _upsert(fake: FakeGHL, email: str) -> tuple[int, dict]:
    body = json.dumps({"locationId": fake.location_id, "email": email}).encode()
    headers = {"Authorization": f"Bearer {fake.token}", "Version": "2021-07-28"}
    status, _, answer = fake.handle("POST", "/contacts/upsert", {}, headers, body)
    return status, answer


def test_a_refused_address_answers_422_and_others_are_taken():
    fake = FakeGHL()
    fake.refuse_email("Blocked@Example.com", "email domain is blocked for this location")
    assert _upsert(fake, "blocked@example.com") == (
        422,
        {"statusCode": 422, "message": "email domain is blocked for this location"},
    )
    assert _upsert(fake, "ann@example.com")[0] == 200
    fake.reset()  # configuration, like custom fields: a test's set-up survives a reset
    assert _upsert(fake, "BLOCKED@example.com")[0] == 422
    assert fake.contact_by_email("blocked@example.com") is None


def test_the_bridge_reads_it_as_a_rejection_not_a_transient_error(mocked_http):
    fake = FakeGHL()
    install(mocked_http, fake)
    fake.refuse_email("blocked@example.com")
    client = GHLClient("https://services.leadconnectorhq.com", fake.token, fake.location_id)
    with pytest.raises(GHLRejected, match="422"):
        client.upsert_contact({"email": "blocked@example.com"})
