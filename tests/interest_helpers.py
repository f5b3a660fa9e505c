"""Helpers for the interest-status and optional-action tests: deliveries shaped like
Instantly's interest, unsubscribe and bounce webhooks, and settings edits."""

from __future__ import annotations

import copy
from typing import Any

from bridge import settings as settings_mod
from tests.helpers import reply_payload
from tests.support.ghl_fake import FakeGHL, _template_pattern

EMAIL = "jordan.lead@example.com"


def interest_payload(event_type: str, timestamp: str, **overrides: Any) -> dict[str, Any]:
    """An interest delivery in the shape of the captured lead_interested sample: lead
    fields at the top level, no email_id."""
    body = reply_payload(event_type=event_type, timestamp=timestamp)
    for reply_only in ("email_id", "is_first", "email_account", "unibox_url"):
        body.pop(reply_only)
    body.update(overrides)
    return body


def lead_event_payload(event_type: str, timestamp: str, **overrides: Any) -> dict[str, Any]:
    """lead_unsubscribed / email_bounced: the base fields and the lead's."""
    body = {
        "timestamp": timestamp,
        "event_type": event_type,
        "workspace": "086e295d-72ec-481b-8e54-260d8708afbf",
        "campaign_id": "f1631d04-7c81-4444-84bb-73a3a0c3a44b",
        "campaign_name": "Trust Attorneys Q4",
        "lead_email": EMAIL,
        "email": EMAIL,
        "firstName": "Jordan",
        "lastName": "Lead",
        "companyName": "Lead & Co",
    }
    body.update(overrides)
    return body


def change_settings(db, path: str, **values: Any) -> dict:
    """Set `values` in the stored settings under a dotted section path ("actions.workflow")."""
    _, current = settings_mod.current(db)
    target = current
    for part in path.split("."):
        target = target.setdefault(part, {})
    target.update(values)
    settings_mod.save(db, current)
    return current


def add_opportunity_search(fake: FakeGHL) -> None:
    """Teach a FakeGHL `GET /opportunities/search`, which the test kit does not answer yet
    (it answers 501 for operations it lacks): filters as the spec's query parameters say,
    answer shaped like SearchSuccessfulResponseDto."""

    def search(req: Any) -> tuple[int, dict[str, Any]]:
        def first(name: str) -> str | None:
            values = req.query.get(name) or []
            return values[0] if values else None

        fake._check_location(first("location_id"))
        filters = {
            "contactId": first("contact_id"),
            "pipelineId": first("pipeline_id"),
            "pipelineStageId": first("pipeline_stage_id"),
        }
        status = first("status")
        found = [
            copy.deepcopy(item)
            for item in fake.opportunities.values()
            if all(value is None or item.get(key) == value for key, value in filters.items())
            and (status in (None, "all") or item["status"] == status)
        ]
        return 200, {"opportunities": found, "meta": {"total": len(found), "currentPage": 1}}

    route = ("GET", "/opportunities/search")
    fake._routes.insert(0, (*route, _template_pattern(route[1], named=True), search))
