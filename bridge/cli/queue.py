"""The event queue by hand: what is in it, per location, and events queued again (dead
ones, or held ones once a route exists)."""

from __future__ import annotations

import json

import click

from bridge.cli.common import load_config_or_exit, open_database
from bridge.store import inbox


@click.command()
@click.argument("event_ids", nargs=-1, type=int)
@click.option(
    "--unrouted",
    is_flag=True,
    help="Queue the held (unrouted) events again, to be routed by the routes as they are now.",
)
def replay(event_ids: tuple[int, ...], unrouted: bool) -> None:
    """Queue dead events again: all of them, or the EVENT_IDS given; with --unrouted, the
    held ones."""
    if unrouted and event_ids:
        raise click.UsageError("give EVENT_IDS or --unrouted, not both")
    config = load_config_or_exit()
    db = open_database(config)
    count = inbox.replay(db, list(event_ids) or None, unrouted=unrouted)
    if unrouted:
        held = "1 held event" if count == 1 else f"{count} held events"
        click.echo(f"queued {held} again; each is routed when it is next synced")
        return
    what = "dead events" if not event_ids else "events"
    click.echo(f"queued {count} {what} again")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show the health state, queue counts, each location's counts, pause, wait for GHL's
    daily budget and last GHL error, the held events, problems, warnings and the latest dead
    events (--json: with each location's GHL budget)."""
    from bridge.setup.health import report

    config = load_config_or_exit()
    db = open_database(config)
    facts = report(db, config)
    dead = list(
        db.query(
            "SELECT id, event_type, email, location_id, last_error FROM events"
            " WHERE status = 'dead' ORDER BY id DESC LIMIT 10"
        )
    )
    if as_json:
        click.echo(json.dumps({**facts, "dead": dead}, indent=2))
        return
    # The same words as /healthz's `status`: unhealthy answers 503 there.
    click.echo(f"status: {facts['status']}")
    click.echo("queue: " + ", ".join(f"{k} {v}" for k, v in facts.get("queue", {}).items()))
    locations = facts.get("locations", {})
    for block in locations.values():
        click.echo(_location_line(block))
    if facts.get("unrouted"):
        click.echo(
            f"unrouted: {facts['unrouted']} held; add a route, then"
            " `instantly-ghl-bridge replay --unrouted`"
        )
    for problem in facts["problems"]:
        click.echo(f"problem: {problem}")
    for warning in facts["warnings"]:
        click.echo(f"warning: {warning}")
    for row in dead:
        where = f" [{row['location_id']}]" if len(locations) > 1 and row["location_id"] else ""
        click.echo(
            f"dead #{row['id']}{where} {row['event_type']} {row['email']}: {row['last_error']}"
        )


def _location_line(block: dict) -> str:
    """`location Acme Dental (ve9E…): ok; queue 2, done 40, dead 1; paused: …; waiting for
    GHL's daily budget: …; last GHL error: …`"""
    queue = block["queue"]
    waiting = queue[inbox.PENDING] + queue[inbox.PROCESSING]
    line = (
        f"location {block['label']}: {block['status']}; queue {waiting},"
        f" done {queue[inbox.DONE]}, dead {queue[inbox.DEAD]}"
    )
    if block["ghl_paused"]:
        line += f"; paused: {block['ghl_paused']['reason']}"
    spent = block["ghl_budget"]
    if spent and spent["message"]:
        line += f"; waiting for GHL's daily budget: {spent['message']}"
    if block["ghl_failing_since"]:
        line += f"; GHL failing since {block['ghl_failing_since']['at']}"
    error = block["last_ghl_error"]
    if error:
        said = f"HTTP {error['status']}" if error.get("status") else "network error"
        line += f"; last GHL error: {said}: {error.get('message') or ''}".rstrip(": ")
    return line
