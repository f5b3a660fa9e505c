"""Several events of one location synced together, under a backlog: each contact is written
as the single-event path writes it, then the tags that several contacts miss alike go in one
`POST /contacts/bulk/tags/update/add` instead of one call each, and each event then ends
through the single-event path, which finds its contact and its confirmed tags recorded and
calls GHL only for what is left (a reply note, DND, a status's actions).

GHL answers the bulk call per contact. Only the tags it confirmed for a contact are recorded;
an event whose contact it did not confirm adds its tags on its own, by the single-event path,
which also handles a contact deleted in GHL. No Flask, no inbox: the lane records outcomes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from bridge.clients.ghl import GHLClient
from bridge.events import types as event_types
from bridge.events.event import Event
from bridge.store import contacts
from bridge.sync.interest import status_tags, superseded_by
from bridge.sync.steps import ensure_contact, render_tags

log = logging.getLogger("bridge.sync")


@dataclass
class Shared:
    """An event of a batch whose contact is written and whose missing tags may share a call."""

    row: dict[str, Any]
    record: contacts.ContactRecord
    tags: list[str]

    @property
    def event_id(self) -> int:
        return self.row["id"]


def prepare(
    db: sqlite_utils.Database,
    row: dict[str, Any],
    event: Event,
    settings: dict,
    client: GHLClient,
) -> Shared | None:
    """Write the event's contact as the single-event path would (no call when the map shows
    its fields written) and say which of its tags the contact misses. None when it has no
    tags to share: an event type not synced, a status already superseded, no tag missing;
    the single-event path then does the whole of it, as it would have alone.

    An interest status joins safely: its superseded check is made here, before any tag
    goes, with the same rule the single path applies after (nothing between them changes
    the contact's status, since a batch holds one event per contact); its new tags go
    first, as `apply_status` adds them, and the old status's tags are removed afterwards by
    the single path."""
    if not event_types.is_synced(settings, event.event_type):
        return None
    status = event_types.interest_status(event.event_type)
    if status is None:
        tags = render_tags(settings["events"][event.event_type]["tags"], event)
    else:
        known = contacts.get(db, client.location_id, event.email)
        if superseded_by(known, status, event.occurred_at):
            return None
        tags = status_tags(settings, status, event)
    record = ensure_contact(db, event, settings, client)
    missing = record.missing_tags(tags)
    return Shared(row, record, missing) if missing else None


def groups(shared: list[Shared]) -> list[list[Shared]]:
    """The events that miss the same tags, in the batch's order; a group of one adds its
    tags on its own, through the single-event path, as it does today."""
    by_tags: dict[tuple[str, ...], list[Shared]] = {}
    for item in shared:
        by_tags.setdefault(tuple(sorted(item.tags)), []).append(item)
    return list(by_tags.values())


def add_tags_together(
    db: sqlite_utils.Database, group: list[Shared], client: GHLClient
) -> dict[int, str]:
    """Add a group's tags in one call and record them on each contact GHL confirmed.
    Returns, by event id, GHL's message for each event it did not confirm: that event adds
    its tags on its own. Raises the call's GHLError when the request failed as a whole."""
    tags = group[0].tags
    answers = client.bulk_add_tags(list(dict.fromkeys(i.record.contact_id for i in group)), tags)
    unconfirmed: dict[int, str] = {}
    for item in group:
        message = answers[item.record.contact_id]
        if message is None:
            contacts.record_tags(db, item.record, tags)
        else:
            unconfirmed[item.event_id] = message
            log.warning(
                "event %d: GHL did not confirm tags for contact %s (%s); adding them on its own",
                item.event_id,
                item.record.contact_id,
                message,
            )
    return unconfirmed
