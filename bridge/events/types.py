"""Instantly's event types and lead interest statuses, named once for webhooks and polling,
and which path an event type takes (plain event, interest status, custom label) and
whether the settings sync it. The webhook and the worker ask the same question here."""

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


# Instantly's own event types: the Webhook schema's event_type enum (api_v2.openapi.json),
# plus the names deliveries carry where they differ from the subscription name
# (subscribe email_link_clicked, receive link_clicked; auto_reply_received arrives but
# cannot be subscribed to). Any other event_type is a custom lead label's text.
INSTANTLY_EVENT_TYPES = frozenset(
    {
        "email_sent",
        "email_opened",
        "email_link_clicked",
        "link_clicked",
        "reply_received",
        "auto_reply_received",
        "email_bounced",
        "lead_unsubscribed",
        "campaign_completed",
        "account_error",
        "supersearch_enrichment_completed",
        *STATUS_BY_EVENT,
    }
)
LABEL_PREFIX = "label:"


def is_custom_label(event_type: str) -> bool:
    """True for an event_type that is not one of Instantly's: a custom lead label."""
    return bool(event_type) and event_type not in INSTANTLY_EVENT_TYPES


def interest_status(event_type: str) -> str | None:
    """The interest status an event sets: a status name, `label:<text>` for a custom
    label, None for events that set no status."""
    status = STATUS_BY_EVENT.get(event_type)
    if status:
        return status
    if is_custom_label(event_type):
        return LABEL_PREFIX + event_type
    return None


def label_of(status: str) -> str:
    """The custom label's text in a `label:<text>` status; '' for a named status."""
    return status[len(LABEL_PREFIX) :] if status.startswith(LABEL_PREFIX) else ""


def is_synced(settings: dict, event_type: str) -> bool:
    """Whether the settings sync this event type (False: answer 200 ignored)."""
    interest = settings["interest"]
    if event_type in STATUS_BY_EVENT:
        return bool(interest["enabled"])
    if is_custom_label(event_type):
        return bool(interest["enabled"] and interest["sync_custom_labels"])
    rule = settings["events"].get(event_type)
    return bool(rule and rule["enabled"])


def synced_event_types(settings: dict) -> list[str]:
    """The named event types the settings sync, for webhook subscriptions. Custom labels
    have no fixed name: only an all-events webhook delivers them."""
    named = {t for t, rule in settings["events"].items() if rule["enabled"]}
    if settings["interest"]["enabled"]:
        named |= set(STATUS_BY_EVENT)
    return sorted(named)
