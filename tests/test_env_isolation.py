"""The test session never reads a developer's settings: not their shell's, not a `.env`.

A configured `.env` once leaked GHL_BASE_URL into the CLI tests (issue 15); these prove the
session fixture in conftest.py keeps every test, and every process a test starts, clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge import config as config_mod
from bridge.config import DEFAULT_GHL_BASE_URL, ENV_FILE_VAR, load_config
from tests.support.env_names import TEST_SUPPORT, bridge_env_names

HOSTILE = "GHL_BASE_URL=http://127.0.0.1:9\nGHL_TOKEN=from-dotenv\nPORT=1\n"
PRINT_CONFIG = (
    "from bridge.config import load_config; c = load_config(); print(c.ghl_base_url, c.port)"
)


def test_no_bridge_variable_reaches_a_test():
    leaked = sorted((bridge_env_names() - TEST_SUPPORT - {ENV_FILE_VAR}) & set(os.environ))
    assert leaked == []
    assert not Path(os.environ[ENV_FILE_VAR]).exists()


def test_a_dotenv_in_the_working_folder_is_ignored(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(HOSTILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config_mod, "RUN_DIR", tmp_path)  # as if the bridge started here
    config = load_config()
    assert (config.ghl_base_url, config.ghl_token, config.port) == (DEFAULT_GHL_BASE_URL, "", 8000)
    assert "GHL_TOKEN" not in os.environ  # load_dotenv writes what it reads into os.environ


def _config_in_child(cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PRINT_CONFIG],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_child_process_inherits_the_switch_and_reads_no_dotenv(tmp_path):
    (tmp_path / ".env").write_text(HOSTILE)
    assert _config_in_child(tmp_path, dict(os.environ)) == f"{DEFAULT_GHL_BASE_URL} 8000"
    # The same child without the switch reads the .env where it starts, as the bridge does.
    outside = {k: v for k, v in os.environ.items() if k != ENV_FILE_VAR}
    assert _config_in_child(tmp_path, outside) == "http://127.0.0.1:9 1"


def test_bridge_env_file_names_the_dotenv_to_read(tmp_path):
    elsewhere = tmp_path / "settings.env"
    elsewhere.write_text(HOSTILE)
    env = {**os.environ, ENV_FILE_VAR: str(elsewhere)}
    assert _config_in_child(tmp_path, env) == "http://127.0.0.1:9 1"
