"""Which GHL ids and custom field keys in the settings GHL does not list.

The settings page checks them before saving and `instantly-ghl-bridge doctor` checks them
on demand, so a mistyped workflow id or field key is caught then, not when a reply dies
in the worker. The lists come from GHL's API (lookups.py caches them for the page); a
list that could not be loaded is None, and what it would have checked becomes a warning.

Each location is checked with its own lists and its own effective settings (the bridge's
with its overrides laid over), since a field key one client has may be missing in another.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.settings import CUSTOM_FIELD_PREFIX, STATUSES, for_location

if TYPE_CHECKING:
    from bridge.locations.registry import Location

# How many close matches a "did you mean" offers.
SUGGESTIONS = 2


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: dict[str, str]  # stage id -> name


@dataclass(frozen=True)
class GhlLists:
    """What the location has; None where the list could not be loaded."""

    custom_fields: dict[str, str] | None = None  # field key (contact.x) -> name
    workflows: dict[str, str] | None = None  # id -> name
    pipelines: dict[str, Pipeline] | None = None  # id -> pipeline


@dataclass
class Found:
    """Problems by settings path: errors refuse a save; warnings (a switched-off action's
    unknown id) and unchecked values (their GHL list could not be loaded) do not."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    unchecked: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: str, message: str, error: bool = True) -> None:
        (self.errors if error else self.warnings).setdefault(path, []).append(message)

    def not_checked(self, path: str, value: str, plural: str) -> None:
        message = f"{value} not checked: GHL's {plural} could not be loaded"
        self.unchecked.setdefault(path, []).append(message)

    def merge(self, other: Found) -> Found:
        for mine, theirs in [
            (self.errors, other.errors),
            (self.warnings, other.warnings),
            (self.unchecked, other.unchecked),
        ]:
            for path, messages in theirs.items():
                mine.setdefault(path, []).extend(messages)
        return self


# --- GHL's answers, shaped once for the page's pickers and for these checks -----------------


def custom_field_items(answer: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """GET /locations/{id}/customFields → [{id: field key, name}] for contact fields."""
    return [
        {"id": str(f["fieldKey"]), "name": str(f.get("name") or f["fieldKey"])}
        for f in answer
        if str(f.get("fieldKey") or "").startswith(CUSTOM_FIELD_PREFIX)
    ]


def workflow_items(answer: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """GET /workflows/ → [{id, name, status}]."""
    return [
        {"id": str(w["id"]), "name": str(w.get("name") or w["id"]), "status": w.get("status") or ""}
        for w in answer
        if w.get("id")
    ]


def pipeline_items(answer: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """GET /opportunities/pipelines → [{id, name, stages: [{id, name}]}]."""
    out = []
    for pipeline in answer:
        if not pipeline.get("id"):
            continue
        stages = [
            {"id": str(s["id"]), "name": str(s.get("name") or s["id"])}
            for s in pipeline.get("stages") or []
            if isinstance(s, dict) and s.get("id")
        ]
        name = str(pipeline.get("name") or "")
        out.append({"id": str(pipeline["id"]), "name": name, "stages": stages})
    return out


def lists_from(
    custom_fields: list[dict] | None, workflows: list[dict] | None, pipelines: list[dict] | None
) -> GhlLists:
    """GhlLists from the shaped items above (None for a list that could not be loaded)."""
    return GhlLists(
        custom_fields=None
        if custom_fields is None
        else {f["id"]: f["name"] for f in custom_fields},
        workflows=None if workflows is None else {w["id"]: w["name"] for w in workflows},
        pipelines=None
        if pipelines is None
        else {
            p["id"]: Pipeline(p["name"], {s["id"]: s["name"] for s in p["stages"]})
            for p in pipelines
        },
    )


# --- per location ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A location the settings are checked for: its id and label, its overrides, and the
    index of its [[locations]] entry (None for GHL_LOCATION_ID's when it has none)."""

    location_id: str
    label: str
    overrides: dict = field(default_factory=dict)
    index: int | None = None


def targets(settings: dict, locations: Iterable[Location]) -> list[Target]:
    """A Target for each location the bridge serves (registry.Registry.locations)."""
    index = {entry["id"]: i for i, entry in enumerate(settings.get("locations") or [])}
    return [Target(loc.id, loc.label, dict(loc.overrides), index.get(loc.id)) for loc in locations]


def check_location(settings: dict, target: Target, lists: GhlLists, named: bool = False) -> Found:
    """`check` of the settings `target` syncs with, against its own lists. What it found in
    a value the location overrides is keyed locations.<index>.overrides.<path>, beside its
    overrides; in the bridge's own value, by that value's path, the message starting with
    the location's label when `named` (the bridge has several locations)."""
    found = check(for_location(settings, target.overrides), lists)
    out = Found()
    for mine, theirs in [
        (out.errors, found.errors),
        (out.warnings, found.warnings),
        (out.unchecked, found.unchecked),
    ]:
        for path, messages in theirs.items():
            if target.index is not None and _overridden(target.overrides, path):
                key, shown = f"locations.{target.index}.overrides.{path}", messages
            else:
                key = path
                shown = [f"{target.label}: {m}" for m in messages] if named else messages
            bucket = mine.setdefault(key, [])
            bucket.extend(m for m in shown if m not in bucket)
    return out


def _overridden(overrides: dict, path: str) -> bool:
    """Whether the setting at `path` is the override's: it, or a list or table above it, is
    set there (a list replaces the bridge's whole)."""
    node: Any = overrides
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
        if not isinstance(node, dict):
            return True
    return True


# --- the checks -----------------------------------------------------------------------------


def check(settings: dict, lists: GhlLists) -> Found:
    """Every GHL reference in the settings: the field map's custom fields and the actions'."""
    return check_field_map(settings, lists).merge(check_actions(settings, lists))


def check_field_map(settings: dict, lists: GhlLists) -> Found:
    """Each custom field the field map writes must be one of the location's."""
    found = Found()
    for index, row in enumerate(settings.get("field_map") or []):
        key = row.get("ghl") or ""
        if not key.startswith(CUSTOM_FIELD_PREFIX):
            continue  # standard fields are checked by the schema
        path = f"field_map.{index}.ghl"
        if lists.custom_fields is None:
            found.not_checked(path, key, "custom fields")
        elif key not in lists.custom_fields:
            what = "a custom field of this GHL location"
            message = _unknown(key, what, lists.custom_fields, CUSTOM_FIELD_PREFIX)
            found.add(path, message)
    return found


def check_actions(settings: dict, lists: GhlLists) -> Found:
    """The workflow, pipeline and stage ids. A switched-off action's bad id only warns:
    it breaks nothing until the action is switched on."""
    found = Found()
    actions = settings.get("actions") or {}
    workflow_on = bool((actions.get("workflow") or {}).get("enabled"))
    opportunity = actions.get("opportunity") or {}
    opportunity_on = bool(opportunity.get("enabled"))
    pipeline_id = (opportunity.get("pipeline_id") or "").strip()
    pipelines = lists.pipelines
    pipeline_names = None if pipelines is None else {k: p.name for k, p in pipelines.items()}
    for path, value in action_ids(settings):
        if path == "actions.workflow.workflow_id":
            _check_id(found, path, value, "a workflow", "workflows", lists.workflows, workflow_on)
        elif path == "actions.opportunity.pipeline_id":
            _check_id(found, path, value, "a pipeline", "pipelines", pipeline_names, opportunity_on)
        else:
            _check_stage(found, path, value, pipeline_id, pipelines, opportunity_on)
    return found


def action_ids(settings: dict) -> list[tuple[str, str]]:
    """The GHL ids the actions name, as (settings path, id), the unset ones left out."""
    actions = settings.get("actions") or {}
    opportunity = actions.get("opportunity") or {}
    stages = opportunity.get("stages") or {}
    named = [
        ("actions.workflow.workflow_id", (actions.get("workflow") or {}).get("workflow_id")),
        ("actions.opportunity.pipeline_id", opportunity.get("pipeline_id")),
        ("actions.opportunity.stage_id", opportunity.get("stage_id")),
    ] + [(f"actions.opportunity.stages.{status}", stages.get(status)) for status in STATUSES]
    return [(path, value.strip()) for path, value in named if value and value.strip()]


def _check_id(
    found: Found,
    path: str,
    value: str,
    what: str,
    plural: str,
    known: dict[str, str] | None,
    enabled: bool,
) -> None:
    if known is None:
        found.not_checked(path, value, plural)
    elif value not in known:
        found.add(path, _unknown(value, f"{what} in GHL", known) + _off(enabled), enabled)


def _check_stage(
    found: Found,
    path: str,
    stage_id: str,
    pipeline_id: str,
    pipelines: dict[str, Pipeline] | None,
    enabled: bool,
) -> None:
    if pipelines is None:
        found.not_checked(path, stage_id, "pipelines")
        return
    chosen = pipelines.get(pipeline_id)
    if chosen is not None:
        if stage_id in chosen.stages:
            return
        elsewhere = [p.name for p in pipelines.values() if stage_id in p.stages]
        if elsewhere:
            message = (
                f"{stage_id} is a stage of the pipeline {elsewhere[0]!r}, not of the chosen "
                f"pipeline {chosen.name!r}"
            )
        else:
            message = _unknown(stage_id, f"a stage of the pipeline {chosen.name!r}", chosen.stages)
    else:
        every = {s: f"{p.name} › {n}" for p in pipelines.values() for s, n in p.stages.items()}
        if stage_id in every:
            return  # its pipeline is unset or unknown: that field carries the error
        message = _unknown(stage_id, "a stage in GHL", every)
    found.add(path, message + _off(enabled), enabled)


def _unknown(value: str, what: str, known: dict[str, str], prefix: str = "") -> str:
    """'x is not <what>' with a did-you-mean from the ids, or from the names typed instead.

    Field keys are matched without the `prefix` they all share (contact.), which would
    otherwise make every key look alike; they are suggested alone, opaque ids with a name.
    """
    message = f"{value} is not {what}"
    if not known:
        return message + " (GHL lists none)"
    by_short = {key.removeprefix(prefix): key for key in known}
    by_name = {name.casefold(): key for key, name in known.items()}
    close = [
        by_short[short]
        for short in difflib.get_close_matches(
            value.removeprefix(prefix), list(by_short), n=SUGGESTIONS, cutoff=0.6
        )
    ]
    close += [
        by_name[name]
        for name in difflib.get_close_matches(
            value.casefold(), list(by_name), n=SUGGESTIONS, cutoff=0.6
        )
        if by_name[name] not in close
    ]
    if not close:
        return message
    shown = [key if prefix or known[key] == key else f"{key} ({known[key]})" for key in close]
    return f"{message}; did you mean {' or '.join(shown[:SUGGESTIONS])}?"


def _off(enabled: bool) -> str:
    return "" if enabled else " (saved, as the action is off: fix it before switching it on)"
