"""One GHL location's request budget, kept in the database so that every process writing to
that location (the worker, a drain, a reconcile's sync, a worker restarted after a crash)
draws on the same one, and corrected by what GHL reports on every answer.

GHL allows X-RateLimit-Max calls per X-RateLimit-Interval-Milliseconds (100 per 10 s) and
X-RateLimit-Limit-Daily a day, per location. The burst window here is a sliding one over the
calls' *answer* times: GHL counts a call when it arrives, which is after we sent it and
before its answer came back, so a window this side that starts at the answer never ends
before GHL's does, and the bridge can go right up to the ceiling without a fixed margin. A
call still in flight counts until it is answered. When GHL's count (Max - Remaining) is
higher than ours, something else spent from the same budget, and the difference is counted
too. The daily budget is GHL's last report, less what has been sent since: when it is down to
the reserve, syncing waits (the hold) and one call goes every `probe_seconds` to see whether
the day's budget is back; calls that are not syncing (the settings page's lookups, doctor)
may spend the reserve, which is what it is kept for.

A budget without a database (`Budget(None, ...)`) is private to its client: unit tests and
tools that have no database.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from bridge.clients.ratelimit import bounded_wait

TABLE = "ghl_budget"
# Until GHL reports its own figures: its documented 100 / 10 s less the old 5% margin.
DEFAULT_LIMIT = 95
DEFAULT_WINDOW_SECONDS = 10.0
# Our clock and GHL's may disagree by a little at the window's edge.
EDGE_SECONDS = 0.05
# A call with no answer after this long was lost with its process (kill -9); it counts as
# answered then, so a dead process never holds a slot for good.
IN_FLIGHT_SECONDS = 45.0
# GHL's count may be one above ours at the window's edge (its window starts at arrival);
# only a larger gap is another spender. A report of 0 remaining is always believed.
COUNT_TOLERANCE = 1
# Sleep at most this long between looks: another process may answer (and free a slot) sooner.
MAX_SLEEP_SECONDS = 1.0
DEFAULT_PROBE_SECONDS = 300.0
# Reported figures outside these are a broken header, not a budget.
LIMIT_RANGE = (1, 100_000)
WINDOW_RANGE = (1.0, 60.0)
DAILY_RANGE = (0, 100_000_000)

COLUMNS = {
    "location_id": str,
    "calls": str,
    "not_before": float,
    "max_calls": int,
    "window_seconds": float,
    "daily_limit": int,
    "daily_remaining": int,
    "reported_at": float,
    "reserve": int,
    "held_since": float,
    "probe_at": float,
}

SELECT = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"


class BudgetSpent(Exception):
    """The location's daily budget is down to its reserve: syncing waits `retry_after`
    seconds (until the next probe). `message` says so in a sentence."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class _State:
    """One location's row, as read inside a transaction."""

    calls: list[list[Any]] = field(default_factory=list)  # [at, ticket or None]
    not_before: float = 0.0
    limit: int | None = None
    window: float | None = None
    daily_limit: int | None = None
    daily_remaining: int | None = None
    reported_at: float | None = None
    reserve: int = 0
    held_since: float | None = None
    probe_at: float | None = None

    @property
    def max_calls(self) -> int:
        return self.limit or DEFAULT_LIMIT

    @property
    def window_seconds(self) -> float:
        return self.window or DEFAULT_WINDOW_SECONDS

    def expiry(self, call: list[Any]) -> float:
        at, ticket = call
        if ticket is None:
            return at + self.window_seconds + EDGE_SECONDS
        return at + IN_FLIGHT_SECONDS + self.window_seconds

    def prune(self, now: float) -> None:
        # A clock set back must not make old calls count for as long as it jumped.
        for call in self.calls:
            call[0] = min(call[0], now)
        self.calls = [c for c in self.calls if self.expiry(c) > now]

    def in_flight(self) -> int:
        return sum(1 for _, ticket in self.calls if ticket is not None)

    def wait(self, now: float) -> float:
        """Seconds before one more call fits the window (and any 429's wait is over)."""
        wait = max(0.0, self.not_before - now)
        over = len(self.calls) - self.max_calls
        if over >= 0:
            wait = max(wait, sorted(self.expiry(c) for c in self.calls)[over] - now)
        return wait

    def daily_left(self) -> int | None:
        """What GHL last said was left today, less the calls sent since."""
        if self.daily_remaining is None:
            return None
        return self.daily_remaining - self.in_flight()


@dataclass(frozen=True)
class Report:
    """A location's budget as pages, /healthz, `status` and /metrics show it."""

    location_id: str
    limit: int
    window_seconds: float
    in_window: int
    daily_limit: int | None
    daily_remaining: int | None
    reported_at: str | None
    reserve: int
    held_since: str | None
    next_check_at: str | None

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def message(self, label: str | None = None) -> str | None:
        """The hold in a sentence, or None when the location is not held."""
        if not self.held:
            return None
        return hold_message(
            label or self.location_id,
            self.daily_remaining,
            self.daily_limit,
            self.reserve,
            self.next_check_at,
        )


def hold_message(
    label: str,
    remaining: int | None,
    daily_limit: int | None,
    reserve: int,
    next_check_at: str | None,
) -> str:
    left = f"{max(0, remaining or 0):,}" + (f" of {daily_limit:,}" if daily_limit else "")
    when = ""
    if next_check_at:
        when = f" (next check {next_check_at[11:16]} UTC)"
    return (
        f"GHL's daily budget for {label} is nearly spent: {left} calls left, {reserve:,} kept"
        " in reserve; its events wait (none is dead-lettered) and resume by themselves when"
        f" GHL reports the day's budget back{when}"
    )


class Budget:
    """One location's GHL budget. `for_sync` budgets (the worker's lanes) keep the daily
    reserve and wait while it is all that is left; others may spend it."""

    def __init__(
        self,
        db: sqlite_utils.Database | None,
        location_id: str,
        for_sync: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.location_id = location_id
        self.for_sync = for_sync
        self.reserve = 0
        self.probe_seconds = DEFAULT_PROBE_SECONDS
        self.label = location_id
        self.clock = clock
        self.sleep = sleep
        self._conn, self._owned = _connection(db)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._owned:
            self._conn.close()

    # --- before a call --------------------------------------------------------------------

    def delay(self) -> float:
        """Seconds before a call may go: the window, a 429's wait, or (syncing) the time
        to the next probe while the location waits for its daily budget."""
        with self._lock:
            now = self.clock()
            state = self._read()
            state.prune(now)
            wait = state.wait(now)
            if self.for_sync and state.held_since is not None and state.probe_at is not None:
                wait = max(wait, state.probe_at - now)
            return max(0.0, wait)

    def acquire(self) -> str:
        """Wait for a place in the window and take it; returns the ticket to settle.
        Raises BudgetSpent when syncing and the day's budget is down to the reserve."""
        while True:
            taken = self._take()
            if isinstance(taken, str):
                return taken
            self.sleep(min(taken, MAX_SLEEP_SECONDS))

    def _take(self) -> str | float:
        spent: BudgetSpent | None = None
        with self._lock, self._transaction():
            now = self.clock()
            state = self._read()
            state.prune(now)
            wait = state.wait(now)
            if wait > 0:
                self._write(state)
                return wait
            if self.for_sync:
                state.reserve = self.reserve
                spent = self._check_daily(state, now)
            if spent is None:
                ticket = uuid.uuid4().hex[:16]
                state.calls.append([now, ticket])
            self._write(state)
        if spent is not None:
            raise spent
        return ticket

    def _check_daily(self, state: _State, now: float) -> BudgetSpent | None:
        """None when a syncing call may go (the day's budget is above the reserve, or this
        call is the probe); else the hold, begun here if it was not already."""
        left = state.daily_left()
        if left is None or left > self.reserve:
            state.held_since = state.probe_at = None
            return None
        if state.held_since is None:
            state.held_since = now
            state.probe_at = now + self.probe_seconds
        elif state.probe_at is None or now >= state.probe_at:
            state.probe_at = now + self.probe_seconds
            return None
        next_check = _iso(state.probe_at)
        message = hold_message(self.label, left, state.daily_limit, self.reserve, next_check)
        return BudgetSpent(message, max(1.0, state.probe_at - now))

    # --- after a call ---------------------------------------------------------------------

    def settle(
        self,
        ticket: str,
        headers: Mapping[str, str] | None,
        retry_after: float | None = None,
    ) -> None:
        """Count the call at its answer's time and take in what GHL reported; a 429's
        `retry_after` holds every process's next call for that long (capped)."""
        with self._lock, self._transaction():
            now = self.clock()
            state = self._read()
            state.calls = [c for c in state.calls if c[1] != ticket]
            state.prune(now)
            state.calls.append([now, None])
            if headers is not None:
                _take_report(state, headers, now, self.for_sync)
            if retry_after is not None:
                state.not_before = max(state.not_before, now + bounded_wait(retry_after))
            self._write(state)

    # --- storage --------------------------------------------------------------------------

    def _transaction(self):
        return _Immediate(self._conn)

    def _read(self) -> _State:
        row = self._conn.execute(f"{SELECT} WHERE location_id = ?", [self.location_id]).fetchone()
        return _state(row) if row is not None else _State()

    def _write(self, state: _State) -> None:
        self._conn.execute(
            f"INSERT OR REPLACE INTO {TABLE} ({', '.join(COLUMNS)})"
            f" VALUES ({', '.join('?' * len(COLUMNS))})",
            [
                self.location_id,
                json.dumps(state.calls),
                state.not_before,
                state.limit,
                state.window,
                state.daily_limit,
                state.daily_remaining,
                state.reported_at,
                state.reserve,
                state.held_since,
                state.probe_at,
            ],
        )


def _take_report(state: _State, headers: Mapping[str, str], now: float, for_sync: bool) -> None:
    """GHL's X-RateLimit-* figures: its limits, and what it counted beyond our own calls."""
    limit = _header_int(headers, "X-RateLimit-Max", LIMIT_RANGE)
    interval = _header_int(headers, "X-RateLimit-Interval-Milliseconds", (1, 10**9))
    if limit is not None:
        state.limit = limit
    if interval is not None and WINDOW_RANGE[0] <= interval / 1000 <= WINDOW_RANGE[1]:
        state.window = interval / 1000
    remaining = _header_int(headers, "X-RateLimit-Remaining", (0, LIMIT_RANGE[1]))
    if remaining is not None:
        counted = state.max_calls - remaining
        missing = counted - len(state.calls)
        if remaining == 0 or missing > COUNT_TOLERANCE:
            state.calls += [[now, None] for _ in range(max(0, missing))]
    daily = _header_int(headers, "X-RateLimit-Daily-Remaining", DAILY_RANGE)
    if daily is not None:
        state.daily_remaining = daily
        state.reported_at = now
        daily_limit = _header_int(headers, "X-RateLimit-Limit-Daily", DAILY_RANGE)
        if daily_limit is not None:
            state.daily_limit = daily_limit
        if state.held_since is not None and (state.daily_left() or 0) > state.reserve:
            state.held_since = state.probe_at = None


def _header_int(headers: Mapping[str, str], name: str, bounds: tuple[int, int]) -> int | None:
    value = (headers.get(name) or "").strip()
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or not bounds[0] <= number <= bounds[1]:
        return None
    return int(number)


def report(db: sqlite_utils.Database, location_id: str, clock=time.time) -> Report | None:
    """The location's budget now; None before its first call was counted."""
    row = db.execute(f"{SELECT} WHERE location_id = ?", [location_id]).fetchone()
    return None if row is None else _report(location_id, _state(row), clock())


def reports(db: sqlite_utils.Database, clock=time.time) -> dict[str, Report]:
    """Every location's budget now, by location id."""
    now = clock()
    return {row[0]: _report(row[0], _state(row), now) for row in db.execute(SELECT)}


def _report(location_id: str, state: _State, now: float) -> Report:
    state.prune(now)
    return Report(
        location_id=location_id,
        limit=state.max_calls,
        window_seconds=state.window_seconds,
        in_window=len(state.calls),
        daily_limit=state.daily_limit,
        daily_remaining=state.daily_remaining,
        reported_at=_iso(state.reported_at),
        reserve=state.reserve,
        held_since=_iso(state.held_since),
        next_check_at=_iso(state.probe_at) if state.held_since is not None else None,
    )


def _state(row: tuple) -> _State:
    values = dict(zip(COLUMNS, row, strict=True))
    try:
        calls = [list(c) for c in json.loads(values["calls"] or "[]") if len(c) == 2]
    except (TypeError, ValueError):
        calls = []  # a damaged row costs one window of pacing, never a crash
    return _State(
        calls=calls,
        not_before=values["not_before"] or 0.0,
        limit=values["max_calls"],
        window=values["window_seconds"],
        daily_limit=values["daily_limit"],
        daily_remaining=values["daily_remaining"],
        reported_at=values["reported_at"],
        reserve=values["reserve"] or 0,
        held_since=values["held_since"],
        probe_at=values["probe_at"],
    )


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Immediate:
    """BEGIN IMMEDIATE on the budget's own connection: read-modify-write across processes."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _connection(db: sqlite_utils.Database | None) -> tuple[sqlite3.Connection, bool]:
    """The budget's own connection to the bridge's database file (and True: close it with
    the budget), the in-memory database's own, or a private in-memory one (no database, or
    one not migrated yet). Its commits do
    not wait for fsync (synchronous NORMAL): a budget lost to a power cut costs one window
    of pacing, while an fsync per call would slow every sync."""
    if db is not None and db[TABLE].exists():
        row = db.execute("PRAGMA database_list").fetchone()
        path = row[2] if row else ""
        if not path:
            return db.conn, False
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn, True
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    kinds = {str: "TEXT", float: "REAL", int: "INTEGER"}
    columns = ", ".join(f"{name} {kinds[kind]}" for name, kind in COLUMNS.items())
    conn.execute(f"CREATE TABLE {TABLE} ({columns}, PRIMARY KEY (location_id))")
    return conn, True
