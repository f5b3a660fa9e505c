"""One location's share of the worker: its GHL client (its token, its id, its rate window),
its pause and its errors. Each lane claims only the events routed to its location, so a
location that is paused, rate-limited or in an outage delays its own events only."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
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
from bridge.locations.registry import Location
from bridge.settings import for_location
from bridge.store import inbox, state
from bridge.store.inbox import event_from_row
from bridge.sync.dispatch import sync_event
from bridge.sync.fieldmap import FieldMapError

log = logging.getLogger("bridge.worker")

# While GHL rejects the token, try one event this often to see if it was fixed.
AUTH_PROBE_SECONDS = 60.0


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
        self._settings_for: tuple[dict, dict] | None = None
        self._pause_name = state.scoped(state.GHL_PAUSE, location.id)

    def settings(self, settings: dict) -> dict:
        """The bridge's settings with this location's overrides, made once per version (a
        new version is a new dict: the settings cache replaces it whole)."""
        if self._settings_for is None or self._settings_for[0] is not settings:
            self._settings_for = (settings, for_location(settings, self.location.overrides))
        return self._settings_for[1]

    def wait(self) -> float:
        """Seconds before this lane may send to GHL (paused or its rate window full)."""
        if self.client is None:
            return 5.0
        return self.paused_for() or self.client.budget.delay()

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

    def claim(self) -> dict[str, Any] | None:
        return inbox.claim_next(
            self.db, self.lease_seconds, owner=self._owner(), location_id=self.location.id
        )

    def process(self, row: dict[str, Any], settings: dict) -> None:
        """Sync one claimed event and record its outcome; never raises for GHL trouble."""
        settings = self.settings(settings)
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
                state.put(
                    self.db, state.scoped(state.GHL_RETRY_AFTER_CAPPED, self.location.id), capped
                )
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
                "event %d %s: %s %s -> %s in %s",
                row["id"],
                outcome.status,
                event.event_type,
                event.email,
                outcome.contact_id or "-",
                self.location.label,
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
