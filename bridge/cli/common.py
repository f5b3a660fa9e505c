"""What every command shares: the configuration, read once with a clear error, the
database, opened only when it is migrated, and one line instead of a traceback when the
database cannot be used."""

from __future__ import annotations

import sqlite3
from typing import Any

import click
import sqlite_utils

from bridge.config import Config, ConfigError, load_config
from bridge.logs import configure_logging
from bridge.store import db as store
from bridge.store import holders
from bridge.store.adopt import adopt_single_location

# Where load_config_or_exit leaves the database's path for BridgeGroup (click shares a
# context's meta with the contexts nested in it).
DATABASE_META = "bridge.database"

# SQLite's error names (extended ones start with these) and what the operator can do.
FIXES = {
    "SQLITE_CORRUPT": "restore it from a backup, or move it aside and run"
    " `instantly-ghl-bridge migrate` to start an empty one",
    "SQLITE_NOTADB": "restore it from a backup, or move it aside and run"
    " `instantly-ghl-bridge migrate` to start an empty one",
    "SQLITE_FULL": "free disk space on its file system",
    "SQLITE_READONLY": "check that this user may write the file and its folder",
    "SQLITE_CANTOPEN": "check that its folder exists and this user may write there",
}


class BridgeGroup(click.Group):
    """The `bridge` command group: a database that cannot be used ends any command with
    one line naming the file and exit code 1, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except sqlite3.DatabaseError as exc:
            if not _storage_error(exc):
                raise
            path = ctx.meta.get(DATABASE_META, "(path unknown)")
            raise click.ClickException(unusable_message(path, exc)) from None


def unusable_message(path: str, exc: sqlite3.Error) -> str:
    """`database <path> cannot be used: <SQLite's reason>; <what to do>`."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    fix = next((text for prefix, text in FIXES.items() if name.startswith(prefix)), "")
    return f"database {path} cannot be used: {exc}" + (f"; {fix}" if fix else "")


def _storage_error(exc: sqlite3.DatabaseError) -> bool:
    # The file's trouble (damaged, not a database, full, read-only, locked too long);
    # IntegrityError, ProgrammingError and the like are bugs and keep their traceback.
    return type(exc) is sqlite3.DatabaseError or isinstance(exc, sqlite3.OperationalError)


def load_config_or_exit() -> Config:
    """The bridge's configuration, or a usage error naming the setting that is wrong."""
    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    context = click.get_current_context(silent=True)
    if context is not None:
        context.meta[DATABASE_META] = config.database
    configure_logging(config)
    return config


def open_database(config: Config) -> sqlite_utils.Database:
    """The database, or an error saying to run `instantly-ghl-bridge migrate` when it is behind.

    The command holds the database (bridge.store.holders) until it ends, so a restore
    refuses to swap the file under it and one that is under way finishes first."""
    hold = holders.hold_shared(config.database)
    context = click.get_current_context(silent=True)
    if hold is not None and context is not None:
        context.call_on_close(hold.close)
    db = store.connect(config.database)
    pending = store.pending_migrations(db)
    if pending:
        raise click.ClickException(
            f"database {config.database} is not migrated ({len(pending)} steps pending): "
            "run `instantly-ghl-bridge migrate`"
        )
    adopt_single_location(db, config.ghl_location_id)
    return db
