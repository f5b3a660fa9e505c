"""The event queue by hand: what is in it, and dead events queued again."""

from __future__ import annotations

import json

import click

from bridge.cli.common import load_config_or_exit, open_database
from bridge.store import inbox


@click.command()
@click.argument("event_ids", nargs=-1, type=int)
def replay(event_ids: tuple[int, ...]) -> None:
    """Queue dead events again: all of them, or the EVENT_IDS given."""
    config = load_config_or_exit()
    db = open_database(config)
    count = inbox.replay(db, list(event_ids) or None)
    what = "dead events" if not event_ids else "events"
    click.echo(f"queued {count} {what} again")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show the health state, queue counts, problems, warnings and the latest dead events."""
    from bridge.setup.health import report

    config = load_config_or_exit()
    db = open_database(config)
    facts = report(db, config)
    dead = list(
        db.query(
            "SELECT id, event_type, email, last_error FROM events WHERE status = 'dead'"
            " ORDER BY id DESC LIMIT 10"
        )
    )
    if as_json:
        click.echo(json.dumps({**facts, "dead": dead}, indent=2))
        return
    # The same words as /healthz's `status`: unhealthy answers 503 there.
    click.echo(f"status: {facts['status']}")
    click.echo("queue: " + ", ".join(f"{k} {v}" for k, v in facts.get("queue", {}).items()))
    for problem in facts["problems"]:
        click.echo(f"problem: {problem}")
    for warning in facts["warnings"]:
        click.echo(f"warning: {warning}")
    for row in dead:
        click.echo(f"dead #{row['id']} {row['event_type']} {row['email']}: {row['last_error']}")
