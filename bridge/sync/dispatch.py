"""The sync core's entry: one event in, the fewest GHL calls out, by the event's path
(plain event or interest status). No Flask, no HTTP server."""

from __future__ import annotations

import logging

import sqlite_utils

from bridge.clients.ghl import GHLClient, GHLRejected
from bridge.events import types as event_types
from bridge.events.event import Event
from bridge.store import contacts
from bridge.sync.dnd import set_email_dnd
from bridge.sync.interest import sync_interest
from bridge.sync.reply_message import add_reply_message
from bridge.sync.reply_note import add_reply_note
from bridge.sync.steps import Outcome, add_missing_tags, ensure_contact, render_tags

log = logging.getLogger("bridge.sync")


def sync_event(
    db: sqlite_utils.Database, event: Event, settings: dict, client: GHLClient
) -> Outcome:
    """Bring GHL in step with one event. Raises GHLError subclasses on failure."""
    try:
        return _sync_once(db, event, settings, client)
    except GHLRejected as exc:
        if not contact_gone(exc) or contacts.get(db, client.location_id, event.email) is None:
            raise
        # Someone deleted the contact in GHL: forget it and write it afresh, once.
        log.warning("GHL no longer has the contact for %s; writing it again", event.email)
        contacts.forget(db, client.location_id, event.email)
        return _sync_once(db, event, settings, client)


def contact_gone(exc: GHLRejected) -> bool:
    """GHL's answer for a contact id it does not have (400 "Contact not found")."""
    return exc.status in (400, 404) and "contact not found" in exc.message.lower()


def _sync_once(
    db: sqlite_utils.Database, event: Event, settings: dict, client: GHLClient
) -> Outcome:
    if not event_types.is_synced(settings, event.event_type):
        return Outcome("ignored", note=f"{event.event_type} is not synced in settings")
    if event_types.interest_status(event.event_type):
        return sync_interest(db, event, settings, client)
    rule = settings["events"][event.event_type]
    record = ensure_contact(db, event, settings, client)
    tags = render_tags(rule["tags"], event)
    add_missing_tags(db, record, tags, client)
    if event.event_type == "reply_received" and settings["actions"]["reply_note"]["enabled"]:
        add_reply_note(db, record, event, client)
    if _posts_reply_message(event, settings["actions"]["reply_message"]):
        # Last of the reply's writes: a token without the conversation scopes fails only this.
        add_reply_message(db, record, event, client)
    if rule["dnd"]:
        set_email_dnd(db, record, event, client)
    return Outcome("done", record.contact_id)


def _posts_reply_message(event: Event, action: dict) -> bool:
    """Whether the reply goes into the contact's GHL conversation: replies when the action is
    on, auto replies too when it takes them."""
    if not action["enabled"]:
        return False
    if event.event_type == "auto_reply_received":
        return bool(action["auto_replies"])
    return event.event_type == "reply_received"
