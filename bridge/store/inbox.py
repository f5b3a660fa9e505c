"""The event inbox: durable, keyed, leased. Every event goes through here once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from bridge.clock import now_iso, parse_time
from bridge.config import DEFAULT_LEASE_SECONDS
from bridge.events.event import Event
from bridge.store.db import immediate

PENDING, PROCESSING, DONE, IGNORED, SUPERSEDED, DEAD, UNROUTED = (
    "pending",
    "processing",
    "done",
    "ignored",
    "superseded",
    "dead",
    "unrouted",
)
# Unrouted: held because no route claims its campaign or workspace and there is no default
# location; never dropped, never guessed, queued again by replay once a route exists.
STATUSES = (PENDING, PROCESSING, DONE, IGNORED, SUPERSEDED, DEAD, UNROUTED)


@dataclass(frozen=True)
class Enqueued:
    event_id: int
    created: bool


_INSERT = (
    "INSERT INTO events (key, source, event_type, email, campaign_id, campaign_name,"
    " workspace_id, occurred_at, payload, status, attempts, next_attempt_at, received_at,"
    " updated_at) VALUES "
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)"
# SQLite's default limit is 32,766 parameters per statement; 12 per row.
MAX_BATCH = 1000


def enqueue(db: sqlite_utils.Database, event: Event, now: float | None = None) -> Enqueued:
    """Store an event unless its key is already known; atomic through the unique key."""
    return enqueue_many(db, [event], now)[0]


def enqueue_many(
    db: sqlite_utils.Database, events: list[Event], now: float | None = None
) -> list[Enqueued]:
    """Store each event whose key is not yet known, in one statement; one answer per event.

    One INSERT for the lot: the webhook's group commit writes its batch with this, and each
    statement saved is a hand-over of the GIL and the writers' lock saved.
    Without a transaction around it, the statement is its own and commits at once.
    A key repeated within `events` is created by its first occurrence only.
    """
    if not events:
        return []
    if len(events) > MAX_BATCH:
        head = enqueue_many(db, events[:MAX_BATCH], now)
        return head + enqueue_many(db, events[MAX_BATCH:], now)
    stamp = now_iso()
    moment = time.time() if now is None else now
    params: list[Any] = []
    for event in events:
        params += [
            event.key,
            event.source,
            event.event_type,
            event.email,
            event.campaign_id,
            event.campaign_name,
            event.workspace_id or None,
            event.occurred_at,
            event.payload_json or json.dumps(event.payload, separators=(",", ":")),
            moment,
            stamp,
            stamp,
        ]
    rows = ", ".join([_ROW] * len(events))
    cursor = db.conn.execute(f"{_INSERT}{rows} ON CONFLICT(key) DO NOTHING", params)
    created = cursor.rowcount
    if created == len(events):
        # Every row is new. SQLite gives a new row the largest rowid so far plus one, and
        # inserts the VALUES rows in order, so the statement's rows are consecutive ids
        # ending at lastrowid.
        first = cursor.lastrowid - created + 1
        return [Enqueued(first + i, True) for i in range(created)]
    return _resolve(db, events, cursor.lastrowid - created if created else None)


def _resolve(db: sqlite_utils.Database, events: list[Event], floor: int | None) -> list[Enqueued]:
    """Ids for a batch where some keys were known: rows above `floor` (the largest id
    before the statement; None when it created none) are the ones it created."""
    keys = list(dict.fromkeys(event.key for event in events))
    marks = ",".join("?" * len(keys))
    ids = dict(db.execute(f"SELECT key, id FROM events WHERE key IN ({marks})", keys).fetchall())
    answers, seen = [], set()
    for event in events:
        event_id = ids[event.key]
        answers.append(
            Enqueued(event_id, floor is not None and event_id > floor and event.key not in seen)
        )
        seen.add(event.key)
    return answers


def known_keys(db: sqlite_utils.Database, keys: list[str]) -> set[str]:
    """Which of these keys are already in the inbox."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            r[0] for r in db.execute(f"SELECT key FROM events WHERE key IN ({marks})", chunk)
        )
    return found


# A due event whose contact (its email) has no other event under a live lease. Each branch
# walks the status index in claim order and stops at its first free event, so a claim reads
# few rows however long the queue; the partial index on leased rows answers "held?".
_FREE = """NOT EXISTS (SELECT 1 FROM events AS held
        WHERE held.status = 'processing' AND held.email = due.email AND held.lease_until >= :now
        AND held.location_id IS due.location_id)"""


def _claimable(lane: str) -> str:
    return f"""
    SELECT id FROM (
        SELECT * FROM (
            SELECT due.id, due.next_attempt_at FROM events AS due
            WHERE due.status = 'pending' AND due.next_attempt_at <= :now {lane} AND {_FREE}
            ORDER BY due.next_attempt_at, due.id LIMIT 1)
        UNION ALL
        SELECT * FROM (
            SELECT due.id, due.next_attempt_at FROM events AS due
            WHERE due.status = 'processing' AND due.lease_until < :now {lane} AND {_FREE}
            ORDER BY due.next_attempt_at, due.id LIMIT 1)
    ) ORDER BY next_attempt_at, id LIMIT 1
"""


_CLAIMABLE = _claimable("")
# One location's lane claims only the events routed to it (idx_events_lane).
_CLAIMABLE_IN_LANE = _claimable("AND due.location_id = :location")


def claim_next(
    db: sqlite_utils.Database,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: float | None = None,
    owner: str | None = None,
    location_id: str | None = None,
) -> dict[str, Any] | None:
    """Lease the next due event (pending, or processing with an expired lease) whose
    contact no other event holds: one contact's events are synced one at a time, by
    whichever worker, drain or reconcile run claims them, in the order they came due.
    With `location_id`, only the events routed to that location (its lane's claim); a
    contact is one email in one location.

    A holder that outlives its lease loses that guarantee: the event and its contact's
    next events can then be claimed by another worker while the first is still writing.
    An event's few GHL calls (35 s timeout each) fit well inside the default 5 minutes;
    a stopped process, or a long rate-limit wait inside the client, can outlast it.
    The attempt is counted at claim time, so an event that crashes its worker
    every time still reaches its maximum and is dead-lettered.
    """
    now = time.time() if now is None else now
    query = _CLAIMABLE if location_id is None else _CLAIMABLE_IN_LANE
    with immediate(db):
        row = db.execute(query, {"now": now, "location": location_id}).fetchone()
        if row is None:
            return None
        db.execute(
            """
            UPDATE events SET status = 'processing', lease_until = ?, lease_owner = ?,
                attempts = attempts + 1, updated_at = ?
            WHERE id = ?
            """,
            [now + lease_seconds, owner, now_iso(), row[0]],
        )
        return get(db, row[0])


# One branch of a batch claim: a location's due events of one kind in claim order, with
# their contact; each is read through idx_events_lane up to a bounded number of rows.
_BATCH_BRANCHES = tuple(
    f"""SELECT due.id, due.email, due.next_attempt_at FROM events AS due
    WHERE {claimable} AND due.location_id = :location AND {_FREE}
    ORDER BY due.next_attempt_at, due.id LIMIT :scan"""
    for claimable in (
        "due.status = 'pending' AND due.next_attempt_at <= :now",
        "due.status = 'processing' AND due.lease_until < :now",
    )
)
# Rows read per branch for a batch of n: a backlog where a few contacts hold many events
# still yields a batch of many contacts.
BATCH_SCAN_FACTOR = 4


def claim_batch(
    db: sqlite_utils.Database,
    location_id: str,
    limit: int,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: float | None = None,
    owner: str | None = None,
) -> list[dict[str, Any]]:
    """Lease up to `limit` due events of one location in one transaction, in claim order,
    at most one per contact: for each contact the event `claim_next` would give it (its
    first due event; none while another of its events is leased), so a contact's events
    are still synced one at a time in the order they came due. Leases, owner and attempt
    count as with `claim_next`. Empty when nothing is due; that usual answer is found
    without taking the writers' lock."""
    now = time.time() if now is None else now
    params = {"now": now, "location": location_id, "scan": max(1, limit) * BATCH_SCAN_FACTOR}
    if not _first_per_contact(db, params, limit):
        return []
    with immediate(db):
        ids = _first_per_contact(db, params, limit)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        db.execute(
            "UPDATE events SET status = 'processing', lease_until = ?, lease_owner = ?,"
            f" attempts = attempts + 1, updated_at = ? WHERE id IN ({marks})",
            [now + lease_seconds, owner, now_iso(), *ids],
        )
        rows = {row["id"]: row for row in db["events"].rows_where(f"id IN ({marks})", ids)}
    return [rows[event_id] for event_id in ids]


def _first_per_contact(db: sqlite_utils.Database, params: dict[str, Any], limit: int) -> list[int]:
    """The ids a batch claim takes: each contact's first claimable event, up to `limit`."""
    branches = [db.execute(query, params).fetchall() for query in _BATCH_BRANCHES]
    # A branch cut short by its LIMIT may hold, past its last row, an earlier event of a
    # contact the other branch shows: only rows up to the shortest full branch are certain.
    ends = [(rows[-1][2], rows[-1][0]) for rows in branches if len(rows) == params["scan"]]
    cutoff = min(ends) if ends else None
    ids: list[int] = []
    seen: set[str] = set()
    for event_id, email, due in sorted((r for rows in branches for r in rows), key=_claim_order):
        if cutoff is not None and (due, event_id) > cutoff:
            break
        # The first event of a contact in claim order is its own; the later ones wait for it.
        contact = email or f"#{event_id}"
        if contact in seen:
            continue
        seen.add(contact)
        ids.append(event_id)
        if len(ids) == limit:
            break
    return ids


def _claim_order(row: tuple[int, str | None, float]) -> tuple[float, int]:
    return row[2], row[0]


def renew_leases(
    db: sqlite_utils.Database,
    event_ids: list[int],
    lease_seconds: float,
    owner: str | None,
    now: float | None = None,
) -> int:
    """Extend the leases `owner` still holds on these events, for a batch that takes longer
    than one event's lease; an event whose lease another worker took is left alone."""
    if not event_ids:
        return 0
    now = time.time() if now is None else now
    marks = ",".join("?" * len(event_ids))
    return db.execute(
        f"UPDATE events SET lease_until = ? WHERE id IN ({marks}) AND status = 'processing'"
        " AND lease_owner IS ?",
        [now + lease_seconds, *event_ids, owner],
    ).rowcount


def event_from_row(row: dict[str, Any]) -> Event:
    """Rebuild the Event stored in an inbox row."""
    return Event(
        key=row["key"],
        event_type=row["event_type"],
        email=row["email"] or "",
        payload=json.loads(row["payload"]),
        campaign_id=row["campaign_id"] or "",
        campaign_name=row["campaign_name"] or "",
        occurred_at=row["occurred_at"] or "",
        source=row["source"],
        workspace_id=row.get("workspace_id") or "",
    )


def get(db: sqlite_utils.Database, event_id: int) -> dict[str, Any] | None:
    rows = list(db["events"].rows_where("id = ?", [event_id]))
    return rows[0] if rows else None


def finish(
    db: sqlite_utils.Database,
    event_id: int,
    status: str,
    contact_id: str | None = None,
    note: str | None = None,
) -> None:
    """Record a final outcome: done, ignored or superseded (note says why)."""
    db.execute(
        """
        UPDATE events SET status = ?, contact_id = COALESCE(?, contact_id), last_error = ?,
            lease_until = NULL, lease_owner = NULL, updated_at = ?
        WHERE id = ?
        """,
        [status, contact_id, note, now_iso(), event_id],
    )


def retry_later(
    db: sqlite_utils.Database,
    event_id: int,
    delay: float,
    error: str,
    count_attempt: bool = True,
    now: float | None = None,
) -> None:
    """Put an event back in the queue after `delay` seconds.

    A rate-limit or paused-token wait is not the event's fault, so it does not
    use up an attempt (count_attempt=False).
    """
    now = time.time() if now is None else now
    db.execute(
        """
        UPDATE events SET status = 'pending', next_attempt_at = ?, lease_until = NULL,
            lease_owner = NULL, last_error = ?, attempts = attempts - ?, updated_at = ?
        WHERE id = ?
        """,
        [now + delay, error, 0 if count_attempt else 1, now_iso(), event_id],
    )


def dead(db: sqlite_utils.Database, event_id: int, error: str) -> None:
    """Dead-letter an event: kept, visible, replayable."""
    db.execute(
        "UPDATE events SET status = 'dead', lease_until = NULL, lease_owner = NULL,"
        " last_error = ?, updated_at = ?"
        " WHERE id = ?",
        [error, now_iso(), event_id],
    )


# A replayed event is routed again when it is next synced: a route added since applies.
_REQUEUE = (
    "UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = 0,"
    " location_id = NULL, updated_at = ?"
)


def replay(
    db: sqlite_utils.Database, event_ids: list[int] | None = None, unrouted: bool = False
) -> int:
    """Queue events again; returns how many. No ids: every dead event, or with `unrouted`
    every held one. With ids: those events, in any state but processing."""
    stamp = now_iso()
    if event_ids is None:
        status = UNROUTED if unrouted else DEAD
        return db.execute(f"{_REQUEUE} WHERE status = ?", [stamp, status]).rowcount
    count = 0
    for event_id in event_ids:
        cursor = db.execute(
            f"{_REQUEUE} WHERE id = ? AND status != 'processing'", [stamp, event_id]
        )
        count += cursor.rowcount
    return count


@dataclass(frozen=True)
class Routed:
    routed: int = 0
    held: int = 0
    # The locations that were given events, so their lanes can be woken.
    locations: frozenset[str] = frozenset()


# Queued events without a location: not routed yet, or claimed by hand and abandoned (a
# lease that ended on an event no lane routed).
_UNROUTED_QUEUE = (
    "FROM events INDEXED BY idx_events_lane WHERE location_id IS NULL"
    " AND status IN ('pending', 'processing') AND (status = 'pending' OR lease_until < ?)"
)


def route_pending(
    db: sqlite_utils.Database,
    route: Callable[[str, str], str | None],
    limit: int = 500,
    now: float | None = None,
) -> Routed:
    """Decide the location of queued events not routed yet, with `route(campaign_id,
    workspace_id)`; an event it has no location for is held (unrouted). Returns the counts.

    Looked for first without a transaction: the worker asks every turn, and the usual answer
    (nothing to route) must not take the writers' lock."""
    now = time.time() if now is None else now
    if db.execute(f"SELECT 1 {_UNROUTED_QUEUE} LIMIT 1", [now]).fetchone() is None:
        return Routed()
    with immediate(db):
        rows = db.execute(
            "SELECT id, IFNULL(campaign_id, ''), IFNULL(workspace_id, '')"
            f" {_UNROUTED_QUEUE} ORDER BY id LIMIT ?",
            [now, limit],
        ).fetchall()
        routed = held = 0
        stamp = now_iso()
        given: set[str] = set()
        for event_id, campaign_id, workspace_id in rows:
            location = route(campaign_id, workspace_id)
            if location is None:
                db.execute(
                    "UPDATE events SET status = 'unrouted', last_error = ?, lease_until = NULL,"
                    " lease_owner = NULL, updated_at = ? WHERE id = ?",
                    [_held_because(campaign_id, workspace_id), stamp, event_id],
                )
                held += 1
            else:
                db.execute("UPDATE events SET location_id = ? WHERE id = ?", [location, event_id])
                given.add(location)
                routed += 1
    return Routed(routed, held, frozenset(given))


def _held_because(campaign_id: str, workspace_id: str) -> str:
    return (
        f"held: no route claims campaign {campaign_id or '(none)'} or workspace "
        f"{workspace_id or '(unknown)'}, and there is no default location; add a route, "
        "then replay"
    )


def unroute_pending(db: sqlite_utils.Database) -> int:
    """Forget the location of every queued event not under a lease, so it is routed again
    by the routes as they are now (they changed). Returns how many."""
    return db.execute(
        "UPDATE events SET location_id = NULL WHERE status = 'pending' AND location_id IS NOT NULL"
    ).rowcount


def unrouted(db: sqlite_utils.Database, limit: int = 100) -> list[dict[str, Any]]:
    """Held events, oldest first, with what routing looked at."""
    cursor = db.execute(
        "SELECT id, event_type, email, campaign_id, campaign_name, workspace_id, received_at"
        " FROM events INDEXED BY idx_events_held WHERE status = 'unrouted' ORDER BY id LIMIT ?",
        [limit],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Number of events in each status (every status listed, zero or not)."""
    result = dict.fromkeys(STATUSES, 0)
    for _, status, n in counts_by_type(db):
        result[status] = result.get(status, 0) + n
    return result


def counts_by_type(db: sqlite_utils.Database) -> list[tuple[str, str, int]]:
    """(event type, status, events) for each pair that has events.

    /metrics and /healthz ask this without a login, so it costs the same at any history
    length: finished events come from the totals m036's triggers keep, the queue through
    the status index.
    """
    finished = db.execute(
        "SELECT event_type, status, SUM(events) FROM event_totals WHERE events > 0"
        " GROUP BY event_type, status"
    ).fetchall()
    queued = db.execute(
        "SELECT event_type, status, COUNT(*) FROM events"
        " WHERE status IN ('pending', 'processing') GROUP BY event_type, status"
    ).fetchall()
    return [tuple(row) for row in finished + queued]


def counts_by_location(db: sqlite_utils.Database) -> list[tuple[str, str, str, int]]:
    """(location id, event type, status, events) for each that has events; location ''
    for events not routed yet, held, or finished before locations existed (m042)."""
    finished = db.execute(
        "SELECT location_id, event_type, status, events FROM event_totals WHERE events > 0"
    ).fetchall()
    queued = db.execute(
        "SELECT IFNULL(location_id, ''), event_type, status, COUNT(*) FROM events"
        " WHERE status IN ('pending', 'processing') GROUP BY 1, 2, 3"
    ).fetchall()
    return [tuple(row) for row in finished + queued]


def oldest_pending_age(db: sqlite_utils.Database, now: float | None = None) -> float | None:
    """Seconds since the oldest unfinished event arrived, or None when there is none."""
    row = db.execute(
        "SELECT MIN(received_at) FROM events WHERE status IN ('pending', 'processing')"
    ).fetchone()
    if not row or not row[0]:
        return None
    received = parse_time(row[0])
    if received is None:
        return None
    now_dt = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return max(0.0, (now_dt - received).total_seconds())
