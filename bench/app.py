"""The bridge's web app plus the benchmark's baseline route, for bench/ only.

`POST /bench/bare` answers 204 without reading settings or touching the database: the
baseline the webhook's cost is measured against, on the same app and the same server.
gunicorn serves `bench.app:create_app()` with the Procfile's settings; nothing here ships
in the product.
"""

from __future__ import annotations

from flask import Blueprint, Flask, request

from bench.payloads import BARE_PATH
from bridge import create_app as create_bridge_app
from bridge.web import admin

bp = Blueprint("bench", __name__)


@bp.route(BARE_PATH, methods=["GET", "POST"])
def bare():
    # Read the body as the webhook does, so both routes cost the same on the wire.
    request.get_data(cache=False)
    return "", 204


def create_app(test_config: dict | None = None) -> Flask:
    """The bridge's app with the baseline route added, exempt from CSRF as the webhook is."""
    app = create_bridge_app(test_config)
    app.register_blueprint(bp)
    admin.csrf.exempt(bp)
    return app
