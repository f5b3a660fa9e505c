"""Login with BRIDGE_ADMIN_PASSWORD (throttle.py slows guessing down), and logout
(sessions.py: what a session carries)."""

from __future__ import annotations

import hmac
import time

from flask import (
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from bridge.web import wording
from bridge.web.admin import sessions, throttle
from bridge.web.admin.blueprint import bp, config, database
from bridge.web.admin.redirects import safe_next

OPEN_ENDPOINTS = {"admin.login"}


def logged_in() -> bool:
    mark = session.get("admin")
    return bool(mark) and hmac.compare_digest(str(mark), _current_mark())


def _current_mark() -> str:
    cfg = config()
    return sessions.mark(cfg.admin_password, cfg.secret_key, sessions.epoch(database()))


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
    who = throttle.client_key(request.remote_addr)
    refusal = throttle.admit(db, who, _clock())
    if refusal:
        return _refused(refusal, next_url)
    given = request.form.get("password", "")
    cfg = config()
    if not hmac.compare_digest(given.encode(), cfg.admin_password.encode()):
        return render_template("login.html", next=next_url, error="Wrong password."), 401
    throttle.forget(db, who)
    # A fresh session on login: nothing from before the login carries over.
    session.clear()
    session.permanent = True
    session["admin"] = _current_mark()
    return redirect(next_url)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    sessions.end_all(database())
    session.clear()
    return redirect(url_for("admin.login"))


def _refused(refusal: throttle.Refusal, next_url: str) -> ResponseReturnValue:
    if refusal.everyone:
        reason = "Too many login attempts on this bridge, from all addresses together."
    else:
        reason = "Too many wrong passwords."
    message = f"{reason} Wait {wording.plural(refusal.seconds, 'second')}, then try again."
    page = render_template("login.html", next=next_url, error=message)
    return page, 429, {"Retry-After": str(refusal.seconds)}
