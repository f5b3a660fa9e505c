"""The locations and workspaces a bridge serves, built from its environment and settings,
and the route of an event: its campaign's location, else its workspace's, else the default.

GHL_TOKEN + GHL_LOCATION_ID are a location as they always were; [[locations]] adds more (an
entry with GHL_LOCATION_ID's id names it, routes it or overrides its settings).
INSTANTLY_API_KEY is a workspace; [[instantly.workspaces]] adds more."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sqlite_utils

from bridge.config import Config
from bridge.locations import tokens
from bridge.locations.schema import NO_DEFAULT

ENV_LOCATION = "GHL_LOCATION_ID"
PAGE = "the settings page"


@dataclass(frozen=True)
class Location:
    """A GHL sub-account: where its events go, and why it cannot take them (`problem`)."""

    id: str
    name: str
    token: str = field(repr=False)
    token_source: str = ""
    problem: str | None = None
    workspaces: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ()
    overrides: dict = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """How pages and messages name it: its name and id, or the id alone."""
        return f"{self.name} ({self.id})" if self.name and self.name != self.id else self.id


@dataclass(frozen=True)
class Workspace:
    """An Instantly workspace the bridge polls and registers webhooks in. `id` is '' for
    INSTANTLY_API_KEY's workspace when no [[instantly.workspaces]] entry names it."""

    id: str
    name: str
    key: str = field(repr=False)
    key_source: str = ""
    problem: str | None = None

    @property
    def label(self) -> str:
        if not self.id:
            return self.name
        return f"{self.name} ({self.id})" if self.name and self.name != self.id else self.id


@dataclass(frozen=True)
class Registry:
    locations: tuple[Location, ...]
    workspaces: tuple[Workspace, ...]
    default_id: str | None
    _by_campaign: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _by_workspace: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def route(self, campaign_id: str, workspace_id: str) -> str | None:
        """The location an event of this campaign and workspace goes to; None when no
        route claims it and there is no default location (the event is held)."""
        return (
            self._by_campaign.get(campaign_id)
            or self._by_workspace.get(workspace_id)
            or self.default_id
        )

    @property
    def routes(self) -> tuple:
        """Every route and the default, comparable: equal exactly when route() answers alike."""
        return (
            tuple(sorted(self._by_campaign.items())),
            tuple(sorted(self._by_workspace.items())),
            self.default_id,
        )

    def get(self, location_id: str) -> Location | None:
        return next((loc for loc in self.locations if loc.id == location_id), None)

    def label(self, location_id: str | None) -> str:
        """A location's label; an id no longer declared is shown as it is."""
        if not location_id:
            return "unrouted"
        location = self.get(location_id)
        return location.label if location else location_id

    def secret_values(self) -> list[str]:
        """Every token and key, so logs and pages can be checked against them."""
        found = [loc.token for loc in self.locations] + [ws.key for ws in self.workspaces]
        return [value for value in found if value]


def build(config: Config, settings: dict, db: sqlite_utils.Database | None = None) -> Registry:
    """The registry for these settings; a token stored from the page is read from `db`."""
    declared = {entry["id"]: entry for entry in settings.get("locations", [])}
    locations: list[Location] = []
    env_id = config.ghl_location_id
    if env_id:
        locations.append(_location(config, declared.pop(env_id, {"id": env_id}), db, env=True))
    locations += [_location(config, entry, db) for entry in declared.values()]
    locations = _one_token_each(locations)
    by_campaign, by_workspace = {}, {}
    for location in locations:
        by_campaign.update(dict.fromkeys(location.campaigns, location.id))
        by_workspace.update(dict.fromkeys(location.workspaces, location.id))
    default = settings.get("routing", {}).get("default_location", "")
    default_id = None if default == NO_DEFAULT else (default or env_id or None)
    return Registry(
        tuple(locations), _workspaces(config, settings), default_id, by_campaign, by_workspace
    )


def _location(
    config: Config, entry: dict, db: sqlite_utils.Database | None, env: bool = False
) -> Location:
    location_id, name = entry["id"], entry.get("name") or ""
    token_env = entry.get("token_env") or ""
    token, source, problem = "", "", None
    if token_env:
        token, source = config.env_value(token_env), token_env
        problem = None if token else f"{token_env} is not set in the bridge's environment"
    elif env:
        token, source = config.ghl_token, "GHL_TOKEN"
        problem = None if token else "GHL_TOKEN is not set"
    else:
        source = PAGE
        try:
            token = tokens.read(db, config.secret_key, location_id, name) if db else ""
        except tokens.TokenUnreadable as exc:
            problem = str(exc)
        else:
            problem = (
                None
                if token
                else (
                    "no token: set token_env to the variable holding it, or enter it on the "
                    "settings page"
                )
            )
    if problem and not problem.startswith("location "):
        problem = f"location {name or location_id}: {problem}"
    return Location(
        id=location_id,
        name=name or ("GHL_LOCATION_ID" if env else location_id),
        token=token,
        token_source=source,
        problem=problem,
        workspaces=tuple(entry.get("workspaces") or ()),
        campaigns=tuple(entry.get("campaigns") or ()),
        overrides=entry.get("overrides") or {},
    )


def _one_token_each(locations: list[Location]) -> list[Location]:
    """A token is one sub-account's: a second location given the same one (a paste into the
    wrong variable) would send one client's writes with another's token, so it gets none
    and says why."""
    owner: dict[str, Location] = {}
    out = []
    for location in locations:
        first = owner.setdefault(location.token, location) if location.token else location
        if first is not location:
            location = replace(
                location,
                token="",
                problem=(
                    f"location {location.name}: its token ({location.token_source}) is the "
                    f"same as location {first.label}'s ({first.token_source}); a token belongs "
                    "to one sub-account, so give each location its own"
                ),
            )
        out.append(location)
    return out


def _workspaces(config: Config, settings: dict) -> tuple[Workspace, ...]:
    out: list[Workspace] = []
    plain_declared = False
    for entry in settings.get("instantly", {}).get("workspaces", []):
        name = entry.get("name") or entry["id"]
        if entry.get("key_env"):
            key, source = config.env_value(entry["key_env"]), entry["key_env"]
        else:
            key, source, plain_declared = config.instantly_api_key, "INSTANTLY_API_KEY", True
        problem = None if key else f"workspace {name}: {source} is not set"
        out.append(Workspace(entry["id"], name, key, source, problem))
    if not plain_declared and config.instantly_api_key:
        out.insert(
            0,
            Workspace(
                "", "INSTANTLY_API_KEY's workspace", config.instantly_api_key, "INSTANTLY_API_KEY"
            ),
        )
    return tuple(out)


def environment_problems(config: Config, settings: dict) -> dict[str, list[str]]:
    """Settings naming environment variables this bridge does not have, keyed by the
    setting's path: checked where settings are saved or imported, so a typo is refused
    there instead of found when that location's first event waits."""
    problems: dict[str, list[str]] = {}
    for i, entry in enumerate(settings.get("locations", [])):
        if entry.get("token_env") and not config.env_value(entry["token_env"]):
            problems[f"locations.{i}.token_env"] = [
                f"{entry['token_env']} is not set in the bridge's environment"
            ]
    for i, entry in enumerate(settings.get("instantly", {}).get("workspaces", [])):
        if entry.get("key_env") and not config.env_value(entry["key_env"]):
            problems[f"instantly.workspaces.{i}.key_env"] = [
                f"{entry['key_env']} is not set in the bridge's environment"
            ]
    return problems
