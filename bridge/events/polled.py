"""Events built from what polling finds, in the shape of the webhook delivery.

A reply found by `GET /api/v2/emails` and the same reply delivered by webhook must become
the same Event (same key, same payload names), so the sync core never knows which path
found it. The REST Lead uses snake_case and keeps custom variables under `payload`; the
webhook carries lead fields top level in camelCase with custom variables beside them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import quote

from bridge.clock import parse_time
from bridge.events.event import BadEmail, Event, checked_email, idempotency_key, normalise_email
from bridge.events.times import occurred_at

SOURCE = "poll"
# Where the webhook's unibox_url points for a reply: the Unibox searching its thread.
UNIBOX = (
    "https://app.instantly.ai/app/unibox?thread_search=thread:{thread}&selected_wks={workspace}"
)
log = logging.getLogger("bridge.reconcile")

# REST Lead field -> the name the webhook gives the same value.
LEAD_FIELDS = {
    "first_name": "firstName",
    "last_name": "lastName",
    "company_name": "companyName",
    "phone": "phone",
    "website": "website",
    "personalization": "personalization",
    "job_title": "jobTitle",
}
# Names the webhook itself uses: a custom variable never overwrites them.
RESERVED = frozenset(
    {
        "event_type",
        "timestamp",
        "workspace",
        "campaign_id",
        "campaign_name",
        "campaign",
        "lead_email",
        "email",
        "email_id",
        "email_account",
        "reply_subject",
        "reply_text",
        "reply_html",
        "reply_text_snippet",
        "step",
        "variant",
        "is_first",
        "unibox_url",
        "thread_id",
    }
)


def lead_email(record: dict[str, Any]) -> str:
    """The normalised email of a REST Lead; '' when it has none, or one the webhook would
    refuse (logged, without the address, so a skipped lead is seen)."""
    value = record.get("email")
    if value is None or value == "":
        return ""
    try:
        return checked_email(value)
    except BadEmail as exc:
        log.warning("polled lead %s skipped: its email %s", record.get("id") or "?", exc)
        return ""


def lead_fields(lead: dict[str, Any] | None) -> dict[str, Any]:
    """A REST Lead's data under the webhook's names: custom variables, then standard fields."""
    if not lead:
        return {}
    out: dict[str, Any] = {}
    custom = lead.get("payload")
    if isinstance(custom, dict):
        for name, value in custom.items():
            if name not in RESERVED and value is not None:
                out[name] = value
    for rest_name, webhook_name in LEAD_FIELDS.items():
        value = lead.get(rest_name)
        # An empty standard field must not hide a value the custom variables carry.
        if value not in (None, ""):
            out[webhook_name] = value
        else:
            out.setdefault(webhook_name, value if value is not None else "")
    return out


def best_lead(records: list[dict[str, Any]], campaign_id: str) -> dict[str, Any] | None:
    """Of one email's lead records, the one in this campaign, else the latest updated."""
    if not records:
        return None
    for record in records:
        if campaign_id and record.get("campaign") == campaign_id:
            return record
    return max(records, key=lambda r: str(r.get("timestamp_updated") or ""))


def reply_event(
    email: dict[str, Any],
    event_type: str,
    lead: dict[str, Any] | None,
    campaign_name: str,
    found_at: datetime | None = None,
) -> Event | None:
    """An Email from `GET /api/v2/emails` (a received reply) as a reply event, found by a
    poll at `found_at` (now); None when it names no lead."""
    address = normalise_email(email.get("lead")) or normalise_email(email.get("from_address_email"))
    email_id = str(email.get("id") or "")
    if not address or not email_id:
        return None
    campaign_id = str(email.get("campaign_id") or "")
    timestamp = str(email.get("timestamp_created") or "")
    body = email.get("body") if isinstance(email.get("body"), dict) else {}
    thread_id = str(email.get("thread_id") or "")
    payload: dict[str, Any] = {
        **lead_fields(lead),
        "event_type": event_type,
        "timestamp": timestamp,
        "workspace": email.get("organization_id"),
        "campaign_id": campaign_id or None,
        "campaign_name": campaign_name or None,
        "campaign": campaign_id or None,
        "lead_email": address,
        "email": address,
        "email_account": email.get("eaccount"),
        "email_id": email_id,
        "reply_subject": email.get("subject"),
        "reply_text": body.get("text"),
        "reply_html": body.get("html"),
        "reply_text_snippet": email.get("content_preview"),
        "thread_id": thread_id or None,
        "unibox_url": unibox_url(thread_id, str(email.get("organization_id") or "")),
    }
    if lead:
        # The webhook's step/variant are those of the email the lead replied to.
        payload["step"] = lead.get("email_replied_step")
        payload["variant"] = lead.get("email_replied_variant")
    return _event(
        event_type, address, campaign_id, campaign_name, timestamp, email_id, payload, found_at
    )


def unibox_url(thread_id: str, workspace: str) -> str | None:
    """The Unibox link the webhook gives a reply of this thread; None unless both are known."""
    if not thread_id or not workspace:
        return None
    return UNIBOX.format(thread=quote(thread_id, safe=""), workspace=quote(workspace, safe=""))


def interest_event(
    lead: dict[str, Any],
    event_type: str,
    campaign_name: str,
    changed_at: str,
    found_at: datetime | None = None,
) -> Event | None:
    """A lead whose interest status changed, as the interest webhook would deliver it,
    found by a poll at `found_at` (now)."""
    address = lead_email(lead)
    if not address:
        return None
    campaign_id = str(lead.get("campaign") or "")
    payload: dict[str, Any] = {
        **lead_fields(lead),
        "event_type": event_type,
        "timestamp": changed_at,
        "workspace": lead.get("organization"),
        "campaign_id": campaign_id or None,
        "campaign_name": campaign_name or None,
        "campaign": campaign_id or None,
        "lead_email": address,
        "email": address,
    }
    return _event(
        event_type, address, campaign_id, campaign_name, changed_at, "", payload, found_at
    )


def _event(
    event_type: str,
    address: str,
    campaign_id: str,
    campaign_name: str,
    timestamp: str,
    email_id: str,
    payload: dict[str, Any],
    found_at: datetime | None,
) -> Event:
    # A polled status without a time stays without one (superseded by any applied status);
    # one dated ahead of the poll is ordered by the poll, as the webhook orders by arrival.
    claimed = parse_time(timestamp)
    return Event(
        key=idempotency_key(event_type, address, campaign_id, timestamp, email_id),
        event_type=event_type,
        email=address,
        payload={k: v for k, v in payload.items() if v is not None},
        campaign_id=campaign_id,
        campaign_name=campaign_name,
        occurred_at=occurred_at(claimed, found_at) if claimed else "",
        source=SOURCE,
    )
