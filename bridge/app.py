"""The app factory: config, store, blueprints. Used by gunicorn (through `bridge.create_app`)
and tests; it only wires what the packages below provide."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from bridge import settings as settings_mod
from bridge.config import Config, load_config
from bridge.logs import configure_logging
from bridge.store import db as store
from bridge.store import holders
from bridge.store.adopt import adopt_single_location
from bridge.web import admin, errors, headers, health, metrics, webhooks
from bridge.web.errors import MAX_BODY_BYTES


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The web app on `test_config` (tests) or the environment's configuration."""
    app = Flask("bridge", instance_relative_config=False)
    config: Config = (test_config or {}).get("BRIDGE_CONFIG") or load_config()
    app.config.from_mapping(
        SECRET_KEY=config.secret_key,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        BRIDGE_CONFIG=config,
    )
    if test_config:
        app.config.update(test_config)
    if config.trusted_proxies:
        # The client's address and scheme as the trusted proxies forwarded them; without
        # the setting, X-Forwarded-For is anyone's to forge and is ignored.
        n = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)
    configure_logging(config)

    # Held for the app's life (this process's), so a restore refuses while it serves; taken
    # before the database is opened, so a restore under way is waited for.
    app.extensions["bridge.in_use"] = holders.hold_shared(config.database)
    db = store.connect(config.database)
    store.migrate(db)
    adopt_single_location(db, config.ghl_location_id)
    settings_mod.current(db)  # seeds and validates: a bad setting stops start-up here
    db.close()
    app.extensions["bridge.settings"] = settings_mod.SettingsCache()

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    metrics.init_app(app)
    admin.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    logging.getLogger("bridge").info("web app ready, database %s", config.database)
    return app
