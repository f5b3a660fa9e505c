"""The settings form, built from SettingsSchema so new settings sections appear by themselves.

Nested → fieldset, Boolean → checkbox, Integer/Float → number, String → text (a select
when the schema names its choices), List[String] → one per line (checkboxes when the
schema names its choices), List[Nested] and Dict with free keys → editable rows (a
card per record when a record holds lists or tables, as a location does), Dict with named
keys → one fieldset per key, a table of any settings (a location's overrides) → a TOML
text box. Anything else is edited as JSON. Form fields are named by their dotted settings
path (`sync.max_attempts`, `field_map.0.ghl`), the same paths SettingsError reports.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate
from werkzeug.datastructures import MultiDict

from bridge.settings import (
    DND_EVENTS,
    OPPORTUNITY_NAME_PLACEHOLDERS,
    REPLY_MESSAGE_WARNING,
    TAG_PLACEHOLDERS,
    to_toml,
)

REMOVE = "_remove"
KEY = "_key"
BLANKS = "_blanks"


def _placeholders(names: set[str]) -> str:
    return " ".join("{" + p + "}" for p in sorted(names))


# Help for every setting, by path (`events.reply_received`) or pattern (`events.*.tags`);
# it wins over the schema's `metadata={"description": ...}`, which new settings bring.
HELP = {
    "sync": "How the worker writes to GHL and how long it keeps trying.",
    "sync.source": "GHL contact source set on every upsert.",
    "sync.max_attempts": "Tries before a failing event is dead-lettered.",
    "sync.backoff_base_seconds": "First retry delay; it doubles each try (±50% jitter).",
    "sync.backoff_max_seconds": "Longest wait between two tries.",
    "reconcile": (
        "Polling Instantly (read only) for what webhooks missed, into the same inbox with the "
        "same keys, so nothing is synced twice. Needs INSTANTLY_API_KEY."
    ),
    "reconcile.enabled": (
        "Run it on this schedule inside the worker; `instantly-ghl-bridge reconcile` runs it "
        "once by hand."
    ),
    "reconcile.interval_minutes": "Minutes between two scheduled runs.",
    "reconcile.overlap_minutes": (
        "Replies are read again from this many minutes before the last one seen, as Instantly "
        "indexes some late. Reading one twice costs nothing: it is synced once."
    ),
    "reconcile.first_run_days": (
        "How far back the very first run looks for replies; later runs start where the last "
        "one ended."
    ),
    "reconcile.campaigns": "Campaigns whose lead statuses are polled; none means every campaign.",
    "reconcile.lists": "Lead lists whose lead statuses are polled as well.",
    "events": "Which Instantly event types are synced, and the GHL tags each one adds.",
    "events.reply_received": "A lead replied to a campaign email.",
    "events.auto_reply_received": "An out-of-office or other automatic reply; off by default.",
    "events.lead_unsubscribed": "A lead unsubscribed.",
    "events.email_bounced": "A campaign email to the lead bounced; off by default.",
    "events.*": "An Instantly event type.",
    "events.*.enabled": "Sync this event type.",
    "events.*.tags": (
        "One tag template per line. Placeholders: "
        + _placeholders(TAG_PLACEHOLDERS)
        + ". A tag whose placeholders are all empty is skipped; GHL lowercases tags."
    ),
    "events.*.dnd": (
        "Also set the contact's email do-not-disturb in GHL, so GHL's own automations stop "
        "emailing them. Keep it on for unsubscribes: mailing someone who opted out breaks "
        "anti-spam law."
    ),
    "field_map": (
        "Instantly lead field (the webhook's camelCase name, or a custom variable) → GHL "
        "standard field, or custom field as contact.<field key>. Empty values are never "
        "sent, so they never blank out GHL data. The email is always sent."
    ),
    "field_map.*.instantly": "The lead field as the webhook names it, or a custom variable.",
    "field_map.*.ghl": (
        "A GHL standard field, or contact.<field key>: checked against the location's custom "
        "fields when you save."
    ),
    "interest": (
        "Instantly's lead interest statuses as GHL tags: a contact carries the tags of its "
        "latest status only."
    ),
    "interest.tags.*": "Tags added when a lead reaches this status, one template per line.",
    "actions": "Optional GHL actions, each off until you switch it on.",
    "actions.reply_note": (
        "The note holds the reply's subject, its text without the quoted thread, the "
        "campaign, the step and a link to Instantly's Unibox."
    ),
    "actions.reply_message": (
        "Each reply as an inbound email in the contact's GHL conversation (the Conversations "
        "inbox): once, in one GHL thread per Instantly thread, dated when the lead replied. "
        "The GHL token needs the conversations.readonly, conversations.write, "
        "conversations/message.readonly and conversations/message.write scopes; doctor "
        "checks them."
    ),
    "actions.reply_message.enabled": (
        "The contact and its tags are written first. A token lacking a conversations scope "
        "dead-letters the reply naming the scope, while the location's other events go on "
        "syncing."
    ),
    "actions.reply_message.auto_replies": (
        "Automatic replies (out of office) as well, when Automatic reply received is synced "
        "under Event types."
    ),
    "actions.workflow": "Start a GHL workflow for the contact on the statuses you choose.",
    "actions.workflow.workflow_id": (
        "The GHL workflow; only a published one runs. When GHL's list cannot be loaded, type "
        "the workflow's id (from its address in GHL)."
    ),
    "actions.workflow.statuses": "The interest statuses that add the contact to the workflow.",
    "actions.opportunity": "An opportunity in a GHL pipeline that follows the lead's status.",
    "actions.opportunity.pipeline_id": (
        "The GHL pipeline the opportunity is created in. When GHL's list cannot be loaded, "
        "type the pipeline's id."
    ),
    "actions.opportunity.stage_id": (
        "The stage of every chosen status that has no stage of its own below."
    ),
    "actions.opportunity.stages": (
        "A status's own stage, in the chosen pipeline; empty uses the default stage. Only the "
        "chosen statuses use theirs."
    ),
    "actions.opportunity.stages.*": "The stage for this status; empty: the default stage.",
    "actions.opportunity.ghl_status": (
        "The GHL opportunity status (open, won, lost, abandoned) set with each interest status."
    ),
    "actions.opportunity.ghl_status.*": "The opportunity's GHL status on this interest status.",
    "actions.opportunity.statuses": (
        "The first of these creates the opportunity; each later one moves it to its stage."
    ),
    "actions.opportunity.name": (
        "The opportunity's name. Placeholders: " + _placeholders(OPPORTUNITY_NAME_PLACEHOLDERS)
    ),
    "locations": (
        "GHL sub-accounts (locations) this bridge syncs to besides GHL_LOCATION_ID's, one per "
        "client. An event goes to the location its campaign is routed to, else its "
        "workspace's, else the default location under Routing. An entry with "
        "GHL_LOCATION_ID's id names, routes or overrides that location."
    ),
    "locations.*.id": "The GHL location id (Settings › Business Profile in the sub-account).",
    "locations.*.name": "How pages and messages name this location.",
    "locations.*.token_env": (
        "The environment variable holding this location's Private Integration token; leave "
        "it empty to enter the token below instead (stored encrypted)."
    ),
    "locations.*.workspaces": "Instantly workspace ids whose events all go here, one per line.",
    "locations.*.campaigns": (
        "Instantly campaign ids whose events go here, one per line; a campaign's route wins "
        "over its workspace's."
    ),
    "locations.*.overrides": (
        "Settings this location uses instead of the bridge's, as TOML in the format of "
        "config/defaults.toml (sections sync, events, field_map, interest, actions); a list "
        "replaces the bridge's whole list. Example: [events.reply_received] then "
        'tags = ["replied", "acme-{campaign_name}"].'
    ),
    "instantly": "Instantly workspaces, each with its own API key.",
    "instantly.workspaces": (
        "Workspaces besides INSTANTLY_API_KEY's: the bridge polls each and registers its "
        "webhooks there with that workspace's key."
    ),
    "instantly.workspaces.*.id": "The Instantly workspace id.",
    "instantly.workspaces.*.name": "How pages and messages name this workspace.",
    "instantly.workspaces.*.key_env": (
        "The environment variable holding its API key; empty means INSTANTLY_API_KEY."
    ),
    "routing": "Where an event goes when no location claims its campaign or workspace.",
    "routing.default_location": (
        "An event no route claims goes here. Hold keeps it (status unrouted) until a route "
        "exists; replay it then."
    ),
}

# Labels in words, by path or pattern; a field without one is named after its key.
LABELS = {
    "sync": "Syncing to GHL",
    "sync.source": "Contact source",
    "sync.max_attempts": "Tries before dead-lettering",
    "sync.backoff_base_seconds": "First retry delay (seconds)",
    "sync.backoff_max_seconds": "Longest retry delay (seconds)",
    "sync.ghl_daily_reserve": "GHL daily calls kept in reserve",
    "sync.ghl_daily_probe_seconds": "Check for the daily budget every (seconds)",
    "reconcile": "Reconciliation",
    "reconcile.enabled": "Poll Instantly on a schedule",
    "reconcile.interval_minutes": "Every (minutes)",
    "reconcile.overlap_minutes": "Overlap (minutes)",
    "reconcile.first_run_days": "First run looks back (days)",
    "reconcile.campaigns": "Campaigns",
    "reconcile.lists": "Lead lists",
    "events": "Event types",
    "events.auto_reply_received": "Automatic reply received",
    "events.*.enabled": "Sync",
    "events.*.tags": "GHL tags",
    "events.*.dnd": "Do not disturb",
    "field_map": "Field map",
    "field_map.*.instantly": "Instantly field or custom variable",
    "field_map.*.ghl": "GHL field",
    "interest": "Interest statuses",
    "interest.enabled": "Sync interest statuses",
    "interest.tags": "GHL tags per status",
    "interest.sync_custom_labels": "Sync custom lead labels",
    "interest.custom_label_tags": "Custom label tags",
    "actions": "GHL actions",
    "actions.reply_note": "Reply note",
    "actions.reply_note.enabled": "Add each reply as a note",
    "actions.reply_message": "Replies in GHL's inbox",
    "actions.reply_message.enabled": "Add each reply to the contact's GHL conversation",
    "actions.reply_message.auto_replies": "Automatic replies too",
    "actions.workflow": "Workflow",
    "actions.workflow.enabled": "Add contacts to a workflow",
    "actions.workflow.workflow_id": "Workflow",
    "actions.workflow.statuses": "On these statuses",
    "actions.opportunity": "Opportunity",
    "actions.opportunity.enabled": "Create and move an opportunity",
    "actions.opportunity.pipeline_id": "Pipeline",
    "actions.opportunity.stage_id": "Default stage",
    "actions.opportunity.stages": "Stage per status",
    "actions.opportunity.ghl_status": "GHL opportunity status",
    "actions.opportunity.statuses": "On these statuses",
    "actions.opportunity.name": "Opportunity name",
    "retention": "Keeping history",
    "retention.payload_days": "Full payloads kept (days)",
    "retention.event_days": "Finished events kept (days)",
    "retention.call_log_days": "GHL call log kept (days)",
    "retention.run_days": "Reconciliation runs kept (days)",
    "locations": "Locations (GHL sub-accounts)",
    "locations.*.id": "GHL location id",
    "locations.*.name": "Name",
    "locations.*.token_env": "Token variable",
    "locations.*.workspaces": "Instantly workspaces routed here",
    "locations.*.campaigns": "Instantly campaigns routed here",
    "locations.*.overrides": "Overrides (TOML)",
    "instantly": "Instantly workspaces",
    "instantly.workspaces": "Workspaces",
    "instantly.workspaces.*.id": "Workspace id",
    "instantly.workspaces.*.name": "Name",
    "instantly.workspaces.*.key_env": "API key variable",
    "routing": "Routing",
    "routing.default_location": "Events no route claims go to",
}

# What a person must know before switching a section on, shown as a warning under its legend.
NOTES = {"actions.reply_message": REPLY_MESSAGE_WARNING}

# Words for keys and choices wherever they appear: interest statuses, event types.
WORDS = {
    "closed": "Won (closed)",
    "reply_received": "Reply received",
    "lead_unsubscribed": "Unsubscribed",
    "email_bounced": "Email bounced",
}

# Settings that apply only under some keys of a dict: `events.*.dnd` is shown for the
# event types that can set do-not-disturb, and nowhere else (the schema refuses it).
ONLY_FOR = {"events.*.dnd": DND_EVENTS}

# Fields that get a list of choices fetched from GHL or Instantly (see lookups.py).
# A schema field can ask for one itself with metadata={"picker": "<name>"}.
PICKER_BY_PATTERN = {"field_map.*.ghl": "ghl_field", "field_map.*.instantly": "instantly_field"}
# Pickers shown as a select of GHL's list, not a text box with suggestions: any other value
# would be refused when saving anyway.
SELECT_PICKERS = {"ghl_workflow", "ghl_pipeline", "ghl_stage"}
PICKER_BY_NAME = {
    "workflow_id": "ghl_workflow",
    "pipeline_id": "ghl_pipeline",
    "stage_id": "ghl_stage",
    "campaigns": "instantly_campaign",
    "lists": "instantly_list",
}
# Ids typed without a picker: a location's routes name campaigns of any workspace, while
# the campaign list is INSTANTLY_API_KEY's workspace's, and one checkbox per campaign in
# every location's card would bury the page.
NO_PICKER = {"locations.*.campaigns", "locations.*.workspaces"}
# Tables of any settings, edited as TOML text.
TOML_FIELDS = {"locations.*.overrides"}


@dataclass
class Widget:
    """One control (or group of controls) of the settings form."""

    path: str
    name: str
    label: str
    # section | checkbox | number | text | select | lines | checks | rows | records |
    # record | toml | json
    kind: str
    help: str = ""
    note: str = ""
    value: Any = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    children: list[Widget] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    choice_labels: dict[str, str] = field(default_factory=dict)
    pattern: str = ""
    step: str = "1"
    picker: str | None = None
    optional: bool = False
    columns: list[Widget] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    row_errors: list[list[str]] = field(default_factory=list)
    row_warnings: list[list[str]] = field(default_factory=list)
    keyed: bool = False
    blanks: int = 1
    # A record never saved (a blank card to fill in).
    blank: bool = False
    # What the page adds beside a record (a location's token state), by settings_page.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def as_select(self) -> bool:
        """A GHL id picked from GHL's list (a typed id when the list cannot be loaded)."""
        return self.picker in SELECT_PICKERS

    @property
    def has_errors(self) -> bool:
        """Whether this widget, or any inside it, carries an error (for the jump list)."""
        return bool(
            self.errors or any(self.row_errors) or any(child.has_errors for child in self.children)
        )

    def find(self, path: str) -> Widget | None:
        """The widget at `path`, this one or one inside it."""
        if self.path == path:
            return self
        for child in self.children:
            if path == child.path or path.startswith(child.path + "."):
                return child.find(path)
        return None


def pickers(widgets: list[Widget]) -> set[str]:
    """Every picker the form uses, so only those lists are fetched."""
    found: set[str] = set()
    for w in widgets:
        if w.picker:
            found.add(w.picker)
        found |= pickers(w.children) | pickers(w.columns)
    return found


# --- schema → widgets ------------------------------------------------------------------------


def build(
    schema: Schema,
    values: dict[str, Any],
    errors: dict[str, list[str]] | None = None,
    blanks: dict[str, int] | None = None,
    warnings: dict[str, list[str]] | None = None,
    choices: dict[str, list[tuple[str, str]]] | None = None,
) -> tuple[list[Widget], list[str]]:
    """The form's widgets with values, errors and warnings; plus errors no widget took.
    `choices` makes the text fields at those paths selects of (value, label), for choices
    that depend on other settings (the default location is one of the declared ones)."""
    pending = dict(errors or {})
    widgets = _schema_widgets(schema, values or {}, "", "", pending, blanks or {})
    for path, offered in (choices or {}).items():
        for widget in widgets:
            found = widget.find(path)
            if found is not None and found.kind == "text":
                _offer(found, offered)
    leftover = [f"{path}: {msg}" for path, msgs in pending.items() for msg in msgs]
    unplaced = dict(warnings or {})
    _attach_warnings(widgets, unplaced)
    leftover += [f"{path}: {msg}" for path, msgs in unplaced.items() for msg in msgs]
    return widgets, leftover


def _offer(widget: Widget, offered: list[tuple[str, str]]) -> None:
    """Make a text field a select; a value not offered stays, marked, so a save keeps it
    and the check says what is wrong with it."""
    labels = dict(offered)
    value = widget.value or ""
    if value not in labels:
        labels[value] = f"{value} (not declared)"
    widget.kind = "select"
    widget.choices = list(labels)
    widget.choice_labels = labels


def _attach_warnings(widgets: list[Widget], warnings: dict[str, list[str]]) -> None:
    """Put each warning beside the field (or row) its path names."""
    for widget in widgets:
        if widget.kind in ("section", "records", "record"):
            _attach_warnings(widget.children, warnings)
        elif widget.kind == "toml":
            widget.warnings = _take_below(warnings, widget.path)
        elif widget.kind == "rows":
            widget.row_warnings = [
                _take(warnings, _join(widget.path, str(i)), nested=True)
                for i in range(len(widget.rows))
            ]
        else:
            widget.warnings = _take(warnings, widget.path, nested=True)


def _schema_widgets(
    schema: Schema,
    values: dict[str, Any],
    prefix: str,
    pattern: str,
    errors: dict[str, list[str]],
    blanks: dict[str, int],
) -> list[Widget]:
    out = []
    for name, fld in schema.fields.items():
        if fld.dump_only:
            continue
        path = _join(prefix, name)
        pat = _join(pattern, name)
        if not applies(path):
            continue
        value = values.get(name) if isinstance(values, dict) else None
        out.append(_widget(fld, name, path, pat, value, errors, blanks))
    return out


def applies(path: str) -> bool:
    """Whether the setting at `path` means anything there (see ONLY_FOR)."""
    parts = path.split(".")
    for pattern, keys in ONLY_FOR.items():
        pat = pattern.split(".")
        if len(pat) == len(parts) and all(p in ("*", q) for p, q in zip(pat, parts, strict=True)):
            return parts[pat.index("*")] in keys
    return True


def _widget(
    fld: fields.Field,
    name: str,
    path: str,
    pattern: str,
    value: Any,
    errors: dict[str, list[str]],
    blanks: dict[str, int],
) -> Widget:
    widget = Widget(
        path=path,
        name=name,
        label=LABELS.get(path) or LABELS.get(pattern) or fld.metadata.get("label") or words(name),
        kind="text",
        # `<parent>.*` covers a schema of one field per status, as well as a dict's keys.
        help=HELP.get(path)
        or HELP.get(pattern)
        or HELP.get(pattern.rpartition(".")[0] + ".*")
        or fld.metadata.get("description", ""),
        note=NOTES.get(path) or NOTES.get(pattern, ""),
        pattern=pattern,
        optional=bool(fld.allow_none),
        picker=None
        if pattern in NO_PICKER
        else fld.metadata.get("picker")
        or PICKER_BY_PATTERN.get(pattern)
        or PICKER_BY_NAME.get(name),
    )
    if pattern in TOML_FIELDS:
        widget.kind = "toml"
        widget.value = value if isinstance(value, str) else to_toml(value or {})
        widget.errors = _take_below(errors, path)
    elif isinstance(fld, fields.List) and _holds_records(fld):
        _records(widget, fld, pattern, value, errors, blanks)
    elif isinstance(fld, fields.Nested) and not fld.many:
        widget.kind = "section"
        widget.errors = _take(errors, path)
        widget.children = _schema_widgets(fld.schema, value or {}, path, pattern, errors, blanks)
    elif isinstance(fld, fields.Dict) and _choices(fld.key_field):
        widget.kind = "section"
        widget.errors = _take(errors, path)
        for key in _choices(fld.key_field):
            entry = (value or {}).get(key)
            if entry is None:
                entry = _default_entry(fld.value_field)
            child = _widget(
                fld.value_field or fields.Raw(),
                key,
                _join(path, key),
                _join(pattern, "*"),
                entry,
                errors,
                blanks,
            )
            child.label = LABELS.get(child.path) or words(key)
            widget.children.append(child)
    elif isinstance(fld, fields.Dict) or (
        isinstance(fld, fields.List) and isinstance(fld.inner, fields.Nested)
    ):
        _rows(widget, fld, pattern, value, errors, blanks)
    elif isinstance(fld, fields.List) and _is_text(fld.inner) and _choices(fld.inner):
        widget.kind = "checks"
        widget.choices = list(_choices(fld.inner))
        widget.choice_labels = {c: words(c) for c in widget.choices}
        widget.value = [str(v) for v in (value or [])]
        widget.errors = _take(errors, path, nested=True)
    elif isinstance(fld, fields.List) and _is_text(fld.inner):
        widget.kind = "lines"
        widget.value = [str(v) for v in (value or [])]
        if pattern not in NO_PICKER:
            widget.picker = widget.picker or fld.inner.metadata.get("picker")
        widget.errors = _take(errors, path, nested=True)
    else:
        _scalar(widget, fld, value)
        widget.errors = _take(errors, path, nested=True)
    return widget


def _scalar(widget: Widget, fld: fields.Field, value: Any) -> None:
    if isinstance(fld, fields.Boolean):
        widget.kind = "checkbox"
        widget.value = bool(value)
    elif isinstance(fld, fields.Number):
        widget.kind = "number"
        widget.step = "1" if isinstance(fld, fields.Integer) else "any"
        widget.value = _number_text(value)
    elif _is_text(fld):
        widget.kind = "select" if _choices(fld) else "text"
        widget.choices = list(_choices(fld))
        widget.choice_labels = {c: words(c) for c in widget.choices}
        widget.value = "" if value is None else value
    else:
        widget.kind = "json"
        widget.value = value if isinstance(value, str) else json.dumps(value, indent=2)


def _holds_records(fld: fields.List) -> bool:
    """A list of records some of whose fields are lists or tables: too much for a table row."""
    inner = fld.inner
    holders = fields.List | fields.Dict | fields.Nested
    return isinstance(inner, fields.Nested) and any(
        isinstance(f, holders) for f in inner.schema.fields.values()
    )


def _records(
    widget: Widget,
    fld: fields.List,
    pattern: str,
    value: Any,
    errors: dict[str, list[str]],
    blanks: dict[str, int],
) -> None:
    """One card (a fieldset of ordinary fields) per record, then blank cards to fill in."""
    widget.kind = "records"
    widget.errors = _take(errors, widget.path)
    inner = fld.inner
    assert isinstance(inner, fields.Nested)
    widget.blanks = blanks.get(widget.path, 1)
    records = [r for r in (value or []) if isinstance(r, dict)]
    for index in range(len(records) + widget.blanks):
        blank = index >= len(records)
        record = {} if blank else records[index]
        path = _join(widget.path, str(index))
        card = Widget(
            path=path,
            name=str(index),
            label=str(record.get("name") or record.get("id") or "")
            or ("New" if blank else f"{widget.label}: entry {index + 1}"),
            kind="record",
            pattern=_join(pattern, "*"),
            blank=blank,
        )
        card.children = _schema_widgets(
            inner.schema, record, path, _join(pattern, "*"), errors, blanks
        )
        # What no field took (a token's problem, a record-wide error) is the card's.
        card.errors = _take(errors, path, nested=True)
        widget.children.append(card)


def _rows(
    widget: Widget,
    fld: fields.Field,
    pattern: str,
    value: Any,
    errors: dict[str, list[str]],
    blanks: dict[str, int],
) -> None:
    """Editable rows: a list of nested records, or a dict with free keys (key column first)."""
    widget.kind = "rows"
    widget.errors = _take(errors, widget.path)
    if isinstance(fld, fields.Dict):
        widget.keyed = True
        inner = fld.value_field or fields.Raw()
        records = list((value or {}).items())
    else:
        inner = fld.inner
        records = [(None, v) for v in (value or [])]
    if isinstance(inner, fields.Nested):
        columns = [
            _widget(f, n, n, _join(_join(pattern, "*"), n), None, {}, {})
            for n, f in inner.schema.fields.items()
            if not f.dump_only
        ]
    else:
        columns = [_widget(inner, "value", "value", _join(pattern, "*"), None, {}, {})]
        columns[0].label = "Value"
    widget.columns = columns
    widget.blanks = blanks.get(widget.path, 1)
    for index, (key, record) in enumerate(records):
        row_path = _join(widget.path, str(index))
        row = (
            dict(record)
            if isinstance(inner, fields.Nested) and isinstance(record, dict)
            else {"value": record}
        )
        if widget.keyed:
            row[KEY] = key
        row_errors = []
        for column in columns:
            row_errors += [
                f"{column.label}: {m}"
                for m in _take(errors, _join(row_path, column.name), nested=True)
            ]
            if column.kind == "lines" and isinstance(row.get(column.name), list):
                row[column.name] = "\n".join(str(v) for v in row[column.name])
        row_errors += _take(errors, row_path, nested=True)
        if widget.keyed and key is not None:
            # Dict errors are reported under the key, not the row number.
            row_errors += _take(errors, _join(widget.path, str(key)), nested=True)
        widget.rows.append(row)
        widget.row_errors.append(row_errors)


def _number_text(value: Any) -> Any:
    """A whole number as `42`, not `42.0` (a float setting holds 30.0 for 30)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return "" if value is None else value


def words(name: str) -> str:
    """A key as words: `meeting_booked` → Meeting booked."""
    return WORDS.get(name) or name.replace("_", " ").capitalize()


def _default_entry(fld: fields.Field | None) -> Any:
    """What an absent named key looks like: the nested defaults, but switched off,
    since a key missing from the settings is not synced."""
    if isinstance(fld, fields.Nested):
        try:
            entry = fld.schema.load({})
        except ValidationError:
            entry = {}
        if "enabled" in entry:
            entry["enabled"] = False
        return entry
    if isinstance(fld, fields.List):
        return []
    return None


def _take_below(errors: dict[str, list[str]], path: str) -> list[str]:
    """Remove and return the errors for `path` and below it, each naming the setting below
    (`events.reply_received.tags: …`), as a TOML box holds many settings."""
    taken = list(errors.pop(path, []))
    for key in [k for k in errors if k.startswith(path + ".")]:
        below = key[len(path) + 1 :]
        taken += [f"{below}: {m}" for m in errors.pop(key)]
    return taken


def _take(errors: dict[str, list[str]], path: str, nested: bool = False) -> list[str]:
    """Remove and return the errors for `path` (and, when nested, below it)."""
    taken = list(errors.pop(path, []))
    if nested:
        for key in [k for k in errors if k.startswith(path + ".")]:
            taken += errors.pop(key)
    return taken


def _choices(fld: fields.Field | None) -> tuple[str, ...]:
    for validator in getattr(fld, "validators", []) or []:
        if isinstance(validator, validate.OneOf):
            return tuple(str(c) for c in validator.choices)
    return ()


def _is_text(fld: fields.Field | None) -> bool:
    return isinstance(fld, fields.String)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# --- form → raw settings ---------------------------------------------------------------------


def parse(schema: Schema, form: MultiDict) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Read the posted form into raw settings (for the schema to validate).

    Returns the raw settings and errors found while reading (bad JSON or TOML), by path.
    """
    problems: dict[str, list[str]] = {}
    return _parse_schema(schema, form, "", "", problems), problems


def _parse_schema(
    schema: Schema, form: MultiDict, prefix: str, pattern: str, problems: dict[str, list[str]]
) -> dict[str, Any]:
    out = {}
    for name, fld in schema.fields.items():
        path = _join(prefix, name)
        if fld.dump_only or not applies(path):
            continue
        out[name] = _parse_field(fld, form, path, _join(pattern, name), problems)
    return out


def _parse_field(
    fld: fields.Field, form: MultiDict, path: str, pattern: str, problems: dict[str, list[str]]
) -> Any:
    if pattern in TOML_FIELDS:
        return _parse_toml(form.get(path, ""), path, problems)
    if isinstance(fld, fields.Nested) and not fld.many:
        return _parse_schema(fld.schema, form, path, pattern, problems)
    if isinstance(fld, fields.Dict) and _choices(fld.key_field):
        return {
            key: _parse_field(
                fld.value_field or fields.Raw(),
                form,
                _join(path, key),
                _join(pattern, "*"),
                problems,
            )
            for key in _choices(fld.key_field)
        }
    if isinstance(fld, fields.Dict):
        inner = fld.value_field or fields.Raw()
        return {
            str(row[KEY]).strip(): _row_value(inner, row)
            for row in _posted_rows(form, path, pattern, inner, problems, keyed=True)
        }
    if isinstance(fld, fields.List) and isinstance(fld.inner, fields.Nested):
        return [
            _row_value(fld.inner, row)
            for row in _posted_rows(form, path, pattern, fld.inner, problems)
        ]
    if isinstance(fld, fields.List) and _is_text(fld.inner):
        return _lines(form.getlist(path))
    return _parse_scalar(fld, form, path, problems)


def _parse_toml(text: str, path: str, problems: dict[str, list[str]]) -> Any:
    """A TOML box: its table, or the text as typed (kept for the page) with the error."""
    if not text.strip():
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.setdefault(path, []).append(f"not valid TOML: {exc}")
    except RecursionError:
        problems.setdefault(path, []).append("not valid TOML: nested too deeply")
    return text


def _parse_scalar(
    fld: fields.Field, form: MultiDict, path: str, problems: dict[str, list[str]]
) -> Any:
    if isinstance(fld, fields.Boolean):
        return path in form
    raw = form.get(path, "")
    if isinstance(fld, fields.Number | fields.String):
        text = raw.strip()
        if text == "" and fld.allow_none:
            return None
        return text
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        problems.setdefault(path, []).append(f"not valid JSON: {exc}")
        return raw


def posted_indices(form: MultiDict, path: str) -> list[int]:
    """The row numbers posted for the rows (or records) at `path`, in order."""
    pattern = re.compile(re.escape(path) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in form for m in [pattern.match(k)] if m})


def _posted_rows(
    form: MultiDict,
    path: str,
    pattern: str,
    inner: fields.Field,
    problems: dict[str, list[str]],
    keyed: bool = False,
) -> list[dict[str, Any]]:
    """The rows posted for a rows widget, minus removed and blank ones, in order."""
    columns = dict(inner.schema.fields) if isinstance(inner, fields.Nested) else {"value": inner}
    rows = []
    for index in posted_indices(form, path):
        row_path = _join(path, str(index))
        if _join(row_path, REMOVE) in form:
            continue
        row = {
            name: _parse_field(
                column, form, _join(row_path, name), _join(_join(pattern, "*"), name), problems
            )
            for name, column in columns.items()
            if not column.dump_only
        }
        if keyed:
            row[KEY] = form.get(_join(row_path, KEY), "")
        if all(v in ("", None, [], {}, False) for v in row.values()):
            continue
        rows.append(row)
    return rows


def _row_value(inner: fields.Field, row: dict[str, Any]) -> Any:
    if isinstance(inner, fields.Nested):
        return {k: v for k, v in row.items() if k != KEY}
    return row["value"]


def _lines(values: list[str]) -> list[str]:
    out = []
    for value in values:
        out += [line.strip() for line in value.splitlines() if line.strip()]
    return out


def blank_rows(form: MultiDict) -> dict[str, int]:
    """How many blank rows each rows widget shows; the 'add row' button asks for one more."""
    counts = {}
    for key in form:
        if key.endswith("." + BLANKS):
            try:
                counts[key[: -len(BLANKS) - 1]] = max(1, min(20, int(form[key])))
            except ValueError:
                continue
    added = form.get("add_row")
    if added:
        counts[added] = counts.get(added, 1) + 1
    return counts
