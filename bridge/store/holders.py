"""Who is using a database file, so that a restore never swaps it under a running bridge.

Every process that serves a database (each web worker, from create_app) holds a shared
flock on `<database>.in-use` for as long as it lives; the kernel drops it however the
process ends. A restore takes the same file exclusively, without waiting, and keeps it for
the whole restore, so nothing that calls `hold_shared` opens the database midway. Sync
loops (a worker, a drain, a reconcile's sync) are known by the lease-owner lock each
already holds (bridge.store.leases), so `exclusive` checks those too.

API (small on purpose; `instantly-ghl-bridge run` and restore use it):
- `hold_shared(database)`: hold for as long as this process uses the database.
- `exclusive(database)`: a context manager for replacing the file; raises InUse.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

from bridge.store import leases

IN_USE_SUFFIX = ".in-use"

log = logging.getLogger("bridge.store")


class InUse(Exception):
    """A web process or a worker is using the database; the message says what to do."""


class Hold:
    """One open descriptor on the in-use file, locked shared or exclusive.

    Each Hold opens its own descriptor: a flock belongs to the open file description, so a
    gunicorn worker forked after its parent opened one must not rely on the parent's. The
    descriptor closes (and the lock goes) on `close()`, or when the Hold is collected, so
    test apps made by the hundred do not pile up descriptors.
    """

    def __init__(self, database: str | Path, operation: int):
        self.path = in_use_path(database)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, operation)
        except BaseException:
            os.close(fd)
            raise
        self._close = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        """Let go of the lock now (safe to call twice)."""
        self._close()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def in_use_path(database: str | Path) -> Path:
    return Path(f"{database}{IN_USE_SUFFIX}")


def hold_shared(database: str | Path) -> Hold | None:
    """Mark the database used by this process until the Hold is closed or collected.

    Waits while a restore holds it (saying so once), then serves the restored file. None
    for an in-memory database, which nothing else can use.
    """
    if str(database) == ":memory:":
        return None
    try:
        return Hold(database, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("database %s is being restored; waiting for the restore to finish", database)
    return Hold(database, fcntl.LOCK_SH)


@contextlib.contextmanager
def exclusive(database: str | Path) -> Iterator[None]:
    """Hold the database for replacing it: no web process, worker or other restore uses it,
    and none that calls `hold_shared` starts until the block ends. Raises InUse at once,
    never waits."""
    try:
        hold = Hold(database, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InUse(in_use_message(database)) from None
    with hold:
        if live_owners(database):
            raise InUse(in_use_message(database))
        yield


def live_owners(database: str | Path) -> list[str]:
    """Ids of the sync loops (workers, drains, reconcile syncs) whose process lives."""
    folder = leases.owners_dir(database)
    if not folder.is_dir():
        return []
    return [entry.name for entry in folder.iterdir() if leases.owner_alive(database, entry.name)]


def in_use_message(database: str | Path) -> str:
    return (
        f"the web app or a worker is using {database}: stop them (Ctrl-C make run, or stop"
        " the service) and try again"
    )
