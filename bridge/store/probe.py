"""Can the database be written right now? Asked with a real commit, since a full disk or
a read-only file still answers every read."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import sqlite_utils

from bridge.clock import now_iso
from bridge.store import db as store
from bridge.store import state

PROBE_STATE = "write_probe"
# An answer is reused this long within one process: /healthz needs no login, and a client
# looping on it must not turn into a stream of commits webhooks wait behind.
REUSE_SECONDS = 1.0

_answers: dict[str, tuple[float, str | None]] = {}
_guard = threading.Lock()


def write_failure(
    db: sqlite_utils.Database, path: str, clock: Callable[[], float] = time.monotonic
) -> str | None:
    """SQLite's reason a commit to the database at `path` fails now; None when it succeeds."""
    # One probe at a time per process; callers meanwhile wait and share its answer.
    with _guard:
        last = _answers.get(path)
        at = clock()
        if last is not None and at - last[0] < REUSE_SECONDS:
            return last[1]
        failure = _commit(db, path)
        _answers[path] = (at, failure)
        return failure


def _commit(db: sqlite_utils.Database, path: str) -> str | None:
    try:
        with store.writer(path), store.immediate(db):
            state.put(db, PROBE_STATE, now_iso())
    except (sqlite3.Error, OSError) as exc:
        # OSError: the writers' lock file beside the database cannot be made.
        return str(exc)
    return None


def forget(path: str) -> None:
    """Drop the answer kept for `path`: a write just failed there, so the next health check
    must try again rather than repeat an "ok" from before the trouble."""
    with _guard:
        _answers.pop(path, None)
