"""The settings page: the schema-driven form, TOML export and import, lookup refresh, and
the tokens of locations entered on the page (kept encrypted, never shown)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from bridge import settings as settings_mod
from bridge.config import Config
from bridge.locations import registry, tokens
from bridge.locations.registry import Location
from bridge.locations.schema import NO_DEFAULT
from bridge.setup import ghl_refs
from bridge.web.admin import forms, lookups
from bridge.web.admin.blueprint import bp, config, database

# Keys shorter than this show no tail at all: four characters of a short key is too much.
MIN_LENGTH_FOR_TAIL = 16
# Form fields of a location's card that are no settings: a token typed, and forgetting one.
TOKEN = "_token"
FORGET_TOKEN = "_forget_token"
# GHL's Private Integration tokens are a few dozen characters; this bounds what is stored.
MAX_TOKEN_LENGTH = 2048


def secrets_status() -> list[dict[str, str]]:
    """Whether each secret is set; API keys show their last 4 characters at most."""
    cfg = config()
    rows = [
        ("INSTANTLY_API_KEY", cfg.instantly_api_key, True),
        ("GHL_TOKEN", cfg.ghl_token, True),
        ("BRIDGE_WEBHOOK_SECRET", cfg.webhook_secret, False),
        ("BRIDGE_ADMIN_PASSWORD", cfg.admin_password, False),
        ("BRIDGE_SECRET_KEY", cfg.secret_key, False),
    ]
    out = []
    for name, value, tail in rows:
        if not value:
            shown = "not set"
        elif tail and len(value) >= MIN_LENGTH_FOR_TAIL:
            shown = f"set, ending …{value[-4:]}"
        else:
            shown = "set"
        out.append({"name": name, "state": shown, "set": bool(value)})
    return out


def _render(
    values: dict,
    version: int,
    errors: dict[str, list[str]] | None = None,
    blanks: dict[str, int] | None = None,
    import_errors: list[str] | None = None,
    status: int = 200,
    warnings: dict[str, list[str]] | None = None,
    choices: dict[str, lookups.Lookup] | None = None,
    check_stored: bool = False,
    view_id: str = "",
) -> ResponseReturnValue:
    """The page. `check_stored` shows what GHL does not list among the stored values beside
    their fields (a workflow deleted in GHL since it was saved, say). The pickers hold the
    lists of the location `view_id` names (GHL_LOCATION_ID's by default)."""
    db = database()
    cfg = config()
    # Token states and problems are those of the stored settings: the values shown may be
    # a refused save's, which the bridge does not run.
    served = registry.build(cfg, settings_mod.current(db)[1], db)
    view = _view_location(served.locations, view_id)
    several = len(served.locations) > 1
    if choices is None:
        choices = lookups.load(db, cfg, _form_pickers(), location=view)
    if check_stored:
        lists = lookups.ghl_lists(choices)
        if view is None:
            found = ghl_refs.check(values, lists)
        else:
            found = ghl_refs.check_location(values, ghl_refs.targets(values, [view])[0], lists)
        warnings = _merged(found.errors, found.warnings)
    widgets, leftover = forms.build(
        settings_mod.SettingsSchema(),
        values,
        errors,
        blanks,
        warnings,
        choices={"routing.default_location": _default_location_choices(values, cfg)},
    )
    _add_location_state(widgets, served, tokens.stored(db), cfg.ghl_location_id)
    return (
        render_template(
            "settings.html",
            widgets=widgets,
            leftover=leftover,
            has_errors=bool(errors),
            version=version,
            lookups=choices,
            failed_lists=lookups.failures(choices, view.label if several and view else ""),
            secrets=secrets_status(),
            location_id=cfg.ghl_location_id,
            locations=served.locations,
            view=view,
            view_id=view_id,
            ghl_base_url=cfg.ghl_base_url,
            instantly_base_url=cfg.instantly_base_url,
            import_errors=import_errors or [],
        ),
        status,
    )


def _view_location(locations: Sequence[Location], wanted: str) -> Location | None:
    """The location whose GHL lists fill the pickers: the one asked for, else
    GHL_LOCATION_ID's, else the first declared."""
    by_id = {loc.id: loc for loc in locations}
    return by_id.get(wanted) or by_id.get(config().ghl_location_id) or next(iter(locations), None)


def _default_location_choices(values: dict, cfg: Config) -> list[tuple[str, str]]:
    """[routing] default_location's select: GHL_LOCATION_ID's, each declared one, or hold."""
    env = (
        f"GHL_LOCATION_ID's location ({cfg.ghl_location_id})"
        if cfg.ghl_location_id
        else ("GHL_LOCATION_ID's location (not set, so events are held)")
    )
    out = [("", env)]
    for entry in values.get("locations") or []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
            name = entry.get("name") or ""
            out.append((entry["id"], f"{name} ({entry['id']})" if name else entry["id"]))
    out.append((NO_DEFAULT, "hold (none): unrouted events wait for a route"))
    return out


def _add_location_state(
    widgets: list[forms.Widget], served: registry.Registry, stored: set[str], env_id: str
) -> None:
    """Beside each location's card: whether a token is stored (never the token) and what
    stops it syncing; above them, every location the bridge serves."""
    section = next((w for w in widgets if w.path == "locations"), None)
    if section is None:
        return
    carded = set()
    for card in section.children:
        id_field = next((c for c in card.children if c.name == "id"), None)
        location_id = str(id_field.value or "").strip() if id_field else ""
        carded.add(location_id)
        location = served.get(location_id) if location_id else None
        card.extra["token"] = {
            "env": bool(location_id) and location_id == env_id,
            "stored": location_id in stored,
            "problem": location.problem if location else None,
        }
    # A card shows its own problem; only GHL_LOCATION_ID's location may have no card.
    section.extra["served"] = [
        {
            "label": loc.label,
            "source": loc.token_source,
            "problem": "see its card below" if loc.problem and loc.id in carded else loc.problem,
        }
        for loc in served.locations
    ]


def _form_pickers() -> set[str]:
    """The pickers the form shows, so only their lists are fetched."""
    return forms.pickers(forms.build(settings_mod.SettingsSchema(), {})[0])


def _checked_against_ghl(
    settings: dict,
    locations: Sequence[Location],
    view: Location | None,
    choices: dict[str, lookups.Lookup],
) -> tuple[ghl_refs.Found, dict[str, lookups.Lookup]]:
    """Each location's settings checked against its own GHL lists (the cached ones first),
    each fetched with that location's token. Returns the view location's lookups too."""
    db, cfg = database(), config()
    if not locations:
        return ghl_refs.check(settings, lookups.ghl_lists(choices)), choices
    found = ghl_refs.Found()
    several = len(locations) > 1
    for target, location in zip(ghl_refs.targets(settings, locations), locations, strict=True):
        mine = view is not None and location.id == view.id
        lists = lookups.ghl_lists(choices) if mine else lookups.lists_for(db, cfg, location)[0]
        one = ghl_refs.check_location(settings, target, lists, several)
        if one.errors:
            # A custom field or workflow made in GHL minutes ago is not in the cached list
            # yet: ask GHL again before refusing the save.
            lists, fresh = lookups.lists_for(db, cfg, location, refresh=True)
            if mine:
                choices = {**choices, **fresh}
            one = ghl_refs.check_location(settings, target, lists, several)
        found.merge(one)
    return found, choices


def _merged(*sources: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for source in sources:
        for path, messages in source.items():
            out.setdefault(path, []).extend(messages)
    return out


@dataclass
class _Tokens:
    """What the form asks done with page-entered tokens, by location id."""

    store: dict[str, str] = field(default_factory=dict, repr=False)
    forget: set[str] = field(default_factory=set)  # "forget it" ticked
    removed: set[str] = field(default_factory=set)  # the location's card removed
    # Posted rows: (location id, token typed, removed), to check against the settings.
    posted: list[tuple[str, str, bool]] = field(default_factory=list, repr=False)


def _posted_tokens(form: MultiDict) -> _Tokens:
    out = _Tokens()
    for index in forms.posted_indices(form, "locations"):
        row = f"locations.{index}"
        location_id = form.get(f"{row}.id", "").strip()
        token = form.get(f"{row}.{TOKEN}", "").strip()
        removed = f"{row}.{forms.REMOVE}" in form
        out.posted.append((location_id, token, removed))
        if not location_id:
            continue
        if removed:
            out.removed.add(location_id)
        elif token:  # typed over a stored one, it replaces it, "forget" ticked or not
            out.store[location_id] = token
        elif f"{row}.{FORGET_TOKEN}" in form:
            out.forget.add(location_id)
    return out


def _token_problems(typed: _Tokens, settings: dict, env_id: str) -> dict[str, list[str]]:
    """A token typed where it would not be used, keyed beside its location's card."""
    problems: dict[str, list[str]] = {}
    entries = settings.get("locations") or []
    index = {}
    for i, entry in enumerate(entries):
        index.setdefault(entry["id"], i)
    for location_id, token, removed in typed.posted:
        if not token or removed:
            continue
        if not location_id:
            problems.setdefault("locations", []).append(
                "a token was typed for a location without an id: fill in its GHL location id"
            )
            continue
        i = index[location_id]
        if len(token) > MAX_TOKEN_LENGTH:
            problems.setdefault(f"locations.{i}.{TOKEN}", []).append(
                f"Token: longer than any GHL token ({MAX_TOKEN_LENGTH} characters at most); "
                "paste the Private Integration token alone"
            )
            continue
        token_env = entries[i]["token_env"]
        if token_env:
            message = (
                f"Token: this location reads its token from {token_env}; empty the token "
                "variable to use a token typed here"
            )
        elif location_id == env_id:
            message = (
                "Token: GHL_LOCATION_ID's location uses GHL_TOKEN; to give it another token, "
                "name the variable holding it"
            )
        else:
            continue
        problems.setdefault(f"locations.{i}.{TOKEN}", []).append(message)
    return problems


def _keep_tokens(typed: _Tokens, settings: dict) -> list[str]:
    """Store and forget the page's tokens once the settings are saved; returns what was done,
    in words (never the token)."""
    db, cfg = database(), config()
    declared = {entry["id"]: entry for entry in settings.get("locations") or []}
    done = []
    stored = tokens.stored(db)
    # A card removed while another still declares its id leaves that one's token be.
    gone = typed.forget | (typed.removed - set(declared) - set(typed.store))
    for location_id in sorted(gone):
        if location_id in stored:
            tokens.forget(db, location_id)
            done.append(f"the token of {location_id} is forgotten")
    for location_id, token in typed.store.items():
        tokens.store(db, cfg.secret_key, location_id, token)
        name = declared[location_id].get("name") or location_id
        done.append(f"the token of {name} is stored (encrypted)")
    return done


@bp.get("/settings")
def settings() -> ResponseReturnValue:
    version, current = settings_mod.current(database())
    return _render(current, version, check_stored=True, view_id=request.args.get("location", ""))


@bp.post("/settings")
def save_settings() -> ResponseReturnValue:
    db = database()
    cfg = config()
    form = request.form
    view_id = form.get("lists_location", "")
    raw, problems = forms.parse(settings_mod.SettingsSchema(), form)
    posted_version = _posted_version(form)
    if form.get("add_row"):
        blanks = forms.blank_rows(form)
        return _render(raw, posted_version, problems or None, blanks, view_id=view_id)
    stored_version = settings_mod.version(db)
    if posted_version != stored_version:
        flash(
            f"The settings were changed elsewhere (now version {stored_version}) since you "
            "opened this page. Your changes are below, not saved: check them and save again.",
            "error",
        )
        return _render(
            raw,
            stored_version,
            problems or None,
            forms.blank_rows(form),
            status=409,
            view_id=view_id,
        )
    blanks = forms.blank_rows(form)
    typed = _posted_tokens(form)
    try:
        if problems:
            raise settings_mod.SettingsError(problems)
        clean = settings_mod.validate_settings(raw)
        refused = _merged(
            registry.environment_problems(cfg, clean),
            _token_problems(typed, clean, cfg.ghl_location_id),
        )
        if refused:
            raise settings_mod.SettingsError(refused)
    except settings_mod.SettingsError as exc:
        return _render(raw, posted_version, exc.messages, blanks, status=400, view_id=view_id)
    # The lists of a location whose token was typed just now are fetched with that token.
    locations = [
        replace(loc, token=typed.store[loc.id], token_source=registry.PAGE, problem=None)
        if loc.id in typed.store
        else loc
        for loc in registry.build(cfg, clean, db).locations
    ]
    view = _view_location(locations, view_id)
    choices = lookups.load(db, cfg, _form_pickers(), location=view)
    found, choices = _checked_against_ghl(clean, locations, view, choices)
    if found.errors:
        warnings = _merged(found.warnings, found.unchecked)
        return _render(
            raw,
            posted_version,
            found.errors,
            blanks,
            status=400,
            warnings=warnings,
            choices=choices,
            view_id=view_id,
        )
    new_version = settings_mod.save(db, clean)
    done = _keep_tokens(typed, clean)
    flash(f"Saved (version {new_version}). The worker applies it to the next event.", "ok")
    if done:
        said = "; ".join(done)
        flash(said[0].upper() + said[1:] + ".", "ok")
    if found.unchecked:
        flash(
            "Not checked against GHL, as its lists could not be loaded: "
            f"{', '.join(found.unchecked)}. Save again once GHL answers to check them.",
            "warn",
        )
    if found.warnings:
        flash(
            "Saved with warnings: "
            + "; ".join(f"{path}: {m}" for path, msgs in found.warnings.items() for m in msgs),
            "warn",
        )
    return redirect(url_for("admin.settings", location=view_id or None))


@bp.get("/settings/export")
def export_settings() -> ResponseReturnValue:
    _, current = settings_mod.current(database())
    return Response(
        settings_mod.to_toml(current),
        content_type="application/toml; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="bridge-settings.toml"'},
    )


@bp.post("/settings/import")
def import_settings() -> ResponseReturnValue:
    db = database()
    upload = request.files.get("file")
    if upload and upload.filename:
        data = upload.read(settings_mod.MAX_IMPORT_BYTES + 1)
    else:
        data = request.form.get("toml", "").encode()
    if not data.strip():
        abort(400, "choose a TOML file (as exported here) or paste its text")
    try:
        imported = settings_mod.parse_import(data)
        refused = registry.environment_problems(config(), imported)
        if refused:
            raise settings_mod.SettingsError(refused)
        new_version = settings_mod.save(db, imported)
    except settings_mod.ImportRefused as exc:
        abort(exc.status, str(exc))
    except settings_mod.SettingsError as exc:
        version, current = settings_mod.current(db)
        lines = settings_mod.error_lines(exc)
        return _render(current, version, import_errors=lines, status=400)
    flash(f"Imported (version {new_version}). The worker applies it to the next event.", "ok")
    return redirect(url_for("admin.settings"))


@bp.post("/settings/refresh-lists")
def refresh_lists() -> ResponseReturnValue:
    lookups.clear(database())
    flash("Lists from GHL and Instantly are fetched again.", "ok")
    return redirect(url_for("admin.settings", location=request.form.get("location") or None))


def _posted_version(form: MultiDict) -> int:
    raw = form.get("version", "")
    try:
        return int(raw)
    except ValueError:
        abort(400, "the form has no settings version; reload the settings page")
