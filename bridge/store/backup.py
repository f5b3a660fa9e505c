"""Backups of the database, and restoring one in its place.

The database is the only copy of the idempotency map, the contact map and the queue, so a
backup is made while the bridge runs (a consistent snapshot, never blocking webhooks) and
is checked before it is trusted. A file is only ever named FILE (or the database) once it
is whole and on disk: each is written under a temporary name beside it, synced, checked,
then renamed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from bridge.store import db as store
from bridge.store import holders, replica
from bridge.store.inbox import STATUSES

MIGRATIONS_TABLE = "_sqlite_migrations"
# SQLite's own files beside a database, which belong with it wherever it goes.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class BackupError(Exception):
    """A backup or restore that cannot be done; the message names the file and the fix."""


@dataclass(frozen=True)
class Summary:
    """What a bridge database holds, as the backup and restore commands print it."""

    path: Path
    size_bytes: int
    events: dict[str, int]
    contacts: int
    newest_event: str | None  # when the last event stored was received
    migrations: list[str]  # applied, in order


@dataclass(frozen=True)
class Restored:
    summary: Summary
    replaced: Path | None  # where the database that was there now is; None if there was none
    applied: list[str]  # migrations run on the restored file (it came from an older bridge)


def backup(db_path: str | Path, target: str | Path, force: bool = False) -> Summary:
    """Copy the database to `target` while the bridge runs, check the copy, and describe it.

    Refuses to replace an existing `target` unless `force`. The copy is 0600, like the
    database, and in rollback-journal mode so that it is one self-contained file.
    """
    database, target = Path(db_path), Path(target)
    if not database.is_file():
        raise BackupError(f"database {database} does not exist: nothing to back up")
    _check_target(target, database, force)
    temp = _temp_beside(target)
    try:
        source = store.connect(database)
        try:
            _copy(source.conn, temp, f"database {database}")
        finally:
            source.close()
        _sync(temp)
        summary = verify(temp, shown_as=f"the copy of {database}")
        _place(temp, target, force)
    finally:
        _remove(temp)
    _sync(target.parent)
    return replace(summary, path=target)


def restore(backup_file: str | Path, db_path: str | Path) -> Restored:
    """Put a checked backup in the database's place; the database that was there is kept
    beside it as `<database>.replaced-<UTC time>`.

    Refuses (holders.InUse) while a web process or a worker uses the database, and keeps
    every process that calls holders.hold_shared out until it is done. A missing database
    is fine: restoring onto a new machine. A backup from an older bridge is migrated.
    """
    source, database = Path(backup_file), Path(db_path)
    if source.resolve() == database.resolve():
        raise BackupError(f"{source} is the database itself: name a backup file")
    _check_file(source, str(source))
    with holders.exclusive(database):
        temp = _temp_beside(database)
        try:
            # Checked as copied, so what is installed is what was checked, and SQLite never
            # opens (or leaves a -wal beside) the operator's file.
            _copy_private(source, temp)
            _copy_wal(source, temp)
            _settle(temp, str(source))
            verify(temp, shown_as=str(source))
            _sync(temp)
            replaced = _move_aside(database)
            os.replace(temp, database)
            # Litestream's position in the old file means nothing for this one.
            shutil.rmtree(replica.meta_dir(database), ignore_errors=True)
        finally:
            _remove(temp)
        _sync(database.parent)
        db = store.connect(database)
        try:
            applied = store.migrate(db)
            summary = summarize(db.conn, database)
        except sqlite3.Error as exc:
            # The swap is done: the operator needs to know where the old database is.
            kept = f"; the database that was there is kept as {replaced}" if replaced else ""
            raise BackupError(f"restored {source}, but migrating it failed: {exc}{kept}") from None
        finally:
            db.close()
    return Restored(summary, replaced, applied)


def verify(path: str | Path, shown_as: str | None = None) -> Summary:
    """Check that `path` is a whole bridge database this bridge can use, and describe it.

    Raises BackupError naming `shown_as` (default: the path) when it is not a database, is
    damaged, is not the bridge's, or was made by a newer bridge.
    """
    path = Path(path)
    name = shown_as or str(path)
    _check_file(path, name)
    try:
        conn = _open_read_only(path)
    except sqlite3.Error as exc:
        raise BackupError(f"{name} cannot be opened: {exc}") from None
    try:
        _check_integrity(conn, name)
        applied = _applied_migrations(conn, name)
        unknown = [step for step in applied if step not in _known_migrations()]
        if unknown:
            raise BackupError(
                f"{name} was made by a newer version of the bridge (migrations this version"
                f" does not know: {', '.join(unknown)}): upgrade the bridge first"
            )
        return summarize(conn, path)
    except sqlite3.DatabaseError as exc:
        raise BackupError(_unreadable(name, exc)) from None
    finally:
        conn.close()


def summarize(conn: sqlite3.Connection, path: str | Path) -> Summary:
    """Size, events by status, contacts, the newest event and the migrations of a bridge
    database. Reads indexes and the last row only, so it is quick at any size."""
    events = dict.fromkeys(STATUSES, 0)
    for status, count in conn.execute("SELECT status, COUNT(*) FROM events GROUP BY status"):
        events[status] = count
    contacts = conn.execute("SELECT COUNT(*) FROM contacts").fetchone()[0]
    # The largest id is the last event stored; MAX(received_at) would read every row.
    newest = conn.execute("SELECT received_at FROM events ORDER BY id DESC LIMIT 1").fetchone()
    return Summary(
        path=Path(path),
        size_bytes=os.path.getsize(path),
        events=events,
        contacts=contacts,
        newest_event=newest[0] if newest else None,
        migrations=_applied_migrations(conn, str(path)),
    )


# --- checks -----------------------------------------------------------------------------


def _check_file(path: Path, name: str) -> None:
    if not path.is_file():
        raise BackupError(f"{name} does not exist" if not path.exists() else f"{name} is a folder")
    if path.stat().st_size == 0:
        raise BackupError(f"{name} is empty: not a backup of the bridge")


def _check_integrity(conn: sqlite3.Connection, name: str) -> None:
    first = conn.execute("PRAGMA integrity_check(1)").fetchone()[0]
    if first != "ok":
        # One line, as every error the command gives: the first problem, shortened.
        problem = " ".join(first.split())
        problem = problem if len(problem) <= 160 else problem[:157] + "..."
        raise BackupError(f"{name} is damaged (integrity check: {problem})")


def _applied_migrations(conn: sqlite3.Connection, name: str) -> list[str]:
    migrations = store.load_migrations()
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [MIGRATIONS_TABLE]
    ).fetchone()
    applied = []
    if found:
        applied = [
            row[0]
            for row in conn.execute(
                f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = ? ORDER BY rowid",
                [migrations.name],
            )
        ]
    if not applied:
        raise BackupError(f"{name} is a SQLite database, but not the bridge's")
    return applied


def _known_migrations() -> set[str]:
    # Every step is pending on an empty database: the public way to list them all.
    empty = sqlite_utils.Database(memory=True)
    try:
        return {step.name for step in store.load_migrations().pending(empty)}
    finally:
        empty.close()


def _unreadable(name: str, exc: sqlite3.DatabaseError) -> str:
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code.startswith("SQLITE_NOTADB"):
        return f"{name} is not a SQLite database"
    if code.startswith("SQLITE_CORRUPT"):
        return f"{name} is damaged ({exc})"
    return f"{name} cannot be read: {exc}"


def _check_target(target: Path, database: Path, force: bool) -> None:
    if target.resolve() == database.resolve():
        raise BackupError(f"{target} is the database itself: name another file")
    if target.is_dir():
        raise BackupError(f"{target} is a folder: name a file in it")
    if target.exists() and not force:
        raise BackupError(f"{target} exists: name another file, or pass --force to replace it")
    folder = target.parent
    if not folder.is_dir():
        raise BackupError(f"cannot write {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BackupError(f"cannot write {target}: this user may not write in folder {folder}")


# --- files ------------------------------------------------------------------------------


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes to `path` (a backup is the operator's file)."""
    uri = path.resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=store.BUSY_TIMEOUT_SECONDS)


def _copy(source: sqlite3.Connection, temp: Path, name: str) -> None:
    """Copy `source` into the empty file `temp` with SQLite's online backup API.

    In one step: the source is in WAL mode, where a reader never blocks writers, and a
    snapshot taken in one read transaction is consistent. A copy made in several steps
    starts again whenever another process writes between them, which under a steady
    stream of webhooks could be for ever.
    """
    try:
        target = sqlite3.connect(str(temp), isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot write {temp.parent}: {exc}") from None
    try:
        source.backup(target)
        # One self-contained file: no -wal to lose when it is copied elsewhere.
        target.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorname", "") or ""
        if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            raise BackupError(_unreadable(name, exc)) from None
        raise BackupError(f"copying {name} to {temp.parent} failed: {exc}") from None
    finally:
        target.close()


def _copy_private(source: Path, target: Path) -> None:
    """Copy a file's bytes into `target`, made 0600 whatever the umask."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, store.PRIVATE_FILE)
    with open(source, "rb") as reader, os.fdopen(fd, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)


def _copy_wal(source: Path, temp: Path) -> None:
    """A WAL-mode file (a database copied while it ran) has commits in its -wal; they come
    along, for SQLite to merge in when the copy is opened."""
    wal = Path(f"{source}-wal")
    if wal.is_file() and wal.stat().st_size:
        _copy_private(wal, Path(f"{temp}-wal"))


def _settle(temp: Path, name: str) -> None:
    """Merge any -wal into the copy and make it one file (rollback-journal mode)."""
    try:
        conn = sqlite3.connect(str(temp), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(_unreadable(name, exc)) from None


def _temp_beside(target: Path) -> Path:
    """An empty 0600 file in target's folder (so the final rename cannot cross disks)."""
    target.parent.mkdir(mode=store.PRIVATE_FOLDER, parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise BackupError(
                f"cannot write {target}: this user may not write in folder {target.parent}"
            ) from None
        raise BackupError(f"cannot write {target}: {exc.strerror}") from None
    os.close(fd)  # mkstemp made it 0600; SQLite gives its -journal the same mode
    return Path(name)


def _place(temp: Path, target: Path, force: bool) -> None:
    if force:
        os.replace(temp, target)
        return
    try:
        # A link fails if the name was taken meanwhile, where a rename would replace it.
        os.link(temp, target)
    except FileExistsError:
        raise BackupError(
            f"{target} exists: name another file, or pass --force to replace it"
        ) from None
    except OSError:
        # A file system without hard links: checked a moment ago, so rename.
        if target.exists():
            raise BackupError(f"{target} exists: pass --force to replace it") from None
        os.rename(temp, target)


def _move_aside(database: Path) -> Path | None:
    """Keep the current database, with its -wal, as `<database>.replaced-<UTC time>`.

    Its WAL is first merged in, so the file kept is whole on its own; and no -wal of the old
    database may stay beside the new one, where SQLite would replay it into it.
    """
    if not database.exists():
        return None
    with contextlib.suppress(sqlite3.Error):  # a damaged database is kept as it is
        conn = sqlite3.connect(str(database), isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    aside = _aside_name(database)
    # A link, so that the database's name is never missing (a start in that instant would
    # make an empty database); the new file replaces the name in one rename.
    try:
        os.link(database, aside)
    except OSError:
        os.rename(database, aside)
    for suffix in SQLITE_SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{database}{suffix}", f"{aside}{suffix}")
    return aside


def _aside_name(database: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = Path(f"{database}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = Path(f"{database}.replaced-{stamp}-{n}")
    return aside


def _remove(temp: Path) -> None:
    for name in (str(temp), *(f"{temp}{suffix}" for suffix in SQLITE_SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _sync(path: Path) -> None:
    """Make a file's data durable, or, for a folder, the renames in it (its entries are
    data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
