"""Retention: what the bridge forgets, and when, so the database stops growing.

Finished events (done, ignored, superseded) lose their payload after
`retention.payload_days` (a small stub keeps the short values, so the event page, the
dashboard and a replay still read it) and their row after `retention.event_days`; GHL calls
of finished events go after `call_log_days`, reconciliation runs after `run_days`. Dead,
pending and processing events are never touched, nor their calls.

Each batch is one short transaction under the writers' lock (bridge/store/db.py), sized to
hold it about LOCK_BUDGET_SECONDS (at most BATCH_ROWS rows), so a webhook waiting for the
lock waits for one batch at most; the lock is let go between batches. Deleting a row makes
m036's triggers subtract it from the running totals, which /metrics reports as counters
that must never go down, so each batch adds back what it removed. Freed pages are then
given back to the disk a step at a time (PRAGMA incremental_vacuum; m039 switched it on).

Two workers pruning at once is harmless: what a batch deletes is chosen, or checked again,
inside its own transaction, and a payload is only replaced where the row is as it was read.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from bridge.clock import iso
from bridge.store import db as store
from bridge.store import state

# The longest one batch should hold the writers' lock: a webhook arriving meanwhile waits
# about this long (and one statement) for it, well inside the answer's budget. Batch sizes
# follow it: halved after a batch held the lock longer, doubled after one held it less
# than half of it, so a slow or busy machine gets smaller batches.
LOCK_BUDGET_SECONDS = 0.005
# Rows per transaction, at first and at most.
FIRST_BATCH_ROWS = 50
BATCH_ROWS = 500
# Payload text read per batch of stubs: replies run up to 1 MiB each, and they are read
# into memory to keep their short values.
BATCH_PAYLOAD_CHARS = 4 * 1024 * 1024
# Pages given back per incremental_vacuum transaction, at first and at most (4 MiB at
# SQLite's default 4 KiB page).
FIRST_VACUUM_PAGES = 64
VACUUM_PAGES = 1024
# Free pages left in the file: SQLite reuses them for the next inserts, so giving back the
# last few only to grow the file again is wasted work.
KEEP_FREE_PAGES = 256
# A payload value longer than this (a reply's text or HTML, a long quoted thread) is removed
# from a pruned payload; shorter ones (names, ids, step, campaign, the reply's snippet) stay.
STUB_VALUE_CHARS = 200
# Error text of a finished event (why it was ignored or superseded) is cut to this.
STUB_ERROR_CHARS = 200
PRUNED_MARK = "_pruned"
# How far payload stubbing has gone: (updated_at, id) of the last finished event stubbed.
PAYLOAD_MARK_STATE = "retention_payload_mark"

FINISHED = "('done', 'ignored', 'superseded')"
_BY_FINISH = f"events INDEXED BY idx_events_finished_updated WHERE status IN {FINISHED}"


@dataclass
class Pruned:
    """What pruning removed: rows deleted, payloads stubbed, pages given back to the disk."""

    events: int = 0
    payloads: int = 0
    calls: int = 0
    runs: int = 0
    pages: int = 0
    batches: int = 0
    longest_lock_seconds: float = 0.0  # the longest one batch held the writers' lock

    def add(self, other: Pruned) -> None:
        for f in fields(self):
            if f.name == "longest_lock_seconds":
                self.longest_lock_seconds = max(
                    self.longest_lock_seconds, other.longest_lock_seconds
                )
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def any(self) -> bool:
        return bool(self.events or self.payloads or self.calls or self.runs or self.pages)

    def line(self, page_size: int = 4096) -> str:
        """One log line of counts (no addresses, no ids)."""
        return (
            f"retention: pruned {self.events} events, {self.payloads} payloads, "
            f"{self.calls} GHL calls, {self.runs} reconciliation runs; gave "
            f"{self.pages * page_size / 2**20:.1f} MiB back to the disk "
            f"in {self.batches} batches (longest held the write lock "
            f"{self.longest_lock_seconds * 1000:.0f} ms)"
        )


def prune(db: sqlite_utils.Database, retention: dict[str, int], now: float | None = None) -> Pruned:
    """Prune everything due at `now` (epoch seconds), batch after batch; returns the sum."""
    total = Pruned()
    for batch in batches(db, retention, now):
        total.add(batch)
    return total


def batches(
    db: sqlite_utils.Database, retention: dict[str, int], now: float | None = None
) -> Iterator[Pruned]:
    """One pruning pass, a batch at a time: each item is one committed transaction's work.

    The worker takes one batch between two claims, so a long first pass over a year of
    history never holds up syncing; nothing is held between items."""
    moment = time.time() if now is None else now
    runs_before = _cutoff(moment, retention["run_days"])
    calls_before = _cutoff(moment, retention["call_log_days"])
    events_before = _cutoff(moment, retention["event_days"])
    payloads_before = _cutoff(moment, retention["payload_days"])
    stamp = iso(datetime.fromtimestamp(moment, UTC))
    steps = (
        (BATCH_ROWS, FIRST_BATCH_ROWS, lambda n: delete_runs(db, runs_before, n)),
        (BATCH_ROWS, FIRST_BATCH_ROWS, CallLog(db, calls_before).delete_batch),
        (BATCH_ROWS, FIRST_BATCH_ROWS, lambda n: delete_events(db, events_before, n)),
        (BATCH_ROWS, FIRST_BATCH_ROWS, lambda n: stub_payloads(db, payloads_before, stamp, n)),
        (VACUUM_PAGES, FIRST_VACUUM_PAGES, lambda n: give_back_pages(db, n)),
    )
    for most, first, step in steps:
        size = min(first, most)
        while True:
            batch = step(size)
            if not batch.batches:
                break
            yield batch
            size = next_size(size, most, batch.longest_lock_seconds)


def next_size(size: int, most: int, held: float) -> int:
    """The next batch's size after one of `size` held the lock for `held` seconds."""
    if held > LOCK_BUDGET_SECONDS:
        return max(1, size // 2)
    if held < LOCK_BUDGET_SECONDS / 2:
        return min(most, size * 2)
    return size


def _cutoff(now: float, days: int) -> str:
    return iso(datetime.fromtimestamp(now, UTC) - timedelta(days=days))


@contextlib.contextmanager
def _locked(db: sqlite_utils.Database, pruned: Pruned, transaction: bool = True) -> Iterator[None]:
    """The writers' lock (and an immediate transaction), timed for the log and the bench."""
    # A batch lost to a power cut is done again by the next pass, so its commit need not
    # wait for the disk inside the lock: in WAL mode NORMAL appends without the fsync, and
    # the connection's next FULL commit syncs it too. Other modes keep their setting.
    relaxed = db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    if relaxed:
        synchronous = db.execute("PRAGMA synchronous").fetchone()[0]
        db.execute("PRAGMA synchronous = NORMAL")
    try:
        with store.writer(database_path(db)):
            started = time.perf_counter()
            try:
                if transaction:
                    with store.immediate(db):
                        yield
                else:
                    yield
            finally:
                held = time.perf_counter() - started
                pruned.batches += 1
                pruned.longest_lock_seconds = max(pruned.longest_lock_seconds, held)
    finally:
        if relaxed:
            db.execute(f"PRAGMA synchronous = {int(synchronous)}")


def database_path(db: sqlite_utils.Database) -> str:
    """The file the connection writes (":memory:" for none), which names its writers' lock."""
    row = db.execute("PRAGMA database_list").fetchone()
    return (row[2] if row else "") or ":memory:"


def delete_runs(db: sqlite_utils.Database, before: str, limit: int | None = None) -> Pruned:
    """Delete a batch of reconciliation runs started before `before`; the latest finished
    run stays (the dashboard shows it), and a running one is never touched."""
    pruned = Pruned()
    query = (
        "SELECT id, status, events_found, events_new FROM reconcile_runs"
        " WHERE started_at < ? AND status != 'running'"
        " AND id != (SELECT MAX(id) FROM reconcile_runs WHERE status != 'running')"
        " ORDER BY started_at LIMIT ?"
    )
    if db.execute(query, [before, 1]).fetchone() is None:
        return pruned  # nothing due: no lock taken
    with _locked(db, pruned):
        rows = db.execute(query, [before, limit or BATCH_ROWS]).fetchall()
        _delete_ids(db, "reconcile_runs", [row[0] for row in rows])
        # Put back what reconcile_totals_delete subtracted: the totals count runs made.
        for status, runs, found, new in _sum_runs(rows):
            db.execute(
                "UPDATE reconcile_totals SET runs = runs + ?, events_found = events_found + ?,"
                " events_new = events_new + ? WHERE status = ?",
                [runs, found, new, status],
            )
        pruned.runs = len(rows)
    return pruned


def _sum_runs(rows: list[tuple]) -> list[tuple[str, int, int, int]]:
    sums: dict[str, list[int]] = {}
    for _, status, found, new in rows:
        total = sums.setdefault(status, [0, 0, 0])
        total[0] += 1
        total[1] += found or 0
        total[2] += new or 0
    return [(status, *total) for status, total in sums.items()]


class CallLog:
    """The GHL call log's part of a pruning pass: calls made before `before`, except those
    of a dead or queued event (its page shows why it failed). GHL call totals count calls
    made, and m036 keeps no delete trigger on them: /metrics is unchanged.

    Calls are logged in time order, so the old ones are the ids below the first call made
    at or after the cutoff, found once a pass. Each batch reads on from the last call the
    batch before it read, so the calls kept are read once a pass, not once a batch."""

    def __init__(self, db: sqlite_utils.Database, before: str):
        self.db = db
        self.before = before
        self.after = 0
        first_new = db.execute(
            "SELECT id FROM ghl_calls WHERE at >= ? ORDER BY id LIMIT 1", [before]
        ).fetchone()
        last = db.execute("SELECT MAX(id) FROM ghl_calls").fetchone()[0] or 0
        self.bound = first_new[0] if first_new else last + 1

    def delete_batch(self, limit: int | None = None) -> Pruned:
        """Delete the prunable calls among the next `limit` old ones (read outside the
        lock); a batch of no row means the pass is through the log."""
        pruned = Pruned()
        ids = self._next_prunable(limit or BATCH_ROWS)
        if not ids:
            return pruned
        with _locked(self.db, pruned):
            # Checked again inside the transaction: a replay may have queued the event since.
            marks = ",".join("?" * len(ids))
            cursor = self.db.execute(
                f"DELETE FROM ghl_calls WHERE id IN ({marks}) AND NOT EXISTS (SELECT 1 FROM"
                f" events AS e WHERE e.id = ghl_calls.event_id AND e.status NOT IN {FINISHED})",
                ids,
            )
            pruned.calls = cursor.rowcount
        return pruned

    def _next_prunable(self, limit: int) -> list[int]:
        while True:
            rows = self.db.execute(
                "SELECT c.id, e.id IS NULL OR e.status IN " + FINISHED + " FROM ghl_calls AS c"
                " LEFT JOIN events AS e ON e.id = c.event_id"
                " WHERE c.id > ? AND c.id < ? AND c.at < ? ORDER BY c.id LIMIT ?",
                [self.after, self.bound, self.before, limit],
            ).fetchall()
            if not rows:
                return []
            self.after = rows[-1][0]
            ids = [call_id for call_id, prunable in rows if prunable]
            if ids:
                return ids


def delete_events(db: sqlite_utils.Database, before: str, limit: int | None = None) -> Pruned:
    """Delete a batch of events finished before `before`: past it, a redelivery of one is
    taken as new. Dead and queued events are never deleted."""
    pruned = Pruned()
    query = (
        f"SELECT id, event_type, status, IFNULL(location_id, '') FROM {_BY_FINISH}"
        " AND updated_at < ? ORDER BY updated_at LIMIT ?"
    )
    if db.execute(query, [before, 1]).fetchone() is None:
        return pruned
    with _locked(db, pruned):
        rows = db.execute(query, [before, limit or BATCH_ROWS]).fetchall()
        _delete_ids(db, "events", [row[0] for row in rows])
        # Put back what event_totals_delete subtracted: the totals count events finished.
        for (event_type, status, location), n in Counter(
            (row[1], row[2], row[3]) for row in rows
        ).items():
            db.execute(
                "UPDATE event_totals SET events = events + ?"
                " WHERE location_id = ? AND event_type = ? AND status = ?",
                [n, location, event_type, status],
            )
        pruned.events = len(rows)
    return pruned


def _delete_ids(db: sqlite_utils.Database, table: str, ids: list[int]) -> None:
    if ids:
        marks = ",".join("?" * len(ids))
        db.execute(f"DELETE FROM {table} WHERE id IN ({marks})", ids)


def stub_payloads(
    db: sqlite_utils.Database, before: str, stamp: str, limit: int | None = None
) -> Pruned:
    """Replace the payloads of a batch of events finished before `before` with stubs.

    The payloads are read and the stubs made outside the lock (a WAL reader holds up no
    writer); under it each stub is written only where the row is still as it was read, and
    the writing stops once the batch has held the lock LOCK_BUDGET_SECONDS. A mark in the
    state table remembers how far stubbing got, so stubs written are never read again."""
    pruned = Pruned()
    mark = state.get(db, PAYLOAD_MARK_STATE) or {"updated_at": "", "id": 0}
    rows = db.execute(
        f"SELECT id, updated_at, payload, last_error FROM {_BY_FINISH}"
        " AND updated_at < ? AND (updated_at, id) > (?, ?) ORDER BY updated_at, id LIMIT ?",
        [before, mark["updated_at"], mark["id"], limit or BATCH_ROWS],
    )
    # (updated_at, id, the stub and the cut error, or None for a payload already a stub)
    read: list[tuple[str, int, tuple[str, str | None] | None]] = []
    chars = 0
    for event_id, updated_at, payload, error in rows:
        stub = None if is_stub(payload) else (payload_stub(payload, stamp), _cut(error))
        read.append((updated_at, event_id, stub))
        chars += len(payload)
        if chars >= BATCH_PAYLOAD_CHARS:
            break
    rows.close()
    if not read:
        return pruned
    with _locked(db, pruned):
        deadline = time.perf_counter() + LOCK_BUDGET_SECONDS
        for updated_at, event_id, stub in read:
            if stub is not None:
                cursor = db.execute(
                    "UPDATE events SET payload = ?, last_error = ?"
                    f" WHERE id = ? AND updated_at = ? AND status IN {FINISHED}",
                    [*stub, event_id, updated_at],
                )
                pruned.payloads += cursor.rowcount
            last = {"updated_at": updated_at, "id": event_id}
            if time.perf_counter() > deadline:
                break
        state.put(db, PAYLOAD_MARK_STATE, last)
    return pruned


def is_stub(payload: str) -> bool:
    return payload.startswith('{"' + PRUNED_MARK + '"')


def payload_stub(payload: str, stamp: str) -> str:
    """A pruned payload: the short values kept (what the pages show and a replay reads:
    names, ids, campaign, step, the reply's snippet), the long ones named as removed."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    removed: list[str] = []
    kept = _short_values(body, "", removed) if isinstance(body, dict) else {}
    if not isinstance(body, dict):
        removed.append("(the whole payload)")
    note = {"at": stamp, "removed": removed, "by": "retention.payload_days"}
    # The mark first, so is_stub() knows a stub by its first characters.
    return json.dumps({PRUNED_MARK: note, **kept}, separators=(",", ":"), ensure_ascii=False)


def _short_values(body: dict[str, Any], prefix: str, removed: list[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in body.items():
        if key == PRUNED_MARK:
            continue  # a stub's own note: a new one is written
        kind = type(value)
        if kind is str:
            if len(value) <= STUB_VALUE_CHARS:
                kept[key] = value
                continue
        elif kind in _SCALARS:
            kept[key] = value
            continue
        elif kind is dict:
            kept[key] = _short_values(value, f"{prefix}{key}.", removed)
            continue
        removed.append(prefix + key)
    return kept


# What JSON decodes to besides text, objects and arrays: kept whatever their value.
_SCALARS = (int, float, bool, type(None))


def _cut(error: str | None) -> str | None:
    if error is None or len(error) <= STUB_ERROR_CHARS:
        return error
    return error[: STUB_ERROR_CHARS - 1] + "…"


def give_back_pages(db: sqlite_utils.Database, limit: int | None = None) -> Pruned:
    """Give a step of free pages back to the disk; nothing when few are free. The file
    itself shrinks at the next WAL checkpoint."""
    pruned = Pruned()
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return pruned  # not INCREMENTAL: m039 not applied
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    if free <= KEEP_FREE_PAGES:
        return pruned
    step = min(limit or VACUUM_PAGES, free - KEEP_FREE_PAGES)
    with _locked(db, pruned, transaction=False):
        # Its own transaction (a pragma that frees pages cannot share one), stepped to the
        # end by executescript: execute() stops after the first page.
        db.conn.executescript(f"PRAGMA incremental_vacuum({int(step)})")
    pruned.pages = free - db.execute("PRAGMA freelist_count").fetchone()[0]
    return pruned
