"""Helpers for the config page, doctor and webhook-registration tests.

Response bodies are built in the shapes of the vendors' OpenAPI schemas (Instantly's
`Webhook`, GHL's `GetLocationByIdSchema`, `CustomFieldSchema`, ...); the spec tests check
them, and every request made against them, with tests/support/specs.py.
"""

from __future__ import annotations

import json
import re
import socket

import pytest

from tests.helpers import GHL_TOKEN, LOCATION_ID, WEBHOOK_SECRET

ADMIN_PASSWORD = "admin-password-5be1c0"
INSTANTLY_KEY = "instantly-key-8c2f0d9e4b7a1f36-XYZW"
INSTANTLY = "https://api.instantly.ai"
GHL = "https://services.leadconnectorhq.com"
BRIDGE_URL = "https://bridge.example.com/webhooks/instantly"
ORG = "9b8c7d6e-0000-4000-8000-000000000001"
CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


def admin_env(env: dict) -> dict:
    """The test environment plus an admin password and an Instantly key."""
    return {**env, "BRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD, "INSTANTLY_API_KEY": INSTANTLY_KEY}


def all_secrets() -> list[str]:
    return [ADMIN_PASSWORD, INSTANTLY_KEY, GHL_TOKEN, WEBHOOK_SECRET, "test-secret-key"]


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client, password: str = ADMIN_PASSWORD):
    token = csrf_token(client)
    return client.post("/login", data={"password": password, "csrf_token": token})


def post(client, path: str, data: dict | None = None, **kwargs):
    """POST a form the way the page does: with the session's CSRF token."""
    token = csrf_token(client, "/settings")
    return client.post(path, data={"csrf_token": token, **(data or {})}, **kwargs)


# --- vendor bodies ---------------------------------------------------------------------------


def instantly_webhook(
    hook_id: str,
    event_type: str,
    url: str = BRIDGE_URL,
    headers: dict | None = None,
    status: int | None = 1,
) -> dict:
    """A `Webhook` as GET/POST /api/v2/webhooks answer it."""
    return {
        "id": hook_id,
        "organization": ORG,
        "campaign": None,
        "name": f"hook {event_type}",
        "target_hook_url": url,
        "event_type": event_type,
        "custom_interest_value": None,
        "headers": headers,
        "timestamp_created": "2026-01-05T10:00:00.000Z",
        "status": status,
        "timestamp_error": "2026-01-06T10:00:00.000Z" if status == -1 else None,
    }


def ghl_location(name: str = "Acme Dental") -> dict:
    return {"location": {"id": LOCATION_ID, "companyId": "comp_1", "name": name}}


def ghl_custom_field(key: str, name: str, field_id: str) -> dict:
    return {
        "id": field_id,
        "name": name,
        "fieldKey": key,
        "placeholder": name,
        "dataType": "TEXT",
        "position": 0,
        "locationId": LOCATION_ID,
        "model": "contact",
    }


def ghl_error(status: int, message: str) -> dict:
    names = {401: "Unauthorized", 403: "Forbidden", 400: "Bad Request", 422: "Unprocessable"}
    return {"statusCode": status, "message": message, "error": names.get(status, "Error")}


def check_against_specs(calls) -> None:
    """Every request `responses` saw, and every JSON answer, must match the vendor spec."""
    from tests.support.specs import ghl_spec, instantly_spec, specs_available

    if not specs_available():
        pytest.skip("../shared/specs not found: request/response shapes cannot be checked")
    for call in calls:
        request = call.request
        spec = instantly_spec() if request.url.startswith(INSTANTLY) else ghl_spec()
        body = json.loads(request.body) if request.body else None
        errors = spec.validate_request(
            request.method, request.url, dict(request.headers), None, body
        )
        assert not errors, f"{request.method} {request.url}: {errors}"
        response = call.response
        if response is not None and response.content:
            errors = spec.validate_response(
                request.method, request.url, response.status_code, response.json()
            )
            assert not errors, f"answer to {request.method} {request.url}: {errors}"


def form_row(page: str, field: str) -> str:
    """The settings page's table row holding the input named `field`, with the error row
    that follows it."""
    start = page.index(f'name="{field}"')
    return page[start : page.index("</tr>", page.index("</tr>", start) + 5)]


def resolve_publicly(monkeypatch) -> None:
    """bridge.example.com resolves to a public address (no test asks a real DNS server)."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "bridge.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]
        return resolve(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
