"""The `bridge` command: migrate, worker, reconcile, replay, run, status, init-env."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import click

from bridge import settings as settings_mod
from bridge.config import PROJECT_ROOT, Config, ConfigError, load_config
from bridge.logs import configure_logging
from bridge.store import db as store
from bridge.store import inbox


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
    from bridge.reconcile.scheduler import start_scheduler
    from bridge.sync.worker import Worker

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
    from bridge.setup.health import report

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


@main.command()
@click.option(
    "--url",
    "webhook_url",
    default=None,
    help="This bridge's webhook URL (default: the one `bridge webhook register` saved).",
)
def doctor(webhook_url: str | None) -> None:
    """Check the setup: database, GHL token and scopes, field map, Instantly key and webhooks."""
    from bridge.setup import doctor as doctor_mod
    from bridge.setup.subscriptions import webhook_url as parse_url

    config = _config()
    if webhook_url:
        try:
            webhook_url = parse_url(webhook_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from None
    checks = doctor_mod.run_checks(config, webhook_url=webhook_url)
    # Shown on the dashboard too; a database that cannot be written is a check above.
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(store.connect(config.database)) as db,
    ):
        doctor_mod.save_result(db, checks)
    click.echo(doctor_mod.format_text(checks))
    if doctor_mod.failed(checks):
        raise SystemExit(1)


@main.group()
def webhook() -> None:
    """Instantly webhook subscriptions for this bridge."""


@webhook.command("register")
@click.option("--url", "raw_url", required=True, help="https://<your bridge>/webhooks/instantly")
@click.option("--resume", is_flag=True, help="Also re-enable webhooks Instantly switched off.")
def webhook_register(raw_url: str, resume: bool) -> None:
    """Create or update the Instantly webhooks for the enabled event types.

    The only change the bridge ever makes in Instantly: its own webhook subscriptions.
    """
    from bridge.clients.instantly import InstantlyError
    from bridge.setup import subscriptions

    config = _config()
    try:
        url = subscriptions.webhook_url(raw_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    if url.startswith("http://"):
        click.echo("warning: http:// sends the X-Bridge-Secret header unencrypted; use https://")
    try:
        actions = subscriptions.register_for_bridge(_database(config), config, url, resume)
    except (subscriptions.SetupMissing, InstantlyError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"webhooks delivering to {url}:")
    for action in actions:
        click.echo("  " + action.line())
    if not actions:
        click.echo("  none needed: no event type is enabled in settings")
    if any(a.what == "disabled" for a in actions):
        raise SystemExit(1)


def _add_commands() -> None:
    # Imported late: the command module uses this one's _config and _database.
    from bridge.cli.reconcile import reconcile

    main.add_command(reconcile)


_add_commands()
