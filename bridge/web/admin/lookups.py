"""Choices for the settings form, fetched from GHL and Instantly and cached in the store.

The settings page must work when neither API is configured or reachable: a lookup that
fails carries its error, the page says so, and the field stays a plain text box.

GHL's lists belong to one location: each is fetched with that location's own token and
cached under a name scoped by its id, so one client's fields never fill another's pickers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from bridge.clients.budget import Budget
from bridge.clients.ghl import GHLClient, GHLError
from bridge.clients.instantly import InstantlyClient, InstantlyError
from bridge.config import Config
from bridge.locations import registry
from bridge.locations.registry import Location
from bridge.settings import GHL_STANDARD_FIELDS
from bridge.setup import ghl_refs
from bridge.store import state

# A list that loaded is kept this long. A failure is never kept: the next page view asks
# again, so a fixed token or a GHL that is back shows at once.
CACHE_SECONDS = 600.0
TIMEOUT = (3.0, 8.0)
STATE_PREFIX = "lookup:"
# The webhook's camelCase lead fields (api-notes.md); custom variables are typed in.
INSTANTLY_LEAD_FIELDS = (
    "firstName",
    "lastName",
    "companyName",
    "phone",
    "website",
    "personalization",
    "email_account",
    "campaign_name",
)


@dataclass
class Lookup:
    """Choices for one picker: (value, label) pairs, or why there are none.

    `items` are the fetched records the options came from; `parents` names each stage's
    pipeline, so the page can show only the chosen pipeline's stages.
    """

    name: str
    options: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    items: list[dict] = field(default_factory=list)
    parents: dict[str, str] = field(default_factory=dict)


class _Unavailable(Exception):
    """The API for this lookup is not configured."""


def load(
    db: sqlite_utils.Database,
    config: Config,
    names: set[str],
    refresh: bool = False,
    clock: Callable[[], float] = time.time,
    location: Location | None = None,
) -> dict[str, Lookup]:
    """The lookups for these picker names, from the cache or fetched now. GHL's lists are
    `location`'s (GHL_LOCATION_ID's when None), asked for with its token."""
    if location is None:
        location = env_location(config)
    fetched: dict[str, tuple[list[dict], str | None]] = {}
    out = {}
    for name in sorted(names):
        source = PICKERS.get(name)
        if source is None:
            continue
        source_name, shape = source
        if source_name not in fetched:
            fetched[source_name] = _source(db, config, source_name, refresh, clock, location)
        items, error = fetched[source_name]
        out[name] = Lookup(name, shape(items), error, items, _parents(name, items))
    return out


def _parents(picker: str, items: list[dict]) -> dict[str, str]:
    if picker != "ghl_stage":
        return {}
    return {stage["id"]: pipeline["id"] for pipeline in items for stage in pipeline["stages"]}


# The pickers whose lists the save-time checks need (ghl_refs.py).
GHL_REF_PICKERS = {"ghl_field", "ghl_workflow", "ghl_pipeline"}


def env_location(config: Config) -> Location | None:
    """GHL_TOKEN + GHL_LOCATION_ID's location, None unless both are set."""
    if not config.ghl_configured:
        return None
    return registry.build(config, {}).get(config.ghl_location_id)


def lists_for(
    db: sqlite_utils.Database,
    config: Config,
    location: Location | None,
    refresh: bool = False,
    clock: Callable[[], float] = time.time,
) -> tuple[ghl_refs.GhlLists, dict[str, Lookup]]:
    """What one location's GHL lists, for the save-time checks, and the lookups they came
    from."""
    found = load(db, config, GHL_REF_PICKERS | {"ghl_stage"}, refresh, clock, location)
    return ghl_lists(found), found


def ghl_lists(found: dict[str, Lookup]) -> ghl_refs.GhlLists:
    """What GHL listed, from loaded lookups; None for each list that failed or was not asked."""

    def items(name: str) -> list[dict] | None:
        lookup = found.get(name)
        return None if lookup is None or lookup.error else lookup.items

    return ghl_refs.lists_from(items("ghl_field"), items("ghl_workflow"), items("ghl_pipeline"))


def clear(db: sqlite_utils.Database) -> None:
    """Forget every cached lookup (the page's refresh button)."""
    db.execute("DELETE FROM state WHERE name LIKE ?", [STATE_PREFIX + "%"])


def cache_name(source: str, location: Location | None) -> str:
    """The state name a source's list is cached under: GHL's per location."""
    if source.startswith("ghl_"):
        return state.scoped(STATE_PREFIX + source, location.id if location else "")
    return STATE_PREFIX + source


def _source(
    db: sqlite_utils.Database,
    config: Config,
    name: str,
    refresh: bool,
    clock: Callable[[], float],
    location: Location | None,
) -> tuple[list[dict], str | None]:
    if name == "static":
        return [], None
    cached_as = cache_name(name, location)
    cached = state.get(db, cached_as)
    now = clock()
    # Entries with an error were written by older versions, which kept failures too.
    if cached and not refresh and not cached.get("error") and now - cached["at"] < CACHE_SECONDS:
        return cached["items"], None
    try:
        items = FETCHERS[name](config, location, db)
    except (_Unavailable, GHLError, InstantlyError) as exc:
        return [], str(exc)
    state.put(db, cached_as, {"at": now, "items": items, "error": None})
    return items, None


def _ghl(config: Config, location: Location | None, db: sqlite_utils.Database) -> GHLClient:
    if location is None:
        raise _Unavailable("GHL is not configured (GHL_TOKEN, GHL_LOCATION_ID): type the value")
    if location.problem or not location.token:
        raise _Unavailable(f"{location.problem or location.label + ': no token'}: type the value")
    # On the location's shared budget: a page's lookups beside a busy worker draw no 429.
    budget = Budget(db, location.id)
    return GHLClient(
        config.ghl_base_url, location.token, location.id, timeout=TIMEOUT, budget=budget
    )


def _instantly(config: Config) -> InstantlyClient:
    if not config.instantly_api_key:
        raise _Unavailable("Instantly is not configured (INSTANTLY_API_KEY): type the ids")
    return InstantlyClient.for_setup(
        config.instantly_base_url, config.instantly_api_key, timeout=TIMEOUT
    )


def _custom_fields(config: Config, location: Location | None, db: sqlite_utils.Database) -> list:
    return ghl_refs.custom_field_items(_ghl(config, location, db).custom_fields())


def _workflows(config: Config, location: Location | None, db: sqlite_utils.Database) -> list:
    return ghl_refs.workflow_items(_ghl(config, location, db).workflows())


def _pipelines(config: Config, location: Location | None, db: sqlite_utils.Database) -> list:
    return ghl_refs.pipeline_items(_ghl(config, location, db).pipelines())


def _named(items: list[dict[str, Any]]) -> list[dict]:
    return [{"id": i["id"], "name": i.get("name") or i["id"]} for i in items if i.get("id")]


# source -> fetcher(config, location, db); Instantly's lists are INSTANTLY_API_KEY's
# workspace's.
FETCHERS: dict[str, Callable[[Config, Location | None, sqlite_utils.Database], list[dict]]] = {
    "ghl_custom_fields": _custom_fields,
    "ghl_workflows": _workflows,
    "ghl_pipelines": _pipelines,
    "instantly_campaigns": lambda config, _, __: _named(_instantly(config).campaigns()),
    "instantly_lead_lists": lambda config, _, __: _named(_instantly(config).lead_lists()),
}


def _pairs(items: list[dict]) -> list[tuple[str, str]]:
    return [(i["id"], i["name"]) for i in items]


def _workflow_pairs(items: list[dict]) -> list[tuple[str, str]]:
    # Only a published workflow runs; a draft is offered, but says so.
    return [
        (w["id"], f"{w['name']} ({w['status']})" if w.get("status") else w["name"]) for w in items
    ]


def _ghl_fields(items: list[dict]) -> list[tuple[str, str]]:
    standard = [(name, "standard field") for name in GHL_STANDARD_FIELDS]
    return standard + [(i["id"], f"custom field: {i['name']}") for i in items]


def _stages(items: list[dict]) -> list[tuple[str, str]]:
    return [(s["id"], f"{p['name']} › {s['name']}") for p in items for s in p["stages"]]


# picker name -> (source fetched, shape of its options)
PICKERS: dict[str, tuple[str, Callable[[list[dict]], list[tuple[str, str]]]]] = {
    "ghl_field": ("ghl_custom_fields", _ghl_fields),
    "instantly_field": ("static", lambda _: [(n, "lead field") for n in INSTANTLY_LEAD_FIELDS]),
    "ghl_workflow": ("ghl_workflows", _workflow_pairs),
    "ghl_pipeline": ("ghl_pipelines", _pairs),
    "ghl_stage": ("ghl_pipelines", _stages),
    "instantly_campaign": ("instantly_campaigns", _pairs),
    "instantly_list": ("instantly_lead_lists", _pairs),
}

# What each source is, in words, for the page's "could not be loaded" list.
SOURCE_LABELS = {
    "ghl_custom_fields": "GHL custom fields",
    "ghl_workflows": "GHL workflows",
    "ghl_pipelines": "GHL pipelines and stages",
    "instantly_campaigns": "Instantly campaigns",
    "instantly_lead_lists": "Instantly lead lists",
}


def failures(found: dict[str, Lookup], where: str = "") -> list[tuple[str, str]]:
    """(what, why) for each list that could not be loaded, once per source fetched; GHL's
    are said to be `where`'s (a location's label) when given."""
    out: dict[str, str] = {}
    for name, lookup in sorted(found.items()):
        if lookup.error:
            source = PICKERS[name][0]
            what = SOURCE_LABELS.get(source, source)
            if where and source.startswith("ghl_"):
                what = f"{what} of {where}"
            out.setdefault(what, lookup.error)
    return list(out.items())
