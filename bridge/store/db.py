"""The SQLite store: one file shared by web workers, the worker and the CLI."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

# The -wal file is cut back to this size after a checkpoint.
JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# Writers wait this long for the lock instead of failing with "database is locked".
BUSY_TIMEOUT_SECONDS = 30.0
# The database holds lead addresses and replies: only this user may read it. SQLite gives
# the -wal and -shm files it makes the database file's mode, so the three stay private.
PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700
# Made beside the database: SQLite's, and the writers' and migrations' lock files (which
# anyone who can open could flock, stalling every writer).
SIDE_FILES = ("-wal", "-shm", "-journal", ".write-lock", ".migrate-lock")

log = logging.getLogger("bridge.store")

_local = threading.local()
_writers: dict[str, WriterLock] = {}
_writers_guard = threading.Lock()


def connect(path: str | Path) -> sqlite_utils.Database:
    """Open the database in WAL mode with a busy timeout, in autocommit mode.

    Autocommit (isolation_level=None) means no statement silently holds a write
    lock; multi-statement writes use `immediate()` explicitly.
    """
    if str(path) != ":memory:":
        make_private(Path(path))
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # A burst (a backlog, a retention pass) grows the -wal file; without a limit it keeps
    # that size on disk for good, even after the pages are checkpointed back.
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    # FULL: a commit is on disk before we answer 2xx to a webhook.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return sqlite_utils.Database(conn, execute_plugins=False)


def make_private(path: Path) -> None:
    """Create the database file 0600 (in a 0700 folder when the folder is new) before
    SQLite opens it, whatever the umask; a file left readable by others (made by an
    older bridge) is made private, with its -wal and -shm."""
    path.parent.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        return
    except FileExistsError:
        pass
    for name in (str(path), *(str(path) + suffix for suffix in SIDE_FILES)):
        _tighten(name)


def _tighten(name: str) -> None:
    try:
        info = os.stat(name)
    except FileNotFoundError:
        return
    # Only our own files: another user's database is theirs to share.
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        os.chmod(name, stat.S_IMODE(info.st_mode) & ~0o077)
        log.warning("%s was readable by other users; it is now private to this one", name)


def cached(path: str | Path) -> sqlite_utils.Database:
    """One connection per thread and path, reused across requests."""
    dbs = getattr(_local, "dbs", None)
    if dbs is None:
        dbs = _local.dbs = {}
    key = str(path)
    if key not in dbs:
        dbs[key] = connect(path)
    return dbs[key]


def forget_cached() -> None:
    """Close this thread's cached connections (tests, forks)."""
    for db in getattr(_local, "dbs", {}).values():
        db.close()
    _local.dbs = {}


class WriterLock:
    """Lines up this machine's writers to one database so each starts the moment the
    last one commits, instead of in SQLite's sleeps.

    SQLite admits one writer at a time; the others get SQLITE_BUSY and its busy handler
    sleeps 1, 2, 5, 10 ... up to 100 ms between tries, even when the lock frees after a
    fraction of a millisecond, and with gunicorn's threads all writing webhooks at once
    the sleeps would be most of each request. Here a writer waits on a
    mutex (threads of one process), then on flock(2) on a file beside the database (other
    processes); both wake the next writer as soon as the lock is let go.
    """

    def __init__(self, path: str):
        self.path = path
        self._mutex = threading.Lock()
        self._fd = -1
        self._pid = 0

    def __enter__(self) -> WriterLock:
        self._mutex.acquire()
        try:
            fd = self._file()
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._mutex.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()

    def _file(self) -> int:
        """The lock file's descriptor, opened once per process (a forked child must not
        share its parent's open file, or the two would hold the flock together)."""
        if self.path == ":memory:":
            return -1
        if self._pid != os.getpid():
            self._fd = os.open(self.path + ".write-lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd


def writer(path: str | Path) -> WriterLock:
    """The process-wide writer lock for this database file (see WriterLock)."""
    key = str(path)
    with _writers_guard:
        lock = _writers.get(key)
        if lock is None:
            lock = _writers[key] = WriterLock(key)
        return lock


@contextlib.contextmanager
def immediate(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A transaction that takes the write lock up front.

    A deferred transaction that reads and then writes can fail with SQLITE_BUSY
    without waiting when another process wrote in between; BEGIN IMMEDIATE waits
    for the lock (busy timeout) before reading, so read-modify-write is safe.
    """
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.conn.execute("COMMIT")
    except BaseException:
        # A COMMIT that fails (a full disk, a deferred constraint) leaves the transaction
        # open, holding the write lock, until it is rolled back.
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise


def sync_fd(fd: int) -> None:
    """Flush an open file's written data to disk (what SQLite's FULL does at each commit)."""
    _datasync(fd)


# macOS has no fdatasync; fsync does the same and a little more.
_datasync = getattr(os, "fdatasync", os.fsync)


def load_migrations() -> sqlite_utils.Migrations:
    """The migration steps: the repository's migrations/ folder, shipped as the package
    bridge.store.migrations."""
    from bridge.store.migrations import migrations

    return migrations


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations; returns the names applied.

    A file lock beside the database serialises processes that start together
    (web workers and the worker), so two never apply the same step.
    """
    migrations = load_migrations()
    lock_path = _lock_path(db)
    with _file_lock(lock_path):
        pending = [m.name for m in migrations.pending(db)]
        if pending:
            migrations.apply(db)
    return pending


def pending_migrations(db: sqlite_utils.Database) -> list[str]:
    """Names of migrations not yet applied."""
    return [m.name for m in load_migrations().pending(db)]


def _lock_path(db: sqlite_utils.Database) -> Path | None:
    row = db.execute("PRAGMA database_list").fetchone()
    filename = row[2] if row else ""
    return Path(filename + ".migrate-lock") if filename else None


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
