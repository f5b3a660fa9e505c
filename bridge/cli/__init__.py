"""The `instantly-ghl-bridge` command. Each group of commands is a module here; common.py
holds what they share."""

from __future__ import annotations

import click

from bridge.cli import backup, queue, reconcile, service, setup
from bridge.cli.common import BridgeGroup
from bridge.cli.settings import settings_group


@click.group(cls=BridgeGroup)
def main() -> None:
    """instantly-ghl-bridge: Instantly events in, GoHighLevel contacts out."""


for command in (
    service.migrate,
    service.worker,
    service.run,
    service.init_env,
    queue.replay,
    queue.status,
    setup.doctor,
    setup.webhook,
    reconcile.reconcile,
    settings_group,
    backup.backup,
    backup.restore,
):
    main.add_command(command)
