"""A reply as an inbound email in the contact's GHL conversation, threaded with the other
replies of its Instantly thread, once per reply whatever happens in between.

GHL keeps no index of `altId` and would store a second message for a second POST, so the
attempt is recorded before the call (bridge/store/ghl_writes.py); an attempt whose fate is
unknown is looked for in the conversation, by the reply's altId, before posting again.
"""

from __future__ import annotations

import html
import logging
import re
from datetime import UTC, datetime
from urllib.parse import unquote

import sqlite_utils

from bridge.clients.ghl import GHLAuthError, GHLClient, GHLRejected
from bridge.clients.ghl_conversations import GHLConversations, InboundEmail
from bridge.clock import parse_time
from bridge.events.event import Event
from bridge.store import conversations, ghl_writes
from bridge.store.contacts import ContactRecord
from bridge.sync.reply_text import NO_OWN_TEXT, payload_text, reply_text, unibox_link

log = logging.getLogger("bridge.reply_message")

KIND = "reply_message"
NO_SUBJECT = "(no subject)"
UNIBOX_LINE = "Answer from the Instantly mailbox the lead wrote to:"
# Pages of the conversation's emails read when looking for an uncertain attempt: GHL's 20 a
# page, so the newest 200 threads, far more than a lead's replies to one campaign.
LOOK_PAGES = 10
# Reply and forward prefixes as mail clients write them (English, German, Nordic), with
# Outlook's counter ("Re[2]:") and a full-width colon.
_PREFIXES = re.compile(r"^(?:\s*(?:re|fwd?|aw|sv)(?:\s*\[\d+\])?\s*[:：])+\s*", re.IGNORECASE)
_UNIBOX_THREAD = re.compile(r"[?&]thread_search=thread(?::|%3a)([^&#\s]+)", re.IGNORECASE)


def add_reply_message(
    db: sqlite_utils.Database, record: ContactRecord, event: Event, client: GHLClient
) -> None:
    """Put the reply in the contact's conversation unless it is already there."""
    key = f"{KIND}:{event.key}"
    write = ghl_writes.get(db, record.location_id, key)
    if write is not None and write.done:
        return
    api = GHLConversations(client)
    conversation_id = _conversation(db, record, api)
    thread = thread_key(event.payload)
    alt_id = _alt_id(event)
    if write is not None:
        found = _look(db, record, api, conversation_id, alt_id)
        if found is not None:
            log.info("reply message for %s found in GHL after an uncertain attempt", event.key)
            _record(db, record, key, thread, found)
            return
    parent = conversations.thread_email(db, record.location_id, record.contact_id, thread)
    ghl_writes.intend(db, record.location_id, key, KIND, record.contact_id)
    text, markup = message_bodies(event.payload)
    try:
        answer = api.add_inbound_email(
            conversation_id,
            record.contact_id,
            subject=subject(event.payload),
            html=markup,
            text=text,
            date=replied_at(event),
            alt_id=alt_id,
            email_message_id=parent,
        )
    except (GHLAuthError, GHLRejected):
        # GHL refused it, so wrote nothing: the next attempt need not look first.
        ghl_writes.forget(db, record.location_id, key)
        raise
    _record(db, record, key, thread, answer)


def thread_key(payload: dict) -> str:
    """Which GHL email thread the reply joins: its Instantly thread (the one its Unibox link
    searches for, else the payload's `thread_id`), else its subject without reply
    and forward prefixes, lowercased (one thread per contact and subject)."""
    # The Unibox link first: a webhook carries a lead's custom variables top level, so one
    # named thread_id could stand where a polled reply's thread_id does.
    found = _UNIBOX_THREAD.search(payload_text(payload, "unibox_url"))
    thread_id = unquote(found.group(1)).strip() if found else payload_text(payload, "thread_id")
    if thread_id:
        return f"thread:{thread_id}"
    bare = _PREFIXES.sub("", payload_text(payload, "reply_subject"))
    return "subject:" + " ".join(bare.lower().split())


def subject(payload: dict) -> str:
    """The reply's subject as the lead's mail client wrote it."""
    return payload_text(payload, "reply_subject") or NO_SUBJECT


def message_bodies(payload: dict) -> tuple[str, str]:
    """The reply's text and HTML, quoted thread cut, each ending with the Unibox link.

    The HTML is made from the cut text: reply_text.py cuts the quoted thread from text only,
    and sending the lead's own markup whole would bring the thread back."""
    text = reply_text(payload) or NO_OWN_TEXT
    paragraphs = [part for part in re.split(r"\n\s*\n", text) if part.strip()]
    markup = "".join(
        "<p>" + "<br>".join(html.escape(line) for line in part.split("\n")) + "</p>"
        for part in paragraphs
    )
    link = unibox_link(payload)
    if link:
        text += f"\n\n{UNIBOX_LINE} {link}"
        href = html.escape(link, quote=True)
        markup += f'<p>{html.escape(UNIBOX_LINE)} <a href="{href}">{href}</a></p>'
    return text, markup


def replied_at(event: Event) -> datetime:
    """When the lead replied: the event's time, else its payload's, else now."""
    return (
        parse_time(event.occurred_at)
        or parse_time(event.payload.get("timestamp"))
        or datetime.now(UTC)
    )


def _alt_id(event: Event) -> str:
    return payload_text(event.payload, "email_id") or event.key


def _conversation(db: sqlite_utils.Database, record: ContactRecord, api: GHLConversations) -> str:
    """The contact's conversation: remembered, else found, else made (and remembered)."""
    known = conversations.conversation_id(db, record.location_id, record.email)
    if known:
        return known
    # A contact GHL made for the bridge had no conversation then: skip the search (a create
    # that finds one made since falls back to it).
    found = [] if known == conversations.NONE_YET else api.search_conversations(record.contact_id)
    if found:
        conversation_id = found[0].id
    else:
        try:
            conversation_id = api.create_conversation(record.contact_id).id
        except GHLRejected as exc:
            # Made meanwhile (by GHL itself, or a person writing to the lead): find it.
            if exc.status != 400 or "already exists" not in exc.message.lower():
                raise
            again = api.search_conversations(record.contact_id)
            if not again:
                raise
            conversation_id = again[0].id
    conversations.remember_conversation(db, record.location_id, record.email, conversation_id)
    return conversation_id


def _look(
    db: sqlite_utils.Database,
    record: ContactRecord,
    api: GHLConversations,
    conversation_id: str,
    alt_id: str,
) -> InboundEmail | None:
    """The reply's email in the conversation, if an earlier attempt wrote it: a thread it
    started carries its altId; one it joined holds it among its emails, which are read one
    by one (those the bridge knows are others, and are skipped)."""
    listed = api.list_messages(conversation_id, message_type="TYPE_EMAIL", max_pages=LOOK_PAGES)
    for message in listed.messages:
        if message.alt_id == alt_id:
            first = message.email_message_ids[0] if message.email_message_ids else None
            return InboundEmail(conversation_id, message.id, first)
    known = conversations.known_emails(db, record.location_id, record.contact_id, KIND)
    for message in listed.messages:
        if known.isdisjoint(message.email_message_ids):
            continue  # not a thread the bridge wrote to
        # Newest first: an email the attempt added is the last of its thread.
        for email_id in reversed(message.email_message_ids):
            if email_id not in known and api.get_email(email_id).alt_id == alt_id:
                return InboundEmail(conversation_id, message.id, email_id)
    if not listed.complete:
        log.warning(
            "reply %s not found in the newest %d pages of GHL conversation %s, which has"
            " more: posting it again, so it may show twice if an older attempt wrote it",
            alt_id,
            LOOK_PAGES,
            conversation_id,
        )
    return None


def _record(
    db: sqlite_utils.Database, record: ContactRecord, key: str, thread: str, email: InboundEmail
) -> None:
    """Mark the write done with GHL's ids, then remember the thread's latest email.

    In this order: an email the bridge remembers counts as known, and is skipped by the look
    after an uncertain attempt, so it must not be remembered before its write is done."""
    detail = {
        "conversation_id": email.conversation_id,
        "email_message_id": email.email_message_id,
        "thread": thread,
    }
    ghl_writes.done(db, record.location_id, key, KIND, record.contact_id, email.message_id, detail)
    if email.email_message_id:
        conversations.remember_thread_email(
            db, record.location_id, record.contact_id, thread, email.email_message_id
        )
