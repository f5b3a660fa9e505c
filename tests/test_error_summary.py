"""The one-line error summaries the page shows, from errors as the bridge stores them."""

from __future__ import annotations

import pytest
import requests
import responses

from bridge.clients.ghl import GHLClient, GHLError
from bridge.clients.instantly import InstantlyClient, InstantlyError
from bridge.web.error_summary import LIMIT, summarise, summarise_call
from bridge.web.wording import duration, next_try, plural, since

GHL = "https://services.leadconnectorhq.com"
INSTANTLY = "https://api.instantly.ai"
HOST = "services.leadconnectorhq.com"
# urllib3's own words, as requests raises them (captured from real failures).
REFUSED = (
    f"HTTPSConnectionPool(host='{HOST}', port=443): Max retries exceeded with url:"
    f" /contacts/upsert (Caused by NewConnectionError(\"HTTPSConnection(host='{HOST}',"
    ' port=443): Failed to establish a new connection: [Errno 111] Connection refused"))'
)
NOT_RESOLVED = (
    f"HTTPSConnectionPool(host='{HOST}', port=443): Max retries exceeded with url:"
    f" /contacts/upsert (Caused by NameResolutionError(\"HTTPSConnection(host='{HOST}',"
    f" port=443): Failed to resolve '{HOST}' ([Errno -2] Name or service not known)\"))"
)
CONNECT_TIMEOUT = (
    f"HTTPSConnectionPool(host='{HOST}', port=443): Max retries exceeded with url:"
    f" /contacts/upsert (Caused by ConnectTimeoutError(<HTTPSConnection(host='{HOST}',"
    f" port=443) at 0x7f3a2c1b2d50>, 'Connection to {HOST} timed out. (connect timeout=5.0)'))"
)
READ_TIMEOUT = f"HTTPSConnectionPool(host='{HOST}', port=443): Read timed out. (read timeout=30.0)"
DISCONNECTED = (
    "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"
)
TLS = (
    f"HTTPSConnectionPool(host='{HOST}', port=443): Max retries exceeded with url: /x (Caused by"
    " SSLError(SSLEOFError(8, '[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation"
    " of protocol (_ssl.c:1006)')))"
)
# A refused connection to a long URL: what the page met as 2,000 characters in one word.
LONG_URL = "/contacts/" + "a1b2c3d4" * 230 + "/tags"
LONG_REFUSED = "GHL network error: ConnectionError: " + REFUSED.replace(
    "/contacts/upsert", LONG_URL
)


@pytest.mark.parametrize(
    ("stored", "summary"),
    [
        ("GHL network error: ConnectionError: " + REFUSED, "GHL unreachable: connection refused"),
        (
            "GHL network error: ConnectionError: " + NOT_RESOLVED,
            f"GHL unreachable: cannot resolve {HOST}",
        ),
        (
            "GHL network error: ConnectTimeout: " + CONNECT_TIMEOUT,
            "GHL timed out connecting after 5 s",
        ),
        ("GHL network error: ReadTimeout: " + READ_TIMEOUT, "GHL timed out after 30 s"),
        (
            "GHL network error: ConnectionError: " + DISCONNECTED,
            "GHL unreachable: closed the connection without answering",
        ),
        ("GHL network error: SSLError: " + TLS, "GHL unreachable: TLS handshake failed"),
        ("GHL 422: locationId must be a string", "GHL 422: locationId must be a string"),
        ("GHL 401: Invalid JWT", "GHL 401: token rejected (Invalid JWT)"),
        (
            "GHL 403: The token is not authorized for this scope.",
            "GHL 403: not allowed: the token lacks a scope (The token is not authorized for"
            " this scope.)",
        ),
        ("GHL 429: Too many requests", "GHL 429: rate limited (Too many requests)"),
        (
            "GHL 502: <html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            "GHL 502: 502 Bad Gateway",
        ),
        (
            "Instantly 429: Rate limit exceeded (GET /api/v2/emails)",
            "Instantly 429: rate limited (Rate limit exceeded (GET /api/v2/emails))",
        ),
        (
            "gave up after 5 attempts: GHL network error: ConnectionError: " + REFUSED,
            "GHL unreachable: connection refused (gave up after 5 tries)",
        ),
        (
            "last reconciliation failed: Instantly network error: ConnectionError: " + REFUSED,
            "last reconciliation failed: Instantly unreachable: connection refused",
        ),
        ("internal error: KeyError: 'email'", "internal error: KeyError: 'email'"),
        (None, ""),
        ("   ", ""),
    ],
)
def test_a_stored_error_reads_as_one_line(stored, summary):
    assert summarise(stored) == summary


def test_a_2000_character_network_error_is_one_short_line():
    assert len(LONG_REFUSED) > 2000
    assert summarise(LONG_REFUSED) == "GHL unreachable: connection refused"


def test_an_unknown_error_is_its_first_line_cut():
    text = "field map: " + "contact.icebreaker is not a custom field of the location; " * 10
    summary = summarise(text + "\nTraceback (most recent call last): ...")
    assert len(summary) == LIMIT
    assert summary.startswith("field map: contact.icebreaker is not a custom field")
    assert summary.endswith("…")
    assert "Traceback" not in summary


def test_a_long_word_is_cut_inside_the_line_so_the_fix_still_shows():
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "x" * 300
    reason = f"GHL answered 401 (Invalid JWT {jwt}): check GHL_TOKEN and its scopes"
    assert summarise(reason) == (
        "GHL answered 401 (Invalid JWT eyJhbGciOiJIUzI1NiIsInR5cCI6Ik…): check GHL_TOKEN and"
        " its scopes"
    )


def test_a_long_ghl_message_is_cut_keeping_the_status():
    summary = summarise("GHL 400: " + "customFields.0.id must be a mongodb id; " * 20)
    assert summary.startswith("GHL 400: customFields.0.id must be a mongodb id;")
    assert len(summary) == LIMIT


def test_a_call_error_is_stored_without_its_status_and_read_with_it():
    assert summarise_call(422, "tags must be an array") == "GHL 422: tags must be an array"
    assert summarise_call(0, "ConnectionError: " + REFUSED) == (
        "GHL unreachable: connection refused"
    )
    assert summarise_call(200, None) == ""


def ghl_error(exc_or_status) -> GHLError:
    """What GHLClient raises when GHL answers this (a status, or requests' exception)."""
    client = GHLClient(GHL, "tok-secret-123456", "loc_1")
    with responses.RequestsMock() as rsps:
        if isinstance(exc_or_status, Exception):
            rsps.post(f"{GHL}/contacts/upsert", body=exc_or_status)
        else:
            rsps.post(
                f"{GHL}/contacts/upsert",
                status=exc_or_status,
                json={
                    "statusCode": exc_or_status,
                    "message": ["locationId must be a string"],
                    "error": "Unprocessable Entity",
                },
            )
        with pytest.raises(GHLError) as caught:
            client.upsert_contact({"email": "a@example.com"})
    return caught.value


def test_the_clients_own_errors_summarise():
    refused = ghl_error(requests.ConnectionError(REFUSED))
    assert summarise(str(refused)) == "GHL unreachable: connection refused"
    # The client keeps 500 characters of a network error: past a long URL the cause is gone,
    # and the summary names what is left, the exception.
    cut = ghl_error(requests.ConnectionError(REFUSED.replace("/contacts/upsert", LONG_URL)))
    assert "refused" not in str(cut)
    assert summarise(str(cut)) == "GHL unreachable: ConnectionError"
    assert summarise(str(ghl_error(422))) == "GHL 422: locationId must be a string"
    instantly = InstantlyClient.for_setup(INSTANTLY, "instantly-key-0123456789")
    with responses.RequestsMock() as rsps:
        rsps.get(
            f"{INSTANTLY}/api/v2/webhooks",
            status=401,
            json={"statusCode": 401, "error": "Unauthorized", "message": "Invalid API key"},
        )
        with pytest.raises(InstantlyError) as caught:
            instantly.webhooks()
    assert summarise(str(caught.value)) == (
        "Instantly 401: the API key was refused (Invalid API key); check INSTANTLY_API_KEY"
        " (GET /api/v2/webhooks)"
    )


# --- counts and times ------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "said"), [(0, "0 seconds"), (1, "1 second"), (2, "2 seconds")])
def test_plural(count, said):
    assert plural(count, "second") == said


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.4, "0 s"),
        (45, "45 s"),
        (119, "1 min"),
        (7200, "2 h"),
        (86400, "1 day"),
        (4 * 86400, "4 days"),
    ],
)
def test_duration(seconds, said):
    assert duration(seconds) == said


def test_since_and_next_try():
    now = 1_767_600_000.0  # 2026-01-05T08:00:00Z
    assert since("2026-01-05T07:57:00.000Z", now) == "3 min ago"
    assert since("2026-01-05T08:00:00.000Z", now) == "just now"
    assert since("not a time", now) == ""
    assert next_try(now + 125, now) == "next try in 2 min"
    assert next_try(now - 10, now) == "due now"
    assert next_try(None, now) == ""
