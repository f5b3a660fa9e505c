"""The steps every event's sync is made of: ensure the contact, render and add its tags."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from bridge.clients.ghl import GHLClient, GHLRejected
from bridge.events import template
from bridge.events.event import Event
from bridge.store import contacts
from bridge.sync.fieldmap import CustomFieldIds, build_fields, upsert_body

log = logging.getLogger("bridge.sync")

# A tag is a short label: cut to this, a long campaign name or custom variable (values a
# lead's data can write) cannot hang a page of text on every contact.
MAX_TAG_LENGTH = 100


@dataclass(frozen=True)
class Outcome:
    """How an event ended: done, ignored or superseded, with the contact and a note."""

    status: str
    contact_id: str | None = None
    note: str | None = None


def ensure_contact(
    db: sqlite_utils.Database, event: Event, settings: dict, client: GHLClient
) -> contacts.ContactRecord:
    """Upsert the contact unless the map shows these exact fields were written."""
    custom_ids = CustomFieldIds(db, client) if _uses_custom_fields(settings) else None
    fields = build_fields(event.payload, settings["field_map"], custom_ids)
    record = contacts.get(db, client.location_id, event.email)
    if record is not None and record.has_written(fields):
        return record
    body = {**upsert_body(fields), "email": event.email, "source": settings["sync"]["source"]}
    try:
        contact_id, created = client.upsert_contact(body)
    except GHLRejected as exc:
        # GHL refuses a whole contact for one bad value (a malformed phone, say):
        # write it without the fields the error names rather than not at all.
        named = _fields_named(exc.message, fields)
        if not named:
            raise
        log.warning("GHL refused %s for %s; writing the contact without them", named, event.email)
        fields = {k: v for k, v in fields.items() if k not in named}
        body = {**upsert_body(fields), "email": event.email, "source": settings["sync"]["source"]}
        contact_id, created = client.upsert_contact(body)
    return contacts.record_upsert(db, client.location_id, event.email, contact_id, fields, created)


def add_missing_tags(
    db: sqlite_utils.Database, record: contacts.ContactRecord, tags: list[str], client: GHLClient
) -> list[str]:
    """Add the tags this contact does not have from the bridge yet; returns them."""
    missing = record.missing_tags(tags)
    if missing:
        client.add_tags(record.contact_id, missing)
        contacts.record_tags(db, record, missing)
    return missing


def tag_values(event: Event) -> dict[str, str]:
    """The placeholder values a tag template may use."""
    payload = event.payload

    def text(name: str) -> str:
        value = payload.get(name)
        return "" if value is None or isinstance(value, dict | list) else str(value).strip()

    return {
        "event_type": event.event_type,
        "campaign_name": event.campaign_name,
        "campaign_id": event.campaign_id,
        "step": text("step"),
        "variant": text("variant"),
        "email_account": text("email_account"),
    }


def render_tags(
    templates: list[str], event: Event, values: dict[str, str] | None = None
) -> list[str]:
    """Render tag templates, normalised the way GHL stores them (lowercase).

    A template whose placeholders all render empty is skipped, so a missing campaign
    name never produces a bare 'instantly-campaign-' tag.
    """
    values = values if values is not None else tag_values(event)
    out: list[str] = []
    for text in templates:
        names = template.names(text)
        if names and not any(values.get(n) for n in names):
            continue
        tag = normalise_tag(template.fill(text, values))
        if tag and tag not in out:
            out.append(tag)
    return out


def normalise_tag(tag: str) -> str:
    """A tag as GHL keeps it (lowercase, single spaces), cut to MAX_TAG_LENGTH."""
    return " ".join(tag.split()).lower()[:MAX_TAG_LENGTH].rstrip()


def _uses_custom_fields(settings: dict) -> bool:
    return any(row["ghl"].startswith("contact.") for row in settings["field_map"])


def _fields_named(message: str, fields: dict[str, Any]) -> list[str]:
    lowered = message.lower()
    return [
        name
        for name in fields
        if not name.startswith("customField:")
        and re.search(rf"\b{re.escape(name.lower())}\b", lowered)
    ]
