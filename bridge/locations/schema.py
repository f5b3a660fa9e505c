"""The settings that declare locations, Instantly workspaces and routes ([[locations]],
[[instantly.workspaces]], [routing]). No environment here: whether a token_env is set is
checked where settings are saved (bridge/locations/registry.py, environment_problems)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

# An environment variable's name, as a shell would take it.
ENV_NAME = validate.Regexp(
    r"^([A-Za-z_][A-Za-z0-9_]*)?$", error="{input!r} is not an environment variable name"
)
# Ids are GHL location ids (20 characters) and Instantly UUIDs; nothing longer is an id.
_ID = validate.Length(min=1, max=100)
# The sections a location may override; the rest (retention, reconcile, routing) belong to
# the bridge as a whole.
OVERRIDABLE = ("sync", "events", "field_map", "interest", "actions")
# [routing] default_location: "" sends what no route claims to GHL_LOCATION_ID's location
# (when set); NO_DEFAULT holds it instead.
NO_DEFAULT = "none"


def _ids(description: str) -> fields.List:
    return fields.List(
        fields.String(validate=_ID),
        load_default=list,
        validate=validate.Length(max=5000),
        metadata={"description": description},
    )


def _env_name(description: str) -> fields.String:
    return fields.String(
        load_default="",
        validate=[validate.Length(max=100), ENV_NAME],
        metadata={"description": description},
    )


class LocationSchema(Schema):
    id = fields.String(required=True, validate=_ID, metadata={"description": "GHL location id."})
    name = fields.String(load_default="", validate=validate.Length(max=100))
    token_env = _env_name(
        "Environment variable holding this location's Private Integration token; leave "
        "empty to enter the token on the settings page (stored encrypted)."
    )
    workspaces = _ids("Instantly workspace ids whose events all go to this location.")
    campaigns = _ids("Instantly campaign ids whose events go here (a campaign route wins).")
    overrides = fields.Dict(
        keys=fields.String(),
        load_default=dict,
        metadata={"description": "Settings this location uses instead of the bridge's."},
    )

    @validates_schema
    def _only_overridable(self, data: dict, **_: Any) -> None:
        for section in data.get("overrides", {}):
            if section not in OVERRIDABLE:
                raise ValidationError(
                    {
                        section: [
                            f"{section} cannot be overridden per location; a location may "
                            f"override {', '.join(OVERRIDABLE)}"
                        ]
                    },
                    "overrides",
                )


class WorkspaceSchema(Schema):
    id = fields.String(
        required=True, validate=_ID, metadata={"description": "Instantly workspace id."}
    )
    name = fields.String(load_default="", validate=validate.Length(max=100))
    key_env = _env_name(
        "Environment variable holding this workspace's API key; empty means INSTANTLY_API_KEY."
    )


class InstantlySchema(Schema):
    workspaces = fields.List(
        fields.Nested(WorkspaceSchema), load_default=list, validate=validate.Length(max=500)
    )

    @validates_schema
    def _one_entry_each(self, data: dict, **_: Any) -> None:
        seen: set[str] = set()
        plain = None
        for i, workspace in enumerate(data.get("workspaces", [])):
            if workspace["id"] in seen:
                raise ValidationError(
                    {str(i): {"id": [f"workspace {workspace['id']!r} is declared twice"]}},
                    "workspaces",
                )
            seen.add(workspace["id"])
            if not workspace["key_env"]:
                if plain is not None:
                    raise ValidationError(
                        {
                            str(i): {
                                "key_env": [
                                    f"only one workspace can use INSTANTLY_API_KEY "
                                    f"(instantly.workspaces.{plain} does already); name this "
                                    "one's key variable"
                                ]
                            }
                        },
                        "workspaces",
                    )
                plain = i


class RoutingSchema(Schema):
    default_location = fields.String(
        load_default="",
        validate=validate.Length(max=100),
        metadata={
            "description": "Where an event no route claims goes: empty for GHL_LOCATION_ID's "
            f"location, a declared location's id, or {NO_DEFAULT!r} to hold it (unrouted)."
        },
    )


def route_problems(data: dict) -> dict[str, list[str]]:
    """Routes that contradict each other or name nothing: a location declared twice, a
    campaign or workspace claimed by two locations, an unknown default location. Keyed by
    the setting's path, as SettingsError reports it."""
    problems: dict[str, list[str]] = {}
    locations = data.get("locations", [])
    declared: dict[str, int] = {}
    claims: dict[tuple[str, str], int] = {}
    for i, location in enumerate(locations):
        if location["id"] in declared:
            first = declared[location["id"]]
            problems[f"locations.{i}.id"] = [
                f"location {location['id']!r} is declared twice (locations.{first})"
            ]
            continue
        declared[location["id"]] = i
        for kind in ("campaigns", "workspaces"):
            for value in location[kind]:
                first = claims.setdefault((kind, value), i)
                if first != i:
                    other = locations[first]
                    problems.setdefault(f"locations.{i}.{kind}", []).append(
                        f"{kind[:-1]} {value!r} is already routed to "
                        f"{other['name'] or other['id']} (locations.{first}); "
                        "one location per " + kind[:-1]
                    )
    default = data.get("routing", {}).get("default_location", "")
    if default not in ("", NO_DEFAULT) and default not in declared:
        problems["routing.default_location"] = [
            f"{default!r} is not a declared location; use one of [[locations]]'s ids, "
            f"{NO_DEFAULT!r}, or leave it empty for GHL_LOCATION_ID's location"
        ]
    return problems
