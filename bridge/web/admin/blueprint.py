"""The config page's blueprint and what every route module shares: the CSRF guard, the
configuration and database of the request, the secret mask and the error pages."""

from __future__ import annotations

import logging
import sqlite3

import sqlite_utils
from flask import Blueprint, Response, current_app, render_template
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from bridge import settings as settings_mod
from bridge.config import Config
from bridge.logs import MASK
from bridge.setup import health
from bridge.store import db as store

bp = Blueprint("admin", __name__)
csrf = CSRFProtect()
log = logging.getLogger("bridge.admin")

# Shorter values are not masked in pages: replacing every "1234" would garble them,
# and no page renders a secret on purpose; this is the net under that rule.
MIN_MASKED_LENGTH = 8


def config() -> Config:
    return current_app.config["BRIDGE_CONFIG"]


def database() -> sqlite_utils.Database:
    return store.cached(config().database)


def _location_secrets() -> list[str]:
    """The tokens and keys settings declare; none when the stored settings are invalid
    (then no location's token is read, so none can be shown)."""
    try:
        return health.served_registry(database(), config()).secret_values()
    except settings_mod.SettingsError:
        return []


@bp.after_request
def _mask_secrets(response: Response) -> Response:
    """No configured secret leaves in a page, whatever an API error message echoed."""
    if response.direct_passthrough or not response.mimetype.startswith(("text/", "application/")):
        return response
    body = response.get_data(as_text=True)
    masked = body
    for secret in (*config().secret_values(), *_location_secrets()):
        if len(secret) >= MIN_MASKED_LENGTH:
            masked = masked.replace(secret, MASK)
    if masked != body:
        response.set_data(masked)
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> ResponseReturnValue:
    message = (
        "This form was missing its security token or it no longer matches your session. "
        "Reload the page and try again."
    )
    return render_template("error.html", code=400, message=message), 400


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    """Pages answer errors as pages (the app's JSON errors are for the API)."""
    code = exc.code or 500
    return render_template("error.html", code=code, message=exc.description or exc.name), code


@bp.errorhandler(sqlite3.OperationalError)
def _database_unwritable(exc: sqlite3.OperationalError) -> ResponseReturnValue:
    """A full disk, a read-only file or a lock held too long: say so instead of a 500. (Even
    login writes: it counts each try before checking the password.)"""
    log.error("config page: the database cannot be written (%s); answering 503", exc)
    message = (
        f"The bridge's database cannot be written right now ({exc}), so nothing was done."
        " Free some disk space or fix the database file's permissions, then try again."
    )
    return render_template("error.html", code=503, message=message), 503
