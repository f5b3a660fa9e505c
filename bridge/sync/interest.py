"""Interest statuses and custom labels to GHL: a contact carries the tags of its latest
status only, statuses apply in the order they happened, and a status's optional actions
(workflow, opportunity) follow it."""

from __future__ import annotations

import sqlite_utils

from bridge.clients.ghl import GHLClient
from bridge.clock import parse_time
from bridge.events.event import Event
from bridge.events.times import ahead_note
from bridge.events.types import interest_status, label_of
from bridge.store import contacts
from bridge.sync.opportunity import place_opportunity
from bridge.sync.steps import Outcome, add_missing_tags, ensure_contact, render_tags, tag_values
from bridge.sync.workflow import add_to_workflow


def sync_interest(
    db: sqlite_utils.Database, event: Event, settings: dict, client: GHLClient
) -> Outcome:
    """Apply the event's status unless a newer one is applied already (zero calls then)."""
    status = interest_status(event.event_type)
    if status is None:
        raise ValueError(f"{event.event_type} sets no interest status")
    record = contacts.get(db, client.location_id, event.email)
    # An event dated ahead of its arrival was given its arrival as its time: say so in
    # what the event shows, whichever way it ends.
    ahead = ahead_note(event)
    stale = superseded_by(record, status, event.occurred_at)
    if stale:
        note = f"{stale}; {ahead}" if ahead else stale
        return Outcome("superseded", record.contact_id if record else None, note)
    record = ensure_contact(db, event, settings, client)
    apply_status(db, record, status, status_tags(settings, status, event), event, client)
    # Also for a status already applied: each action is keyed, so a repeat costs no call,
    # and an action that failed after the status was recorded is completed on retry.
    add_to_workflow(db, record, status, settings, client)
    place_opportunity(db, record, event, status, settings, client)
    return Outcome("done", record.contact_id, ahead)


def superseded_by(record: contacts.ContactRecord | None, status: str, at: str) -> str | None:
    """Why an event's status must not be applied, or None to apply it.

    Older than the status applied: superseded. The same moment with another status:
    the one applied first stays, so redelivery in any order ends the same way.
    """
    if record is None or not record.interest_status or not record.interest_at:
        return None
    applied = parse_time(record.interest_at)
    if applied is None:
        return None
    moment = parse_time(at)
    current = f"{record.interest_status} at {record.interest_at}"
    if moment is None:
        return f"{status} has no readable time; {current} is applied"
    if moment < applied:
        return f"{status} at {at} is older than {current}, already applied"
    if moment == applied and status != record.interest_status:
        return f"{status} at {at} is no newer than {current}, already applied"
    return None


def status_tags(settings: dict, status: str, event: Event) -> list[str]:
    """The tags a status adds, rendered for this event."""
    interest = settings["interest"]
    label = label_of(status)
    templates = interest["custom_label_tags"] if label else interest["tags"][status]
    return render_tags(templates, event, {**tag_values(event), "label": label})


def apply_status(
    db: sqlite_utils.Database,
    record: contacts.ContactRecord,
    status: str,
    tags: list[str],
    event: Event,
    client: GHLClient,
) -> None:
    """Add the status's tags, then remove the previous status's (only those the bridge
    added and the new status does not use); remember the status once GHL confirmed.

    Adding first means a failure in between leaves both statuses' tags, never neither.
    """
    same = record.interest_status == status
    previous = [] if same else [t for t in record.interest_tags if t not in tags]
    add_missing_tags(db, record, tags, client)
    stale = [t for t in previous if t in record.tags]
    if stale:
        client.remove_tags(record.contact_id, stale)
        contacts.forget_tags(db, record, stale)
    applied = sorted(set(tags) | set(record.interest_tags)) if same else tags
    contacts.record_interest(db, record, status, event.occurred_at, applied)
