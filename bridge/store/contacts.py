"""The contact map: per location and email, the GHL contact id and what the bridge already
wrote. The same email in two locations is two contacts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from bridge.clock import now_iso
from bridge.store import conversations


@dataclass
class ContactRecord:
    email: str
    contact_id: str
    location_id: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    interest_status: str | None = None
    interest_at: str | None = None
    # The tags the current interest status added, removed when the status changes.
    interest_tags: list[str] = field(default_factory=list)

    def has_written(self, fields: dict[str, Any]) -> bool:
        """True when every one of `fields` was already written with the same value."""
        return all(self.fields.get(name) == value for name, value in fields.items())

    def missing_tags(self, tags: list[str]) -> list[str]:
        have = set(self.tags)
        return [t for t in tags if t not in have]


def get(db: sqlite_utils.Database, location_id: str, email: str) -> ContactRecord | None:
    rows = list(db["contacts"].rows_where("location_id = ? AND email = ?", [location_id, email]))
    if not rows or not rows[0]["contact_id"]:
        return None
    row = rows[0]
    return ContactRecord(
        email=row["email"],
        contact_id=row["contact_id"],
        location_id=row["location_id"],
        fields=json.loads(row["fields"] or "{}"),
        tags=json.loads(row["tags"] or "[]"),
        interest_status=row["interest_status"],
        interest_at=row["interest_at"],
        interest_tags=json.loads(row["interest_tags"] or "[]"),
    )


def record_upsert(
    db: sqlite_utils.Database,
    location_id: str,
    email: str,
    contact_id: str,
    fields: dict[str, Any],
    created: bool = False,
) -> ContactRecord:
    """Remember the contact id and merge in the fields just written; `created`: GHL made the
    contact on this upsert."""
    record = get(db, location_id, email)
    row: dict[str, Any] = {"location_id": location_id, "email": email, "contact_id": contact_id}
    if record is None or record.contact_id != contact_id:
        record = ContactRecord(email=email, contact_id=contact_id, location_id=location_id)
        # Another contact's conversation (m044) is not this one's.
        row["conversation_id"] = None
    if created:
        row["conversation_id"] = conversations.NONE_YET
    record.fields.update(fields)
    row.update(
        fields=json.dumps(record.fields, sort_keys=True),
        tags=json.dumps(record.tags),
        updated_at=now_iso(),
    )
    db["contacts"].upsert(row, pk=("location_id", "email"))
    return record


def record_tags(db: sqlite_utils.Database, record: ContactRecord, added: list[str]) -> None:
    """Remember tags the bridge has added to this contact."""
    record.tags = sorted(set(record.tags) | set(added))
    _save_tags(db, record)


def forget_tags(db: sqlite_utils.Database, record: ContactRecord, removed: list[str]) -> None:
    """Remember tags the bridge has removed from this contact."""
    record.tags = sorted(set(record.tags) - set(removed))
    _save_tags(db, record)


def record_interest(
    db: sqlite_utils.Database,
    record: ContactRecord,
    status: str,
    at: str,
    tags: list[str],
) -> None:
    """Remember the interest status applied (only once GHL has confirmed its tags)."""
    record.interest_status, record.interest_at, record.interest_tags = status, at, sorted(tags)
    db.execute(
        "UPDATE contacts SET interest_status = ?, interest_at = ?, interest_tags = ?,"
        " updated_at = ? WHERE location_id = ? AND email = ?",
        [
            status,
            at,
            json.dumps(record.interest_tags),
            now_iso(),
            record.location_id,
            record.email,
        ],
    )


def _save_tags(db: sqlite_utils.Database, record: ContactRecord) -> None:
    db.execute(
        "UPDATE contacts SET tags = ?, updated_at = ? WHERE location_id = ? AND email = ?",
        [json.dumps(record.tags), now_iso(), record.location_id, record.email],
    )


def forget(db: sqlite_utils.Database, location_id: str, email: str) -> None:
    """Drop a mapping whose GHL contact no longer exists."""
    db.execute("DELETE FROM contacts WHERE location_id = ? AND email = ?", [location_id, email])
