"""`instantly-ghl-bridge reconcile`: one reconciliation run by hand, with a progress bar
and a summary."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import click
import sqlite_utils

from bridge import settings as settings_mod
from bridge.cli.common import load_config_or_exit, open_database
from bridge.clients.instantly import InstantlyClient
from bridge.config import Config
from bridge.events.event import Event
from bridge.locations import registry
from bridge.reconcile import handoff
from bridge.reconcile.reconciler import REPLIES, STATUSES, Options, Progress, Summary
from bridge.reconcile.runs import Busy, RunSummary, run_recorded
from bridge.sync.preview import plan_events

# A dry run lists this many planned events as text; --json lists them all.
SHOWN_PLANNED = 50
HELD = "none: held (unrouted): no route claims its campaign or workspace, and no default location"


class Moment(click.ParamType):
    """A date or date-time (ISO 8601); one without a zone is UTC."""

    name = "datetime"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip().replace("Z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not a date or date-time like 2026-01-01 or 2026-01-01T09:30")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


@click.command()
@click.option("--since", type=Moment(), help="Read replies from this time (default: watermark).")
@click.option("--until", type=Moment(), help="Read replies up to this time (default: now).")
@click.option("--campaign", "campaigns", multiple=True, metavar="ID", help="Only this campaign.")
@click.option("--list", "lists", multiple=True, metavar="ID", help="Only this lead list.")
@click.option("--replies-only", is_flag=True, help="Skip interest statuses.")
@click.option("--statuses-only", is_flag=True, help="Skip replies.")
@click.option("--dry-run", is_flag=True, help="Fetch and compare; write nothing.")
@click.option("--no-sync", is_flag=True, help="Only enqueue; leave syncing to the worker.")
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0, min_open=True, max=24 * 60),
    default=handoff.DEFAULT_MAX_WAIT_MINUTES,
    show_default=True,
    metavar="MINUTES",
    help="Wait at most this long for a running worker to sync what was enqueued.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def reconcile(
    since: datetime | None,
    until: datetime | None,
    campaigns: tuple[str, ...],
    lists: tuple[str, ...],
    replies_only: bool,
    statuses_only: bool,
    dry_run: bool,
    no_sync: bool,
    max_wait: float,
    as_json: bool,
) -> None:
    """Find what webhooks missed: poll Instantly (read only) and enqueue it, then sync:
    the running worker does, or this command when no worker runs."""
    if replies_only and statuses_only:
        raise click.UsageError("--replies-only and --statuses-only exclude each other")
    if since and until and since >= until:
        raise click.UsageError("--since must be before --until")
    config = load_config_or_exit()
    db = open_database(config)
    _, settings = settings_mod.current(db)
    workspaces = registry.build(config, settings, db)
    if not workspaces.workspaces:
        raise click.ClickException(
            "INSTANTLY_API_KEY (or INSTANTLY_API_KEY_FILE) is not set: reconciliation reads"
            " from Instantly"
        )
    warning = since and beyond_retention(since, settings["retention"]["event_days"])
    if warning and not as_json:
        click.echo(f"warning: {warning}", err=True)
    options = Options(
        since=since,
        until=until,
        campaigns=campaigns,
        lists=lists,
        replies=not statuses_only,
        statuses=not replies_only,
        dry_run=dry_run,
    )
    bar = ProgressLine(sys.stderr) if not as_json and sys.stderr.isatty() else None
    try:
        summary = run_recorded(
            db,
            lambda workspace: InstantlyClient(
                config.instantly_base_url, workspace.key, key_name=workspace.key_source
            ),
            settings,
            options,
            "cli",
            on_progress=bar,
            registry=workspaces,
        )
    except Busy as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if bar:
            bar.close()
    sync = None
    if not dry_run and not no_sync:
        try:
            sync = sync_new_events(
                config, db, summary.new_event_ids, workspaces, max_wait, bar and bar.show_sync
            )
        finally:
            if bar:
                bar.close()
    planned = planned_events(db, summary.planned, settings, workspaces)
    if as_json:
        body = {**summary.as_dict(), "would_enqueue": planned if dry_run else None, "sync": sync}
        if warning:
            body["warnings"] = [warning]
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(render_text(summary, planned, sync))
    if summary.errors or (sync and sync.get("dead")):
        sys.exit(1)


def beyond_retention(since: datetime, event_days: int, now: datetime | None = None) -> str | None:
    """The warning for a --since reaching past what the inbox remembers, or None: a
    finished event is forgotten after retention.event_days, and a reply older than that
    is enqueued again."""
    forgotten_before = (now or datetime.now(UTC)) - timedelta(days=event_days)
    if since >= forgotten_before:
        return None
    return (
        f"--since {since:%Y-%m-%d} is older than retention.event_days ({event_days} days): "
        f"replies from before {forgotten_before:%Y-%m-%d} whose events were pruned are not "
        "known any more: they are enqueued and synced again (their GHL upsert and tags sent "
        "a second time)"
    )


def planned_events(
    db: sqlite_utils.Database, events: list[Event], settings: dict, served: registry.Registry
) -> list[dict[str, Any]]:
    """What a dry run would do with each event, in order: planned in the location its route
    gives, with that location's settings; one no route claims would be held."""
    routed: dict[str | None, list[int]] = {}
    for index, event in enumerate(events):
        # A bridge without GHL set up yet still shows what the sync would send.
        where = served.route(event.campaign_id, event.workspace_id) if served.locations else ""
        routed.setdefault(where, []).append(index)
    out: list[dict[str, Any] | None] = [None] * len(events)
    for location_id, indexes in routed.items():
        chosen = [events[i] for i in indexes]
        if location_id is None:
            plans = [(event, [HELD], []) for event in chosen]
        else:
            location = served.get(location_id)
            own = settings_mod.for_location(settings, location.overrides) if location else settings
            plans = [
                (plan.event, plan.changes, [f"{c.method} {c.path}" for c in plan.calls])
                for plan in plan_events(db, chosen, own, location_id)
            ]
        for index, (event, changes, calls) in zip(indexes, plans, strict=True):
            out[index] = {
                "key": event.key,
                "workspace_id": event.workspace_id,
                "location_id": location_id,
                "event_type": event.event_type,
                "email": event.email,
                "campaign_name": event.campaign_name,
                "occurred_at": event.occurred_at,
                "ghl_changes": changes,
                "ghl_calls": calls,
            }
    return [item for item in out if item is not None]


def sync_new_events(
    config: Config,
    db: sqlite_utils.Database,
    event_ids: list[int],
    served: registry.Registry,
    max_wait_minutes: float = handoff.DEFAULT_MAX_WAIT_MINUTES,
    on_progress: Callable[[handoff.Outcome], None] | None = None,
) -> dict[str, Any]:
    """Have this run's events synced, and report on them: the running worker syncs them
    while this waits (it alone writes to GHL), or, when no worker runs, this process does
    (as `instantly-ghl-bridge worker --drain` would)."""
    if not event_ids:
        return {"processed": 0}
    if not any(location.problem is None for location in served.locations):
        return {"skipped": "GHL_TOKEN / GHL_LOCATION_ID not set: events stay queued"}
    outcome = handoff.sync(config, db, event_ids, served, max_wait_minutes, on_progress)
    return outcome.as_dict()


def render_text(summary: RunSummary, planned: list[dict[str, Any]], sync: dict | None) -> str:
    """The human summary: planned events (dry run), then the table; with several
    workspaces, one block each and then the totals."""
    lines = []
    if summary.dry_run:
        lines.append(f"Dry run: nothing was written. Would enqueue {len(planned)} events.")
        for item in planned[:SHOWN_PLANNED]:
            campaign = f' "{item["campaign_name"]}"' if item["campaign_name"] else ""
            lines.append(
                f"  {item['event_type']} {item['email']}{campaign} at {item['occurred_at']}"
                f" [{item['key']}]"
            )
            lines.append(f"      GHL: {'; '.join(item['ghl_changes'])}")
        if len(planned) > SHOWN_PLANNED:
            lines.append(f"  ... and {len(planned) - SHOWN_PLANNED} more (--json lists all)")
        calls = sum(len(item["ghl_calls"]) for item in planned)
        if calls:
            # Planned one event at a time; the worker joins tags several contacts miss alike
            # in one bulk call, so the count can only fall.
            lines.append(
                f"  at most {calls} GHL calls: tags several contacts miss alike go in one call"
            )
        lines.append("")
    one = summary.only
    if one is not None:
        if summary.parts[0].workspace.id:
            lines.append(f"Workspace {summary.parts[0].label}:")
        lines += _workspace_lines(one)
    else:
        for part in summary.parts:
            lines.append(f"Workspace {part.label}:")
            if part.summary is None:
                lines.append(f"  skipped: {part.skipped}")
                continue
            lines += ["  " + line for line in _workspace_lines(part.summary)]
            lines.append(f"  status: {part.summary.status}")
        lines.append("All workspaces:")
        lines.append(_table(summary))
    if sync is not None:
        lines.append(sync_line(sync))
    lines.append(f"status: {summary.status}")
    return "\n".join(lines)


WRITERS = {"worker": "the running worker", "reconcile": "this command"}
# What the sync line adds when the writer changed while this command waited or synced.
HANDOVERS = {
    ("worker", "reconcile"): (
        ": the running worker stopped while this command waited, so it synced the rest itself"
    ),
    ("reconcile", "worker"): ": a worker started while this command synced, and took the rest over",
}


def sync_line(sync: dict[str, Any]) -> str:
    """The summary's sync line: what was processed and by whom, then what is left and why,
    e.g. "sync: 40 events processed by the running worker (done 38, dead 2); 3 wait for a
    retry at 10:02 UTC (GHL 503: ...)"."""
    if "skipped" in sync:
        return f"sync: {sync['skipped']}"
    if set(sync) == {"processed"} and not sync["processed"]:
        return "sync: nothing new to sync"
    detail = ", ".join(f"{k} {sync[k]}" for k in handoff.FINAL if sync.get(k))
    by = sync.get("by", [])
    line = f"sync: {sync['processed']} events processed"
    if by == ["worker"]:
        line += " by the running worker"
    if detail:
        line += f" ({detail})"
    if len(by) > 1:
        names = ", then ".join(WRITERS[who] for who in by)
        line += HANDOVERS.get(tuple(by), f": synced in turn by {names}")
    parts = [line]
    for group in sync.get("left", []):
        text = _counted(group["events"], group["why"])
        if group["kind"] == handoff.QUEUED and "stopped_waiting_after_minutes" in sync:
            text = f"stopped waiting after {sync['stopped_waiting_after_minutes']:g} min: {text}"
        parts.append(text)
    return "; ".join(parts)


def _counted(count: int, why: str) -> str:
    """'3 wait for ...', '1 waits for ...'; 'are' becomes 'is' for one."""
    if count == 1:
        if why.startswith("wait"):
            why = "waits" + why[4:]
        elif why.startswith("are "):
            why = "is " + why[4:]
    return f"{count:,} {why}"


def _workspace_lines(summary: Summary) -> list[str]:
    """One workspace's replies window, table, skipped passes and errors."""
    lines = []
    if summary.since:
        mark = summary.watermark_before or "none yet"
        lines.append(
            f"Replies from {summary.since} to {summary.until or 'now'} (watermark {mark}"
            + (
                f", now {summary.watermark_after})"
                if summary.watermark_after != summary.watermark_before
                else ")"
            )
        )
    lines += _table(summary).splitlines()
    for name in (REPLIES, STATUSES):
        stats = getattr(summary, name)
        if stats.skipped:
            lines.append(f"{name}: skipped ({stats.skipped})")
        for error in stats.errors:
            lines.append(f"{name}: error: {error}")
    return lines


def _table(summary: Summary | RunSummary) -> str:
    rows = [
        ("pages fetched", "pages"),
        ("Instantly calls", "calls"),
        ("emails / leads read", "read"),
        ("events found", "found"),
        ("already known", "known"),
        ("would be new" if summary.dry_run else "new (enqueued)", "new"),
    ]
    totals = summary.totals()
    out = [f"{'':<22}{'replies':>10}{'statuses':>10}{'total':>10}"]
    for label, name in rows:
        values = (getattr(summary.replies, name), getattr(summary.statuses, name), totals[name])
        out.append(f"{label:<22}" + "".join(f"{v:>10,}" for v in values))
    errors = (len(summary.replies.errors), len(summary.statuses.errors), len(summary.errors))
    out.append(f"{'errors':<22}" + "".join(f"{v:>10,}" for v in errors))
    return "\n".join(out)


class ProgressLine:
    """A one-line progress bar on a terminal: the replies pass knows its end (time),
    the statuses pass does not (leads/list gives no total), so it counts instead."""

    WIDTH = 24

    def __init__(self, stream: TextIO, interval: float = 0.1):
        self.stream = stream
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def __call__(self, progress: Progress) -> None:
        if not self._due():
            return
        stats = progress.stats
        counts = f"pages {stats.pages:,}  read {stats.read:,}  new {stats.new:,}"
        if progress.fraction is None:
            line = f"{progress.name:<9}{counts}"
        else:
            line = f"{progress.name:<9}{self._bar(progress.fraction)}  {counts}"
        self._draw(line)

    def show_sync(self, outcome: handoff.Outcome) -> None:
        """The sync's progress: this run's events finished so far, and who syncs them."""
        if not self._due():
            return
        look = outcome.look
        detail = ", ".join(f"{k} {look.statuses[k]}" for k in handoff.FINAL if k in look.statuses)
        who = outcome.by[-1] if outcome.by else handoff.SELF
        line = f"sync     {self._bar(look.finished / max(1, look.total))}  {look.finished:,}"
        line += f" of {look.total:,} finished ({detail or 'none yet'}) by {who}"
        if outcome.waited_seconds:
            line += f", waited {outcome.waited_seconds:.0f} s"
        self._draw(line)

    def _due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True

    def _bar(self, fraction: float) -> str:
        filled = int(fraction * self.WIDTH)
        return f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {fraction:4.0%}"

    def _draw(self, line: str) -> None:
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
