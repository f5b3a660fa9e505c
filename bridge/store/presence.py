"""Whether a sync worker is running on a database, so that `instantly-ghl-bridge reconcile`
hands its events to it instead of writing to GHL beside it.

Each running worker (`instantly-ghl-bridge worker`, the one `run` starts; never a drain)
holds an exclusive flock on a file of its own in `<database>.workers/` for as long as its
loop runs. The kernel drops a flock when its process dies, however it dies, so a file whose
lock can be taken belongs to a worker that is gone. Asking takes a shared lock only: two
processes asking at once never mistake each other for a worker.

API:
- `announce(database)`: this process runs a worker until the Presence is closed.
- `running(database)`: the ids of the workers running now (empty: none).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
import weakref
from pathlib import Path

# A file still named `.<id>` was being announced; one older than this whose lock can be
# taken belongs to a process that died in between, and is removed.
STALE_SECONDS = 60.0


def workers_dir(database: str | Path) -> Path:
    return Path(f"{database}.workers")


class Presence:
    """One running worker's file, locked for as long as it runs."""

    def __init__(self, database: str | Path):
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        folder = workers_dir(database)
        folder.mkdir(mode=0o700, exist_ok=True)
        # Locked under a hidden name, then renamed: a file that is visible is always
        # locked, so nobody asking can take an unlocked newcomer for a dead worker.
        hidden = folder / f".{self.id}"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.path = folder / self.id
            os.rename(hidden, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                hidden.unlink()
            raise
        # Closed by close(), or when the Presence is collected; the process's end drops
        # the lock anyway.
        self._close = weakref.finalize(self, _let_go, self.path, fd)

    def close(self) -> None:
        """This worker stops: nobody hands it events any more (safe to call twice)."""
        self._close()

    def __enter__(self) -> Presence:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _let_go(path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
    os.close(fd)


def announce(database: str | Path) -> Presence | None:
    """Mark a worker running on `database` until the Presence is closed; None for an
    in-memory database, which no other process can reach."""
    if str(database) == ":memory:":
        return None
    return Presence(database)


def running(database: str | Path) -> list[str]:
    """The ids of the workers whose process holds its file's lock now; a dead one's file
    is removed on the way."""
    folder = workers_dir(database)
    if str(database) == ":memory:" or not folder.is_dir():
        return []
    alive = []
    for entry in sorted(folder.iterdir()):
        hidden = entry.name.startswith(".")
        if hidden and time.time() - _mtime(entry) < STALE_SECONDS:
            continue  # being announced right now
        if _locked(entry):
            if not hidden:
                alive.append(entry.name)
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
    return alive


def _locked(path: Path) -> bool:
    """Whether a process holds `path`'s exclusive lock (a file gone counts as free)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if it was taken
    return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
