"""The contact's opportunity in the configured pipeline: created once, then moved to the
stage each chosen interest status calls for."""

from __future__ import annotations

import logging
from typing import Any

import sqlite_utils

from bridge.clients.ghl import GHLClient, GHLRejected
from bridge.events import template as templates
from bridge.events.event import Event
from bridge.events.types import label_of
from bridge.settings import stage_for
from bridge.store import ghl_writes
from bridge.store.contacts import ContactRecord
from bridge.sync.fieldmap import clean, lead_value

log = logging.getLogger("bridge.opportunity")

KIND = "opportunity"
MAX_NAME_CHARS = 200


def place_opportunity(
    db: sqlite_utils.Database,
    record: ContactRecord,
    event: Event,
    status: str,
    settings: dict,
    client: GHLClient,
) -> None:
    """Create the contact's opportunity, or move it, to the stage for `status`.

    The id GHL gave is kept in ghl_writes, so the opportunity is created once; a
    create whose outcome is unknown is looked for (search by contact and pipeline)
    before creating again.
    """
    rule = settings["actions"]["opportunity"]
    if not rule["enabled"] or status not in rule["statuses"]:
        return
    pipeline_id = rule["pipeline_id"].strip()
    want = {"pipelineStageId": stage_for(rule, status), "status": rule["ghl_status"][status]}
    key = f"{KIND}:{record.contact_id}:{pipeline_id}"
    write = ghl_writes.get(db, record.location_id, key)
    if write is not None and write.done:
        if write.detail == want:
            return
        try:
            client.update_opportunity(write.ghl_id, want)
        except GHLRejected as exc:
            if not _is_gone(exc):
                raise
            # Deleted in GHL: the contact has no opportunity here any more.
            log.warning("opportunity %s is gone from GHL; creating a new one", write.ghl_id)
            ghl_writes.forget(db, record.location_id, key)
        else:
            ghl_writes.done(
                db, record.location_id, key, KIND, record.contact_id, write.ghl_id, want
            )
            return
    # First time for this contact and pipeline, or an attempt whose outcome is unknown:
    # GHL may hold the contact's opportunity already (from that attempt, or made by hand).
    found = _find(client, record.contact_id, pipeline_id)
    if found is not None:
        opportunity_id, current = found
        if current != want:
            client.update_opportunity(opportunity_id, want)
        ghl_writes.done(db, record.location_id, key, KIND, record.contact_id, opportunity_id, want)
        return
    ghl_writes.intend(db, record.location_id, key, KIND, record.contact_id)
    opportunity_id = client.create_opportunity(
        {
            "pipelineId": pipeline_id,
            "name": opportunity_name(rule["name"], event, status, record.fields),
            "contactId": record.contact_id,
            **want,
        }
    )
    ghl_writes.done(db, record.location_id, key, KIND, record.contact_id, opportunity_id, want)


def _is_gone(exc: GHLRejected) -> bool:
    # GHL answers an unknown id with 400 "... not found" (its spec documents no 404);
    # a missing stage or pipeline is a settings mistake, not a deleted opportunity.
    message = exc.message.lower()
    return exc.status == 404 or (
        exc.status == 400 and "opportunity" in message and "not found" in message
    )


def _find(
    client: GHLClient, contact_id: str, pipeline_id: str
) -> tuple[str, dict[str, str]] | None:
    for item in client.search_opportunities(contact_id, pipeline_id):
        # Search is fuzzy on GHL's side; trust only an exact match.
        matches = item.get("contactId") == contact_id and item.get("pipelineId") == pipeline_id
        if matches and item.get("id"):
            current = {
                "pipelineStageId": str(item.get("pipelineStageId") or ""),
                "status": str(item.get("status") or ""),
            }
            return str(item["id"]), current
    return None


def opportunity_name(
    template: str, event: Event, status: str, known: dict[str, Any] | None = None
) -> str:
    """The opportunity's name from the settings' template.

    `known` is what the contact map holds as written to GHL (firstName, lastName,
    companyName, name): an interest event often carries no name, while the reply before it
    did, and the lead's name reads better than its email.
    """
    known = known or {}

    def lead(name: str) -> str:
        value = clean(lead_value(event.payload, name))
        if not isinstance(value, str):
            value = clean(known.get(name))
        return value if isinstance(value, str) else ""

    first, last = lead("firstName"), lead("lastName")
    values = {
        "name": f"{first} {last}".strip() or lead("name") or event.email,
        "email": event.email,
        "first_name": first,
        "last_name": last,
        "company_name": lead("companyName"),
        "campaign_name": event.campaign_name,
        "status": label_of(status) or status.replace("_", " "),
    }
    name = " ".join(templates.fill(template, values).split())
    return (name or event.email)[:MAX_NAME_CHARS]
