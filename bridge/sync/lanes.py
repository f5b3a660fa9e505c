"""One location's share of the worker: its GHL client (its token, its id, its rate window),
its pause and its errors. Each lane claims only the events routed to its location, so a
location that is paused, rate-limited or in an outage delays its own events only."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from bridge.clients import budget
from bridge.clients.ghl import (
    Call,
    GHLAuthError,
    GHLBudgetSpent,
    GHLClient,
    GHLError,
    GHLRateLimited,
    GHLRejected,
    GHLTransient,
)
from bridge.clients.ghl_conversations import GHLScopeMissing
from bridge.clock import now_iso
from bridge.locations.registry import Location
from bridge.settings import for_location
from bridge.store import inbox, state
from bridge.store.inbox import event_from_row
from bridge.sync import batch
from bridge.sync.dispatch import sync_event
from bridge.sync.fieldmap import FieldMapError

log = logging.getLogger("bridge.worker")

# While GHL rejects the token, try one event this often to see if it was fixed.
AUTH_PROBE_SECONDS = 60.0
# Events a lane takes at once when several are due, so that the tags they miss alike go in
# one call; the batch renews their leases as it goes.
BATCH_SIZE = 100


@dataclass(frozen=True)
class Held:
    """Trouble that holds a whole location: its events wait `seconds`, showing `why`."""

    seconds: float
    why: str


def backoff_delay(
    attempts: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: base * 2^(attempts-1), +-50%, capped."""
    raw = base * (2 ** max(0, attempts - 1))
    return min(cap, raw) * (0.5 + rand())


class Lane:
    """Syncs the events routed to one location, with that location's client only."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        location: Location,
        client: GHLClient | None,
        lease_seconds: float,
        owner: Callable[[], str | None],
    ):
        self.db = db
        self.location = location
        self.client = client
        if client is not None and client.recorder is None:
            client.recorder = self._record_call
        self.lease_seconds = lease_seconds
        self._owner = owner
        self._event_id: int | None = None
        self._renew_at = 0.0
        self._settings_for: tuple[dict, dict] | None = None
        self._pause_name = state.scoped(state.GHL_PAUSE, location.id)

    def settings(self, settings: dict) -> dict:
        """The bridge's settings with this location's overrides, made once per version (a
        new version is a new dict: the settings cache replaces it whole)."""
        if self._settings_for is None or self._settings_for[0] is not settings:
            self._settings_for = (settings, for_location(settings, self.location.overrides))
            if self.client is not None:
                sync = self._settings_for[1]["sync"]
                self.client.budget.reserve = sync["ghl_daily_reserve"]
                self.client.budget.probe_seconds = sync["ghl_daily_probe_seconds"]
        return self._settings_for[1]

    def wait(self) -> float:
        """Seconds before this lane may send to GHL (paused or its rate window full)."""
        if self.client is None:
            return 5.0
        return self.paused_for() or self.client.budget.delay()

    def held(self) -> str | None:
        """While this location's events wait for GHL's daily budget, the hold's sentence."""
        report = budget.report(self.db, self.location.id)
        return report.message(self.location.label) if report is not None else None

    def paused_for(self) -> float:
        pause = state.get(self.db, self._pause_name)
        if not pause:
            return 0.0
        return max(0.0, pause["probe_at"] - time.time())

    def hold_for_problem(self) -> None:
        """A location that cannot sync (no token, one that cannot be decrypted): its events
        wait, and the reason is shown as its pause."""
        if self.location.problem and not state.get(self.db, self._pause_name):
            state.put(
                self.db,
                self._pause_name,
                {"reason": self.location.problem, "since": now_iso(), "probe_at": 0, "setup": 1},
            )
            log.error("location %s waits: %s", self.location.label, self.location.problem)

    def clear_setup_hold(self) -> None:
        """The location can sync now: lift a hold made for a setup problem."""
        pause = state.get(self.db, self._pause_name)
        if pause and pause.get("setup"):
            state.delete(self.db, self._pause_name)

    def claim(self) -> list[dict[str, Any]]:
        """The next due event and, when more are due, up to BATCH_SIZE - 1 more of other
        contacts (empty: nothing is due). A lone event is claimed as it always was; nothing
        waits for a batch to fill."""
        first = inbox.claim_next(
            self.db, self.lease_seconds, owner=self._owner(), location_id=self.location.id
        )
        if first is None:
            return []
        more = inbox.claim_batch(
            self.db, self.location.id, BATCH_SIZE - 1, self.lease_seconds, owner=self._owner()
        )
        return [first, *more]

    def process_batch(
        self,
        rows: list[dict[str, Any]],
        settings: dict,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        """Sync claimed events (one per contact) and record each outcome; never raises for
        GHL trouble. One event goes exactly as `process` takes it. Several: each contact is
        written, the tags several of them miss alike go in one call (bridge/sync/batch.py),
        then each event ends through `process`, in claim order. Trouble that holds the whole
        location (a 429, the daily budget, a refused token), or `stopping()`, hands back the
        events not synced yet, not counted as an attempt."""
        if len(rows) == 1:
            self.process(rows[0], settings)
            return
        own = self.settings(settings)
        left = {row["id"]: row for row in rows}  # claimed, no outcome recorded yet
        self._renew_at = time.monotonic() + self.lease_seconds / 3
        shared: list[batch.Shared] = []
        for row in rows:
            if self._halted(left, stopping):
                return
            self._event_id = row["id"]
            try:
                item = batch.prepare(self.db, row, event_from_row(row), own, self.client)
            except Exception as exc:  # the event's own trouble, handled as it is alone
                del left[row["id"]]
                held = self._failed(row, own, exc)
                if held is not None:
                    self._hand_back(left, held)
                    return
                continue
            finally:
                self._event_id = None
            if item is not None:
                shared.append(item)
        notes: dict[int, str] = {}
        for group in batch.groups(shared):
            if len(group) < 2:
                continue
            if self._halted(left, stopping):
                return
            if not self._tag_together(group, own, left, notes):
                return
        for row in rows:
            if row["id"] not in left:
                continue
            if self._halted(left, stopping):
                return
            del left[row["id"]]
            held = self.process(row, settings, notes.get(row["id"]))
            if held is not None:
                self._hand_back(left, held)
                return

    def _tag_together(
        self,
        group: list[batch.Shared],
        settings: dict,
        left: dict[int, dict[str, Any]],
        notes: dict[int, str],
    ) -> bool:
        """One tag call for a group of the batch, its outcome recorded on each event (a note
        for those that end done, an error for those it fails); False when the trouble holds
        the location, and every event not synced yet was handed back."""
        first = group[0].event_id
        shared_by = f"the one GHL call for {len(group)} events, listed on event {first}"
        # The call is recorded once, against the group's first event: the sync log and
        # /metrics count calls made, and each other event's note names where it is.
        self._event_id = first
        try:
            unconfirmed = batch.add_tags_together(self.db, group, self.client)
        except GHLRejected as exc:
            # A 400 or 422 for the request as a whole: each event adds its tags on its own.
            log.warning("%s refused (%s): each event adds its tags on its own", shared_by, exc)
            return True
        except Exception as exc:  # each event gets what its own call failing so would get
            for item in group:
                del left[item.event_id]
                held = self._failed(item.row, settings, exc)
                if held is not None:
                    # Recorded once for the location (its pause, its error); the rest of the
                    # batch, this group's other events with it, is handed back.
                    self._hand_back(left, held)
                    return False
            return True
        finally:
            self._event_id = None
        for item in group:
            message = unconfirmed.get(item.event_id)
            notes[item.event_id] = (
                f"tags added by {shared_by}"
                if message is None
                else f"GHL did not confirm its tags in {shared_by} ({message}); added on its own"
            )
        return True

    def _halted(self, left: dict[int, dict[str, Any]], stopping: Callable[[], bool]) -> bool:
        """Between two steps of a batch: keep its leases, and hand back what is left when
        the worker is stopping (True then)."""
        if stopping():
            self._hand_back(left, Held(0.0, "handed back: the worker stopped before syncing it"))
            return True
        if left and time.monotonic() >= self._renew_at:
            inbox.renew_leases(self.db, list(left), self.lease_seconds, self._owner())
            self._renew_at = time.monotonic() + self.lease_seconds / 3
        return False

    def _hand_back(self, left: dict[int, dict[str, Any]], held: Held) -> None:
        """Put the batch's events not synced yet back in the queue: the location waits, not
        they, so no attempt is counted."""
        for event_id in left:
            inbox.retry_later(self.db, event_id, held.seconds, held.why, count_attempt=False)
        if left:
            log.warning(
                "%d more events of the batch wait %.0f s: %s", len(left), held.seconds, held.why
            )
        left.clear()

    def process(self, row: dict[str, Any], settings: dict, note: str | None = None) -> Held | None:
        """Sync one claimed event and record its outcome (with `note` added to a done one's);
        never raises for GHL trouble. Returns the wait when the event's trouble holds the
        whole location (a 429, the daily budget, a refused token), else None."""
        settings = self.settings(settings)
        event = event_from_row(row)
        self._event_id = row["id"]
        try:
            outcome = sync_event(self.db, event, settings, self.client)
        except Exception as exc:  # a bug must not stop the worker or lose the event
            return self._failed(row, settings, exc)
        finally:
            self._event_id = None
        if outcome.status == "done" and note:
            note = f"{outcome.note}; {note}" if outcome.note else note
        else:
            note = outcome.note
        inbox.finish(self.db, row["id"], outcome.status, outcome.contact_id, note)
        self._resume_if_paused()
        log.info(
            "event %d %s: %s %s -> %s in %s",
            row["id"],
            outcome.status,
            event.event_type,
            event.email,
            outcome.contact_id or "-",
            self.location.label,
        )
        return None

    def _failed(self, row: dict[str, Any], settings: dict, exc: Exception) -> Held | None:
        """Record how an event's sync failed (called while `exc` is handled); returns the
        wait when the trouble holds the whole location, else None."""
        if isinstance(exc, GHLBudgetSpent):
            # Not the event's fault and no GHL answer: no attempt counted, never dead, and
            # no pause written (the hold lives in the budget's row).
            inbox.retry_later(self.db, row["id"], exc.retry_after, exc.message, False)
            log.warning("event %d waits %.0f s: %s", row["id"], exc.retry_after, exc.message)
            return Held(exc.retry_after, exc.message)
        if isinstance(exc, GHLRateLimited):
            delay = exc.retry_after if exc.retry_after is not None else 10.0
            inbox.retry_later(self.db, row["id"], delay, str(exc), count_attempt=False)
            self._note_error(exc)
            if exc.asked:
                # Asking for more than the cap is a broken answer: /healthz shows it.
                capped = {"asked": exc.asked, "waited_seconds": delay, "at": now_iso()}
                state.put(
                    self.db, state.scoped(state.GHL_RETRY_AFTER_CAPPED, self.location.id), capped
                )
            log.warning("event %d: GHL rate limit, retrying in %.1f s", row["id"], delay)
            return Held(delay, str(exc))
        if isinstance(exc, GHLScopeMissing):
            # The token works, one optional action's scope is not granted: the location's
            # other writes go on, and this event waits in the dead letters for a replay (its
            # contact and tags were written before the action ran).
            message = (
                f"GHL conversations: the token lacks the {exc.scope} scope: add it to the"
                " Private Integration, then replay"
            )
            inbox.dead(self.db, row["id"], message)
            self._note_error(exc)
            log.error("event %d dead: %s", row["id"], message)
            return None
        if isinstance(exc, GHLAuthError):
            self._pause(exc)
            inbox.retry_later(self.db, row["id"], AUTH_PROBE_SECONDS, str(exc), count_attempt=False)
            return Held(AUTH_PROBE_SECONDS, str(exc))
        if isinstance(exc, GHLTransient):
            self._retry_or_dead(row, settings, str(exc))
            self._note_error(exc)
        elif isinstance(exc, GHLRejected):
            inbox.dead(self.db, row["id"], str(exc))
            self._note_error(exc)
            log.error("event %d dead: %s", row["id"], exc)
        elif isinstance(exc, FieldMapError):
            inbox.dead(self.db, row["id"], str(exc))
            log.error("event %d dead: %s", row["id"], exc)
        else:
            log.exception("event %d: unexpected error", row["id"])
            self._retry_or_dead(row, settings, f"internal error: {type(exc).__name__}: {exc}")
        return None

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
        token = self.location.token_source or "the token"
        reason = (
            f"GHL answered {exc.status} ({exc.message}) for location {self.location.label}:"
            f" check {token} and its scopes"
        )
        state.put(
            self.db,
            self._pause_name,
            {"reason": reason, "since": now_iso(), "probe_at": time.time() + AUTH_PROBE_SECONDS},
        )
        self._note_error(exc)
        log.error("GHL writes to %s paused: %s", self.location.label, reason)

    def _resume_if_paused(self) -> None:
        if state.get(self.db, self._pause_name):
            state.delete(self.db, self._pause_name)
            log.info("GHL writes to %s resumed", self.location.label)

    def _note_error(self, exc: GHLError) -> None:
        state.put(
            self.db,
            state.scoped(state.GHL_LAST_ERROR, self.location.id),
            {"status": exc.status, "message": exc.message, "at": now_iso()},
        )

    def _record_call(self, call: Call) -> None:
        self.db["ghl_calls"].insert(
            {
                "event_id": self._event_id,
                "location_id": self.location.id,
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
        state.note_ghl_call(self.db, call.status, self.location.id)
