"""The worker: claim due events, sync them, record what happened. One path for all events."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlite_utils

from bridge.clients.ghl import (
    Call,
    GHLAuthError,
    GHLClient,
    GHLError,
    GHLRateLimited,
    GHLRejected,
    GHLTransient,
)
from bridge.clock import now_iso
from bridge.config import Config
from bridge.settings import SettingsCache, SettingsError
from bridge.store import db as store
from bridge.store import inbox, leases, retention, state
from bridge.store.inbox import event_from_row
from bridge.store.leases import LeaseOwner
from bridge.sync.dispatch import sync_event
from bridge.sync.fieldmap import FieldMapError

log = logging.getLogger("bridge.worker")

IDLE_SECONDS = 0.5
DB_RETRY_SECONDS = 5.0
# While GHL rejects the token, try one event this often to see if it was fixed.
AUTH_PROBE_SECONDS = 60.0
# How often the loop looks for leases held by a worker that died.
OWNER_CHECK_SECONDS = 2.0
# How often a pruning pass starts (bridge/store/retention.py); its batches are then taken
# one per turn of the loop, between claims.
PRUNE_SECONDS = 300.0


def backoff_delay(
    attempts: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: base * 2^(attempts-1), +-50%, capped."""
    raw = base * (2 ** max(0, attempts - 1))
    return min(cap, raw) * (0.5 + rand())


class Worker:
    """Processes the inbox until stopped (or, with drain, until nothing is due)."""

    def __init__(
        self,
        config: Config,
        client: GHLClient | None = None,
        db: sqlite_utils.Database | None = None,
        sleep: Callable[[float], None] | None = None,
    ):
        self.config = config
        self.db = db or store.connect(config.database)
        self.settings = SettingsCache()
        self._event_id: int | None = None
        self.client = client or self._default_client()
        if self.client is not None and self.client.recorder is None:
            self.client.recorder = self._record_call
        self._stop = threading.Event()
        self._owner: LeaseOwner | None = None  # while run() runs
        self._next_owner_check = 0.0
        self._next_prune = 0.0
        self._pruning: Iterator[retention.Pruned] | None = None
        self._pruned = retention.Pruned()
        self.sleep = sleep or self._stop.wait

    def _default_client(self) -> GHLClient | None:
        if not self.config.ghl_configured:
            return None
        return GHLClient(
            self.config.ghl_base_url,
            self.config.ghl_token,
            self.config.ghl_location_id,
            recorder=self._record_call,
        )

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
        if self.client is None:
            log.warning("GHL_TOKEN / GHL_LOCATION_ID not set: events stay queued until they are")
        try:
            # Settings that would let retention forget replies reconciliation still reads
            # (retention.event_days against the look-back) stop the worker here.
            self.settings.get(self.db)
        except SettingsError as exc:
            log.error("worker not started: %s", exc)
            raise
        self._owner = LeaseOwner(self.config.database)
        try:
            return self._loop(drain)
        finally:
            # Stopped (SIGTERM, Ctrl-C) or drained: what this loop holds is due at once for
            # the next one, and the id's lock goes with it.
            with contextlib.suppress(sqlite3.Error), store.immediate(self.db):
                leases.release(self.db, self._owner.id)
            self._owner.close()
            self._owner = None

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
        """One turn of the loop: events handled (0 or 1), or None when a drain is over."""
        if self.client is None:
            if drain:
                return None
            self.sleep(5.0)
            return 0
        paused = self._paused_for()
        if paused and drain:
            log.warning("GHL writes are paused; leaving the queue for the running worker")
            return None
        wait = paused or self.client.limiter.delay()
        if wait > 0:
            self.sleep(min(wait, 5.0))
            return 0
        self._release_dead_owners()
        pruned = not drain and self._prune_a_batch()
        row = inbox.claim_next(self.db, self.config.lease_seconds, owner=self._owner.id)
        if row is None:
            if drain:
                return None
            if not pruned:  # while a pass is under way, its next batch instead of a nap
                self.sleep(IDLE_SECONDS)
            return 0
        self.process(row)
        return 1

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

    def _paused_for(self) -> float:
        pause = state.get(self.db, state.GHL_PAUSE)
        if not pause:
            return 0.0
        return max(0.0, pause["probe_at"] - time.time())

    def process(self, row: dict[str, Any]) -> None:
        """Sync one claimed event and record its outcome; never raises for GHL trouble."""
        settings = self.settings.get(self.db)
        event = event_from_row(row)
        self._event_id = row["id"]
        try:
            outcome = sync_event(self.db, event, settings, self.client)
        except GHLRateLimited as exc:
            delay = exc.retry_after if exc.retry_after is not None else 10.0
            inbox.retry_later(self.db, row["id"], delay, str(exc), count_attempt=False)
            self._note_error(exc)
            if exc.asked:
                # Asking for more than the cap is a broken answer: /healthz shows it.
                capped = {"asked": exc.asked, "waited_seconds": delay, "at": now_iso()}
                state.put(self.db, state.GHL_RETRY_AFTER_CAPPED, capped)
            log.warning("event %d: GHL rate limit, retrying in %.1f s", row["id"], delay)
        except GHLAuthError as exc:
            self._pause(exc)
            inbox.retry_later(self.db, row["id"], AUTH_PROBE_SECONDS, str(exc), count_attempt=False)
        except GHLTransient as exc:
            self._retry_or_dead(row, settings, str(exc))
            self._note_error(exc)
        except GHLRejected as exc:
            inbox.dead(self.db, row["id"], str(exc))
            self._note_error(exc)
            log.error("event %d dead: %s", row["id"], exc)
        except FieldMapError as exc:
            inbox.dead(self.db, row["id"], str(exc))
            log.error("event %d dead: %s", row["id"], exc)
        except Exception as exc:  # a bug must not stop the worker or lose the event
            log.exception("event %d: unexpected error", row["id"])
            self._retry_or_dead(row, settings, f"internal error: {type(exc).__name__}: {exc}")
        else:
            inbox.finish(self.db, row["id"], outcome.status, outcome.contact_id, outcome.note)
            self._resume_if_paused()
            log.info(
                "event %d %s: %s %s -> %s",
                row["id"],
                outcome.status,
                event.event_type,
                event.email,
                outcome.contact_id or "-",
            )
        finally:
            self._event_id = None

    def _retry_or_dead(self, row: dict[str, Any], settings: dict, error: str) -> None:
        sync = settings["sync"]
        if row["attempts"] >= sync["max_attempts"]:
            inbox.dead(self.db, row["id"], f"gave up after {row['attempts']} attempts: {error}")
            log.error("event %d dead after %d attempts: %s", row["id"], row["attempts"], error)
            return
        delay = backoff_delay(
            row["attempts"], sync["backoff_base_seconds"], sync["backoff_max_seconds"]
        )
        inbox.retry_later(self.db, row["id"], delay, error)
        log.warning(
            "event %d attempt %d failed, retry in %.0f s: %s",
            row["id"],
            row["attempts"],
            delay,
            error,
        )

    def _pause(self, exc: GHLAuthError) -> None:
        reason = f"GHL answered {exc.status} ({exc.message}): check GHL_TOKEN and its scopes"
        state.put(
            self.db,
            state.GHL_PAUSE,
            {
                "reason": reason,
                "since": now_iso(),
                "probe_at": time.time() + AUTH_PROBE_SECONDS,
            },
        )
        self._note_error(exc)
        log.error("GHL writes paused: %s", reason)

    def _resume_if_paused(self) -> None:
        if state.get(self.db, state.GHL_PAUSE):
            state.delete(self.db, state.GHL_PAUSE)
            log.info("GHL writes resumed")

    def _note_error(self, exc: GHLError) -> None:
        state.put(
            self.db,
            state.GHL_LAST_ERROR,
            {"status": exc.status, "message": exc.message, "at": now_iso()},
        )

    def _record_call(self, call: Call) -> None:
        self.db["ghl_calls"].insert(
            {
                "event_id": self._event_id,
                "method": call.method,
                "path": call.path,
                "status": call.status,
                "duration_ms": call.duration_ms,
                "error": call.error,
                "request": call.request,
                "at": now_iso(),
            }
        )
        # /healthz tells a GHL outage from a blip by how long calls have failed in a row.
        state.note_ghl_call(self.db, call.status)
