"""Helpers for the interest-status and optional-action tests: deliveries shaped like
Instantly's interest, unsubscribe and bounce webhooks, and settings edits."""

from __future__ import annotations

from typing import Any

from bridge import settings as settings_mod
from tests.helpers import reply_payload

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


def switch_on_opportunity(
    db,
    fake,
    names: tuple[str, ...] = ("New", "Interested", "Booked", "Won"),
    default: str = "Interested",
    stages: dict[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    """A pipeline in the fake GHL and the opportunity action on for it: every chosen status
    to the `default` stage, or to the stage `stages` names for it. Returns the pipeline id
    and the stage ids by name."""
    pipeline = fake.add_pipeline("Cold email", list(names))
    stage = {s["name"]: s["id"] for s in pipeline["stages"]}
    by_status = stages if stages is not None else {"meeting_booked": "Booked", "closed": "Won"}
    change_settings(
        db,
        "actions.opportunity",
        enabled=True,
        pipeline_id=pipeline["id"],
        stage_id=stage[default],
        stages={status: stage[name] for status, name in by_status.items()},
    )
    return pipeline["id"], stage


def calls(fake) -> list[tuple[str, str, Any]]:
    """The fake GHL's calls as (method, path, JSON body)."""
    return [(c.method, c.path, c.json) for c in fake.calls]


def assert_moved_from_interested_to_booked(fake, contact_id: str) -> None:
    """One tag added and one removed, and GHL keeps the tags that are not the bridge's."""
    assert calls(fake) == [
        ("POST", f"/contacts/{contact_id}/tags", {"tags": ["instantly-meeting-booked"]}),
        ("DELETE", f"/contacts/{contact_id}/tags", {"tags": ["instantly-interested"]}),
    ]
    assert sorted(fake.contact_by_email(EMAIL)["tags"]) == [
        "instantly-campaign-trust attorneys q4",
        "instantly-meeting-booked",
        "instantly-replied",
        "vip",
    ]
