"""Helpers the tests share: deliveries shaped like Instantly's, posted like Instantly does."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

SAMPLES_DIR = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "specs"
    / "instantly"
    / "webhook-samples"
)
WEBHOOK_SECRET = "test-webhook-secret-4f9a"
GHL_TOKEN = "ghl-test-token"
LOCATION_ID = "loc_test"


def post_webhook(client, body, secret=WEBHOOK_SECRET, **kwargs):
    """POST a delivery the way Instantly does, with the shared-secret header."""
    headers = kwargs.pop("headers", {})
    if secret is not None:
        headers = {"X-Bridge-Secret": secret, **headers}
    if isinstance(body, dict | list):
        kwargs["data"] = json.dumps(body)
        kwargs.setdefault("content_type", "application/json")
    else:
        kwargs["data"] = body
    return client.post("/webhooks/instantly", headers=headers, **kwargs)


def deliver(client, worker, body):
    """POST a delivery and let the worker process everything due."""
    answer = post_webhook(client, body)
    assert answer.status_code in (200, 202), answer.json
    worker.run(drain=True)
    return answer


def retry_due(db, worker):
    """Make every waiting retry due now, and let the worker take them."""
    db.execute("UPDATE events SET next_attempt_at = 0")
    worker.run(drain=True)


def routes(fake):
    """(method, path template) of each call the fake GHL recorded, in order."""
    out = []
    for call in fake.calls:
        route = fake._route(call.method, call.path)
        out.append(f"{call.method} {route[1] if route else call.path}")
    return out


def reply_payload(**overrides):
    """A reply_received delivery in the shape of the captured samples."""
    body = {
        "timestamp": "2025-11-24T05:45:10.314Z",
        "event_type": "reply_received",
        "workspace": "086e295d-72ec-481b-8e54-260d8708afbf",
        "campaign_id": "f1631d04-7c81-4444-84bb-73a3a0c3a44b",
        "campaign_name": "Trust Attorneys Q4",
        "unibox_url": "https://app.instantly.ai/app/unibox?thread_search=thread:abc",
        "email_account": "sender@agency.example",
        "lead_email": "Jordan.Lead@Example.com ",
        "email": "jordan.lead@example.com",
        "firstName": "Jordan",
        "lastName": "Lead",
        "companyName": "Lead & Co",
        "step": 1,
        "variant": 1,
        "email_id": "019ab465-0036-7b51-9914-3353686e7dc1",
        "is_first": True,
        "reply_subject": "Re: Your thoughts?",
        "reply_text": "Sure, how about 11/26 9am ET?\n\nJordan",
        "reply_text_snippet": "Sure, how about 11/26 9am ET?",
    }
    body.update(overrides)
    return body


def sample_payloads() -> list[tuple[str, dict]]:
    """The captured real deliveries in ../shared (their bodies), when present."""
    if not SAMPLES_DIR.is_dir():
        return []
    out = []
    for path in sorted(SAMPLES_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        out.append((path.name, data.get("body", data) if "headers" in data else data))
    return out


def sample_params() -> list:
    """Captured payloads as pytest params, or one skipped param saying what is missing."""
    return sample_payloads() or [
        pytest.param(
            "",
            {},
            marks=pytest.mark.skip(
                reason=f"{SAMPLES_DIR} not found: captured payload tests need it"
            ),
        )
    ]


def file_mode(path: Path | str) -> int:
    """A file's permission bits (0o600)."""
    return stat.S_IMODE(os.stat(path).st_mode)


def keys_in(path: Path | str) -> set[str]:
    """The event keys stored in the database file at `path`."""
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT key FROM events")}
    finally:
        conn.close()


# The events table's columns before m042 gave events a location and a workspace.
EVENT_COLUMNS_BEFORE_M042 = (
    "key, source, event_type, email, campaign_id, campaign_name, occurred_at, payload,"
    " status, attempts, next_attempt_at, received_at, updated_at"
)


def enqueue_before_m042(db, event) -> int:
    """Store an event as a database migrated only up to m041 would hold it; its id."""
    from bridge.clock import now_iso

    stamp = now_iso()
    cursor = db.execute(
        f"INSERT INTO events ({EVENT_COLUMNS_BEFORE_M042})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, ?, ?)",
        [
            event.key,
            event.source,
            event.event_type,
            event.email,
            event.campaign_id,
            event.campaign_name,
            event.occurred_at,
            json.dumps(event.payload),
            stamp,
            stamp,
        ],
    )
    return cursor.lastrowid
