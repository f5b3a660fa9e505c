"""GET /healthz: 200 when the bridge can do its job, 503 with the problems when not."""

from __future__ import annotations

import sqlite3

from flask import Blueprint, current_app, jsonify

from bridge.setup.health import report
from bridge.store import db as store

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    config = current_app.config["BRIDGE_CONFIG"]
    try:
        body = report(store.cached(config.database), config)
    except sqlite3.Error as exc:
        store.forget_cached()
        body = {"database": f"error: {exc}", "problems": ["database unreachable"]}
    body["status"] = "ok" if not body["problems"] else "unhealthy"
    response = jsonify(body)
    response.status_code = 200 if not body["problems"] else 503
    return response
