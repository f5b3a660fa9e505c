"""Instantly's lead interest statuses, named once for webhooks and polling alike."""

from __future__ import annotations

# Webhook event_type -> status name. Settings, the contact map and tags use the names.
STATUS_BY_EVENT = {
    "lead_interested": "interested",
    "lead_not_interested": "not_interested",
    "lead_neutral": "neutral",
    "lead_meeting_booked": "meeting_booked",
    "lead_meeting_completed": "meeting_completed",
    "lead_closed": "closed",
    "lead_out_of_office": "out_of_office",
    "lead_wrong_person": "wrong_person",
    "lead_no_show": "no_show",
    # No webhook sends this; polling finds it as lt_interest_status -3.
    "lead_lost": "lost",
}
EVENT_BY_STATUS = {status: event for event, status in STATUS_BY_EVENT.items()}

# The REST Lead's numeric lt_interest_status -> status name (api-notes.md).
STATUS_BY_CODE = {
    1: "interested",
    2: "meeting_booked",
    3: "meeting_completed",
    4: "closed",  # "won" in Instantly's UI; the webhook calls it lead_closed
    0: "out_of_office",
    -1: "not_interested",
    -2: "wrong_person",
    -3: "lost",
    -4: "no_show",
}


def status_for_event(event_type: str) -> str | None:
    """The status an interest event sets, or None for other event types."""
    return STATUS_BY_EVENT.get(event_type)


def status_for_code(code: object) -> str | None:
    """The status for a numeric lt_interest_status; None for a plain lead or a custom label."""
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    return STATUS_BY_CODE.get(code)
