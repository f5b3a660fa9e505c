"""What GHL calls an event would cause, worked out from the store alone (for dry runs)."""

from __future__ import annotations

import sqlite_utils

from bridge.events.event import Event
from bridge.events.types import interest_status, is_synced
from bridge.store import contacts, state
from bridge.sync.fieldmap import CUSTOM, CUSTOM_FIELDS_STATE, FieldMapError, build_fields
from bridge.sync.steps import render_tags


class CachedFieldIds:
    """Custom field ids from the cache the worker keeps, else the field key itself:
    a dry run never calls GHL."""

    def __init__(self, db: sqlite_utils.Database):
        cached = state.get(db, CUSTOM_FIELDS_STATE) or {}
        self.ids: dict[str, str] = cached.get("ids", {})

    def id_for(self, field_key: str) -> str:
        return self.ids.get(field_key, field_key)


def ghl_changes(db: sqlite_utils.Database, event: Event, settings: dict) -> list[str]:
    """Plain-language GHL changes the worker would make for this event, as of now."""
    if not is_synced(settings, event.event_type):
        return [f"none: {event.event_type} is not synced in settings"]
    rule = settings["events"].get(event.event_type) or {"tags": []}
    try:
        fields = build_fields(event.payload, settings["field_map"], CachedFieldIds(db))
    except FieldMapError as exc:
        return [f"fails: {exc}"]
    record = contacts.get(db, event.email)
    changes = []
    if record is None:
        names = ", ".join(_label(n) for n in fields) or "email only"
        changes.append(f"upsert contact ({names})")
    elif not record.has_written(fields):
        changed = [_label(n) for n, v in fields.items() if record.fields.get(n) != v]
        changes.append(f"update contact ({', '.join(changed)})")
    tags = render_tags(rule["tags"], event)
    missing = tags if record is None else record.missing_tags(tags)
    if missing:
        changes.append(f"add tags {', '.join(missing)}")
    status = interest_status(event.event_type)
    if status is not None:
        before = record.interest_status if record else None
        changes.append(f"interest status {before or 'none'} -> {status}")
    return changes or ["no GHL call: the contact is already in step"]


def _label(name: str) -> str:
    return f"custom field {name[len(CUSTOM) :]}" if name.startswith(CUSTOM) else name
