"""`instantly-ghl-bridge reconcile`: one reconciliation run by hand, with a progress bar
and a summary."""

from __future__ import annotations

import json
import sys
import time
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
from bridge.reconcile.reconciler import REPLIES, STATUSES, Options, Progress, Summary
from bridge.reconcile.runs import Busy, RunSummary, run_recorded
from bridge.store import inbox
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
    as_json: bool,
) -> None:
    """Find what webhooks missed: poll Instantly (read only) and enqueue it, then sync."""
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
        sync = sync_new_events(config, db, summary.new_event_ids, workspaces)
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
) -> dict[str, Any]:
    """Process the queue now (as `instantly-ghl-bridge worker --drain` would) and report on
    this run's events."""
    if not event_ids:
        return {"processed": 0}
    if not any(location.problem is None for location in served.locations):
        return {"skipped": "GHL_TOKEN / GHL_LOCATION_ID not set: events stay queued"}
    from bridge.sync.worker import Worker

    handled = Worker(config, db=db).run(drain=True)
    outcome = dict.fromkeys(inbox.STATUSES, 0)
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for status, count in db.execute(
            f"SELECT status, COUNT(*) FROM events WHERE id IN ({marks}) GROUP BY status", chunk
        ):
            outcome[status] += count
    return {"processed": handled, **{k: v for k, v in outcome.items() if v}}


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
        if "skipped" in sync:
            lines.append(f"sync: {sync['skipped']}")
        elif set(sync) == {"processed"} and not sync["processed"]:
            lines.append("sync: nothing new to sync")
        else:
            detail = ", ".join(f"{k} {v}" for k, v in sync.items() if k != "processed")
            lines.append(
                f"sync: {sync['processed']} events processed" + (f" ({detail})" if detail else "")
            )
    lines.append(f"status: {summary.status}")
    return "\n".join(lines)


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
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        stats = progress.stats
        counts = f"pages {stats.pages:,}  read {stats.read:,}  new {stats.new:,}"
        if progress.fraction is None:
            line = f"{progress.name:<9}{counts}"
        else:
            filled = int(progress.fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            line = f"{progress.name:<9}[{bar}] {progress.fraction:4.0%}  {counts}"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
