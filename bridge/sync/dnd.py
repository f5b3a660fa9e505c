"""Email do-not-disturb in GHL for leads who unsubscribed (or bounced) in Instantly.

GHL's own workflows and campaigns email contacts too; without DND they would keep
emailing someone who opted out of the cold campaign, which anti-spam law forbids
(CAN-SPAM, GDPR/PECR) and which hurts the sending domains' reputation.
"""

from __future__ import annotations

import sqlite_utils

from bridge.clients.ghl import GHLClient
from bridge.events.event import Event
from bridge.store import ghl_writes
from bridge.store.contacts import ContactRecord

KIND = "dnd"
REASONS = {
    "lead_unsubscribed": "Unsubscribed",
    "email_bounced": "Email bounced",
}


def dnd_message(event: Event) -> str:
    """Why the contact is on DND, for whoever looks at it in GHL."""
    what = REASONS.get(event.event_type, event.event_type)
    campaign = f" (campaign {event.campaign_name})" if event.campaign_name else ""
    return f"{what} in Instantly{campaign} on {event.occurred_at[:10]}; set by instantly-ghl-bridge"


def set_email_dnd(
    db: sqlite_utils.Database, record: ContactRecord, event: Event, client: GHLClient
) -> None:
    """Switch email DND on for the contact, once.

    Only the Email channel: the lead opted out of email, not of calls or texts.
    """
    key = f"{KIND}:email:{record.contact_id}"
    write = ghl_writes.get(db, record.location_id, key)
    if write is not None and write.done:
        return
    client.update_contact(
        record.contact_id,
        {"dndSettings": {"Email": {"status": "active", "message": dnd_message(event)}}},
    )
    ghl_writes.done(
        db,
        record.location_id,
        key,
        KIND,
        record.contact_id,
        detail={"event_type": event.event_type},
    )
