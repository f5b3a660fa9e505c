"""The benchmark baseline route is bench/'s alone, and never touches the store."""

from __future__ import annotations

from bench.app import create_app as create_bench_app
from bridge.store import db as store


def test_bare_route_is_absent_by_default(client):
    assert client.post("/bench/bare", data=b"{}").status_code == 404


def test_bare_route_answers_204_in_the_bench_app(config, db):
    app = create_bench_app({"BRIDGE_CONFIG": config, "TESTING": True})
    try:
        response = app.test_client().post("/bench/bare", data=b'{"event_type": "x"}')
    finally:
        store.forget_cached()
    assert response.status_code == 204
    assert response.data == b""
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
