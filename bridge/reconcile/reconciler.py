"""Reconciliation: find the replies and interest statuses that webhooks missed.

Polling feeds the same inbox as the webhook, with the keys a webhook would have given
the same events, so whatever both paths see is stored (and synced) once. It reads page
by page and never holds more than a page of leads: memory stays flat however many
leads a workspace has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from bridge.clients.instantly import (
    PAGE_LIMIT,
    InstantlyAuthError,
    InstantlyClient,
    InstantlyError,
    Page,
    Stopped,
    pages,
)
from bridge.clock import iso, parse_time
from bridge.events.event import Event, idempotency_key, normalise_email
from bridge.events.polled import best_lead, interest_event, lead_email, reply_event
from bridge.events.types import EVENT_BY_STATUS, STATUS_BY_CODE, interest_status, is_synced
from bridge.store import inbox, state
from bridge.store.db import immediate

log = logging.getLogger("bridge.reconcile")

REPLIES = "replies"
STATUSES = "statuses"
WATERMARK_PREFIX = "reconcile_watermark:"
REPLY_TYPES = {False: "reply_received", True: "auto_reply_received"}
RECEIVED = 2  # Email.ue_type of a received email
# leads/list filters that return only the leads holding one status.
FILTER_BY_STATUS = {
    "interested": "FILTER_LEAD_INTERESTED",
    "not_interested": "FILTER_LEAD_NOT_INTERESTED",
    "meeting_booked": "FILTER_LEAD_MEETING_BOOKED",
    "meeting_completed": "FILTER_LEAD_MEETING_COMPLETED",
    "closed": "FILTER_LEAD_CLOSED",
    "out_of_office": "FILTER_LEAD_OUT_OF_OFFICE",
    "wrong_person": "FILTER_LEAD_WRONG_PERSON",
    "lost": "FILTER_LEAD_LOST",
    "no_show": "FILTER_LEAD_NO_SHOW",
}
# Custom labels by their sentiment; neutral ones have no filter, so need a full read.
FILTER_BY_LABEL_KIND = {
    "positive": "FILTER_LEAD_CUSTOM_LABEL_POSITIVE",
    "negative": "FILTER_LEAD_CUSTOM_LABEL_NEGATIVE",
}


@dataclass(frozen=True)
class Options:
    """What one run covers. Empty campaigns and lists mean what settings choose."""

    since: datetime | None = None
    until: datetime | None = None
    campaigns: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()
    replies: bool = True
    statuses: bool = True
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"] = iso(self.since) if self.since else None
        out["until"] = iso(self.until) if self.until else None
        out["campaigns"], out["lists"] = list(self.campaigns), list(self.lists)
        return out


@dataclass
class PassStats:
    """What one pass (replies or statuses) did."""

    pages: int = 0
    calls: int = 0
    read: int = 0  # emails or leads read
    found: int = 0  # events the poll would produce
    known: int = 0  # of those, already in the inbox
    new: int = 0  # of those, enqueued now (or, in a dry run, that would be)
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class Summary:
    """A run's outcome: for the CLI's table, the run log, the page and /healthz."""

    started_at: str
    dry_run: bool = False
    finished_at: str = ""
    status: str = "running"  # running | ok | error | stopped
    since: str | None = None
    until: str | None = None
    watermark_before: str | None = None
    watermark_after: str | None = None
    replies: PassStats = field(default_factory=PassStats)
    statuses: PassStats = field(default_factory=PassStats)
    planned: list[Event] = field(default_factory=list)  # dry run: what would be enqueued
    new_event_ids: list[int] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return self.replies.errors + self.statuses.errors

    def totals(self) -> dict[str, int]:
        names = ("pages", "calls", "read", "found", "known", "new")
        return {n: getattr(self.replies, n) + getattr(self.statuses, n) for n in names}

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "since": self.since,
            "until": self.until,
            "watermark_before": self.watermark_before,
            "watermark_after": self.watermark_after,
            REPLIES: asdict(self.replies),
            STATUSES: asdict(self.statuses),
            "totals": self.totals(),
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Progress:
    """Where a run is, for a progress bar: `fraction` is None when the end is unknown."""

    name: str
    stats: PassStats
    fraction: float | None


@dataclass(frozen=True)
class _Wanted:
    event_type: str
    status: str  # the name the contact map keeps
    filter: str | None


def watermark_name(source: str, workspace_id: str = "") -> str:
    """The state name of a workspace's watermark. INSTANTLY_API_KEY's undeclared workspace
    ('') keeps the name a single-workspace bridge always used, so its watermark carries on."""
    name = WATERMARK_PREFIX + source
    return state.scoped(name, workspace_id) if workspace_id else name


def watermark(db: sqlite_utils.Database, source: str, workspace_id: str = "") -> datetime | None:
    """The newest time up to which `source` of a workspace is known to be in the inbox."""
    return parse_time(state.get(db, watermark_name(source, workspace_id)))


class Reconciler:
    """One reconciliation run against one Instantly workspace.

    `workspace_id` is the declared workspace polled ('' for INSTANTLY_API_KEY's undeclared
    one); `route` gives the location an event of (campaign, workspace) goes to, so a lead's
    applied status is read from that location's contact map; `routed_campaigns` are the
    campaigns [[locations]] route, which the statuses pass adds to reconcile.campaigns.
    """

    def __init__(
        self,
        db: sqlite_utils.Database,
        client: InstantlyClient,
        settings: dict,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_progress: Callable[[Progress], None] | None = None,
        heartbeat: Callable[[], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        workspace_id: str = "",
        route: Callable[[str, str], str | None] | None = None,
        routed_campaigns: tuple[str, ...] = (),
    ):
        self.db = db
        self.client = client
        self.settings = settings
        self.now = now
        self.on_progress = on_progress
        self.heartbeat = heartbeat
        self.should_stop = should_stop
        self.workspace_id = workspace_id
        self.route = route
        self.routed_campaigns = routed_campaigns
        self._campaign_names: dict[str, str] | None = None
        self._planned_keys: set[str] = set()

    def run(self, options: Options) -> Summary:
        """Run the chosen passes; errors are recorded in the summary, never raised."""
        summary = Summary(started_at=iso(self.now()), dry_run=options.dry_run)
        passes = [(REPLIES, options.replies, self.reconcile_replies)]
        passes.append((STATUSES, options.statuses, self.reconcile_statuses))
        halted = ""
        for name, wanted, method in passes:
            stats: PassStats = getattr(summary, name)
            if not wanted:
                stats.skipped = f"{name} not requested"
                continue
            if halted:
                stats.skipped = f"not run: {halted}"
                continue
            calls_before = self.client.calls
            try:
                method(options, stats, summary)
            except Stopped:
                summary.status = "stopped"
                halted = "the run was stopped"
            except InstantlyAuthError as exc:
                # The same key fails every call: report it once, do not repeat it.
                stats.errors.append(str(exc))
                halted = "Instantly refused the key"
            except InstantlyError as exc:
                stats.errors.append(str(exc))
            except Exception as exc:  # a bug must not lose the run's record or the worker
                log.exception("reconcile %s pass failed", name)
                stats.errors.append(f"internal error: {type(exc).__name__}: {exc}")
            finally:
                stats.calls = self.client.calls - calls_before
        if summary.status != "stopped":
            summary.status = "error" if summary.errors else "ok"
        summary.finished_at = iso(self.now())
        return summary

    # --- replies --------------------------------------------------------------------------

    def reconcile_replies(self, options: Options, stats: PassStats, summary: Summary) -> None:
        """Page through received emails from the watermark (less the overlap) onwards."""
        wanted = {auto: t for auto, t in REPLY_TYPES.items() if is_synced(self.settings, t)}
        if not wanted:
            stats.skipped = "reply_received is not synced in settings"
            return
        config = self.settings["reconcile"]
        stored = watermark(self.db, REPLIES, self.workspace_id)
        now = self.now()
        if options.since is not None:
            since = options.since
        elif stored is not None:
            since = stored - timedelta(minutes=config["overlap_minutes"])
        else:
            since = now - timedelta(days=config["first_run_days"])
        until = options.until
        scoped = bool(options.campaigns or options.lists)
        # The watermark moves only when this run read on from it, for every campaign:
        # a later --since or a campaign filter would leave a gap behind it.
        advance = not options.dry_run and not scoped and (stored is None or since <= stored)
        summary.since = iso(since)
        summary.until = iso(until) if until else None
        summary.watermark_before = iso(stored) if stored else None
        summary.watermark_after = summary.watermark_before

        filters: dict[str, Any] = {
            "email_type": "received",
            "sort_order": "asc",
            "min_timestamp_created": iso(since),
        }
        if until is not None:
            filters["max_timestamp_created"] = iso(until)
        scopes: list[dict[str, str]] = [{"campaign_id": c} for c in options.campaigns]
        scopes += [{"list_id": x} for x in options.lists]
        span = max(1.0, ((until or now) - since).total_seconds())
        mark = stored
        for scope in scopes or [{}]:

            def fetch(cursor: str | None, scope: dict[str, str] = scope) -> Page:
                return self.client.list_emails(cursor, **filters, **scope)

            for page in self._pages(fetch, stats):
                events, newest = self._reply_events(page.items, wanted, stats)
                moved = None
                if advance and newest is not None and (mark is None or newest > mark):
                    mark = moved = newest
                self._commit(events, stats, summary, REPLIES if moved else None, moved)
                if moved:
                    summary.watermark_after = iso(moved)
                done = ((newest - since).total_seconds() / span) if newest else None
                self._progress(REPLIES, stats, None if done is None else min(1.0, done))

    def _reply_events(
        self, items: list[dict[str, Any]], wanted: dict[bool, str], stats: PassStats
    ) -> tuple[list[Event], datetime | None]:
        """The page's replies not yet in the inbox, with lead data; and its newest time."""
        newest = max(
            (t for t in (parse_time(i.get("timestamp_created")) for i in items) if t), default=None
        )
        candidates: list[tuple[dict[str, Any], str, str]] = []
        for item in items:
            if item.get("ue_type") not in (None, RECEIVED):
                continue
            event_type = wanted.get(bool(item.get("is_auto_reply")))
            address = normalise_email(item.get("lead")) or normalise_email(
                item.get("from_address_email")
            )
            # No id or no lead address: a webhook could not carry this reply either.
            if event_type and address and item.get("id"):
                candidates.append((item, event_type, address))
        stats.found += len(candidates)
        known = self._known_keys([f"reply:{item['id']}" for item, _, _ in candidates])
        fresh: dict[str, tuple[dict[str, Any], str, str]] = {}
        for candidate in candidates:
            key = f"reply:{candidate[0]['id']}"
            if key not in known and key not in fresh:
                fresh[key] = candidate
        stats.known += len(candidates) - len(fresh)
        if not fresh:
            return [], newest
        leads = self._leads_for({address for _, _, address in fresh.values()})
        events = []
        for item, event_type, address in fresh.values():
            campaign_id = str(item.get("campaign_id") or "")
            lead = best_lead(leads.get(address, []), campaign_id)
            event = reply_event(item, event_type, lead, self._campaign_name(campaign_id))
            if event is not None:
                events.append(event)
        return events, newest

    def _leads_for(self, addresses: set[str]) -> dict[str, list[dict[str, Any]]]:
        """Lead records for these emails, in batches of 100 (never one call per lead)."""
        wanted = set(addresses)
        found: dict[str, list[dict[str, Any]]] = {}
        for lead in self.client.leads_by_email(sorted(wanted)):
            address = lead_email(lead)
            if address in wanted:
                found.setdefault(address, []).append(lead)
        return found

    # --- interest statuses ----------------------------------------------------------------

    def reconcile_statuses(self, options: Options, stats: PassStats, summary: Summary) -> None:
        """Compare each chosen lead's interest status with the one last applied."""
        wanted = self._wanted_statuses()
        if not wanted:
            stats.skipped = "no interest event is synced in settings"
            return
        config = self.settings["reconcile"]
        if options.campaigns or options.lists:
            campaigns, lists = options.campaigns, options.lists
        else:
            campaigns, lists = tuple(config["campaigns"]), tuple(config["lists"])
            if campaigns:
                campaigns += self._routed_here(campaigns)
        scopes: list[dict[str, Any]] = [{"campaign": c} for c in campaigns]
        scopes += [{"list_id": x} for x in lists]
        needed = {w.filter for w in wanted.values()}
        filters = None if None in needed else sorted(f for f in needed if f)
        for scope in scopes or [{"in_campaign": True}]:
            self._scan_scope(scope, wanted, filters, options, stats, summary)

    def _scan_scope(
        self,
        scope: dict[str, Any],
        wanted: dict[int, _Wanted],
        filters: list[str] | None,
        options: Options,
        stats: PassStats,
        summary: Summary,
    ) -> None:
        """Read the leads of a scope that hold a synced status, in the fewer calls.

        A plain lead (no status) never needs an event, so the status filters usually cost
        far less than the whole scope. But each filter costs at least a call, and more
        than the whole read when most leads hold a status. So the first page is read
        whole: a short first page (the scope ends) or one where most leads hold a synced
        status is read whole to the end; otherwise the filters take over, skipping the
        leads already compared. A synced status without a filter (a neutral custom label)
        always needs the whole read.
        """

        def read(cursor: str | None, name: str | None = None) -> Page:
            if name is None:
                return self.client.list_leads(cursor, **scope)
            return self.client.list_leads(cursor, **scope, filter=name)

        seen: set[str] = set()
        for number, page in enumerate(self._pages(read, stats)):
            self._status_page(page.items, wanted, options, stats, summary)
            self._progress(STATUSES, stats, None)
            if number == 0 and filters is not None and not _read_whole(page, wanted):
                seen = {str(lead.get("id")) for lead in page.items}
                break
        else:
            return
        for name in filters:
            for page in self._pages(lambda cursor, name=name: read(cursor, name), stats):
                fresh = [lead for lead in page.items if str(lead.get("id")) not in seen]
                self._status_page(fresh, wanted, options, stats, summary)
                self._progress(STATUSES, stats, None)

    def _status_page(
        self,
        leads: list[dict[str, Any]],
        wanted: dict[int, _Wanted],
        options: Options,
        stats: PassStats,
        summary: Summary,
    ) -> None:
        """One page: leads whose synced status differs from the contact map's."""
        rows = []
        for lead in leads:
            target = wanted.get(_status_code(lead.get("lt_interest_status")))  # type: ignore[arg-type]
            address = lead_email(lead)
            if target is not None and address:
                rows.append((lead, (self._location_of(lead), address), target))
        if not rows:
            return  # a page of plain leads costs no query at all
        applied = self._applied_statuses({contact for _, contact, _ in rows})
        candidates: list[tuple[dict[str, Any], _Wanted, str]] = []
        for lead, contact, target in rows:
            changed = str(
                lead.get("timestamp_last_interest_change") or lead.get("timestamp_updated") or ""
            )
            changed_at = parse_time(changed)
            if changed_at is not None:
                if options.since is not None and changed_at < options.since:
                    continue
                if options.until is not None and changed_at > options.until:
                    continue
            status, status_at = applied.get(contact, (None, None))
            if status == target.status:
                continue
            applied_at = parse_time(status_at)
            if applied_at is not None and changed_at is not None and changed_at <= applied_at:
                continue  # the contact already holds a newer status
            candidates.append((lead, target, changed))
        stats.found += len(candidates)
        if not candidates:
            return
        keyed = {}
        for lead, target, changed in candidates:
            address, campaign_id = lead_email(lead), str(lead.get("campaign") or "")
            key = idempotency_key(target.event_type, address, campaign_id, changed, "")
            keyed.setdefault(key, (lead, target, changed, address))
        known = self._known_keys(list(keyed))
        known |= self._queued_keys({k: (v[3], v[1].event_type) for k, v in keyed.items()})
        events = []
        for key, (lead, target, changed, _) in keyed.items():
            if key in known:
                continue
            name = self._campaign_name(str(lead.get("campaign") or ""))
            event = interest_event(lead, target.event_type, name, changed)
            if event is not None:
                events.append(event)
        stats.known += len(candidates) - len(events)
        self._commit(events, stats, summary, None, None)

    def _wanted_statuses(self) -> dict[int, _Wanted]:
        """Numeric lt_interest_status -> the event it becomes, for the synced ones."""
        wanted: dict[int, _Wanted] = {}
        for code, status in STATUS_BY_CODE.items():
            event_type = EVENT_BY_STATUS[status]
            if is_synced(self.settings, event_type):
                wanted[code] = _Wanted(event_type, status, FILTER_BY_STATUS[status])
        # Custom labels arrive by webhook with the label text as event_type.
        for page in pages(self.client.list_lead_labels):
            for label in page.items:
                code = _status_code(label.get("interest_status"))
                text = str(label.get("label") or "").strip()
                if code is None or code in STATUS_BY_CODE or not text:
                    continue
                if is_synced(self.settings, text):
                    kind = label.get("interest_status_label")
                    status = interest_status(text) or text  # as the contact map keeps it
                    wanted[code] = _Wanted(text, status, FILTER_BY_LABEL_KIND.get(kind))
        return wanted

    def _applied_statuses(
        self, wanted: set[tuple[str | None, str]]
    ) -> dict[tuple[str | None, str], tuple[str | None, str | None]]:
        """The contact map's interest status per (location, email): one query a location
        for a page. Without routes (one location) the location is None and any row
        counts; a lead no route claims (its event would be held) has none applied."""
        out: dict[tuple[str | None, str], tuple[str | None, str | None]] = {}
        by_location: dict[str | None, list[str]] = {}
        for location, email in wanted:
            by_location.setdefault(location, []).append(email)
        for location, emails in by_location.items():
            if location is None and self.route is not None:
                continue
            marks = ",".join("?" * len(emails))
            sql = (
                f"SELECT email, interest_status, interest_at FROM contacts WHERE email IN ({marks})"
            )
            args: list[str] = sorted(emails)
            if location is not None:
                sql += " AND location_id = ?"
                args.append(location)
            for email, status, at in self.db.execute(sql, args):
                out[(location, email)] = (status, at)
        return out

    def _location_of(self, lead: dict[str, Any]) -> str | None:
        """The location a lead's event would be synced to (None: held, or no routes)."""
        if self.route is None:
            return None
        return self.route(
            str(lead.get("campaign") or ""), self._workspace_of(lead.get("organization"))
        )

    def _workspace_of(self, organization: Any) -> str:
        """The workspace an event found here belongs to: the declared one polled, else the
        one Instantly names in the item (as a webhook delivery's `workspace` would)."""
        return self.workspace_id or (str(organization) if organization else "")

    def _routed_here(self, configured: tuple[str, ...]) -> tuple[str, ...]:
        """The routed campaigns this workspace lists, beyond those configured: each
        workspace polls only what it can see, so no call is spent on another's campaign."""
        extra = [c for c in dict.fromkeys(self.routed_campaigns) if c not in configured]
        if not extra:
            return ()
        visible = self._campaigns()
        return tuple(c for c in extra if c in visible)

    def _queued_keys(self, wanted: dict[str, tuple[str, str]]) -> set[str]:
        """Of these keys (-> email, event type), those whose lead already has the same
        kind of event waiting in the inbox (a webhook delivery not yet applied)."""
        emails = sorted({email for email, _ in wanted.values()})
        marks = ",".join("?" * len(emails))
        waiting = set(
            self.db.execute(
                "SELECT email, event_type FROM events WHERE status IN ('pending', 'processing')"
                f" AND email IN ({marks})",
                emails,
            )
        )
        return {key for key, pair in wanted.items() if pair in waiting}

    # --- shared ---------------------------------------------------------------------------

    def _pages(self, fetch: Callable[[str | None], Page], stats: PassStats) -> Iterator[Page]:
        def guarded(cursor: str | None) -> Page:
            if self.should_stop and self.should_stop():
                raise Stopped
            return fetch(cursor)

        for page in pages(guarded):
            if self.heartbeat:
                self.heartbeat()
            stats.pages += 1
            stats.read += len(page.items)
            yield page

    def _known_keys(self, keys: list[str]) -> set[str]:
        known = inbox.known_keys(self.db, keys) if keys else set()
        return known | (self._planned_keys & set(keys))

    def _commit(
        self,
        events: list[Event],
        stats: PassStats,
        summary: Summary,
        source: str | None,
        mark: datetime | None,
    ) -> None:
        """Enqueue a page's events and move the watermark in one transaction: the mark
        never passes an event that is not stored. A dry run only notes them."""
        events = [
            replace(event, workspace_id=self._workspace_of(event.payload.get("workspace")))
            for event in events
        ]
        if summary.dry_run:
            for event in events:
                self._planned_keys.add(event.key)
                summary.planned.append(event)
            stats.new += len(events)
            return
        if not events and mark is None:
            return
        with immediate(self.db):
            for event in events:
                queued = inbox.enqueue(self.db, event)
                if queued.created:
                    stats.new += 1
                    summary.new_event_ids.append(queued.event_id)
                else:
                    stats.known += 1  # a webhook stored it since we looked
            if source and mark is not None:
                state.put(self.db, watermark_name(source, self.workspace_id), iso(mark))

    def _campaign_name(self, campaign_id: str) -> str:
        """A campaign's name for tags."""
        return self._campaigns().get(campaign_id, "") if campaign_id else ""

    def _campaigns(self) -> dict[str, str]:
        """This workspace's campaigns by id, read once per run, when first needed."""
        if self._campaign_names is None:
            names: dict[str, str] = {}
            for page in pages(self.client.list_campaigns):
                for campaign in page.items:
                    names[str(campaign.get("id"))] = str(campaign.get("name") or "")
            self._campaign_names = names
        return self._campaign_names

    def _progress(self, name: str, stats: PassStats, fraction: float | None) -> None:
        if self.on_progress:
            self.on_progress(Progress(name, stats, fraction))


def _read_whole(first: Page, wanted: dict[int, _Wanted]) -> bool:
    """Whether reading the rest of a scope whole beats the status filters, judged by its
    first page: the scope ends there, or most of its leads hold a synced status."""
    if len(first.items) < PAGE_LIMIT or first.next_starting_after is None:
        return True
    holders = sum(
        1 for lead in first.items if _status_code(lead.get("lt_interest_status")) in wanted
    )
    return holders * 2 >= len(first.items)


def _status_code(value: Any) -> int | None:
    """lt_interest_status as an int (JSON may give 1.0); None for a plain lead."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None
