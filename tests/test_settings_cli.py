"""`instantly-ghl-bridge settings export|import`: what the settings page's Download and
Import do, from the command line, with the same checks and messages."""

from __future__ import annotations

import tomllib

import pytest

from bridge import settings as settings_mod
from bridge.settings import MAX_IMPORT_BYTES


def test_export_prints_the_stored_settings_as_toml(runner, db):
    result = runner.invoke(["settings", "export"])

    assert result.exit_code == 0, result.output
    exported = tomllib.loads(result.output)
    assert settings_mod.validate_settings(exported) == settings_mod.current(db)[1]


def test_export_to_a_file_then_import_it_round_trips(runner, db, tmp_path):
    target = tmp_path / "settings.toml"
    assert runner.invoke(["settings", "export", "-o", str(target)]).exit_code == 0
    text = target.read_text().replace("max_attempts = 10", "max_attempts = 3")
    assert "max_attempts = 3" in text
    target.write_text(text)

    result = runner.invoke(["settings", "import", str(target)])

    assert result.exit_code == 0, result.output
    assert result.output == f"imported {target}: settings version 2; the worker applies it next\n"
    version, current = settings_mod.current(db)
    assert version == 2 and current["sync"]["max_attempts"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sync\nsource = 1", "toml:"),
        (
            "[sync]\nmax_attempts = 0",
            "sync.max_attempts: Must be greater than or equal to 1 and less than",
        ),
        ('[[field_map]]\ninstantly = "x"\nghl = "nope"', "field_map.0.ghl:"),
        ("[retention]\nevent_days = 20", "retention.event_days (20) must be longer than"),
    ],
)
def test_a_bad_file_is_refused_naming_the_setting_and_nothing_changes(
    runner, db, tmp_path, text, message
):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)

    result = runner.invoke(["settings", "import", str(bad)])

    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad} not imported:\n  ")
    assert message in result.output
    assert settings_mod.version(db) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"  \n", "the settings file is empty"),
        (b"\xff\xfe\x00", "the settings file is not UTF-8 text"),
        (b"#" * (MAX_IMPORT_BYTES + 1), "the settings file is larger than 256 KiB"),
    ],
)
def test_a_file_that_cannot_be_read_as_settings_says_why(runner, db, tmp_path, data, message):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(data)

    result = runner.invoke(["settings", "import", str(bad)])

    assert result.exit_code == 1
    assert result.output == f"Error: {bad}: {message}" + (
        ": give a TOML file as exported\n" if "empty" in message else "\n"
    )
    assert settings_mod.version(db) == 1


def test_a_missing_file_is_one_line(runner, db, tmp_path):
    result = runner.invoke(["settings", "import", str(tmp_path / "none.toml")])

    assert result.exit_code == 1
    assert (
        result.output
        == f"Error: {tmp_path / 'none.toml'} cannot be read: No such file or directory\n"
    )


def test_import_reads_standard_input(runner, db):
    exported = runner.invoke(["settings", "export"]).output

    result = runner.invoke(["settings", "import", "-"], input=exported)

    assert result.exit_code == 0, result.output
    assert settings_mod.version(db) == 2
