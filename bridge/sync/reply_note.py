"""A reply as a GHL note on the contact, once per reply, whatever happens in between."""

from __future__ import annotations

import logging

import sqlite_utils

from bridge.clients.ghl import GHLClient
from bridge.events.event import Event
from bridge.store import ghl_writes
from bridge.store.contacts import ContactRecord
from bridge.sync.reply_text import NO_OWN_TEXT, payload_text, reply_text, unibox_link

log = logging.getLogger("bridge.reply_note")

KIND = "note"
# GHL documents no limit on a note's body; a cold-email reply rarely needs more, and the
# whole thread is a click away in the Unibox.
MAX_TEXT_CHARS = 5000


def marker(event: Event) -> str:
    """The line that identifies this reply's note among the contact's notes."""
    return f"[instantly-ghl-bridge {event.key}]"


def note_body(event: Event) -> str:
    """Subject, the lead's words, campaign and step, the Unibox link, and the marker."""
    payload = event.payload
    subject = payload_text(payload, "reply_subject")
    text = reply_text(payload) or NO_OWN_TEXT
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS].rstrip() + "…\n(cut short; the whole reply is in Instantly)"
    heading = "Reply in Instantly" + (f": {subject}" if subject else "")
    lines = [heading, "", text, ""]
    campaign = event.campaign_name or event.campaign_id
    step = payload_text(payload, "step")
    if campaign:
        lines.append(f"Campaign: {campaign}" + (f" (step {step})" if step else ""))
    elif step:
        lines.append(f"Step: {step}")
    unibox = unibox_link(payload)
    if unibox:
        lines.append(f"Unibox: {unibox}")
    lines.append(marker(event))
    return "\n".join(lines)


def add_reply_note(
    db: sqlite_utils.Database, record: ContactRecord, event: Event, client: GHLClient
) -> None:
    """Add the reply as a note unless it is already there.

    GHL would store a second note for a second POST, so the attempt is recorded before
    the call; an attempt whose outcome is unknown is checked against the contact's notes
    (by the marker) before writing again.
    """
    key = f"{KIND}:{event.key}"
    write = ghl_writes.get(db, record.location_id, key)
    if write is not None and write.done:
        return
    if write is not None:
        found = _find_note(client, record.contact_id, marker(event))
        if found is not None:
            log.info("note for %s found in GHL after an uncertain attempt", event.key)
            ghl_writes.done(db, record.location_id, key, KIND, record.contact_id, found)
            return
    ghl_writes.intend(db, record.location_id, key, KIND, record.contact_id)
    note_id = client.create_note(record.contact_id, note_body(event))
    ghl_writes.done(db, record.location_id, key, KIND, record.contact_id, note_id)


def _find_note(client: GHLClient, contact_id: str, mark: str) -> str | None:
    for note in client.list_notes(contact_id):
        if mark in str(note.get("body") or ""):
            return str(note.get("id") or "")
    return None
