"""GHL error messages end up in logs, /healthz and the dead-letter list: never with the token."""

from __future__ import annotations

import pytest
import requests
import responses

from bridge.clients.ghl import GHLClient, GHLRejected, GHLTransient
from bridge.logs import MASK
from bridge.sync.worker import Worker
from tests.helpers import GHL_TOKEN, LOCATION_ID, post_webhook, reply_payload
from tests.support.ghl_responses import GHL_BASE_URL

ECHO = f"upstream refused the request (Authorization: Bearer {GHL_TOKEN})"


def ghl_client() -> GHLClient:
    return GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID)


def test_an_error_that_echoes_the_token_is_raised_without_it(fake_ghl):
    fake_ghl.fail_next(1, 422, body={"statusCode": 422, "message": [ECHO, "email is invalid"]})
    with pytest.raises(GHLRejected) as caught:
        ghl_client().upsert_contact({"email": "a@example.com"})
    assert (
        caught.value.message
        == f"upstream refused the request (Authorization: Bearer {MASK}); email is invalid"
    )
    assert GHL_TOKEN not in str(caught.value)


def test_no_piece_of_the_token_survives_where_a_long_message_is_cut(fake_ghl):
    # Padded so the token starts 6 characters before the cut at 499 characters.
    message = "x" * (499 - 6 - ECHO.index(GHL_TOKEN)) + ECHO
    fake_ghl.fail_next(1, 500, body={"statusCode": 500, "message": message})
    with pytest.raises(GHLTransient) as caught:
        ghl_client().upsert_contact({"email": "a@example.com"})
    assert len(caught.value.message) <= 500
    assert GHL_TOKEN[:6] not in caught.value.message


def test_a_network_error_naming_the_token_is_raised_without_it(mocked_http):
    mocked_http.add(
        responses.POST,
        f"{GHL_BASE_URL}/contacts/upsert",
        body=requests.exceptions.InvalidHeader(f"bad header value 'Bearer {GHL_TOKEN}'"),
    )
    with pytest.raises(GHLTransient) as caught:
        ghl_client().upsert_contact({"email": "a@example.com"})
    assert caught.value.message == f"InvalidHeader: bad header value 'Bearer {MASK}'"


def test_health_and_dead_letters_never_show_the_token(client, db, config, fake_ghl):
    fake_ghl.fail_next(1, 422, body={"statusCode": 422, "message": ECHO})
    post_webhook(client, reply_payload())
    Worker(config, db=db).run(drain=True)
    (last_error,) = db.execute("SELECT last_error FROM events").fetchone()
    assert MASK in last_error and GHL_TOKEN not in last_error
    assert GHL_TOKEN not in client.get("/healthz").get_data(as_text=True)
