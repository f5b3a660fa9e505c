"""Setting up: `doctor` checks everything, `webhook register` subscribes this bridge."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

import click

from bridge.cli.common import load_config_or_exit, open_database
from bridge.store import db as store

if TYPE_CHECKING:
    from bridge.setup.subscriptions import Action


@click.command()
@click.option(
    "--url",
    "webhook_url",
    default=None,
    help="This bridge's webhook URL (default: the one `instantly-ghl-bridge webhook register`"
    " saved).",
)
def doctor(webhook_url: str | None) -> None:
    """Check the setup: database, then each GHL location (token, scopes, field map) and each
    Instantly workspace (key, webhooks), one block each; exits 1 when a check fails."""
    from bridge.setup import doctor as doctor_mod
    from bridge.setup.subscriptions import webhook_url as parse_url

    config = load_config_or_exit()
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


@click.group()
def webhook() -> None:
    """Instantly webhook subscriptions for this bridge."""


@webhook.command("register")
@click.option(
    "--url",
    "raw_url",
    default=None,
    help="https://<your bridge>/webhooks/instantly (default: from BRIDGE_PUBLIC_URL).",
)
@click.option("--resume", is_flag=True, help="Also re-enable webhooks Instantly switched off.")
@click.option(
    "--allow-private",
    is_flag=True,
    help="Accept a URL on a private, loopback or link-local address (a test set-up).",
)
def webhook_register(raw_url: str | None, resume: bool, allow_private: bool) -> None:
    """Create or update the Instantly webhooks for the enabled event types, in every
    workspace (each with its own key); exits 1 if any workspace failed.

    The only change the bridge ever makes in Instantly: its own webhook subscriptions.
    """
    from bridge.setup import subscriptions

    config = load_config_or_exit()
    raw_url = raw_url or subscriptions.public_webhook_url(config)
    if not raw_url:
        raise click.UsageError(
            "give --url https://<your bridge>/webhooks/instantly, or set BRIDGE_PUBLIC_URL"
        )
    try:
        url = subscriptions.webhook_url(raw_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    if url.startswith("http://"):
        click.echo("warning: http:// sends the X-Bridge-Secret header unencrypted; use https://")
    try:
        results = subscriptions.register_workspaces(
            open_database(config), config, url, resume, allow_private=allow_private
        )
    except subscriptions.UnsafeWebhookURL as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    except subscriptions.SetupMissing as exc:
        raise click.ClickException(str(exc)) from None
    if len(results) == 1 and not results[0].workspace.id:
        # INSTANTLY_API_KEY's workspace alone: the output it always had.
        result = results[0]
        if result.error is not None:
            raise click.ClickException(result.error)
        _echo_actions(result.url, result.actions, "")
    else:
        for result in results:
            click.echo(f"workspace {result.workspace.label}:")
            if result.error is not None:
                click.echo(f"  failed: {result.error}")
                continue
            _echo_actions(result.url, result.actions, "  ")
    if any(result.failed for result in results):
        raise SystemExit(1)


def _echo_actions(url: str, actions: list[Action], indent: str) -> None:
    click.echo(f"{indent}webhooks delivering to {url}:")
    for action in actions:
        click.echo(f"{indent}  " + action.line())
    if not actions:
        click.echo(f"{indent}  none needed: no event type is enabled in settings")
