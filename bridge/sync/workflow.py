"""Enrol a contact in the configured GHL workflow when it reaches a chosen status."""

from __future__ import annotations

import sqlite_utils

from bridge.clients.ghl import GHLClient
from bridge.store import ghl_writes
from bridge.store.contacts import ContactRecord

KIND = "workflow"


def add_to_workflow(
    db: sqlite_utils.Database, record: ContactRecord, status: str, settings: dict, client: GHLClient
) -> None:
    """Add the contact to the workflow once per contact and workflow.

    A crash between GHL's answer and the record below sends the enrolment once more;
    there is no API to ask whether a contact is enrolled, and a GHL workflow lets a
    contact in again only when its "Allow re-entry" option is switched on.
    """
    rule = settings["actions"]["workflow"]
    if not rule["enabled"] or status not in rule["statuses"]:
        return
    workflow_id = rule["workflow_id"].strip()
    key = f"{KIND}:{record.contact_id}:{workflow_id}"
    write = ghl_writes.get(db, record.location_id, key)
    if write is not None and write.done:
        return
    client.add_to_workflow(record.contact_id, workflow_id)
    ghl_writes.done(
        db, record.location_id, key, KIND, record.contact_id, workflow_id, {"status": status}
    )
