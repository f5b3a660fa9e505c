"""`backup FILE` and `restore FILE`: a checked copy of the database while the bridge runs,
and putting one back once it is stopped."""

from __future__ import annotations

import click

from bridge.cli.common import load_config_or_exit
from bridge.store import backup as backups
from bridge.store import holders
from bridge.store.backup import BackupError, Summary

MB = 1_000_000


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def backup(file: str, force: bool) -> None:
    """Copy the database to FILE while the bridge runs, and check the copy."""
    config = load_config_or_exit()
    try:
        summary = backups.backup(config.database, file, force=force)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backup of {config.database} written to {summary.path}")
    _describe(summary)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
def restore(file: str) -> None:
    """Replace the database with the backup FILE (stop the web app and workers first)."""
    config = load_config_or_exit()
    try:
        restored = backups.restore(file, config.database)
    except (BackupError, holders.InUse) as exc:
        raise click.ClickException(str(exc)) from None
    if restored.replaced is None:
        click.echo(f"no database was at {config.database}: nothing to keep aside")
    else:
        click.echo(f"the database that was there is kept as {restored.replaced}")
    click.echo(f"restored {file} to {config.database}")
    if restored.applied:
        click.echo(f"migrated (the backup was older): {', '.join(restored.applied)}")
    _describe(restored.summary)
    if config.replica_url:
        click.echo(
            "BRIDGE_REPLICA_URL is set: the replica still holds the database as it was, and"
            " `run` will not overwrite it with this one. Point BRIDGE_REPLICA_URL at a new,"
            " empty place to replicate the restored database from now on."
        )


def _describe(summary: Summary) -> None:
    """One line per fact, as the operator checks them against what they expect."""
    click.echo(f"size: {summary.size_bytes / MB:.1f} MB ({summary.size_bytes} bytes)")
    click.echo("events: " + ", ".join(f"{n} {status}" for status, n in summary.events.items()))
    click.echo(f"contacts: {summary.contacts}")
    click.echo(f"newest event: {summary.newest_event or 'none'}")
    click.echo(f"migrations: {len(summary.migrations)}, the last {summary.migrations[-1]}")
