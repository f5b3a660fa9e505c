"""The generated .env: every variable the bridge reads, explained, and a file that loads."""

from __future__ import annotations

import io
import re
import stat
from pathlib import Path

from dotenv import dotenv_values

from bridge.config import DEFAULT_GHL_BASE_URL, DEFAULT_PORT, ENV_FILE_VAR, load_config
from bridge.setup.env_file import env_file_text, variables, write_env_file
from tests.support.env_names import TEST_SUPPORT, bridge_env_names

README = Path(__file__).resolve().parents[1] / "README.md"
GENERATED = {"BRIDGE_WEBHOOK_SECRET", "BRIDGE_SECRET_KEY"}


def _listed(text: str) -> set[str]:
    """Names with a `NAME=` line, set or commented out."""
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def _readme_variables() -> set[str]:
    """The names in the README's Configuration table of environment variables."""
    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1]
    table = section.split("| setting |", 1)[0]
    return {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])
    }


def test_every_variable_the_bridge_reads_has_a_line():
    text = env_file_text()
    wanted = bridge_env_names() - TEST_SUPPORT - {ENV_FILE_VAR}
    assert sorted(wanted - _listed(text)) == []
    assert ENV_FILE_VAR in text  # named in the header: it says which file this is


def test_every_variable_in_the_readme_table_has_a_line():
    documented = _readme_variables()
    assert {"GHL_TOKEN", "PORT", "WEB_THREADS"} <= documented  # the table was found
    # BRIDGE_ENV_FILE names this file, so the file names it in its header, not as a line.
    assert sorted(documented - _listed(env_file_text()) - {ENV_FILE_VAR}) == []


def test_each_variable_is_explained_with_its_default():
    text = env_file_text()
    for variable in variables():
        assert variable.meaning and variable.default, variable.name
        assert f"# {variable.name}: {variable.meaning.split()[0]}" in text
    assert f"Default: {DEFAULT_PORT}." in text


def test_only_the_generated_secrets_are_set_and_they_are_new_each_time():
    first = dotenv_values(stream=io.StringIO(env_file_text()))
    second = dotenv_values(stream=io.StringIO(env_file_text()))
    assert set(first) == GENERATED
    assert all(first[name] != second[name] for name in GENERATED)
    assert all(len(first[name]) >= 32 for name in GENERATED)


def test_examples_do_not_assume_port_8000():
    assert not [line for line in env_file_text().splitlines() if "8000" in line and "=" in line]


def test_the_written_file_is_private_and_loads(tmp_path):
    path = tmp_path / ".env"
    assert write_env_file(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = dotenv_values(path)
    config = load_config({**values, "BRIDGE_INSTANCE_PATH": str(tmp_path / "instance")})
    assert config.webhook_secret == values["BRIDGE_WEBHOOK_SECRET"]
    assert config.secret_key == values["BRIDGE_SECRET_KEY"]
    assert (config.port, config.ghl_base_url, config.ghl_token) == (
        DEFAULT_PORT,
        DEFAULT_GHL_BASE_URL,
        "",
    )
    assert config.missing() == ["GHL_TOKEN", "GHL_LOCATION_ID", "INSTANTLY_API_KEY"]


def test_an_existing_file_or_a_link_is_never_written(tmp_path):
    path = tmp_path / ".env"
    path.write_text("GHL_TOKEN=mine\n")
    assert write_env_file(path) is False
    assert path.read_text() == "GHL_TOKEN=mine\n"
    link, target = tmp_path / "linked.env", tmp_path / "elsewhere"
    link.symlink_to(target)
    assert write_env_file(link) is False
    assert not target.exists()
