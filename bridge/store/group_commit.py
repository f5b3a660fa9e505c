"""Group commit for the webhook: concurrent deliveries share one transaction and one fsync.

Each delivery must be on disk before it is answered, and SQLite takes one writer at a time.
With one commit per request, every request would wait its turn for a whole commit of its
own, and under load the line, not the work, is the cost. Here a request adds its
event to a shared list. If no write is under way it writes the list (its own event and any
that arrived meanwhile) in one statement; otherwise it sleeps until the writer that took
its event has committed, or hands it the next turn. Every request still answers only after
the commit that holds its row is on disk, and each sleeper is woken exactly once.

A delivery announces itself (`arrival()`) once its body is read, before it is parsed. A
writer that finds others announced but not yet in the list waits for them, at most
COMMIT_DELAY_SECONDS, so they share its commit instead of each paying for the next one
(PostgreSQL's commit_delay, for the same reason). A writer alone never waits.

The fsync happens after the writers' lock is let go. In WAL mode a commit is an append to
the -wal file, and synchronous=FULL would fsync that file inside the commit, holding the
lock (and so every other process's writers) through the disk's wait. This connection
commits with synchronous=NORMAL instead, which writes the same frames without the fsync,
and the writer then fsyncs the -wal file itself, outside the lock, before it wakes anyone.
The file cannot be swapped meanwhile: SQLite deletes it only when the last connection
closes, and this one stays open. Frames written but not yet synced are what NORMAL risks on
power loss; no caller is answered until its frames are synced, so none is acknowledged
without being on disk, as with FULL. A failed fsync fails the whole batch (503: Instantly
delivers again, and the copy already stored answers "duplicate"). The worker may read a
row in the moment before its fsync; if the machine then lost power the row would be gone
but unacknowledged, and Instantly's redelivery would upsert the same contact again, which
GHL's upsert by email and the tag adds make harmless.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import sqlite_utils

from bridge.events.event import Event
from bridge.settings import SettingsCache
from bridge.store import db as store
from bridge.store import inbox

Accept = Callable[[dict], bool]

# How long a writer waits for deliveries already announced: about ten times what parsing
# one takes, so they catch its commit instead of paying for the next one.
COMMIT_DELAY_SECONDS = 0.001


class _Slot:
    __slots__ = ("event", "accept", "result", "error", "lead", "wake")

    def __init__(self, event: Event, accept: Accept | None):
        self.event = event
        self.accept = accept
        self.result: inbox.Enqueued | None = None  # None: not accepted, nothing stored
        self.error: BaseException | None = None
        self.lead = False  # woken to write the next batch rather than because it is stored
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """Batches one process's concurrent `enqueue` calls into shared transactions."""

    def __init__(self, path: str):
        self.path = path
        # One connection for all of this process's writes: only one thread writes at a
        # time, and its page cache stays warm (each thread's own connection re-read the
        # b-tree pages every time another connection had written).
        self._db: sqlite_utils.Database | None = None
        self._wal_fd: int | None = None  # the -wal file, synced after each commit
        self._settings = SettingsCache()
        self._guard = threading.Lock()
        self._all_arrived = threading.Condition(self._guard)
        self._announced = 0  # arrivals not yet enqueued nor withdrawn
        self._pending: list[_Slot] = []
        self._writing = False
        self.batches = 0  # transactions committed (for tests and curiosity)

    def arrival(self) -> Arrival:
        """Announce a delivery that will soon be enqueued (or withdrawn): a writer may wait
        a moment for it. Use as a context manager; leaving it withdraws what was not
        enqueued."""
        with self._guard:
            self._announced += 1
        return Arrival(self)

    def enqueue(
        self, event: Event, accept: Accept | None = None, arrival: Arrival | None = None
    ) -> inbox.Enqueued | None:
        """Store the event (unless its key is known) and return once it is on disk.

        `accept(settings)` is asked under the writers' lock, with the settings in force
        just before the batch's statement; when it says no, nothing is stored and the
        answer is None. Raises what the write raised, for every event of the batch, each
        caller answering 503: sqlite3.Error when nothing was stored, OSError when the
        lock file could not be opened or the fsync failed (then the rows may be stored
        but are not acknowledged, and a redelivery answers "duplicate").
        """
        slot = _Slot(event, accept)
        with self._guard:
            if arrival is not None and arrival.open:
                arrival.open = False
                self._arrived()
            self._pending.append(slot)
            lead = not self._writing
            self._writing = True
        if not lead:
            slot.wake.acquire()  # until stored by another, or asked to write
            lead = slot.lead
        if lead:
            self._write_pending(slot)
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _withdraw(self, arrival: Arrival) -> None:
        with self._guard:
            if arrival.open:
                arrival.open = False
                self._arrived()

    def _arrived(self) -> None:
        """One announced delivery is in the list, or gone (called holding _guard)."""
        self._announced -= 1
        if self._announced == 0:
            self._all_arrived.notify()

    def _write_pending(self, own: _Slot) -> None:
        with self._guard:
            if self._announced:
                self._all_arrived.wait(COMMIT_DELAY_SECONDS)
            batch, self._pending = self._pending, []
        try:
            if self._db is None:
                self._db = self._connect()
            db = self._db
            with store.writer(self.path):
                # Once per batch, just before its statement (settings.save opens a
                # transaction of its own when none is stored yet, so not inside ours).
                settings = self._settings.get(db) if any(i.accept for i in batch) else {}
                taken = [i for i in batch if i.accept is None or i.accept(settings)]
                stored = inbox.enqueue_many(db, [item.event for item in taken])
            if self._wal_fd is not None:
                store.sync_fd(self._wal_fd)
        except BaseException as exc:  # handed to every caller in the batch, raised there
            for item in batch:
                item.error = exc
            self._forget_connection()
        else:
            self.batches += 1
            for item, result in zip(taken, stored, strict=True):
                item.result = result
        with self._guard:
            successor = self._pending[0] if self._pending else None
            if successor is not None:
                successor.lead = True
            else:
                self._writing = False
        for item in batch:
            if item is not own:
                item.wake.release()
        if successor is not None:
            successor.wake.release()

    def _connect(self) -> sqlite_utils.Database:
        db = store.connect(self.path)
        # NORMAL only where the module docstring holds: in WAL mode, where a commit is a
        # write to the -wal file that _write_pending syncs. Any other mode keeps FULL.
        if db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            db.conn.execute("PRAGMA synchronous = NORMAL")
            db.conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()  # a read opens the -wal
            self._wal_fd = os.open(self.path + "-wal", os.O_RDONLY)
        return db

    def _forget_connection(self) -> None:
        """After an error the connection may be broken (a moved file, a full disk)."""
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None


class Arrival:
    """A delivery on its way to `GroupCommit.enqueue` (see `GroupCommit.arrival`)."""

    __slots__ = ("group", "open")

    def __init__(self, group: GroupCommit):
        self.group = group
        self.open = True

    def enqueue(self, event: Event, accept: Accept | None = None) -> inbox.Enqueued | None:
        return self.group.enqueue(event, accept, arrival=self)

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.group._withdraw(self)


_groups: dict[str, GroupCommit] = {}
_groups_guard = threading.Lock()


def for_database(path: str) -> GroupCommit:
    """The process's GroupCommit for this database file."""
    with _groups_guard:
        group = _groups.get(path)
        if group is None:
            group = _groups[path] = GroupCommit(path)
        return group
