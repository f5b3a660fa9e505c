"""The worker: route due events to their location, sync them in that location's lane,
record what happened. One path for all events."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlite_utils

from bridge import logs
from bridge.clients.budget import Budget
from bridge.clients.ghl import GHLClient
from bridge.config import Config
from bridge.locations import registry as locations
from bridge.settings import SettingsCache, SettingsError
from bridge.store import db as store
from bridge.store import inbox, leases, retention
from bridge.store.adopt import adopt_single_location
from bridge.store.leases import LeaseOwner
from bridge.sync.lanes import AUTH_PROBE_SECONDS, Lane, backoff_delay

__all__ = ["AUTH_PROBE_SECONDS", "Worker", "backoff_delay"]

log = logging.getLogger("bridge.worker")

IDLE_SECONDS = 0.5
DB_RETRY_SECONDS = 5.0
# How often the loop looks for leases held by a worker that died.
OWNER_CHECK_SECONDS = 2.0
# How often a pruning pass starts (bridge/store/retention.py); its batches are then taken
# one per turn of the loop, between claims.
PRUNE_SECONDS = 300.0
# How often the locations are read again without a settings change: a token entered on
# the page is kept outside the settings.
REGISTRY_SECONDS = 5.0
# Events routed per turn of the loop.
ROUTE_BATCH = 500
# With a lane per thread, how often this thread looks for events to route: a lane given
# one is woken at once, so this is most of the wait between arrival and sync.
ROUTE_SECONDS = 0.1


class Worker:
    """Processes the inbox until stopped (or, with drain, until nothing is due).

    One lane per location. With several, each lane runs in its own thread on its own
    connection, so one location's pause, rate limit or outage delays only its events;
    with one (or in a drain) the lanes are taken in turn in this thread."""

    def __init__(
        self,
        config: Config,
        client: GHLClient | None = None,
        db: sqlite_utils.Database | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        if client is not None and not config.ghl_location_id:
            # A client handed in (tests, tools) is the location it was made for.
            config = dataclasses.replace(config, ghl_location_id=client.location_id)
        self.config = config
        self.db = db or store.connect(config.database)
        self.settings = SettingsCache()
        self._given = client
        self._stop = threading.Event()
        self._owner: LeaseOwner | None = None  # while run() runs
        self._next_owner_check = 0.0
        self._next_prune = 0.0
        self._pruning: Iterator[retention.Pruned] | None = None
        self._pruned = retention.Pruned()
        self.sleep = sleep or self._stop.wait
        self.registry: locations.Registry | None = None
        self.lanes: dict[str, Lane] = {}
        self._built_from: tuple[Any, ...] | None = None
        self._next_registry = 0.0
        self._threads: list[LaneThread] = []
        self._thread_handled = 0
        adopt_single_location(self.db, config.ghl_location_id)

    @property
    def client(self) -> GHLClient | None:
        """The first location's client (GHL_LOCATION_ID's, on a single-location bridge)."""
        self._refresh(self.settings.get(self.db))
        lane = next(iter(self.lanes.values()), None)
        return lane.client if lane else None

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def _on_signal(self, *_: Any) -> None:
        # Event.set takes a lock that the code this handler interrupted may hold (the
        # worker's own wait, or a stop from an earlier signal), which would deadlock the
        # process; a thread sets it once the interrupted code lets go.
        threading.Thread(target=self._stop.set, name="stop", daemon=True).start()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def run(self, drain: bool = False) -> int:
        """Loop until stopped; with drain, return once no event is due. Returns events handled."""
        try:
            # Settings that would let retention forget replies reconciliation still reads
            # (retention.event_days against the look-back) stop the worker here.
            settings = self.settings.get(self.db)
        except SettingsError as exc:
            log.error("worker not started: %s", exc)
            raise
        self._refresh(settings, force=True)
        if not self.lanes:
            log.warning("GHL_TOKEN / GHL_LOCATION_ID not set: events stay queued until they are")
        # Routes may have changed while no worker ran: what is queued is routed afresh.
        inbox.unroute_pending(self.db)
        self._owner = LeaseOwner(self.config.database)
        self._thread_handled = 0
        # While a worker runs, `instantly-ghl-bridge reconcile` hands it its events instead
        # of writing to GHL beside it (a drain is not one); the kernel drops it with the process.
        from bridge.store import presence

        running = None if drain else presence.announce(self.config.database)
        try:
            handled = self._loop(drain)
            self._stop_threads()
            return handled + self._thread_handled
        finally:
            self._stop_threads()
            # Stopped (SIGTERM, Ctrl-C) or drained: what this loop holds is due at once for
            # the next one, and the id's lock goes with it.
            with contextlib.suppress(sqlite3.Error), store.immediate(self.db):
                leases.release(self.db, self._owner.id)
            self._owner.close()
            self._owner = None
            if running is not None:
                running.close()  # after its leases went back: reconcile may sync them

    def owner_id(self) -> str | None:
        return self._owner.id if self._owner else None

    def _loop(self, drain: bool) -> int:
        handled = 0
        while not self._stop.is_set():
            try:
                step = self._step(drain)
            except sqlite3.Error as exc:
                if drain:
                    raise
                # A full disk or a lock held too long: the event claimed, if any, comes
                # back when its lease ends; the worker waits and carries on.
                log.error("database error, retrying in %.0f s: %s", DB_RETRY_SECONDS, exc)
                self.sleep(DB_RETRY_SECONDS)
                continue
            if step is None:
                break
            handled += step
        return handled

    def _step(self, drain: bool) -> int | None:
        """One turn of the loop: events handled here, or None when a drain is over."""
        settings = self.settings.get(self.db)
        self._refresh(settings)
        if not self.lanes:
            if drain:
                return None
            self.sleep(5.0)
            return 0
        self._route()
        self._release_dead_owners()
        pruned = not drain and self._prune_a_batch()
        if not drain and len(self.lanes) > 1:
            self._start_threads()
            if not pruned:
                self.sleep(ROUTE_SECONDS)
            return 0
        return self._step_lanes(drain, pruned)

    def _step_lanes(self, drain: bool, pruned: bool) -> int | None:
        """Each lane's next events (one, or a batch when several are due), in this thread."""
        handled, waits = 0, []
        for lane in self.lanes.values():
            if lane.client is None:
                # It cannot sync until its token is set (a refresh builds it anew); a drain
                # leaves its queue as it is.
                if not drain:
                    waits.append(5.0)
                continue
            wait = lane.wait()
            if wait > 0:
                if drain and lane.paused_for():
                    log.warning(
                        "GHL writes to %s are paused; leaving its queue for the running worker",
                        lane.location.label,
                    )
                    continue
                held = lane.held() if drain else None
                if held:
                    log.warning("%s; leaving its queue for the running worker", held)
                    continue
                waits.append(wait)
                continue
            rows = lane.claim()
            if rows:
                lane.process_batch(rows, self.settings.get(self.db), self._stop.is_set)
                handled += len(rows)
        if handled:
            return handled
        if waits:
            self.sleep(min(min(waits), 5.0))
            return 0
        if drain:
            return None
        if not pruned:  # while a pass is under way, its next batch instead of a nap
            self.sleep(IDLE_SECONDS)
        return 0

    # --- locations ------------------------------------------------------------------------

    def _refresh(self, settings: dict, force: bool = False) -> None:
        """Read the locations again when the settings changed (or every few seconds, for a
        token entered on the page), and rebuild the lanes if a location changed."""
        now = time.monotonic()
        fresh = self._built_from is not None and self._built_from[0] is settings
        if fresh and not force and now < self._next_registry:
            return
        self._next_registry = now + REGISTRY_SECONDS
        registry = locations.build(self.config, settings, self.db)
        logs.add_secrets(registry.secret_values())
        shape = (
            settings,
            tuple(
                (loc.id, loc.token, loc.problem, repr(loc.overrides)) for loc in registry.locations
            ),
            registry.routes,
        )
        if self._built_from is not None and shape[1:] == self._built_from[1:]:
            self._built_from = shape
            self.registry = registry
            return
        routes_changed = self._built_from is not None and shape[2] != self._built_from[2]
        self._stop_threads()
        self.registry, self._built_from = registry, shape
        self.lanes = {loc.id: self._lane(loc, self.db) for loc in registry.locations}
        for lane in self.lanes.values():
            if lane.client is None:
                lane.hold_for_problem()
            else:
                lane.clear_setup_hold()
        if routes_changed:
            moved = inbox.unroute_pending(self.db)
            log.info("routes changed: %d queued events will be routed again", moved)

    def _lane(self, location: locations.Location, db: sqlite_utils.Database) -> Lane:
        return Lane(
            db, location, self._client_for(location, db), self.config.lease_seconds, self.owner_id
        )

    def _client_for(
        self, location: locations.Location, db: sqlite_utils.Database
    ) -> GHLClient | None:
        if self._given is not None and self._given.location_id == location.id:
            return self._given
        if location.problem or not location.token:
            return None
        budget = Budget(db, location.id, for_sync=True)
        budget.label = location.label
        return GHLClient(self.config.ghl_base_url, location.token, location.id, budget=budget)

    def _route(self) -> None:
        if self.registry is None:
            return
        routed = inbox.route_pending(self.db, self.registry.route, ROUTE_BATCH)
        for thread in self._threads:
            if thread.location.id in routed.locations:
                thread.wake.set()
        if routed.held:
            log.warning(
                "%d events held (unrouted): no route claims their campaign or workspace and"
                " there is no default location",
                routed.held,
            )

    def _start_threads(self) -> None:
        if self._threads:
            return
        settings_cache = SettingsCache()
        for location in self.registry.locations:
            if self.lanes[location.id].client is None:
                continue
            thread = LaneThread(self, location, settings_cache)
            thread.start()
            self._threads.append(thread)

    def _stop_threads(self) -> None:
        for thread in self._threads:
            thread.halt.set()
            thread.wake.set()
        for thread in self._threads:
            thread.join()
            self._thread_handled += thread.handled
        self._threads = []

    # --- upkeep ---------------------------------------------------------------------------

    def _release_dead_owners(self) -> None:
        """Free, at once, what a worker that died still holds (at most every few seconds:
        a check is a query and a flock per live owner)."""
        now = time.monotonic()
        if now < self._next_owner_check:
            return
        self._next_owner_check = now + OWNER_CHECK_SECONDS
        leases.release_dead_owners(self.db, self.config.database, self._owner.id)

    def _prune_a_batch(self) -> bool:
        """Take one batch of the pruning pass under way, or start one when it is time;
        True when a batch was taken. The pass's counts are logged when it ends."""
        if self._pruning is None:
            if time.monotonic() < self._next_prune:
                return False
            self._next_prune = time.monotonic() + PRUNE_SECONDS
            settings = self.settings.get(self.db)
            self._pruning = retention.batches(self.db, settings["retention"])
            self._pruned = retention.Pruned()
        batch = next(self._pruning, None)
        if batch is None:
            self._pruning = None
            if self._pruned.any():
                log.info(self._pruned.line())
            return False
        self._pruned.add(batch)
        return True


class LaneThread(threading.Thread):
    """One location's lane on its own thread and connection (a bridge with several)."""

    def __init__(self, worker: Worker, location: locations.Location, settings: SettingsCache):
        super().__init__(name=f"lane-{location.id}", daemon=True)
        self.worker = worker
        self.location = location
        self.settings = settings
        self.halt = threading.Event()
        # Set when events are routed to this lane (or it must stop): an idle lane wakes at
        # once instead of at its next poll.
        self.wake = threading.Event()
        self.handled = 0

    def run(self) -> None:
        db = store.connect(self.worker.config.database)
        lane = self.worker._lane(self.location, db)
        try:
            while not (self.halt.is_set() or self.worker._stop.is_set()):
                try:
                    self._turn(lane, db)
                except sqlite3.Error as exc:
                    log.error(
                        "%s: database error, retrying in %.0f s: %s",
                        self.location.label,
                        DB_RETRY_SECONDS,
                        exc,
                    )
                    self.halt.wait(DB_RETRY_SECONDS)
        finally:
            db.close()

    def _turn(self, lane: Lane, db: sqlite_utils.Database) -> None:
        wait = lane.wait()
        if wait > 0:
            self.halt.wait(min(wait, 5.0))
            return
        self.wake.clear()
        rows = lane.claim()
        if not rows:
            self.wake.wait(IDLE_SECONDS)
            return
        lane.process_batch(rows, self.settings.get(db), self._stopping)
        self.handled += len(rows)

    def _stopping(self) -> bool:
        # A lane rebuilt (halt) or a worker stopping hands back what its batch has left.
        return self.halt.is_set() or self.worker._stop.is_set()
