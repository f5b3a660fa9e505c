"""Files the bridge makes are its user's alone: the database with its -wal and -shm (lead
addresses and replies), the lock files beside it, the instance folder, the session key and
.env. Checked under the usual umask 022, which would leave them readable by everyone."""

from __future__ import annotations

import sqlite3

import pytest

from bridge.config import load_config
from bridge.store import db as store
from tests.helpers import file_mode

pytestmark = pytest.mark.usefixtures("usual_umask")


def test_the_database_its_wal_and_shm_are_private_from_the_start(tmp_path):
    path = tmp_path / "instance" / "bridge.sqlite3"
    db = store.connect(path)
    store.migrate(db)  # writes, so the -wal and -shm exist
    assert {suffix: file_mode(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")} == {
        "": 0o600,
        "-wal": 0o600,
        "-shm": 0o600,
    }
    assert file_mode(f"{path}.migrate-lock") == 0o600
    assert file_mode(path.parent) == 0o700
    db.close()


def test_a_database_an_older_bridge_left_readable_is_made_private(tmp_path, caplog):
    path = tmp_path / "bridge.sqlite3"
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode = WAL")
    old.execute("CREATE TABLE t (x)")
    old.commit()
    assert file_mode(path) == file_mode(f"{path}-wal") == 0o644
    db = store.connect(path)
    assert file_mode(path) == file_mode(f"{path}-wal") == file_mode(f"{path}-shm") == 0o600
    assert "readable by other users" in caplog.text
    db.close()
    old.close()


def test_the_instance_folder_and_its_session_key_are_private(tmp_path):
    instance = tmp_path / "instance"
    load_config({"BRIDGE_INSTANCE_PATH": str(instance)})
    assert file_mode(instance) == 0o700
    assert file_mode(instance / "secret_key") == 0o600


def test_init_env_writes_a_private_env(runner, tmp_path):
    target = tmp_path / ".env"
    result = runner.invoke(["init-env", "--path", str(target)])
    assert result.exit_code == 0, result.output
    assert file_mode(target) == 0o600
    assert "BRIDGE_WEBHOOK_SECRET=" in target.read_text()


def test_init_env_never_writes_through_a_link_left_in_its_place(runner, tmp_path):
    # A link someone else planted (dangling, so `exists()` says no) would have the secrets
    # written wherever it points, readable by whoever chose the place.
    elsewhere = tmp_path / "shared" / "loot"
    elsewhere.parent.mkdir()
    target = tmp_path / ".env"
    target.symlink_to(elsewhere)
    result = runner.invoke(["init-env", "--path", str(target)])
    assert result.exit_code == 0, result.output
    assert "exists; left as it is" in result.output
    assert not elsewhere.exists()
