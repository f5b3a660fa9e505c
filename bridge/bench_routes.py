"""Benchmark-only routes, registered only when BRIDGE_BENCH_ROUTES=1 at app creation.

`POST /bench/bare` answers 204 without reading settings or touching the database: the
baseline the webhook's cost is measured against, on the same app and the same server
(see bench/). Never registered by default.
"""

from __future__ import annotations

from flask import Blueprint, request

ENV_VAR = "BRIDGE_BENCH_ROUTES"

bp = Blueprint("bench", __name__)


@bp.route("/bench/bare", methods=["GET", "POST"])
def bare():
    # Read the body as the webhook does, so both routes cost the same on the wire.
    request.get_data(cache=False)
    return "", 204
