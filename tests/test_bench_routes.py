"""The benchmark baseline route exists only when asked for, and never touches the store."""

from __future__ import annotations

from bridge import create_app
from bridge.store import db as store


def test_bare_route_is_absent_by_default(client):
    assert client.post("/bench/bare", data=b"{}").status_code == 404


def test_bare_route_answers_204_when_enabled(config, db, monkeypatch):
    monkeypatch.setenv("BRIDGE_BENCH_ROUTES", "1")
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True})
    try:
        response = app.test_client().post("/bench/bare", data=b'{"event_type": "x"}')
    finally:
        store.forget_cached()
    assert response.status_code == 204
    assert response.data == b""
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
