"""The `bridge` command: migrate, worker, reconcile, replay, run, status, init-env."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import click

from bridge import db as store
from bridge import inbox
from bridge import settings as settings_mod
from bridge.config import PROJECT_ROOT, Config, ConfigError, load_config
from bridge.logs import configure_logging


def _config() -> Config:
    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(config)
    return config


def _database(config: Config):
    db = store.connect(config.database)
    pending = store.pending_migrations(db)
    if pending:
        raise click.ClickException(
            f"database {config.database} is not migrated ({len(pending)} steps pending): "
            "run `bridge migrate`"
        )
    return db


@click.group()
def main() -> None:
    """instantly-ghl-bridge: Instantly events in, GoHighLevel contacts out."""


@main.command()
def migrate() -> None:
    """Apply database migrations and check the stored settings."""
    config = _config()
    db = store.connect(config.database)
    applied = store.migrate(db)
    try:
        settings_mod.current(db)
    except settings_mod.SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"database {config.database}: "
        + (f"applied {', '.join(applied)}" if applied else "up to date")
    )


@main.command()
@click.option("--drain", is_flag=True, help="Process every due event, then exit.")
def worker(drain: bool) -> None:
    """Run the sync worker (the scheduler lives here too)."""
    from bridge.scheduler import start_scheduler
    from bridge.worker import Worker

    config = _config()
    db = _database(config)
    try:
        settings_mod.current(db)
    except settings_mod.SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    runner = Worker(config, db=db)
    runner.install_signal_handlers()
    # One scheduler per worker process; the SQLite lock keeps it to one run at a time.
    scheduler = None if drain else start_scheduler(config)
    try:
        handled = runner.run(drain=drain)
    finally:
        if scheduler is not None:
            scheduler.shutdown()
    if drain:
        counts = inbox.counts(db)
        click.echo(f"drained: {handled} events handled; queue now {json.dumps(counts)}")


@main.command()
@click.argument("event_ids", nargs=-1, type=int)
def replay(event_ids: tuple[int, ...]) -> None:
    """Queue dead events again: all of them, or the EVENT_IDS given."""
    config = _config()
    db = _database(config)
    count = inbox.replay(db, list(event_ids) or None)
    what = "dead events" if not event_ids else "events"
    click.echo(f"queued {count} {what} again")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show queue counts, problems and the latest dead events."""
    from bridge.health import report

    config = _config()
    db = _database(config)
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
    click.echo("queue: " + ", ".join(f"{k} {v}" for k, v in facts.get("queue", {}).items()))
    for problem in facts["problems"]:
        click.echo(f"problem: {problem}")
    for row in dead:
        click.echo(f"dead #{row['id']} {row['event_type']} {row['email']}: {row['last_error']}")


@main.command("init-env")
@click.option("--path", default=str(PROJECT_ROOT / ".env"), show_default=True)
def init_env(path: str) -> None:
    """Create a .env with generated secrets if there is none (never overwrites)."""
    target = Path(path)
    if target.exists():
        click.echo(f"{target} exists; left as it is")
        return
    webhook_secret = secrets.token_urlsafe(24)
    target.write_text(
        "# Written by `bridge init-env`. Fill in the GHL and Instantly values.\n"
        f"BRIDGE_WEBHOOK_SECRET={webhook_secret}\n"
        f"BRIDGE_SECRET_KEY={secrets.token_urlsafe(32)}\n"
        "# BRIDGE_ADMIN_PASSWORD=\n"
        "# GHL_TOKEN=\n"
        "# GHL_LOCATION_ID=\n"
        "# INSTANTLY_API_KEY=\n"
    )
    target.chmod(0o600)
    click.echo(
        f"wrote {target} with a new BRIDGE_WEBHOOK_SECRET (send it as the X-Bridge-Secret "
        "header from Instantly) and BRIDGE_SECRET_KEY"
    )


@main.command()
def run() -> None:
    """Start the web app (gunicorn) and the worker together, for one machine."""
    config = _config()
    env = {**os.environ, "PORT": str(config.port)}
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:bridge.gunicorn_conf",
            "bridge:create_app()",
        ],
        env=env,
    )
    worker_proc = subprocess.Popen([sys.executable, "-m", "bridge", "worker"], env=env)
    click.echo(
        f"bridge running: http://127.0.0.1:{config.port}/  (webhook: POST /webhooks/instantly)"
    )
    click.echo("Ctrl-C stops both the web app and the worker.")

    def stop(*_: object) -> None:
        for proc in (web, worker_proc):
            if proc.poll() is None:
                proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while web.poll() is None and worker_proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                web.wait(timeout=1)
    finally:
        stop()
        web.wait()
        worker_proc.wait()
    code = web.returncode or worker_proc.returncode
    if code not in (0, -signal.SIGTERM, None):
        raise SystemExit(code)


def _add_commands() -> None:
    # Imported late: the command module uses this one's _config and _database.
    from bridge.reconcile_cli import reconcile

    main.add_command(reconcile)


_add_commands()
