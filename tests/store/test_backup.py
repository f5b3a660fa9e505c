"""Backup and restore in one process: what a backup holds and its mode, what restore puts
back and keeps aside, the files either refuses with the message it gives, and who using
the database makes a restore refuse. The same with real gunicorn and worker processes is
tests/faults/test_backup_live.py."""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import sqlite3
from pathlib import Path

import click
import pytest
import sqlite_utils

from bridge import create_app
from bridge.cli.common import open_database
from bridge.events.webhook import from_webhook
from bridge.store import backup as backups
from bridge.store import contacts, holders, inbox, leases, replica
from bridge.store import db as store
from tests.helpers import LOCATION_ID, file_mode, keys_in, reply_payload

# Under the usual umask a file SQLite or Python makes would be readable by all.
pytestmark = pytest.mark.usefixtures("usual_umask")


def add_events(db, prefix: str, count: int) -> list[str]:
    """`count` replies from as many leads, the first one done with its contact mapped."""
    keys = []
    for n in range(count):
        email = f"{prefix}{n}@example.com"
        event = from_webhook(reply_payload(email_id=f"{prefix}-{n}", lead_email=email, email=email))
        keys.append(event.key)
        stored = inbox.enqueue(db, event)
        if n == 0:
            contacts.record_upsert(
                db, LOCATION_ID, email, f"ghl-{prefix}{n}", {"firstName": "Jordan"}
            )
            inbox.finish(db, stored.event_id, inbox.DONE, contact_id=f"ghl-{prefix}{n}")
    return keys


def every_step() -> list[str]:
    """The migrations this bridge knows (all are pending on an empty database)."""
    return [m.name for m in store.load_migrations().pending(sqlite_utils.Database(memory=True))]


def listing(folder: Path) -> set[str]:
    """The files in `folder`, less the in-use lock file a restore makes to refuse or hold."""
    return {entry.name for entry in folder.iterdir() if not entry.name.endswith(".in-use")}


# --- backup -----------------------------------------------------------------------------


def test_a_backup_holds_the_events_and_contacts_is_private_and_one_file(config, db, tmp_path):
    keys = add_events(db, "a", 3)
    target = tmp_path / "backups" / "bridge-backup.sqlite3"
    target.parent.mkdir()

    summary = backups.backup(config.database, target)

    assert summary.path == target
    assert summary.size_bytes == target.stat().st_size > 0
    assert summary.events == {
        "pending": 2,
        "processing": 0,
        "done": 1,
        "ignored": 0,
        "superseded": 0,
        "dead": 0,
        "unrouted": 0,
    }
    assert summary.contacts == 1
    newest = db.execute("SELECT received_at FROM events ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert summary.newest_event == newest
    assert summary.migrations == every_step()
    assert keys_in(target) == set(keys)
    assert file_mode(target) == 0o600
    # No -wal to lose when it is copied elsewhere, and no temporary file left behind.
    assert listing(target.parent) == {target.name}
    assert backups.verify(target).events == summary.events


def test_a_backup_never_replaces_a_file_unless_forced(config, db, tmp_path, runner):
    add_events(db, "f", 1)
    target = tmp_path / "kept.sqlite3"
    target.write_text("someone's file")

    refused = runner.invoke(["backup", str(target)])
    assert refused.exit_code == 1
    assert refused.output == (
        f"Error: {target} exists: name another file, or pass --force to replace it\n"
    )
    assert target.read_text() == "someone's file"

    forced = runner.invoke(["backup", "--force", str(target)])
    assert forced.exit_code == 0, forced.output
    assert len(keys_in(target)) == 1
    assert file_mode(target) == 0o600


def test_the_backup_command_prints_one_line_per_fact(config, db, tmp_path, runner):
    add_events(db, "p", 2)
    target = tmp_path / "b.sqlite3"

    result = runner.invoke(["backup", str(target)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    size = target.stat().st_size
    newest = db.execute("SELECT received_at FROM events ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert lines[0] == f"backup of {config.database} written to {target}"
    assert lines[1] == f"size: {size / 1_000_000:.1f} MB ({size} bytes)"
    assert (
        lines[2]
        == "events: 1 pending, 0 processing, 1 done, 0 ignored, 0 superseded, 0 dead, 0 unrouted"
    )
    assert lines[3:] == [
        "contacts: 1",
        f"newest event: {newest}",
        f"migrations: {len(every_step())}, the last {every_step()[-1]}",
    ]


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this user may not create files in. chmod does not stop root; sysfs refuses
    new files to everyone."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    return folder


@pytest.mark.parametrize("where", ["missing folder", "unwritable folder", "the database"])
def test_a_backup_that_cannot_be_written_says_why(config, db, tmp_path, runner, where):
    target = {
        "missing folder": tmp_path / "nowhere" / "b.sqlite3",
        "unwritable folder": unwritable_folder(tmp_path) / "b.sqlite3",
        "the database": Path(config.database),
    }[where]
    message = {
        "missing folder": f"cannot write {target}: folder {target.parent} does not exist",
        "unwritable folder": (
            f"cannot write {target}: this user may not write in folder {target.parent}"
        ),
        "the database": f"{target} is the database itself: name another file",
    }[where]

    result = runner.invoke(["backup", "--force", str(target)])

    assert (result.exit_code, result.output) == (1, f"Error: {message}\n")


def test_a_backup_of_no_database_says_so(env, tmp_path, runner):
    result = runner.invoke(["backup", str(tmp_path / "b.sqlite3")])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: database {env['BRIDGE_DATABASE']} does not exist: nothing to back up\n"
    )
    assert not Path(env["BRIDGE_DATABASE"]).exists()


# --- restore ----------------------------------------------------------------------------


def test_restore_puts_the_backup_back_and_keeps_the_replaced_database_aside(
    config, db, tmp_path, runner
):
    before = add_events(db, "r", 2)
    target = tmp_path / "b.sqlite3"
    backups.backup(config.database, target)
    after = add_events(db, "late", 2)  # in the database only, until it is replaced
    db.close()

    result = runner.invoke(["restore", str(target)])

    assert result.exit_code == 0, result.output
    database = Path(config.database)
    (aside,) = [p for p in database.parent.iterdir() if ".replaced-" in p.name]
    assert aside.name.startswith(f"{database.name}.replaced-") and aside.name.endswith("Z")
    lines = result.output.splitlines()
    assert lines[:2] == [
        f"the database that was there is kept as {aside}",
        f"restored {target} to {database}",
    ]
    assert (
        "events: 1 pending, 0 processing, 1 done, 0 ignored, 0 superseded, 0 dead, 0 unrouted"
        in lines
    )
    assert keys_in(database) == set(before)
    assert keys_in(aside) == set(before + after)
    restored = store.connect(database)
    assert contacts.get(restored, LOCATION_ID, "r0@example.com").contact_id == "ghl-r0"
    assert store.pending_migrations(restored) == []
    restored.close()
    assert file_mode(database) == file_mode(aside) == 0o600
    assert not list(database.parent.glob("*.partial*"))


def test_restore_with_replication_forgets_litestream_state_and_says_what_follows(
    config, db, tmp_path, runner, monkeypatch
):
    add_events(db, "rep", 1)
    target = tmp_path / "b.sqlite3"
    backups.backup(config.database, target)
    db.close()
    state = replica.meta_dir(config.database)
    state.mkdir()
    (state / "position").write_text("of the database being replaced")
    monkeypatch.setenv("BRIDGE_REPLICA_URL", f"file://{tmp_path / 'replica'}")

    result = runner.invoke(["restore", str(target)])

    assert result.exit_code == 0, result.output
    assert not state.exists()
    assert "Point BRIDGE_REPLICA_URL at a new, empty place" in result.output


def test_restore_onto_a_new_machine_needs_no_database(config, db, tmp_path, runner, monkeypatch):
    keys = add_events(db, "n", 2)
    target = tmp_path / "b.sqlite3"
    backups.backup(config.database, target)
    db.close()
    elsewhere = tmp_path / "new-machine" / "instance" / "bridge.sqlite3"
    monkeypatch.setenv("BRIDGE_DATABASE", str(elsewhere))

    result = runner.invoke(["restore", str(target)])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"no database was at {elsewhere}: nothing to keep aside"
    )
    assert keys_in(elsewhere) == set(keys)
    assert file_mode(elsewhere) == 0o600
    assert file_mode(elsewhere.parent) == 0o700


def test_a_backup_from_an_older_bridge_is_migrated_on_restore(config, tmp_path):
    last = every_step()[-1]
    old = store.connect(tmp_path / "old.sqlite3")
    store.load_migrations().apply(old, stop_before=last)
    old.close()

    restored = backups.restore(tmp_path / "old.sqlite3", config.database)

    assert restored.applied == [last]
    assert restored.summary.migrations[-1] == last
    assert restored.replaced is None


def bridge_database(path: Path) -> Path:
    db = store.connect(path)
    store.migrate(db)
    db.close()
    return path


def damaged(path: Path) -> Path:
    """A bridge database with garbage over the pages of its events table."""
    db = store.connect(path)
    store.migrate(db)
    add_events(db, "d", 200)
    db.execute("PRAGMA journal_mode = DELETE")
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as handle:
        handle.seek((root - 1) * page_size + 8)
        handle.write(b"\xa5" * 600)
    return path


def newer(path: Path) -> Path:
    db = store.connect(bridge_database(path))
    db["_sqlite_migrations"].insert(
        {"migration_set": "instantly-ghl-bridge", "name": "m999_from_the_future", "applied_at": ""}
    )
    db.close()
    return path


def not_the_bridges(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    return path


BAD_FILES = {
    "text": (lambda p: (p.write_text("not a database\n" * 100), p)[1], "is not a SQLite database"),
    "empty": (lambda p: (p.write_bytes(b""), p)[1], "is empty: not a backup of the bridge"),
    "missing": (lambda p: p, "does not exist"),
    "damaged": (damaged, "is damaged"),
    "another program's": (not_the_bridges, "is a SQLite database, but not the bridge's"),
    "newer": (
        newer,
        "was made by a newer version of the bridge (migrations this version does not know:"
        " m999_from_the_future): upgrade the bridge first",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_restore_refuses_a_bad_file_and_leaves_the_database_alone(
    config, db, tmp_path, runner, kind
):
    keys = add_events(db, "k", 2)
    db.close()
    make, message = BAD_FILES[kind]
    bad = make(tmp_path / "bad.sqlite3")
    before = listing(Path(config.database).parent)

    result = runner.invoke(["restore", str(bad)])

    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad} {message}"), result.output
    assert len(result.output.splitlines()) == 1
    assert keys_in(config.database) == set(keys)
    assert listing(Path(config.database).parent) == before


def test_a_damaged_database_cannot_be_backed_up(env, tmp_path, runner):
    damaged(Path(env["BRIDGE_DATABASE"]))
    target = tmp_path / "b.sqlite3"

    result = runner.invoke(["backup", str(target)])

    assert result.exit_code == 1
    assert "is damaged" in result.output and len(result.output.splitlines()) == 1
    assert not target.exists()
    assert not list(tmp_path.glob(".b.sqlite3.*"))  # nor its temporary file


# --- who uses the database --------------------------------------------------------------


IN_USE = "the web app or a worker is using {}: stop them (Ctrl-C make run, or stop the service)"


def test_restore_refuses_while_a_process_holds_the_database(config, db, tmp_path, runner):
    add_events(db, "h", 1)
    target = tmp_path / "b.sqlite3"
    backups.backup(config.database, target)
    hold = holders.hold_shared(config.database)

    refused = runner.invoke(["restore", str(target)])
    assert refused.exit_code == 1
    assert refused.output == f"Error: {IN_USE.format(config.database)} and try again\n"
    assert not [p for p in Path(config.database).parent.iterdir() if ".replaced-" in p.name]

    hold.close()
    assert runner.invoke(["restore", str(target)]).exit_code == 0


def test_restore_refuses_while_a_worker_holds_its_lease_owner_lock(config, db, tmp_path):
    target = tmp_path / "b.sqlite3"
    backups.backup(config.database, target)
    owner = leases.LeaseOwner(config.database)

    with pytest.raises(holders.InUse, match="a worker is using"):
        backups.restore(target, config.database)

    owner.close()
    assert backups.restore(target, config.database).replaced is not None


def test_the_web_app_holds_the_database_until_it_is_gone(config, db, tmp_path):
    target = tmp_path / "b.sqlite3"
    backups.backup(config.database, target)
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True})

    with pytest.raises(holders.InUse):
        backups.restore(target, config.database)

    app.extensions["bridge.in_use"].close()
    backups.restore(target, config.database)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_apps_made_by_the_hundred_do_not_keep_a_descriptor_each(config, db):
    create_app({"BRIDGE_CONFIG": config, "TESTING": True})
    gc.collect()
    before = open_fds()
    for _ in range(30):
        create_app({"BRIDGE_CONFIG": config, "TESTING": True})
    gc.collect()
    assert open_fds() <= before
    store.forget_cached()


def test_a_restore_holds_the_database_so_nothing_opens_it_midway(config, db, tmp_path):
    target = tmp_path / "b.sqlite3"
    backups.backup(config.database, target)
    with holders.exclusive(config.database):
        with pytest.raises(holders.InUse):
            backups.restore(target, config.database)
        with pytest.raises(BlockingIOError):
            # What hold_shared tries first; it then waits for the restore to end.
            holders.Hold(config.database, fcntl.LOCK_SH | fcntl.LOCK_NB)
    holders.hold_shared(config.database).close()


def test_a_database_copied_with_its_wal_while_it_ran_restores_whole(config, db, tmp_path):
    # The open connection keeps the latest commits in the -wal, as in a running bridge.
    keys = add_events(db, "w", 3)
    copy = tmp_path / "copied" / "bridge.sqlite3"
    copy.parent.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{config.database}{suffix}", f"{copy}{suffix}")
    assert os.path.getsize(f"{copy}-wal") > 0
    elsewhere = tmp_path / "elsewhere.sqlite3"

    restored = backups.restore(copy, elsewhere)

    assert keys_in(elsewhere) == set(keys)
    assert restored.summary.events["pending"] == 2
    # The operator's copy is only read: SQLite never opened it to leave files beside it.
    assert listing(copy.parent) == {"bridge.sqlite3", "bridge.sqlite3-wal"}


def test_a_restore_whose_migration_fails_says_where_the_old_database_is(config, db, tmp_path):
    add_events(db, "m", 1)
    db.close()
    old = store.connect(tmp_path / "old.sqlite3")
    store.load_migrations().apply(old, stop_before="m038_event_lease_owner")
    old.execute("ALTER TABLE events ADD COLUMN lease_owner TEXT")  # what m038 will add again
    old.close()

    with pytest.raises(backups.BackupError) as refused:
        backups.restore(tmp_path / "old.sqlite3", config.database)

    (aside,) = Path(config.database).parent.glob("*.replaced-*Z")
    assert str(refused.value) == (
        f"restored {tmp_path / 'old.sqlite3'}, but migrating it failed: duplicate column name:"
        f" lease_owner; the database that was there is kept as {aside}"
    )
    assert keys_in(aside) == {"reply:m-0"}


def test_a_command_holds_the_database_while_it_runs_and_lets_go_after(config, db, monkeypatch):
    seen: list[str] = []

    @click.command()
    def probe() -> None:
        open_database(config)
        try:
            with holders.exclusive(config.database):
                seen.append("free")
        except holders.InUse:
            seen.append("held")

    assert probe.main([], standalone_mode=False) is None
    with holders.exclusive(config.database):  # the command ended: nothing holds it now
        seen.append("free after")
    assert seen == ["held", "free after"]
