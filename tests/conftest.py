"""Shared fixtures: a bridge on a temporary database, its client, and sample payloads."""

from __future__ import annotations

import pytest

from bridge import create_app
from bridge import settings as settings_mod
from bridge.config import load_config
from bridge.store import db as store
from tests.helpers import GHL_TOKEN, LOCATION_ID, WEBHOOK_SECRET

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture
def env(tmp_path):
    """The environment a configured bridge runs with."""
    return {
        "BRIDGE_INSTANCE_PATH": str(tmp_path / "instance"),
        "BRIDGE_DATABASE": str(tmp_path / "bridge.sqlite3"),
        "BRIDGE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BRIDGE_SECRET_KEY": "test-secret-key",
        "GHL_TOKEN": GHL_TOKEN,
        "GHL_LOCATION_ID": LOCATION_ID,
    }


@pytest.fixture
def config(env):
    return load_config(env)


@pytest.fixture
def db(config):
    database = store.connect(config.database)
    store.migrate(database)
    settings_mod.current(database)
    yield database
    database.close()


@pytest.fixture
def app(config, db):
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True})
    yield app
    store.forget_cached()


@pytest.fixture
def client(app):
    return app.test_client()
