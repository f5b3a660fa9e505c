"""Mapping settings: one marshmallow schema, defaults from config/defaults.toml,
the live copy in the database (so the config page can edit it)."""

from __future__ import annotations

import json
import string
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils
import tomli_w
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from bridge.db import immediate

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "config" / "defaults.toml"

# Event types the worker knows how to sync; settings may only name these.
SYNCABLE_EVENTS = ("reply_received",)

TAG_PLACEHOLDERS = {
    "event_type",
    "campaign_name",
    "campaign_id",
    "step",
    "variant",
    "email_account",
}

# String properties of GHL's UpsertContactDto that a field map may target.
GHL_STANDARD_FIELDS = (
    "firstName",
    "lastName",
    "name",
    "phone",
    "companyName",
    "website",
    "address1",
    "city",
    "state",
    "postalCode",
    "country",
    "timezone",
)
CUSTOM_FIELD_PREFIX = "contact."


class SettingsError(ValueError):
    """Settings failed validation; `messages` maps each setting path to its errors."""

    def __init__(self, messages: dict[str, list[str]]):
        self.messages = messages
        super().__init__(
            "invalid settings: "
            + "; ".join(f"{path}: {' '.join(errs)}" for path, errs in messages.items())
        )


def _check_template(value: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValidationError(f"bad template {value!r}: {exc}") from None
    unknown = names - TAG_PLACEHOLDERS
    if unknown:
        raise ValidationError(
            f"unknown placeholder {{{sorted(unknown)[0]}}} in {value!r}; "
            f"use one of {', '.join('{' + p + '}' for p in sorted(TAG_PLACEHOLDERS))}"
        )


TagList = fields.List(
    fields.String(validate=[validate.Length(min=1, max=200), _check_template]),
    load_default=list,
)


class SyncSchema(Schema):
    source = fields.String(load_default="Instantly", validate=validate.Length(max=100))
    max_attempts = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100))
    backoff_base_seconds = fields.Float(
        load_default=30.0, validate=validate.Range(min=0.01, max=86400)
    )
    backoff_max_seconds = fields.Float(
        load_default=3600.0, validate=validate.Range(min=0.01, max=7 * 86400)
    )


class EventSchema(Schema):
    enabled = fields.Boolean(load_default=True)
    tags = TagList


class FieldMapRowSchema(Schema):
    instantly = fields.String(required=True, validate=validate.Length(min=1, max=200))
    ghl = fields.String(required=True, validate=validate.Length(min=1, max=200))

    @validates_schema
    def _known_ghl_field(self, data: dict, **_: Any) -> None:
        target = data["ghl"]
        if target in GHL_STANDARD_FIELDS:
            return
        if target.startswith(CUSTOM_FIELD_PREFIX) and len(target) > len(CUSTOM_FIELD_PREFIX):
            return
        raise ValidationError(
            f"{target!r} is neither a GHL standard field ({', '.join(GHL_STANDARD_FIELDS)}) "
            f"nor a custom field written as 'contact.<field key>'",
            "ghl",
        )


class ReconcileSchema(Schema):
    """Polling Instantly for what webhooks missed (bridge/reconcile.py)."""

    enabled = fields.Boolean(load_default=True)
    interval_minutes = fields.Integer(load_default=15, validate=validate.Range(min=1, max=1440))
    overlap_minutes = fields.Integer(load_default=10, validate=validate.Range(min=0, max=1440))
    first_run_days = fields.Integer(load_default=30, validate=validate.Range(min=0, max=3650))
    campaigns = fields.List(
        fields.String(validate=validate.Length(min=1, max=100)),
        load_default=list,
        validate=validate.Length(max=500),
    )
    lists = fields.List(
        fields.String(validate=validate.Length(min=1, max=100)),
        load_default=list,
        validate=validate.Length(max=500),
    )


class SettingsSchema(Schema):
    sync = fields.Nested(SyncSchema, load_default=lambda: SyncSchema().load({}))
    reconcile = fields.Nested(ReconcileSchema, load_default=lambda: ReconcileSchema().load({}))
    events = fields.Dict(
        keys=fields.String(validate=validate.OneOf(SYNCABLE_EVENTS)),
        values=fields.Nested(EventSchema),
        load_default=dict,
    )
    field_map = fields.List(fields.Nested(FieldMapRowSchema), load_default=list)

    @validates_schema
    def _one_source_per_ghl_field(self, data: dict, **_: Any) -> None:
        seen: set[str] = set()
        for i, row in enumerate(data.get("field_map", [])):
            if row["ghl"] in seen:
                raise ValidationError(
                    {str(i): {"ghl": [f"{row['ghl']!r} is mapped twice"]}}, "field_map"
                )
            seen.add(row["ghl"])


def validate_settings(raw: dict) -> dict:
    """Validate and normalise settings, raising SettingsError naming each bad one."""
    try:
        return SettingsSchema().load(raw)
    except ValidationError as exc:
        raise SettingsError(_flatten(exc.messages)) from None


def syncs_event(settings: dict, event_type: str) -> bool:
    """Whether settings sync this event type: the webhook stores only these, and
    polling enqueues only these (a stored but ignored event would block its key)."""
    rule = settings["events"].get(event_type)
    return bool(rule and rule["enabled"])


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            # marshmallow nests dict errors under "key"/"value"; users know no such names.
            path = prefix if key in ("key", "value") else ".".join(filter(None, [prefix, str(key)]))
            out.update(_flatten(value, path))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix or "settings"] = list(messages)
    elif isinstance(messages, list):
        for i, value in enumerate(messages):
            out.update(_flatten(value, f"{prefix}.{i}"))
    else:
        out[prefix or "settings"] = [str(messages)]
    return out


def parse_toml(text: str) -> dict:
    """Parse and validate settings written as TOML."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError({"toml": [str(exc)]}) from None
    return validate_settings(raw)


def to_toml(settings: dict) -> str:
    """Write settings as TOML in the same shape as config/defaults.toml."""
    return tomli_w.dumps(settings)


def load_defaults(path: Path = DEFAULTS_FILE) -> dict:
    """The validated defaults file."""
    return parse_toml(path.read_text(encoding="utf-8"))


def current(db: sqlite_utils.Database) -> tuple[int, dict]:
    """The stored settings and their version, seeding them from the defaults once."""
    row = _stored_row(db)
    if row is None:
        save(db, load_defaults())
        row = _stored_row(db)
    return row["version"], validate_settings(json.loads(row["body"]))


def version(db: sqlite_utils.Database) -> int:
    """The stored settings' version (0 before any are stored); cheap to poll."""
    row = db.execute("SELECT version FROM settings WHERE id = 1").fetchone()
    return row[0] if row else 0


def save(db: sqlite_utils.Database, settings: dict) -> int:
    """Validate and store settings; returns the new version."""
    clean = validate_settings(settings)
    now = datetime.now(UTC).isoformat()
    with immediate(db):
        old = db.execute("SELECT version FROM settings WHERE id = 1").fetchone()
        new_version = (old[0] if old else 0) + 1
        db["settings"].upsert(
            {"id": 1, "version": new_version, "body": json.dumps(clean), "updated_at": now},
            pk="id",
        )
    return new_version


def _stored_row(db: sqlite_utils.Database) -> dict | None:
    rows = list(db["settings"].rows_where("id = 1"))
    return rows[0] if rows else None


class SettingsCache:
    """Settings for a long-lived process, re-read only when their version changes."""

    def __init__(self) -> None:
        self._version = -1
        self._settings: dict = {}

    def get(self, db: sqlite_utils.Database) -> dict:
        latest = version(db)
        if latest != self._version or latest == 0:
            self._version, self._settings = current(db)
        return self._settings
