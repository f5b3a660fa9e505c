"""The worker's schedule for reconciliation (APScheduler 3.x, inside
`instantly-ghl-bridge worker` only).

One interval job runs reconciliation every `reconcile.interval_minutes`; a second job
looks every few seconds for a "Reconcile now" request and for changed settings. Both
run through the SQLite lock, so two workers started by mistake never poll at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlite_utils
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bridge.clients.instantly import InstantlyClient, Stopped
from bridge.clock import iso, parse_time
from bridge.config import Config
from bridge.locations import registry
from bridge.locations.registry import Workspace
from bridge.reconcile.reconciler import Options
from bridge.reconcile.runs import SCHEDULE, Busy, last_run, requested, run_recorded
from bridge.settings import SettingsCache
from bridge.store import db as store
from bridge.store import state

log = logging.getLogger("bridge.scheduler")

RUN_JOB = "reconcile"
CHECK_JOB = "reconcile-check"
CHECK_SECONDS = 5.0
# A worker that starts overdue runs soon, not at once: start-up stays quick.
START_DELAY_SECONDS = 30.0
# A stopping worker waits this long for a run to reach its next page and record itself.
SHUTDOWN_WAIT_SECONDS = 60.0


class ReconcileScheduler:
    """Owns the APScheduler instance of one worker process."""

    def __init__(
        self,
        config: Config,
        scheduler: BackgroundScheduler | None = None,
        client_factory: Callable[[Workspace, Callable[[float], None]], InstantlyClient]
        | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.config = config
        self.scheduler = scheduler or BackgroundScheduler(timezone=UTC)
        self.client_factory = client_factory or self._client
        self.now = now
        self.settings = SettingsCache()
        self._stop = threading.Event()
        self._schedule: tuple[bool, int] | None = None
        self._check_db: sqlite_utils.Database | None = None
        self._running = threading.Lock()  # held while a run goes on in this process

    def start(self) -> bool:
        """Add the jobs and start; False (and nothing scheduled) when no workspace has a key."""
        db = self._db()
        if not registry.build(self.config, self.settings.get(db), db).workspaces:
            state.put(db, SCHEDULE, {"enabled": False, "reason": "INSTANTLY_API_KEY is not set"})
            log.warning(
                "no Instantly workspace has a key (INSTANTLY_API_KEY, [[instantly.workspaces]]):"
                " reconciliation will not run"
            )
            return False
        self.apply_settings(db)
        self.scheduler.add_job(
            self.check,
            IntervalTrigger(seconds=CHECK_SECONDS),
            id=CHECK_JOB,
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.start()
        return True

    def shutdown(self) -> None:
        """Stop: a run going on ends at its next page or wait, with its work kept."""
        self._stop.set()
        if self.scheduler.running:
            # Not wait=True: that holds APScheduler's job store lock while it waits, and
            # a job touching the scheduler would deadlock. Wait for the run ourselves.
            self.scheduler.shutdown(wait=False)
        if self._running.acquire(timeout=SHUTDOWN_WAIT_SECONDS):
            self._running.release()
        else:
            log.warning("reconciliation still running at shutdown; its lock will expire")
        if self._check_db is not None:
            self._check_db.close()
            self._check_db = None

    def check(self) -> None:
        """Every few seconds: follow settings changes, and answer a pending request."""
        if self._stop.is_set():
            return
        try:
            db = self._db()
            self.apply_settings(db)
            if requested(db):
                self.run_once("request")
        except Exception:  # the check job must keep running whatever happens
            log.exception("reconcile check failed")

    def apply_settings(self, db: sqlite_utils.Database) -> None:
        """(Re)schedule the interval job when `reconcile.enabled` or the interval change."""
        config = self.settings.get(db)["reconcile"]
        wanted = (bool(config["enabled"]), int(config["interval_minutes"]))
        if wanted == self._schedule:
            return
        self._schedule = wanted
        enabled, minutes = wanted
        if self.scheduler.get_job(RUN_JOB):
            self.scheduler.remove_job(RUN_JOB)
        if not enabled:
            state.put(db, SCHEDULE, {"enabled": False, "reason": "reconcile.enabled is false"})
            log.info("scheduled reconciliation is off (reconcile.enabled = false)")
            return
        first = self.first_run_at(db, minutes)
        self.scheduler.add_job(
            self.run_once,
            IntervalTrigger(minutes=minutes),
            args=["schedule"],
            id=RUN_JOB,
            next_run_time=first,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._note_schedule(db, first)
        log.info("reconciliation every %d min, next at %s", minutes, iso(first))

    def first_run_at(self, db: sqlite_utils.Database, minutes: int) -> datetime:
        """One interval after the last run started; soon, when that is past."""
        now = self.now()
        soon = now + timedelta(seconds=START_DELAY_SECONDS)
        last = last_run(db)
        started = parse_time(last["started_at"]) if last else None
        if started is None:
            return soon
        return max(soon, started + timedelta(minutes=minutes))

    def run_once(self, trigger: str) -> None:
        """One recorded run on a connection of its own (this is a scheduler thread)."""
        if self._stop.is_set():
            return
        started = self.now()
        db = store.connect(self.config.database)
        try:
            with self._running:
                self._run(db, trigger)
        finally:
            if trigger == "schedule" and self._schedule:
                # The interval trigger fires every interval from its first run. (Never ask
                # the scheduler here: a job calling it can deadlock its shutdown.)
                self._note_schedule(db, started + timedelta(minutes=self._schedule[1]))
            db.close()

    def _run(self, db: sqlite_utils.Database, trigger: str) -> None:
        try:
            settings = self.settings.get(db)
            summary = run_recorded(
                db,
                lambda workspace: self.client_factory(workspace, self._sleep),
                settings,
                Options(),
                trigger,
                should_stop=self._stop.is_set,
                registry=registry.build(self.config, settings, db),
            )
        except Busy as exc:
            log.info("reconcile (%s) waits: %s", trigger, exc)
            return
        except Exception:
            log.exception("reconcile (%s) failed", trigger)
            return
        totals = summary.totals()
        # With several workspaces, each one's line first, then the run's totals.
        several = len(summary.parts) > 1
        for part in summary.parts:
            if several and part.summary is not None:
                own = part.summary.totals()
                log.info(
                    "reconcile (%s) workspace %s %s: %d Instantly calls, %d found, %d new",
                    trigger,
                    part.label,
                    part.summary.status,
                    own["calls"],
                    own["found"],
                    own["new"],
                )
        log.info(
            "reconcile (%s) %s: %d pages, %d Instantly calls, %d found, %d new%s",
            trigger,
            summary.status,
            totals["pages"],
            totals["calls"],
            totals["found"],
            totals["new"],
            "; errors: " + "; ".join(summary.errors) if summary.errors else "",
        )

    def _note_schedule(self, db: sqlite_utils.Database, next_run: datetime) -> None:
        enabled, minutes = self._schedule or (True, 0)
        state.put(
            db,
            SCHEDULE,
            {"enabled": enabled, "interval_minutes": minutes, "next_run_at": iso(next_run)},
        )

    def _db(self) -> sqlite_utils.Database:
        if self._check_db is None:
            self._check_db = store.connect(self.config.database)
        return self._check_db

    def _sleep(self, seconds: float) -> None:
        """Pacing waits end early, and the run with them, when the worker stops."""
        if self._stop.wait(seconds):
            raise Stopped

    def _client(self, workspace: Workspace, sleep: Callable[[float], None]) -> InstantlyClient:
        return InstantlyClient(
            self.config.instantly_base_url,
            workspace.key,
            sleep=sleep,
            key_name=workspace.key_source,
        )


def start_scheduler(config: Config) -> ReconcileScheduler:
    """The worker's scheduler, started (it does nothing without an Instantly key)."""
    scheduler = ReconcileScheduler(config)
    scheduler.start()
    return scheduler
