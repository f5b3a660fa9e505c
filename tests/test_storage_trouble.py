"""When the database cannot be written or read: /healthz says so with a 503, and every
command ends with one line naming the file instead of a traceback.

A full disk is simulated as in tests/faults/test_disk_trouble.py: RLIMIT_FSIZE lowered to
0 makes the kernel refuse every write(2) to a regular file, here in a child process so
that pytest's own files stay writable. A corrupt database is garbage written into the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from bridge.store import db as store
from bridge.store import group_commit, probe, state
from tests.helpers import reply_payload

# The child: a web app on the test's database, whose writes fail once its connection is
# open (the limit covers files only; stdout is a pipe).
HEALTHZ_WHILE_WRITES_FAIL = textwrap.dedent(
    """
    import json, resource, sys
    from bridge import create_app
    from bridge.config import load_config
    from bridge.store import db as store

    config = load_config(json.loads(sys.argv[1]))
    client = create_app({"BRIDGE_CONFIG": config, "TESTING": True}).test_client()
    # Opened (and its shared-memory file made) while the disk is still fine.
    store.cached(config.database).execute("SELECT count(*) FROM events").fetchone()
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    answer = client.get("/healthz")
    print(json.dumps({"status": answer.status_code, "body": answer.get_json()}))
    """
)


def test_healthz_answers_503_when_the_database_cannot_be_written(env, db):
    done = subprocess.run(
        [sys.executable, "-c", HEALTHZ_WHILE_WRITES_FAIL, json.dumps(env)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["status"] == 503
    assert answer["body"]["status"] == "unhealthy"
    assert answer["body"]["database"] == "cannot be written"
    # SQLite's own words: "disk I/O error" for this limit, "database or disk is full" for
    # a full disk.
    (problem,) = answer["body"]["problems"]
    assert problem.startswith("database cannot be written: disk I/O error; free disk space")


def test_healthz_is_200_while_the_database_can_be_written(client):
    answer = client.get("/healthz")
    assert (answer.status_code, answer.get_json()["database"]) == (200, "ok")


def test_the_write_probe_commits_at_most_once_a_second_per_process(db, config):
    clock = iter([100.0, 100.5, 100.9, 101.2]).__next__
    before = db.conn.total_changes
    answers = [probe.write_failure(db, config.database, clock=clock) for _ in range(4)]
    assert answers == [None] * 4
    # The first and the fourth (1.2 s later) wrote; the two between reused the answer.
    assert db.conn.total_changes - before == 2
    assert state.get(db, probe.PROBE_STATE) is not None


def test_a_failed_probe_names_sqlites_reason_and_leaves_no_transaction(tmp_path):
    db = store.connect(tmp_path / "probe.sqlite3")
    store.migrate(db)
    # A trigger refusing the probe's row stands in for a refused commit.
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON state"
        " BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
    )
    failure = probe.write_failure(db, str(tmp_path / "probe.sqlite3"), clock=lambda: 0.0)
    assert failure == "database or disk is full"
    assert not db.conn.in_transaction


def test_a_commit_that_fails_is_rolled_back(tmp_path):
    db = store.connect(tmp_path / "commit.sqlite3")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute(
        "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id)"
        " DEFERRABLE INITIALLY DEFERRED)"
    )
    # A deferred foreign key fails at COMMIT itself, as a full disk does.
    with pytest.raises(sqlite3.IntegrityError), store.immediate(db):
        db.execute("INSERT INTO child VALUES (1)")
    assert not db.conn.in_transaction
    assert db.execute("SELECT count(*) FROM child").fetchone()[0] == 0


# --- a corrupt database and the commands ----------------------------------------------------


def overwrite_with_garbage(path: str, start: int) -> None:
    """Random bytes over the file from `start` on: 0 ruins the header, later offsets the
    tables' pages."""
    with open(path, "r+b") as handle:
        handle.seek(start)
        handle.write(os.urandom(64 * 1024))
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


@pytest.fixture(params=[0, 4096], ids=["header", "pages"])
def corrupt(request, db, config):
    """The migrated test database, closed and then ruined from the header or the pages."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    overwrite_with_garbage(config.database, request.param)
    return config.database


@pytest.mark.parametrize(
    "args", [["status"], ["status", "--json"], ["worker", "--drain"], ["replay"], ["migrate"]]
)
def test_a_corrupt_database_is_one_line_naming_the_file(runner, corrupt, args):
    result = runner.invoke(args, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: database {corrupt} cannot be used: ")
    assert "malformed" in lines[0] or "not a database" in lines[0]
    assert "restore it from a backup" in lines[0]
    assert "Traceback" not in result.output


def test_a_webhook_that_could_not_be_stored_makes_the_next_health_check_probe_again(
    client, config, monkeypatch
):
    # A health check just said "ok", and its answer is kept for a second...
    assert client.get("/healthz").status_code == 200
    # ...then the disk fills: the webhook's write fails, and /healthz must not repeat "ok".
    full = sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(probe, "_commit", lambda db, path: str(full))

    def fail(*_args, **_kwargs):
        raise full

    monkeypatch.setattr(group_commit.Arrival, "enqueue", fail)
    answer = client.post(
        "/webhooks/instantly",
        json=reply_payload(),
        headers={"X-Bridge-Secret": config.webhook_secret},
    )
    assert answer.status_code == 503
    health = client.get("/healthz")
    assert health.status_code == 503
    (problem,) = health.get_json()["problems"]
    assert problem.startswith("database cannot be written: database or disk is full;")
