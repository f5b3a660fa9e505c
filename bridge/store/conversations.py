"""What the bridge keeps of GHL's Conversations (m044): the contact's conversation id, in the
contact map, and per Instantly thread of a contact the GHL email its next reply threads
under."""

from __future__ import annotations

import sqlite_utils

from bridge.clock import now_iso

# The contact map's conversation_id for a contact GHL created on the bridge's upsert: it had
# no conversation then. NULL means not known.
NONE_YET = ""


def conversation_id(db: sqlite_utils.Database, location_id: str, email: str) -> str | None:
    """The contact's GHL conversation, as last found or made; NONE_YET for a contact GHL
    made on the bridge's upsert before it had one; None when not known."""
    row = db.execute(
        "SELECT conversation_id FROM contacts WHERE location_id = ? AND email = ?",
        [location_id, email],
    ).fetchone()
    return row[0] if row else None


def remember_conversation(
    db: sqlite_utils.Database, location_id: str, email: str, conversation: str
) -> None:
    """Remember the contact's conversation in its contact map row."""
    db.execute(
        "UPDATE contacts SET conversation_id = ? WHERE location_id = ? AND email = ?",
        [conversation, location_id, email],
    )


def thread_email(
    db: sqlite_utils.Database, location_id: str, contact_id: str, thread_key: str
) -> str | None:
    """The emailMessageId the thread's next reply is threaded under; None for a new thread."""
    row = db.execute(
        "SELECT email_message_id FROM email_threads"
        " WHERE location_id = ? AND contact_id = ? AND thread_key = ?",
        [location_id, contact_id, thread_key],
    ).fetchone()
    return row[0] if row else None


def remember_thread_email(
    db: sqlite_utils.Database,
    location_id: str,
    contact_id: str,
    thread_key: str,
    email_message_id: str,
) -> None:
    """Remember the email GHL answered for the thread's latest reply."""
    db.execute(
        "INSERT INTO email_threads (location_id, contact_id, thread_key, email_message_id, at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(location_id, contact_id, thread_key)"
        " DO UPDATE SET email_message_id = excluded.email_message_id, at = excluded.at",
        [location_id, contact_id, thread_key, email_message_id, now_iso()],
    )


def known_emails(
    db: sqlite_utils.Database, location_id: str, contact_id: str, kind: str
) -> set[str]:
    """Every GHL email id the bridge knows it wrote for the contact: the threads' latest and
    those its confirmed writes of `kind` recorded (bridge/store/ghl_writes.py detail)."""
    rows = db.execute(
        "SELECT email_message_id FROM email_threads WHERE location_id = ? AND contact_id = ?"
        " UNION SELECT json_extract(detail, '$.email_message_id') FROM ghl_writes"
        " WHERE location_id = ? AND contact_id = ? AND kind = ? AND state = 'done'",
        [location_id, contact_id, location_id, contact_id, kind],
    ).fetchall()
    return {row[0] for row in rows if row[0]}
