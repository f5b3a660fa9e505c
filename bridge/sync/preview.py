"""What syncing events would do in GHL, decided by the worker's own code (dry runs).

The events run through `sync_event`, the function the worker calls, against an
in-memory copy of the rows it reads (the contacts, their GHL writes, the caches) and a
GHL client that records each call instead of sending it. So the calls announced are the
calls the worker makes, for every event type and optional action, in the same order;
events of one contact build on each other as they will when the worker takes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from bridge.clients.ghl import GHLClient
from bridge.events.event import Event
from bridge.events.types import interest_status
from bridge.settings import CUSTOM_FIELD_PREFIX
from bridge.store import contacts, state
from bridge.store.contacts import ContactRecord
from bridge.store.scratch import copy_rows, empty_copy
from bridge.sync.dispatch import sync_event
from bridge.sync.fieldmap import CUSTOM, CUSTOM_FIELDS_STATE, FieldMapError

# Ids the planning client answers with, where GHL would make one up. A new contact's is
# its own (the ledger keys workflow, DND and opportunity writes by contact id).
PLANNED_CONTACT = "(new contact {email})"
PLANNED_NOTE = "(new note)"
PLANNED_OPPORTUNITY = "(new opportunity)"
PLANNED_CONVERSATION = "(new conversation)"
PLANNED_MESSAGE = "(new message)"


@dataclass(frozen=True)
class PlannedCall:
    """One GHL request the worker would send."""

    method: str
    path: str
    body: Any = None


@dataclass
class Plan:
    """What syncing one event would do: its outcome, the calls, and the same in words."""

    event: Event
    outcome: str  # done | ignored | superseded | fails
    calls: list[PlannedCall] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


class PlanningClient(GHLClient):
    """The GHL client with its transport replaced: every request is recorded and
    answered as GHL would answer it for a contact with nothing else in GHL."""

    def __init__(self, db: sqlite_utils.Database, location_id: str, field_keys: list[str]):
        super().__init__("https://ghl.invalid", "", location_id)
        self.db = db
        self.field_keys = field_keys
        self.calls: list[PlannedCall] = []

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = kwargs.get("json")
        self.calls.append(PlannedCall(method, path, body))
        if path == "/contacts/upsert":
            email = str(body.get("email") or "")
            record = contacts.get(self.db, self.location_id, email)
            contact_id = record.contact_id if record else PLANNED_CONTACT.format(email=email)
            return {"contact": {"id": contact_id}, "new": record is None}
        if method == "POST" and path.endswith("/notes"):
            return {"note": {"id": PLANNED_NOTE}}
        if method == "POST" and path == "/opportunities/":
            return {"opportunity": {"id": PLANNED_OPPORTUNITY}}
        if path.endswith("/customFields"):
            return {"customFields": self._custom_fields()}
        if path == "/conversations/search":
            return {"conversations": [], "total": 0}
        if method == "POST" and path == "/conversations/":
            return {"conversation": {"id": PLANNED_CONVERSATION}}
        if method == "POST" and path == "/conversations/messages/inbound":
            return {"conversationId": body.get("conversationId"), "messageId": PLANNED_MESSAGE}
        return {}

    def _custom_fields(self) -> list[dict[str, str]]:
        # The ids the worker last fetched; a key never fetched stands for itself, so a
        # dry run of a new field map shows the write instead of failing on a cold cache.
        name = state.scoped(CUSTOM_FIELDS_STATE, self.location_id)
        ids = (state.get(self.db, name) or {}).get("ids", {})
        known = {**{key: key for key in self.field_keys}, **ids}
        return [{"fieldKey": key, "id": value} for key, value in known.items()]


def plan_events(
    db: sqlite_utils.Database, events: list[Event], settings: dict, location_id: str = ""
) -> list[Plan]:
    """The plan for each event, in order, as of the store now. Writes nothing to `db`."""
    scratch = empty_copy(db)
    copy_rows(db, scratch, "contacts", "email", [event.email for event in events])
    contact_ids = [row[0] for row in scratch.execute("SELECT contact_id FROM contacts")]
    copy_rows(db, scratch, "ghl_writes", "contact_id", contact_ids)
    copy_rows(db, scratch, "email_threads", "contact_id", contact_ids)
    copy_rows(db, scratch, "state")
    field_keys = [
        row["ghl"] for row in settings["field_map"] if row["ghl"].startswith(CUSTOM_FIELD_PREFIX)
    ]
    client = PlanningClient(scratch, location_id, field_keys)
    plans = []
    for event in events:
        before = contacts.get(scratch, location_id, event.email)
        start = len(client.calls)
        try:
            outcome = sync_event(scratch, event, settings, client)
        except FieldMapError as exc:
            plans.append(Plan(event, "fails", client.calls[start:], [f"fails: {exc}"]))
            continue
        calls = client.calls[start:]
        if outcome.status != "done":
            plans.append(Plan(event, outcome.status, calls, [f"none: {outcome.note}"]))
            continue
        after = contacts.get(scratch, location_id, event.email)
        changes = [line for call in calls if (line := _describe(call, before))]
        status = interest_status(event.event_type)
        if status is not None and after is not None:
            was = before.interest_status if before else None
            if was != after.interest_status:
                changes.append(f"interest status {was or 'none'} -> {after.interest_status}")
        plans.append(
            Plan(event, "done", calls, changes or ["no GHL call: the contact is already in step"])
        )
    scratch.close()
    return plans


def _describe(call: PlannedCall, before: ContactRecord | None) -> str | None:
    """One call in the words of the dry run's listing; None for a read."""
    body = call.body if isinstance(call.body, dict) else {}
    method, path = call.method, call.path
    if path == "/contacts/upsert":
        fields = _flat_fields(body)
        if before is None:
            return f"upsert contact ({', '.join(_label(n) for n in fields) or 'email only'})"
        changed = [_label(n) for n, v in fields.items() if before.fields.get(n) != v]
        return f"update contact ({', '.join(changed) or 'email only'})"
    if path.endswith("/tags"):
        verb = "add" if method == "POST" else "remove"
        return f"{verb} tags {', '.join(body.get('tags') or [])}"
    if method == "PUT" and re.fullmatch(r"/contacts/[^/]+", path) and "dndSettings" in body:
        return "switch email DND on"
    if method == "POST" and path.endswith("/notes"):
        return "add the reply as a note"
    if method == "POST" and path == "/conversations/":
        return "create the contact's GHL conversation"
    if method == "POST" and path == "/conversations/messages/inbound":
        return "add the reply to the contact's GHL conversation"
    if "/workflow/" in path:
        return f"add to workflow {path.rsplit('/', 1)[1]}"
    if method == "POST" and path == "/opportunities/":
        return f"create opportunity {body.get('name')!r} at stage {body.get('pipelineStageId')}"
    if method == "PUT" and path.startswith("/opportunities/"):
        return f"move the opportunity to stage {body.get('pipelineStageId')}"
    return None


def _flat_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The upsert body's fields in the contact map's flat form (customField:<id>)."""
    fields = {
        name: value
        for name, value in body.items()
        if name not in ("locationId", "email", "source", "customFields")
    }
    for custom in body.get("customFields") or []:
        fields[CUSTOM + str(custom["id"])] = custom["field_value"]
    return fields


def _label(name: str) -> str:
    return f"custom field {name[len(CUSTOM) :]}" if name.startswith(CUSTOM) else name
