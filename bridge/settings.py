"""Mapping settings: one marshmallow schema, defaults from config/defaults.toml,
the live copy in the database (so the config page can edit it)."""

from __future__ import annotations

import importlib.resources
import json
import tomllib
from importlib.resources.abc import Traversable
from typing import Any

import sqlite_utils
import tomli_w
from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from bridge.clock import now_iso
from bridge.events import template
from bridge.events.types import STATUS_BY_EVENT
from bridge.locations import overrides as location_overrides
from bridge.locations.schema import InstantlySchema, LocationSchema, RoutingSchema, route_problems
from bridge.store.db import immediate

# config/defaults.toml in the repository, shipped as the package bridge.defaults.
DEFAULTS_FILE = importlib.resources.files("bridge.defaults") / "defaults.toml"

# Event types the worker knows how to sync; settings may only name these.
# Interest events and custom labels are configured under [interest] instead.
SYNCABLE_EVENTS = ("reply_received", "auto_reply_received", "lead_unsubscribed", "email_bounced")
# Events that may set the contact's email do-not-disturb in GHL.
DND_EVENTS = ("lead_unsubscribed", "email_bounced")
# Interest status names, in the order settings list them.
STATUSES = tuple(dict.fromkeys(STATUS_BY_EVENT.values()))

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


def _template_check(allowed: set[str]):
    """A validator accepting templates whose placeholders are all in `allowed`."""

    def check(value: str) -> None:
        try:
            names = set(template.check(value))
        except template.BadTemplate as exc:
            raise ValidationError(str(exc)) from None
        unknown = names - allowed
        if unknown:
            raise ValidationError(
                f"unknown placeholder {{{sorted(unknown)[0]}}} in {value!r}; "
                f"use one of {', '.join('{' + p + '}' for p in sorted(allowed))}"
            )

    return check


# A custom label's tags may also name the label.
LABEL_TAG_PLACEHOLDERS = TAG_PLACEHOLDERS | {"label"}
OPPORTUNITY_NAME_PLACEHOLDERS = {
    "name",
    "email",
    "first_name",
    "last_name",
    "company_name",
    "campaign_name",
    "status",
}


def _tag_list(
    default: list[str] | None = None, allowed: set[str] = TAG_PLACEHOLDERS, description: str = ""
):
    return fields.List(
        fields.String(validate=[validate.Length(min=1, max=200), _template_check(allowed)]),
        load_default=lambda: list(default or []),
        metadata={"description": description} if description else {},
    )


TagList = _tag_list()


class SyncSchema(Schema):
    source = fields.String(load_default="Instantly", validate=validate.Length(max=100))
    max_attempts = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100))
    backoff_base_seconds = fields.Float(
        load_default=30.0, validate=validate.Range(min=0.01, max=86400)
    )
    backoff_max_seconds = fields.Float(
        load_default=3600.0, validate=validate.Range(min=0.01, max=7 * 86400)
    )
    # GHL's daily budget is per location and shared with whatever else uses the location;
    # the reserve keeps a share of it for the calls a person is waiting on.
    ghl_daily_reserve = fields.Integer(
        load_default=1000,
        validate=validate.Range(min=0, max=100_000),
        metadata={
            "description": "Calls of GHL's daily budget per location kept back from syncing, "
            "for the settings page's lookups, doctor and you. When only this many are left, "
            "the location's events wait (none is dead-lettered) until GHL reports the day's "
            "budget back."
        },
    )
    ghl_daily_probe_seconds = fields.Float(
        load_default=300.0,
        validate=validate.Range(min=5, max=3600),
        metadata={
            "description": "While a location waits for its daily budget, one call this often "
            "(seconds) to see if it is back."
        },
    )


class EventSchema(Schema):
    enabled = fields.Boolean(load_default=True)
    tags = TagList
    dnd = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Set the contact's email do-not-disturb in GHL "
            "(lead_unsubscribed and email_bounced only)."
        },
    )


def _default_status_tag(status: str) -> str:
    # Instantly's UI calls "closed" Won; the tag follows the UI.
    return "instantly-won" if status == "closed" else "instantly-" + status.replace("_", "-")


# One tag list per interest status (a plain schema, so the config page shows one box each).
InterestTagsSchema = Schema.from_dict(
    {status: _tag_list([_default_status_tag(status)]) for status in STATUSES},
    name="InterestTagsSchema",
)


class InterestSchema(Schema):
    enabled = fields.Boolean(
        load_default=True,
        metadata={"description": "Sync interest statuses (lead_interested, ...) as tags."},
    )
    tags = fields.Nested(
        InterestTagsSchema,
        load_default=lambda: InterestTagsSchema().load({}),
        metadata={
            "description": "Tags of each status. On a status change the new status's tags "
            "are added and the previous status's removed (only those the bridge added)."
        },
    )
    sync_custom_labels = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Sync custom lead labels, which arrive with the label's text as "
            "event_type; off, they are answered 200 ignored."
        },
    )
    custom_label_tags = _tag_list(
        ["instantly-label-{label}"],
        LABEL_TAG_PLACEHOLDERS,
        "Tags of a custom label; {label} is its text.",
    )


def _statuses(default: list[str]):
    return fields.List(
        fields.String(
            validate=validate.OneOf(
                STATUSES, error="unknown status {input!r}; use one of {choices}"
            )
        ),
        load_default=lambda: list(default),
    )


class ReplyNoteSchema(Schema):
    enabled = fields.Boolean(
        load_default=False,
        metadata={"description": "Add each reply as a note on the contact, once per reply."},
    )


# Said next to the setting: in its description and on the settings page, above its boxes.
REPLY_MESSAGE_WARNING = (
    "Answering from GHL sends from GHL's own email, not from the Instantly mailbox the lead "
    "wrote to; each message carries the Unibox link to answer there."
)


class ReplyMessageSchema(Schema):
    enabled = fields.Boolean(
        load_default=False,
        metadata={
            "label": "Add each reply to the contact's conversation",
            "description": "Each reply as an inbound email in the contact's GHL "
            "conversation, threaded, once per reply. " + REPLY_MESSAGE_WARNING,
        },
    )
    auto_replies = fields.Boolean(
        load_default=False,
        metadata={
            "label": "Auto replies too",
            "description": "Auto replies (out of office and the like) too, when they are "
            "synced (events.auto_reply_received).",
        },
    )


class WorkflowSchema(Schema):
    enabled = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Add the contact to a GHL workflow when it reaches one of the "
            "statuses, once per contact and workflow."
        },
    )
    workflow_id = fields.String(load_default="", validate=validate.Length(max=100))
    statuses = _statuses(["interested", "meeting_booked"])

    @validates_schema
    def _id_when_enabled(self, data: dict, **_: Any) -> None:
        if data["enabled"] and not data["workflow_id"].strip():
            raise ValidationError("required when enabled", "workflow_id")


OpportunityStagesSchema = Schema.from_dict(
    {
        status: fields.String(
            load_default="", validate=validate.Length(max=100), metadata={"picker": "ghl_stage"}
        )
        for status in STATUSES
    },
    name="OpportunityStagesSchema",
)
# GHL opportunity status per interest status; the rest stay open.
_DEFAULT_OPPORTUNITY_STATUS = {"closed": "won", "lost": "lost", "not_interested": "lost"}
OpportunityStatusSchema = Schema.from_dict(
    {
        status: fields.String(
            load_default=_DEFAULT_OPPORTUNITY_STATUS.get(status, "open"),
            validate=validate.OneOf(("open", "won", "lost", "abandoned")),
        )
        for status in STATUSES
    },
    name="OpportunityStatusSchema",
)


class OpportunitySchema(Schema):
    enabled = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Create the contact's opportunity in the pipeline on the first of "
            "the statuses, and move it to each status's stage after."
        },
    )
    pipeline_id = fields.String(load_default="", validate=validate.Length(max=100))
    # The stage for every chosen status without its own stage in `stages`.
    stage_id = fields.String(load_default="", validate=validate.Length(max=100))
    stages = fields.Nested(
        OpportunityStagesSchema, load_default=lambda: OpportunityStagesSchema().load({})
    )
    ghl_status = fields.Nested(
        OpportunityStatusSchema, load_default=lambda: OpportunityStatusSchema().load({})
    )
    statuses = _statuses(["interested", "meeting_booked", "meeting_completed", "closed"])
    name = fields.String(
        load_default="{name} (Instantly)",
        validate=[
            validate.Length(min=1, max=200),
            _template_check(OPPORTUNITY_NAME_PLACEHOLDERS),
        ],
    )

    @validates_schema
    def _pipeline_and_stages_when_enabled(self, data: dict, **_: Any) -> None:
        if not data["enabled"]:
            return
        if not data["pipeline_id"].strip():
            raise ValidationError("required when enabled", "pipeline_id")
        unstaged = [s for s in data["statuses"] if not stage_for(data, s)]
        if unstaged:
            raise ValidationError(
                f"required when enabled, unless each chosen status has its own stage "
                f"(none for {', '.join(unstaged)} in actions.opportunity.stages)",
                "stage_id",
            )


def stage_for(opportunity: dict, status: str) -> str:
    """The pipeline stage id an interest status moves the opportunity to ('' for none)."""
    return (opportunity["stages"].get(status) or opportunity["stage_id"]).strip()


class ActionsSchema(Schema):
    reply_note = fields.Nested(ReplyNoteSchema, load_default=lambda: ReplyNoteSchema().load({}))
    reply_message = fields.Nested(
        ReplyMessageSchema,
        load_default=lambda: ReplyMessageSchema().load({}),
        metadata={
            "label": "Reply in GHL's inbox",
            "description": "The reply's subject, its text without the quoted thread, the "
            "time the lead replied and a link to Instantly's Unibox, in GHL's Conversations. "
            "The token needs the conversations scopes. " + REPLY_MESSAGE_WARNING,
        },
    )
    workflow = fields.Nested(WorkflowSchema, load_default=lambda: WorkflowSchema().load({}))
    opportunity = fields.Nested(
        OpportunitySchema, load_default=lambda: OpportunitySchema().load({})
    )


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
    """Polling Instantly for what webhooks missed (bridge/reconcile/reconciler.py)."""

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


# The longest a retention setting may be ("keep it"): a little over reconcile.first_run_days'
# largest value, so that any look-back can be outlasted.
MAX_RETENTION_DAYS = 3660
DEFAULT_EVENT_DAYS = 90


def _days(default: int, description: str) -> fields.Integer:
    # At least 1: a 0 (or an emptied form field read as 0) must never mean "delete it all now".
    return fields.Integer(
        load_default=default,
        validate=validate.Range(min=1, max=MAX_RETENTION_DAYS),
        metadata={"description": description},
    )


class RetentionSchema(Schema):
    """What the worker forgets, and after how many days (bridge/store/retention.py). Dead,
    pending and processing events are never pruned, nor their GHL calls."""

    payload_days = _days(
        30,
        "Days a finished (done, ignored, superseded) event keeps its whole payload; after, "
        "the reply's text and HTML and other long values are removed and the row kept "
        "(until retention.event_days).",
    )
    event_days = _days(
        DEFAULT_EVENT_DAYS,
        "Days a finished event's row (its key and outcome) is kept: a redelivery or a "
        "reconciliation of it within this time is answered duplicate. Must be longer than "
        "reconcile.first_run_days.",
    )
    call_log_days = _days(30, "Days the GHL call log keeps a finished event's calls.")
    run_days = _days(90, "Days reconciliation runs are kept (the latest one always is).")


def lookback_problem(settings: dict) -> str | None:
    """Why retention.event_days would forget replies reconciliation still reads, or None.

    A reply is known by its event's key only while the row is kept: one forgotten and read
    again by reconciliation would be enqueued and synced a second time."""
    days = settings["retention"]["event_days"]
    reconcile = settings["reconcile"]
    if days <= reconcile["first_run_days"]:
        return (
            f"retention.event_days ({days}) must be longer than reconcile.first_run_days "
            f"({reconcile['first_run_days']}): the first reconciliation reads replies that "
            "far back, and one whose event was forgotten would be synced again"
        )
    if days * 24 * 60 <= reconcile["overlap_minutes"]:
        return (
            f"retention.event_days ({days}) must be longer than reconcile.overlap_minutes "
            f"({reconcile['overlap_minutes']} minutes): every reconciliation re-reads that "
            "far back"
        )
    return None


class SettingsSchema(Schema):
    sync = fields.Nested(SyncSchema, load_default=lambda: SyncSchema().load({}))
    reconcile = fields.Nested(ReconcileSchema, load_default=lambda: ReconcileSchema().load({}))
    events = fields.Dict(
        keys=fields.String(
            validate=validate.OneOf(
                SYNCABLE_EVENTS,
                error="Must be one of: {choices}. Interest statuses are set under [interest].",
            )
        ),
        values=fields.Nested(EventSchema),
        load_default=dict,
    )
    field_map = fields.List(fields.Nested(FieldMapRowSchema), load_default=list)
    interest = fields.Nested(InterestSchema, load_default=lambda: InterestSchema().load({}))
    actions = fields.Nested(ActionsSchema, load_default=lambda: ActionsSchema().load({}))
    retention = fields.Nested(
        RetentionSchema,
        load_default=lambda: RetentionSchema().load({}),
        metadata={
            "description": "How long the bridge keeps what it has finished with. Dead and "
            "queued events are never pruned."
        },
    )

    locations = fields.List(
        fields.Nested(LocationSchema),
        load_default=list,
        validate=validate.Length(max=500),
        metadata={
            "description": "GHL sub-accounts besides GHL_LOCATION_ID's, each with its "
            "token, routes and overrides."
        },
    )
    instantly = fields.Nested(InstantlySchema, load_default=lambda: InstantlySchema().load({}))
    routing = fields.Nested(RoutingSchema, load_default=lambda: RoutingSchema().load({}))

    @pre_load
    def _event_days_outlast_first_run(self, data: Any, **_: Any) -> Any:
        """Settings stored before [retention] existed, with reconcile.first_run_days at or
        above the default event_days, would fail to load and stop the bridge: an unset
        event_days is made just longer than that look-back instead."""
        if not isinstance(data, dict):
            return data
        retention, reconcile = data.get("retention", {}), data.get("reconcile", {})
        if not isinstance(retention, dict) or "event_days" in retention:
            return data
        first_run = reconcile.get("first_run_days") if isinstance(reconcile, dict) else None
        if type(first_run) is not int or first_run < DEFAULT_EVENT_DAYS:
            return data
        days = min(first_run + 1, MAX_RETENTION_DAYS)
        return {**data, "retention": {**retention, "event_days": days}}

    @validates_schema
    def _events_outlast_reconciliation(self, data: dict, **_: Any) -> None:
        problem = lookback_problem(data)
        if problem:
            raise ValidationError({"event_days": [problem]}, "retention")

    @validates_schema
    def _routes_agree(self, data: dict, **_: Any) -> None:
        problems = route_problems(data)
        if problems:
            raise ValidationError(problems)

    @validates_schema
    def _overrides_are_settings(self, data: dict, **_: Any) -> None:
        # Checked as the settings the location will run with, so an override of a setting
        # that does not exist, or with a bad value, is named like any other setting.
        if "locations" not in data or not any(loc["overrides"] for loc in data["locations"]):
            return
        base = location_overrides.without_locations(data)
        for i, location in enumerate(data["locations"]):
            if not location["overrides"]:
                continue
            try:
                SettingsSchema().load(location_overrides.merged(base, location["overrides"]))
            except ValidationError as exc:
                found = _flatten(exc.messages)
                raise ValidationError(
                    {f"locations.{i}.overrides.{path}": msgs for path, msgs in found.items()}
                ) from None

    @validates_schema
    def _dnd_only_where_it_means_something(self, data: dict, **_: Any) -> None:
        for event_type, rule in data.get("events", {}).items():
            if rule["dnd"] and event_type not in DND_EVENTS:
                raise ValidationError(
                    {event_type: {"dnd": [f"only {' and '.join(DND_EVENTS)} can set DND"]}},
                    "events",
                )

    @validates_schema
    def _one_source_per_ghl_field(self, data: dict, **_: Any) -> None:
        seen: set[str] = set()
        for i, row in enumerate(data.get("field_map", [])):
            if row["ghl"] in seen:
                raise ValidationError(
                    {str(i): {"ghl": [f"{row['ghl']!r} is mapped twice"]}}, "field_map"
                )
            seen.add(row["ghl"])


def for_location(settings: dict, overrides: dict) -> dict:
    """The settings a location syncs with: the bridge's with its overrides laid over
    (validated when the settings were saved)."""
    if not overrides:
        return settings
    return validate_settings(
        location_overrides.merged(location_overrides.without_locations(settings), overrides)
    )


def validate_settings(raw: dict) -> dict:
    """Validate and normalise settings, raising SettingsError naming each bad one."""
    try:
        return SettingsSchema().load(raw)
    except ValidationError as exc:
        raise SettingsError(_flatten(exc.messages)) from None


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


# A settings file is a few KiB; this bounds what an import reads.
MAX_IMPORT_BYTES = 256 * 1024


class ImportRefused(ValueError):
    """A settings file that cannot be read at all; `status` is the HTTP answer the page
    gives (the CLI exits 1 with the same message)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_import(data: bytes) -> dict:
    """Read an imported settings file (the page's upload, `settings import FILE`): UTF-8
    TOML of at most MAX_IMPORT_BYTES, validated. Raises ImportRefused or SettingsError."""
    if not data.strip():
        raise ImportRefused("the settings file is empty: give a TOML file as exported")
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRefused(
            f"the settings file is larger than {MAX_IMPORT_BYTES // 1024} KiB", status=413
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportRefused("the settings file is not UTF-8 text") from None
    return parse_toml(text)


def error_lines(exc: SettingsError) -> list[str]:
    """`<setting path>: <what is wrong>`, one line per setting, as the page and CLI say it."""
    return [f"{path}: {' '.join(msgs)}" for path, msgs in exc.messages.items()]


def parse_toml(text: str) -> dict:
    """Parse and validate settings written as TOML."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError({"toml": [str(exc)]}) from None
    except RecursionError:
        # tomllib descends by recursion: a few hundred nested arrays or inline tables
        # exhaust the stack. No settings file nests more than three deep.
        raise SettingsError({"toml": ["the settings file is nested too deeply"]}) from None
    return validate_settings(raw)


def to_toml(settings: dict) -> str:
    """Write settings as TOML in the same shape as config/defaults.toml.

    TOML has no null: unset optional values are left out, and reading the file back
    gives them their defaults again.
    """
    return tomli_w.dumps(_without_none(settings))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value if v is not None]
    return value


def load_defaults(path: Traversable = DEFAULTS_FILE) -> dict:
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
    now = now_iso()
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

    def cached(self) -> dict | None:
        """The settings last read, without asking the store (None before the first read)."""
        return self._settings if self._version > 0 else None

    def get(self, db: sqlite_utils.Database) -> dict:
        latest = version(db)
        if latest != self._version or latest == 0:
            self._version, self._settings = current(db)
        return self._settings
