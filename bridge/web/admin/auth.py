"""Login with BRIDGE_ADMIN_PASSWORD; wrong passwords in a row slow further tries down."""

from __future__ import annotations

import hashlib
import hmac
import time

import sqlite_utils
from flask import (
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from bridge.store import state
from bridge.store.db import immediate
from bridge.web.admin.blueprint import bp, config, database
from bridge.web.admin.redirects import safe_next

FAILURES_STATE = "login_failures"
# Three tries are free; then each wait doubles from 2 s, up to a minute.
FREE_TRIES = 3
FIRST_WAIT_SECONDS = 2.0
MAX_WAIT_SECONDS = 60.0
# Failures older than this are forgotten.
FORGET_AFTER_SECONDS = 3600.0
OPEN_ENDPOINTS = {"admin.login"}


def session_mark(password: str, secret_key: str) -> str:
    """What a logged-in session carries: changing the password logs everyone out."""
    return hmac.new(secret_key.encode(), b"admin:" + password.encode(), hashlib.sha256).hexdigest()


def logged_in() -> bool:
    cfg = config()
    mark = session.get("admin")
    return bool(mark) and hmac.compare_digest(
        str(mark), session_mark(cfg.admin_password, cfg.secret_key)
    )


def wait_seconds(failures: dict, who: str, now: float) -> float:
    """How long `who` must wait before the next try (0 when it may try now)."""
    record = failures.get(who)
    if not record or record["count"] < FREE_TRIES:
        return 0.0
    wait = min(MAX_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2 ** (record["count"] - FREE_TRIES))
    return max(0.0, record["last"] + wait - now)


def note_failure(db: sqlite_utils.Database, who: str, now: float) -> None:
    with immediate(db):
        failures = _recent(state.get(db, FAILURES_STATE, {}), now)
        record = failures.get(who, {"count": 0, "last": now})
        failures[who] = {"count": record["count"] + 1, "last": now}
        state.put(db, FAILURES_STATE, failures)


def forget_failures(db: sqlite_utils.Database, who: str, now: float) -> None:
    with immediate(db):
        failures = _recent(state.get(db, FAILURES_STATE, {}), now)
        failures.pop(who, None)
        state.put(db, FAILURES_STATE, failures)


def _recent(failures: dict, now: float) -> dict:
    return {k: v for k, v in failures.items() if now - v["last"] < FORGET_AFTER_SECONDS}


def _clock() -> float:
    return current_app.config.get("BRIDGE_CLOCK", time.time)()


@bp.before_request
def require_login() -> ResponseReturnValue | None:
    """No password set: say how to set one, nothing else. Otherwise: log in first."""
    if not config().admin_password:
        return render_template("no_password.html"), 503
    if request.endpoint in OPEN_ENDPOINTS or logged_in():
        return None
    return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    next_url = safe_next(request.values.get("next", ""), url_for("admin.dashboard"))
    if request.method == "GET":
        if logged_in():
            return redirect(next_url)
        return render_template("login.html", next=next_url)

    db = database()
    who = request.remote_addr or "unknown"
    now = _clock()
    wait = wait_seconds(state.get(db, FAILURES_STATE, {}), who, now)
    if wait > 0:
        message = f"Too many wrong passwords. Wait {int(wait) + 1} seconds, then try again."
        return render_template("login.html", next=next_url, error=message), 429
    given = request.form.get("password", "")
    cfg = config()
    if not hmac.compare_digest(given.encode(), cfg.admin_password.encode()):
        note_failure(db, who, now)
        return render_template("login.html", next=next_url, error="Wrong password."), 401
    forget_failures(db, who, now)
    # A fresh session on login: nothing from before the login carries over.
    session.clear()
    session.permanent = True
    session["admin"] = session_mark(cfg.admin_password, cfg.secret_key)
    return redirect(next_url)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("admin.login"))
