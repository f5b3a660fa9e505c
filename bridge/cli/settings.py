"""`instantly-ghl-bridge settings export|import`: on the command line what the settings
page's Download and Import do, with the same checks and messages, so a deployment can be
configured from a file."""

from __future__ import annotations

from pathlib import Path

import click

from bridge import settings as settings_mod
from bridge.cli.common import load_config_or_exit, open_database
from bridge.locations import registry


@click.group("settings")
def settings_group() -> None:
    """Export the stored settings as TOML, or import a TOML file."""


@settings_group.command("export")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file instead of standard output.",
)
def export(output: str | None) -> None:
    """Print the stored settings as TOML (the format of config/defaults.toml)."""
    db = open_database(load_config_or_exit())
    version, current = settings_mod.current(db)
    text = settings_mod.to_toml(current)
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"settings version {version} written to {output}", err=True)


@settings_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def import_(file: str) -> None:
    """Check the TOML FILE (`-` reads standard input) and store it as the settings; the
    worker applies it to its next event. A token_env or key_env this environment does not
    set is refused, as on the settings page."""
    config = load_config_or_exit()
    db = open_database(config)
    try:
        with click.open_file(file, "rb") as handle:
            data = handle.read(settings_mod.MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        raise click.ClickException(f"{file} cannot be read: {exc.strerror}") from None
    try:
        imported = settings_mod.parse_import(data)
        refused = registry.environment_problems(config, imported)
        if refused:
            raise settings_mod.SettingsError(refused)
        new_version = settings_mod.save(db, imported)
    except settings_mod.ImportRefused as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    except settings_mod.SettingsError as exc:
        lines = settings_mod.error_lines(exc)
        raise click.ClickException(f"{file} not imported:\n  " + "\n  ".join(lines)) from None
    click.echo(f"imported {file}: settings version {new_version}; the worker applies it next")
