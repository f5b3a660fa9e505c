"""Turn an event's lead data into GHL contact fields, per the field map."""

from __future__ import annotations

import math
import time
from typing import Any

import sqlite_utils

from bridge.clients.ghl import GHLClient
from bridge.settings import CUSTOM_FIELD_PREFIX
from bridge.store import state

CUSTOM_FIELDS_STATE = state.GHL_CUSTOM_FIELDS
CACHE_SECONDS = 3600.0
# A key missing from the cache triggers one refetch, at most this often.
REFETCH_MISSING_AFTER = 60.0
CUSTOM = "customField:"


class FieldMapError(Exception):
    """The field map names something the GHL location does not have."""


def lead_value(payload: dict[str, Any], name: str) -> Any:
    """A lead field from a webhook payload: top-level camelCase key or custom variable."""
    value = payload.get(name)
    if value is None and isinstance(payload.get("payload"), dict):
        value = payload["payload"].get(name)
    return value


def clean(value: Any) -> Any:
    """Text or a number fit to send; None for empty values, which are never sent."""
    if value is None or isinstance(value, dict):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, list):
        items = [str(v).strip() for v in value if v is not None and str(v).strip()]
        return items or None
    text = str(value).strip()
    return text or None


def build_fields(
    payload: dict[str, Any], field_map: list[dict[str, str]], custom_ids: CustomFieldIds | None
) -> dict[str, Any]:
    """Flat fields to write: standard names, and `customField:<id>` for custom fields."""
    out: dict[str, Any] = {}
    for row in field_map:
        value = clean(lead_value(payload, row["instantly"]))
        if value is None:
            continue
        target = row["ghl"]
        if target.startswith(CUSTOM_FIELD_PREFIX):
            if custom_ids is None:
                raise FieldMapError(f"field map uses {target} but GHL is not configured")
            out[CUSTOM + custom_ids.id_for(target)] = value
        else:
            out[target] = value if isinstance(value, str) else str(value)
    return out


def upsert_body(fields: dict[str, Any]) -> dict[str, Any]:
    """The flat fields as GHL's UpsertContactDto properties."""
    body: dict[str, Any] = {}
    custom = []
    for name, value in fields.items():
        if name.startswith(CUSTOM):
            custom.append({"id": name[len(CUSTOM) :], "field_value": value})
        else:
            body[name] = value
    if custom:
        body["customFields"] = custom
    return body


class CustomFieldIds:
    """Custom field keys (contact.x) to ids, fetched from GHL and cached in the store."""

    def __init__(self, db: sqlite_utils.Database, client: GHLClient, clock=time.time):
        self.db = db
        self.client = client
        self.clock = clock
        # Each location has its own custom fields, and so its own cache.
        self._state_name = state.scoped(CUSTOM_FIELDS_STATE, client.location_id)

    def id_for(self, field_key: str) -> str:
        cached = state.get(self.db, self._state_name) or {}
        age = self.clock() - cached.get("fetched_at", 0)
        ids = cached.get("ids", {})
        fresh = age < CACHE_SECONDS
        if field_key in ids and fresh:
            return ids[field_key]
        if not fresh or age >= REFETCH_MISSING_AFTER:
            ids = self.refresh()
        if field_key not in ids:
            raise FieldMapError(
                f"custom field {field_key} does not exist in GHL location "
                f"{self.client.location_id}; create it or fix the field map"
            )
        return ids[field_key]

    def refresh(self) -> dict[str, str]:
        ids = {
            f["fieldKey"]: f["id"]
            for f in self.client.custom_fields()
            if f.get("fieldKey") and f.get("id")
        }
        state.put(self.db, self._state_name, {"fetched_at": self.clock(), "ids": ids})
        return ids
