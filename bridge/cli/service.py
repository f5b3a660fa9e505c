"""Running the bridge: migrate, the worker, web and worker together, a first .env."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from typing import NoReturn

import click

from bridge import settings as settings_mod
from bridge.cli.common import load_config_or_exit, open_database
from bridge.config import RUN_DIR, Config
from bridge.setup.env_file import write_env_file
from bridge.store import db as store
from bridge.store import holders, inbox, replica


@click.command()
def migrate() -> None:
    """Apply database migrations and check the stored settings."""
    config = load_config_or_exit()
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


@click.command()
@click.option("--drain", is_flag=True, help="Process every due event, then exit.")
def worker(drain: bool) -> None:
    """Run the sync worker (the scheduler lives here too)."""
    from bridge.reconcile.scheduler import start_scheduler
    from bridge.sync.worker import Worker

    config = load_config_or_exit()
    db = open_database(config)
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


@click.command("init-env")
@click.option("--path", default=str(RUN_DIR / ".env"), show_default=True)
def init_env(path: str) -> None:
    """Create a .env with generated secrets if there is none (never overwrites)."""
    if not write_env_file(path):
        click.echo(f"{path} exists; left as it is")
        return
    click.echo(
        f"wrote {path} with a new BRIDGE_WEBHOOK_SECRET (send it as the X-Bridge-Secret "
        "header from Instantly) and BRIDGE_SECRET_KEY; every other setting is listed there,"
        " commented, with its meaning"
    )


@click.command()
@click.option(
    "--under-litestream",
    is_flag=True,
    hidden=True,
    help="Set by `run` itself for the app Litestream runs: skip the restore and replication.",
)
def run(under_litestream: bool) -> None:
    """Start the web app (gunicorn) and the worker together, for one machine.

    With BRIDGE_REPLICA_URL set, restore the database from the replica when it is missing,
    then run both under Litestream, which streams every commit to the replica.
    """
    config = load_config_or_exit()
    if config.replica_url and not under_litestream:
        run_replicated(config)
    run_web_and_worker(config)


def run_replicated(config: Config) -> NoReturn:
    """Restore if the database is missing, migrate, then become `litestream replicate`
    running `run --under-litestream`.

    Litestream as the parent, not a third child beside web and worker: on Ctrl-C or SIGTERM
    it passes the signal to the app, waits until web and worker have exited, and only then
    makes its final sync and exits, so the last committed writes reach the replica. A child
    beside them would get Ctrl-C at the same moment they do and could finish before their
    last commits. The cost: a crash of the whole machine loses what Litestream had not yet
    sent (it syncs each second).
    """
    try:
        binary = replica.litestream_binary()
        replica.hold_replicator(config.database)
        litestream_config = replica.write_config(config)
        click.echo(replica.restore_if_missing(config, binary, litestream_config))
    except (replica.ReplicaError, holders.InUse) as exc:
        raise click.ClickException(str(exc)) from None
    db = store.connect(config.database)
    applied = store.migrate(db)
    db.close()
    if applied:
        click.echo(f"database {config.database}: applied {', '.join(applied)}")
    click.echo(
        f"replicating to {replica.shown_url(config.replica_url)} with Litestream; on stop it"
        " syncs the last writes after the web app and the worker have exited"
    )
    argv = replica.replicate_argv(
        binary, litestream_config, [sys.executable, "-m", "bridge", "run", "--under-litestream"]
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # The replica holds what the database holds: what Litestream makes (a file:// replica's
    # folders, its state beside the database) is for this user only, as the database is.
    os.umask(0o077)
    os.execv(argv[0], argv)


def run_web_and_worker(config: Config) -> None:
    """gunicorn and the worker as two children; a stop signal stops both."""
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
    host = env.get("HOST", "0.0.0.0")
    where = "all interfaces" if host == "0.0.0.0" else f"{host} only"
    click.echo(
        f"bridge running: http://{'127.0.0.1' if host == '0.0.0.0' else host}:{config.port}/"
        f" (listening on {where}; webhook: POST /webhooks/instantly)"
    )
    click.echo("Ctrl-C stops both the web app and the worker.")

    stopped: set[int] = set()

    def stop(*_: object) -> None:
        # One SIGTERM each, however many signals arrive: Ctrl-C reaches this process twice
        # under Litestream (from the terminal, and passed on by Litestream).
        for proc in (web, worker_proc):
            if proc.pid not in stopped and proc.poll() is None:
                stopped.add(proc.pid)
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
