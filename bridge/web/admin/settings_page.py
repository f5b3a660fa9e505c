"""The settings page: the schema-driven form, TOML export and import, lookup refresh."""

from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from bridge import settings as settings_mod
from bridge.web.admin import forms, lookups
from bridge.web.admin.blueprint import bp, config, database

MAX_IMPORT_BYTES = 256 * 1024
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
) -> ResponseReturnValue:
    db = database()
    widgets, leftover = forms.build(settings_mod.SettingsSchema(), values, errors, blanks)
    choices = lookups.load(db, config(), forms.pickers(widgets))
    cfg = config()
    return (
        render_template(
            "settings.html",
            widgets=widgets,
            leftover=leftover,
            has_errors=bool(errors),
            version=version,
            lookups=choices,
            secrets=secrets_status(),
            location_id=cfg.ghl_location_id,
            ghl_base_url=cfg.ghl_base_url,
            instantly_base_url=cfg.instantly_base_url,
            import_errors=import_errors or [],
        ),
        status,
    )


@bp.get("/settings")
def settings() -> ResponseReturnValue:
    version, current = settings_mod.current(database())
    return _render(current, version)


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
    try:
        if problems:
            raise settings_mod.SettingsError(problems)
        new_version = settings_mod.save(db, raw)
    except settings_mod.SettingsError as exc:
        return _render(raw, posted_version, exc.messages, forms.blank_rows(form), status=400)
    flash(f"Saved (version {new_version}). The worker applies it to the next event.", "ok")
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
        data = upload.read(MAX_IMPORT_BYTES + 1)
    else:
        data = request.form.get("toml", "").encode()
    if not data.strip():
        abort(400, "choose a TOML file (as exported here) or paste its text")
    if len(data) > MAX_IMPORT_BYTES:
        abort(413, f"the settings file is larger than {MAX_IMPORT_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        abort(400, "the settings file is not UTF-8 text")
    try:
        imported = settings_mod.parse_toml(text)
        new_version = settings_mod.save(db, imported)
    except settings_mod.SettingsError as exc:
        version, current = settings_mod.current(db)
        lines = [f"{path}: {' '.join(msgs)}" for path, msgs in exc.messages.items()]
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
