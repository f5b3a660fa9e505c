"""The settings page: the schema-driven form, TOML export and import, lookup refresh."""

from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from bridge import settings as settings_mod
from bridge.setup import ghl_refs
from bridge.web.admin import forms, lookups
from bridge.web.admin.blueprint import bp, config, database

# Keys shorter than this show no tail at all: four characters of a short key is too much.
MIN_LENGTH_FOR_TAIL = 16


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
) -> ResponseReturnValue:
    """The page. `check_stored` shows what GHL does not list among the stored values beside
    their fields (a workflow deleted in GHL since it was saved, say)."""
    db = database()
    cfg = config()
    if choices is None:
        choices = lookups.load(db, cfg, _form_pickers())
    if check_stored:
        found = ghl_refs.check(values, lookups.ghl_lists(choices))
        warnings = _merged(found.errors, found.warnings)
    widgets, leftover = forms.build(settings_mod.SettingsSchema(), values, errors, blanks, warnings)
    return (
        render_template(
            "settings.html",
            widgets=widgets,
            leftover=leftover,
            has_errors=bool(errors),
            version=version,
            lookups=choices,
            failed_lists=lookups.failures(choices),
            secrets=secrets_status(),
            location_id=cfg.ghl_location_id,
            ghl_base_url=cfg.ghl_base_url,
            instantly_base_url=cfg.instantly_base_url,
            import_errors=import_errors or [],
        ),
        status,
    )


def _form_pickers() -> set[str]:
    """The pickers the form shows, so only their lists are fetched."""
    return forms.pickers(forms.build(settings_mod.SettingsSchema(), {})[0])


def _checked_against_ghl(
    settings: dict, choices: dict[str, lookups.Lookup]
) -> tuple[ghl_refs.Found, dict[str, lookups.Lookup]]:
    """The GHL references in `settings` checked against GHL's lists (the cached ones first)."""
    found = ghl_refs.check(settings, lookups.ghl_lists(choices))
    if found.errors:
        # A custom field or workflow made in GHL minutes ago is not in the cached list yet:
        # ask GHL again before refusing the save.
        names = lookups.GHL_REF_PICKERS | {"ghl_stage"}
        choices = {**choices, **lookups.load(database(), config(), names, refresh=True)}
        found = ghl_refs.check(settings, lookups.ghl_lists(choices))
    return found, choices


def _merged(*sources: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for source in sources:
        for path, messages in source.items():
            out.setdefault(path, []).extend(messages)
    return out


@bp.get("/settings")
def settings() -> ResponseReturnValue:
    version, current = settings_mod.current(database())
    return _render(current, version, check_stored=True)


@bp.post("/settings")
def save_settings() -> ResponseReturnValue:
    db = database()
    form = request.form
    raw, problems = forms.parse(settings_mod.SettingsSchema(), form)
    posted_version = _posted_version(form)
    if form.get("add_row"):
        return _render(raw, posted_version, problems or None, forms.blank_rows(form))
    stored_version = settings_mod.version(db)
    if posted_version != stored_version:
        flash(
            f"The settings were changed elsewhere (now version {stored_version}) since you "
            "opened this page. Your changes are below, not saved: check them and save again.",
            "error",
        )
        return _render(raw, stored_version, problems or None, forms.blank_rows(form), status=409)
    blanks = forms.blank_rows(form)
    try:
        if problems:
            raise settings_mod.SettingsError(problems)
        clean = settings_mod.validate_settings(raw)
    except settings_mod.SettingsError as exc:
        return _render(raw, posted_version, exc.messages, blanks, status=400)
    choices = lookups.load(db, config(), _form_pickers())
    found, choices = _checked_against_ghl(clean, choices)
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
        )
    new_version = settings_mod.save(db, clean)
    flash(f"Saved (version {new_version}). The worker applies it to the next event.", "ok")
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
    return redirect(url_for("admin.settings"))


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
    return redirect(url_for("admin.settings"))


def _posted_version(form: MultiDict) -> int:
    raw = form.get("version", "")
    try:
        return int(raw)
    except ValueError:
        abort(400, "the form has no settings version; reload the settings page")
