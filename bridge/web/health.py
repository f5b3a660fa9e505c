"""GET /healthz: the bridge's health for an uptime monitor.

200 when ok or degraded, 503 when unhealthy; with ?strict=1, degraded is 503 too, for a
monitor that should also page for dead letters or a failed reconciliation. Each GHL
location's own state is under `locations` (by id), and `unrouted` counts held events; the
bridge's status is the worst of them (bridge/setup/health.py).
"""

from __future__ import annotations

import sqlite3

from flask import Blueprint, Response, current_app, jsonify, request

from bridge.setup.health import OK, report, unreachable
from bridge.store import db as store

bp = Blueprint("health", __name__)

STRICT_PARAM = "strict"
# `?strict` alone is a yes, as a flag reads.
_YES = ("", "1", "true", "yes", "on")
_NO = ("0", "false", "no", "off")


@bp.get("/healthz")
def healthz() -> Response:
    strict = _strict()
    if strict is None:
        response = jsonify(
            {"error": f"{STRICT_PARAM} must be 1 or 0 (also true/false, yes/no, on/off)"}
        )
        response.status_code = 400
        return response
    config = current_app.config["BRIDGE_CONFIG"]
    try:
        body = report(store.cached(config.database), config)
    except sqlite3.Error as exc:
        store.forget_cached()
        body = unreachable(exc)
    failed = bool(body["problems"]) or (strict and body["status"] != OK)
    response = jsonify(body)
    response.status_code = 503 if failed else 200
    return response


def _strict() -> bool | None:
    """?strict= as a flag; None when it is neither yes nor no."""
    if STRICT_PARAM not in request.args:
        return False
    value = request.args[STRICT_PARAM].strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    return None
