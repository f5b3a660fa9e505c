"""Shared fixtures: a bridge on a temporary database, its client, a CLI runner, and sample
payloads."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest
from click.testing import CliRunner, Result

from bridge import create_app
from bridge import settings as settings_mod
from bridge.config import ENV_FILE_VAR, load_config
from bridge.store import db as store
from bridge.sync.worker import Worker
from tests.browser_helpers import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import GHL_TOKEN, LOCATION_ID, WEBHOOK_SECRET
from tests.support.env_names import PREFIXES, TEST_SUPPORT, bridge_env_names
from tests.web_helpers import admin_env, login

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory) -> Iterator[str]:
    """Tests never see the developer's settings: every variable the bridge reads is cleared,
    and BRIDGE_ENV_FILE names a file that does not exist, so no process started in the
    session (in-process CLI runs, the bridge as a child process) reads a `.env`.

    Yields the path BRIDGE_ENV_FILE points at."""
    nowhere = tmp_path_factory.mktemp("no-dotenv") / ".env"
    owned = bridge_env_names() | {n for n in os.environ if n.startswith(PREFIXES)}
    with pytest.MonkeyPatch.context() as patch:
        for name in sorted(owned - TEST_SUPPORT):
            patch.delenv(name, raising=False)
        patch.setenv(ENV_FILE_VAR, str(nowhere))
        yield str(nowhere)


@pytest.fixture
def env(tmp_path, request):
    """The environment a configured bridge runs with; tests marked `admin` (the config page,
    doctor, webhook registration) also get an admin password and an Instantly key."""
    base = {
        "BRIDGE_INSTANCE_PATH": str(tmp_path / "instance"),
        "BRIDGE_DATABASE": str(tmp_path / "bridge.sqlite3"),
        "BRIDGE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BRIDGE_SECRET_KEY": "test-secret-key",
        "GHL_TOKEN": GHL_TOKEN,
        "GHL_LOCATION_ID": LOCATION_ID,
    }
    return admin_env(base) if request.node.get_closest_marker("admin") else base


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
def worker(config, db):
    """The sync worker on the test's database; tests run it with `worker.run(drain=True)`."""
    return Worker(config, db=db)


@pytest.fixture
def app(config, db):
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True})
    yield app
    store.forget_cached()


@pytest.fixture
def client(app):
    return app.test_client()


# Read by the CLI when set, so a developer's shell must not leak them into a test.
CLI_UNSET = ("INSTANTLY_BASE_URL", "GHL_BASE_URL", "INSTANTLY_API_KEY_FILE")


class BridgeCliRunner:
    """Runs `bridge` commands in-process (click's CliRunner) with the test's environment.

    The environment is set with monkeypatch when the fixture is made, so a test may still
    change it (monkeypatch.setenv / delenv) before invoking; each invoke reads it afresh.
    """

    def invoke(
        self, args: Sequence[str] = (), catch_exceptions: bool = True, input: str | None = None
    ) -> Result:
        # Imported here, so a conftest import never depends on the whole CLI loading.
        from bridge.cli import main

        return CliRunner().invoke(main, list(args), catch_exceptions=catch_exceptions, input=input)


@pytest.fixture
def logged_in(client):
    """The test client, logged in to the config page (needs the `admin` mark)."""
    login(client)
    return client


@pytest.fixture
def runner(env, monkeypatch):
    """`runner.invoke(["doctor"])`, like the Flask tutorial's `runner` fixture: the `env`
    fixture (as the test module defines it) is the process environment while it runs."""
    for name in CLI_UNSET:
        if name not in env:
            monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return BridgeCliRunner()


@pytest.fixture
def browser():
    """Debian's chromium through Playwright (tests/browser_helpers.py); the test skips and
    names the package when it is not installed (.ci/run installs it)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} not found: install the Debian package `chromium` (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def usual_umask():
    """The usual umask, under which a file SQLite or Python makes would be readable by all:
    the file-mode tests show the bridge's files are private anyway."""
    old = os.umask(0o022)
    yield
    os.umask(old)
