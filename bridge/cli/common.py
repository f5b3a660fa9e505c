"""What every command shares: the configuration, read once with a clear error, and the
database, opened only when it is migrated."""

from __future__ import annotations

import click
import sqlite_utils

from bridge.config import Config, ConfigError, load_config
from bridge.logs import configure_logging
from bridge.store import db as store


def load_config_or_exit() -> Config:
    """The bridge's configuration, or a usage error naming the setting that is wrong."""
    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(config)
    return config


def open_database(config: Config) -> sqlite_utils.Database:
    """The database, or an error saying to run `bridge migrate` when it is behind."""
    db = store.connect(config.database)
    pending = store.pending_migrations(db)
    if pending:
        raise click.ClickException(
            f"database {config.database} is not migrated ({len(pending)} steps pending): "
            "run `bridge migrate`"
        )
    return db
