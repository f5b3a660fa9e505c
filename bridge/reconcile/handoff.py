"""A reconcile run's new events, synced by one writer: the running worker when there is one
(this process only watches them), or this process itself, as a drain, when there is none.

Only the worker writes to GHL during normal operation: two writers would split one
location's budget between two guesses. So `instantly-ghl-bridge reconcile` waits for a
running worker (bridge/store/presence.py) to finish what it enqueued, and ends as soon as
nothing it enqueued can progress now, saying why (a paused location, a spent daily budget,
held unrouted, a retry scheduled later). A worker that stops while it waits leaves the rest
to this process; a worker that starts while this process syncs takes over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from bridge.clients import budget
from bridge.config import Config
from bridge.locations.registry import Registry
from bridge.store import db as store
from bridge.store import inbox, presence, state

FINAL = (inbox.DONE, inbox.IGNORED, inbox.SUPERSEDED, inbox.DEAD)
# How often the events are looked at while they sync.
POLL_SECONDS = 0.5
# A retry due this soon is the worker's next few seconds (a 429's wait, a full burst
# window), not a wait worth ending on.
SOON_SECONDS = 10.0
# How long reconcile waits for a running worker unless --max-wait says otherwise.
DEFAULT_MAX_WAIT_MINUTES = 30.0

WORKER, SELF = "the running worker", "this command"
# Why events are left: they can progress now (queued), or not before something changes.
QUEUED, RETRY, PAUSED, BUDGET, UNROUTED = "queued", "retry", "paused", "budget", "unrouted"


@dataclass(frozen=True)
class Left:
    """Some of the run's unfinished events, and why they wait."""

    events: int
    kind: str
    why: str  # a sentence's end, after the count: "wait for a retry at 10:02 UTC (...)"
    location_id: str | None = None
    until: str | None = None  # ISO time they may progress (a retry, a probe)


@dataclass(frozen=True)
class Look:
    """The run's events at one moment."""

    total: int
    statuses: dict[str, int]  # by status, only those that have events
    left: list[Left]  # the unfinished ones, grouped by why
    moving: int  # unfinished ones that can progress now

    @property
    def finished(self) -> int:
        return sum(self.statuses.get(status, 0) for status in FINAL)


@dataclass
class Outcome:
    """How the run's events were synced, for the summary (text and JSON)."""

    look: Look
    by: list[str] = field(default_factory=list)  # who synced, in turn: WORKER, SELF
    handled: int = 0  # events this process handled itself (retries included)
    waited_seconds: float = 0.0
    capped_after: float | None = None  # minutes, when the wait hit --max-wait

    def as_dict(self) -> dict[str, Any]:
        processed = self.handled if self.by == [SELF] else self.look.finished
        body: dict[str, Any] = {"processed": processed, **self.look.statuses}
        body["by"] = ["worker" if who == WORKER else "reconcile" for who in self.by]
        if WORKER in self.by:
            body["waited_seconds"] = round(self.waited_seconds, 1)
        if self.capped_after is not None:
            body["stopped_waiting_after_minutes"] = self.capped_after
        body["left"] = [asdict(group) for group in self.look.left]
        return body


def look(
    db: sqlite_utils.Database,
    event_ids: list[int],
    served: Registry,
    now: float | None = None,
    worker: bool = True,
) -> Look:
    """Where each of the run's events stands, and why the unfinished ones wait. `worker`:
    whether a running worker is what they wait for (it words the queued ones)."""
    now = time.time() if now is None else now
    wanted = set(event_ids)
    statuses: dict[str, int] = {}
    waiting: dict[tuple[str, str | None, str], list[float]] = {}
    holds: dict[str, Hold | None] = {}
    moving = 0
    if wanted:
        # The run's ids are one range but for deliveries that came in meanwhile: reading
        # the range once is cheaper than asking for each id.
        rows = db.execute(
            "SELECT id, status, location_id, next_attempt_at, last_error FROM events"
            " WHERE id BETWEEN ? AND ?",
            [min(wanted), max(wanted)],
        )
        for event_id, status, location_id, next_at, error in rows:
            if event_id not in wanted:
                continue
            statuses[status] = statuses.get(status, 0) + 1
            if status in FINAL:
                continue
            hold = _hold(db, served, status, location_id, next_at or 0.0, error, now, holds)
            if hold is None:
                moving += 1
            else:
                waiting.setdefault((hold.kind, location_id, hold.why), []).append(hold.until)
    left = []
    for (kind, location_id, why), untils in waiting.items():
        until = min(untils)
        if kind == RETRY:
            # One sentence per error: "at" one minute, or "from" the first of several.
            at = "at" if len({_hhmm(u) for u in untils}) == 1 else "from"
            why = f"wait for a retry {at} {_hhmm(until)} UTC ({why})"
        left.append(Left(len(untils), kind, why, location_id, _iso(until) if until else None))
    if moving:
        why = (
            "are still queued for the running worker, which carries on with them"
            if worker
            else "are still queued; the worker syncs them when it runs"
        )
        left.append(Left(moving, QUEUED, why))
    return Look(len(wanted), dict(sorted(statuses.items())), left, moving)


@dataclass(frozen=True)
class Hold:
    """Why an event cannot progress now, and until when if that is known (0: not known)."""

    kind: str
    why: str
    until: float = 0.0


def _hold(
    db: sqlite_utils.Database,
    served: Registry,
    status: str,
    location_id: str | None,
    next_at: float,
    error: str | None,
    now: float,
    holds: dict[str, Hold | None],
) -> Hold | None:
    """Why an unfinished event cannot progress now; None when it can. `holds` keeps each
    location's answer for one look."""
    if status == inbox.UNROUTED:
        return Hold(
            UNROUTED,
            "are held (unrouted): no route claims their campaign or workspace, and there is no"
            " default location; add a route, then run `instantly-ghl-bridge replay --unrouted`",
        )
    if status == inbox.PROCESSING or location_id is None:
        return None  # being synced, or about to be routed
    if location_id not in holds:
        holds[location_id] = _location_hold(db, served, location_id)
    if holds[location_id] is not None:
        return holds[location_id]
    if next_at > now + SOON_SECONDS:
        return Hold(RETRY, error or "its last try failed", next_at)
    return None


def _location_hold(db: sqlite_utils.Database, served: Registry, location_id: str) -> Hold | None:
    """Why nothing of this location syncs now (paused, or its daily budget spent), if so."""
    label = served.label(location_id)
    pause = state.get(db, state.scoped(state.GHL_PAUSE, location_id))
    if pause:
        reason = pause.get("reason") or "paused"
        probe = pause.get("probe_at") or 0.0
        return Hold(PAUSED, f"wait: GHL writes to {label} are paused: {reason}", probe)
    report = budget.report(db, location_id)
    if report is not None and report.held:
        until = report.next_check_at
        moment = datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp() if until else 0
        return Hold(BUDGET, f"wait: {report.message(label)}", moment)
    return None


class OwnSync(threading.Thread):
    """This process's drain (`instantly-ghl-bridge worker --drain`'s loop) on a thread of
    its own, so that it can be stopped when a worker starts, or when what is left waits."""

    def __init__(self, config: Config):
        super().__init__(name="reconcile-sync", daemon=True)
        self.config = config
        self.handled = 0
        self.error: BaseException | None = None
        self._worker: Any = None
        self._ready = threading.Event()

    def run(self) -> None:
        from bridge.sync.worker import Worker

        db = store.connect(self.config.database)
        try:
            self._worker = Worker(self.config, db=db)
            self._ready.set()
            self.handled = self._worker.run(drain=True)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            self.error = exc
        finally:
            self._ready.set()
            db.close()

    def stop(self) -> None:
        """Let the event in hand finish, hand back what is held, and end."""
        self._ready.wait()
        if self._worker is not None:
            self._worker.stop()
        self.join()


def sync(
    config: Config,
    db: sqlite_utils.Database,
    event_ids: list[int],
    served: Registry,
    max_wait_minutes: float = DEFAULT_MAX_WAIT_MINUTES,
    on_progress: Callable[[Outcome], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> Outcome:
    """Have the run's events synced by the one writer, and say how it went: wait for the
    running worker, or drain when none runs, until nothing of the run can progress now
    (or the wait reaches `max_wait_minutes`)."""
    outcome = Outcome(Look(len(set(event_ids)), {}, [], 0))
    own: OwnSync | None = None
    waiting_since: float | None = None

    def end_own() -> None:
        nonlocal own
        assert own is not None
        own.stop()
        outcome.handled += own.handled
        error, own = own.error, None
        if error is not None:
            raise error

    try:
        while True:
            worker = bool(presence.running(config.database))
            if worker:
                if own is not None:
                    end_own()  # a worker started: it takes the rest over
                if not outcome.by or outcome.by[-1] != WORKER:
                    outcome.by.append(WORKER)
                if waiting_since is None:
                    waiting_since = time.monotonic()
            elif own is None:
                # No worker (none ran, or it stopped while we waited): this process syncs.
                outcome.by.append(SELF)
                own = OwnSync(config)
                own.start()
            elif not own.is_alive():
                end_own()
                break  # drained: what is left waits for a retry, or cannot sync now
            outcome.look = look(db, event_ids, served, worker=worker)
            if waiting_since is not None:
                outcome.waited_seconds = time.monotonic() - waiting_since
            if on_progress is not None:
                on_progress(outcome)
            if not outcome.look.moving:
                break
            if worker and outcome.waited_seconds >= max_wait_minutes * 60:
                outcome.capped_after = max_wait_minutes
                break
            time.sleep(poll_seconds)
    finally:
        if own is not None:
            end_own()
    outcome.look = look(db, event_ids, served, worker=bool(presence.running(config.database)))
    return outcome


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _hhmm(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M")
