"""The config page: login, dashboard, events, dead letters, settings, setup checks.

Server-rendered; every page and form needs the admin login, every form a CSRF token.
blueprint.py holds the blueprint; auth.py, views.py and settings_page.py its routes.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from bridge.web import webhooks
from bridge.web.admin import auth, settings_page, views  # noqa: F401  (their routes)
from bridge.web.admin.blueprint import bp, csrf
from bridge.web.admin.sessions import SessionInterface

__all__ = ["csrf", "init_app"]


def init_app(app: Flask) -> None:
    """CSRF for every form except the webhook, then the page's routes."""
    # A page left open for hours must still save: the token lives as long as the session.
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    # Flask keeps a session 31 days by default; an admin login should not outlive a day.
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=12)
    # Served at an https address, the cookie is Secure even if a proxy fails to say https.
    app.config["SESSION_COOKIE_SECURE"] = app.config["BRIDGE_CONFIG"].public_url.startswith(
        "https://"
    )
    app.session_interface = SessionInterface()
    csrf.init_app(app)
    csrf.exempt(webhooks.bp)
    app.register_blueprint(bp)
