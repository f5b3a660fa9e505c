"""Who holds a lease, and whether that process still lives.

Each sync loop (an `instantly-ghl-bridge worker`, a drain, a reconcile run's sync) takes an
id and holds an exclusive flock on a file of that name beside the database for as long as it lives;
its leases carry the id. The kernel drops a flock when its process dies, however it dies,
so a lease whose owner's lock can be taken belongs to a dead process and is released at
once, rather than five minutes later when it would expire. A live owner's lock cannot be
taken, so its leases are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from pathlib import Path

import sqlite_utils

from bridge.clock import now_iso
from bridge.store.db import immediate

log = logging.getLogger("bridge.leases")


def owners_dir(database: str | Path) -> Path:
    return Path(f"{database}.owners")


class LeaseOwner:
    """This process's id for its leases, proven alive by the flock it holds."""

    def __init__(self, database: str | Path):
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        folder = owners_dir(database)
        folder.mkdir(mode=0o700, exist_ok=True)
        self.path = folder / self.id
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        """Let go of the id (its leases must have been released first)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def owner_alive(database: str | Path, owner: str) -> bool:
    """Whether the process that took `owner` still holds its lock."""
    path = owners_dir(database) / owner
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # closed: its leases were released, or it is gone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock if it was taken
    with contextlib.suppress(OSError):
        path.unlink()  # a dead owner's file: nobody will take it again
    return False


def release(db: sqlite_utils.Database, owner: str) -> int:
    """Put every event `owner` holds back in the queue, due at once; returns how many.

    The attempt counted when it was claimed stays counted, as when a lease expires, so
    an event that kills its worker every time still ends dead-lettered."""
    cursor = db.execute(
        "UPDATE events SET status = 'pending', lease_until = NULL, lease_owner = NULL,"
        " updated_at = ? WHERE status = 'processing' AND lease_owner = ?",
        [now_iso(), owner],
    )
    return cursor.rowcount


def release_dead_owners(db: sqlite_utils.Database, database: str | Path, me: str) -> int:
    """Release the leases of every owner whose process has died; returns events freed."""
    owners = [
        row[0]
        for row in db.execute(
            "SELECT DISTINCT lease_owner FROM events"
            " WHERE status = 'processing' AND lease_owner IS NOT NULL AND lease_owner != ?",
            [me],
        )
    ]
    freed = 0
    for owner in owners:
        if owner_alive(database, owner):
            continue
        with immediate(db):
            count = release(db, owner)
        if count:
            log.warning("released %d event(s) leased by a worker that died (%s)", count, owner)
        freed += count
    return freed
