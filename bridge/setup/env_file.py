"""The first `.env`: every variable the bridge reads, each with its meaning and default.

`instantly-ghl-bridge init-env` writes it once. The two secrets are generated and set; every
other line is a commented example, so the file documents the settings without changing any.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from dataclasses import dataclass
from pathlib import Path

from bridge.config import (
    DEFAULT_GHL_BASE_URL,
    DEFAULT_INSTANTLY_BASE_URL,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_PORT,
    ENV_FILE_VAR,
    LOG_EMAILS_FULL,
    LOG_EMAILS_MASK,
    MAX_TRUSTED_PROXIES,
)

WIDTH = 92


@dataclass(frozen=True)
class Variable:
    """One line of the file: `NAME=example`, commented unless `value` sets it."""

    name: str
    meaning: str
    default: str
    example: str = ""
    value: str = ""


def _sections() -> list[tuple[str, str, list[Variable]]]:
    """(title, note, variables): the file's sections, in the order a newcomer needs them."""
    return [
        (
            "Generated secrets",
            "Made for this install by init-env; keep them private. Changing the webhook secret"
            " means registering the webhooks again.",
            [
                Variable(
                    "BRIDGE_WEBHOOK_SECRET",
                    "the value Instantly must send in the X-Bridge-Secret header; without it"
                    " every webhook is refused (503), the bridge never runs open.",
                    "none",
                    value=secrets.token_urlsafe(24),
                ),
                Variable(
                    "BRIDGE_SECRET_KEY",
                    "signs the config page's session cookie.",
                    "a key generated into <BRIDGE_INSTANCE_PATH>/secret_key",
                    value=secrets.token_urlsafe(32),
                ),
            ],
        ),
        (
            "GoHighLevel and Instantly",
            "Without these, webhooks are accepted and queued but not synced; /healthz and"
            " `instantly-ghl-bridge doctor` say what is missing.",
            [
                Variable(
                    "GHL_TOKEN",
                    "the Private Integration token (or OAuth token) of the GHL sub-account."
                    " Scopes: contacts.write, contacts.readonly, locations/customFields.readonly,"
                    " locations/tags.write, locations.readonly; opportunities.readonly and"
                    " opportunities.write when the opportunity action is on.",
                    "none",
                ),
                Variable(
                    "GHL_LOCATION_ID",
                    "the GHL sub-account (location) id, from its Settings → Business Profile.",
                    "none",
                ),
                Variable(
                    "INSTANTLY_API_KEY",
                    "an Instantly API v2 key (Settings → Integrations → API keys) with the"
                    " scopes all:read and webhooks:all: reconciliation and doctor read with it,"
                    " and `webhook register` manages the bridge's own webhooks.",
                    "none",
                ),
                Variable(
                    "INSTANTLY_API_KEY_FILE",
                    "a file holding the Instantly key instead (blank and # lines are skipped),"
                    " e.g. a mounted secret; INSTANTLY_API_KEY wins when both are set.",
                    "none",
                    "/run/secrets/instantly_api_key",
                ),
            ],
        ),
        (
            "The config page and the public address",
            "",
            [
                Variable(
                    "BRIDGE_ADMIN_PASSWORD",
                    "the config page's password; until it is set the page only says how to set it.",
                    "none (the page is closed)",
                ),
                Variable(
                    "BRIDGE_PUBLIC_URL",
                    "where Instantly reaches this bridge (http(s), a path prefix allowed, no"
                    " query): the webhook URL the dashboard, `webhook register` and `doctor`"
                    " use. https:// also marks the session cookie Secure.",
                    "none",
                    "https://bridge.example.com",
                ),
                Variable(
                    "BRIDGE_TRUSTED_PROXIES",
                    "how many proxies in front of the bridge set X-Forwarded-For and"
                    f" X-Forwarded-Proto (0 to {MAX_TRUSTED_PROXIES}); 1 behind one reverse"
                    " proxy or tunnel.",
                    "0",
                    "1",
                ),
                Variable(
                    "BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL",
                    "1 accepts a webhook URL on a private, loopback or link-local address (a"
                    " test set-up; Instantly cannot deliver there).",
                    "0",
                    "1",
                ),
            ],
        ),
        (
            "The web server",
            "Read when `instantly-ghl-bridge run` or `make run` starts it; a platform running"
            " the Procfile sets these in its own environment. `make run` sets HOST itself"
            " (127.0.0.1; `HOST=0.0.0.0 make run` opens it), so a HOST here applies to"
            " `instantly-ghl-bridge run` only.",
            [
                Variable(
                    "PORT",
                    "the port the web app listens on.",
                    str(DEFAULT_PORT),
                    "8080",
                ),
                Variable(
                    "HOST",
                    "the address it listens on: 127.0.0.1 keeps it to this machine, 0.0.0.0"
                    " opens it to every interface (what a platform's router needs).",
                    "0.0.0.0 (make run: 127.0.0.1)",
                    "127.0.0.1",
                ),
                Variable("WEB_CONCURRENCY", "gunicorn worker processes.", "2", "4"),
                Variable("WEB_THREADS", "threads in each worker process.", "8", "16"),
                Variable(
                    "BRIDGE_ACCESS_LOG",
                    "1 logs each request (without its query string), 0 turns the access log off.",
                    "1",
                    "0",
                ),
                Variable(
                    "PROMETHEUS_MULTIPROC_DIR",
                    "where the web processes keep their /metrics counters, emptied at each start.",
                    "<BRIDGE_INSTANCE_PATH>/metrics",
                    "/var/lib/instantly-ghl-bridge/metrics",
                ),
            ],
        ),
        (
            "Storage",
            "",
            [
                Variable(
                    "BRIDGE_INSTANCE_PATH",
                    "the folder for the database, the generated session key and the metrics files.",
                    "instance/ in the folder the bridge starts in",
                    "/var/lib/instantly-ghl-bridge",
                ),
                Variable(
                    "BRIDGE_DATABASE",
                    "the SQLite file.",
                    "<BRIDGE_INSTANCE_PATH>/bridge.sqlite3",
                    "/var/lib/instantly-ghl-bridge/bridge.sqlite3",
                ),
                Variable(
                    "BRIDGE_REPLICA_URL",
                    "where Litestream keeps a continuous copy of the database, s3://bucket/path"
                    " or file:///absolute/folder: `instantly-ghl-bridge run` restores a missing"
                    " database from it, then streams every commit there (pip install"
                    " 'instantly-ghl-bridge[replication]').",
                    "none (no replica)",
                    "s3://my-bucket/instantly-ghl-bridge",
                ),
                Variable(
                    "LITESTREAM_ACCESS_KEY_ID",
                    "the S3 key Litestream writes an s3:// replica with (never put it in the URL).",
                    "none",
                ),
                Variable("LITESTREAM_SECRET_ACCESS_KEY", "that key's secret.", "none"),
            ],
        ),
        (
            "Tuning and debugging",
            "",
            [
                Variable(
                    "GHL_BASE_URL",
                    "the GHL API's base URL (a test set-up points it elsewhere).",
                    DEFAULT_GHL_BASE_URL,
                    DEFAULT_GHL_BASE_URL,
                ),
                Variable(
                    "INSTANTLY_BASE_URL",
                    "the Instantly API's base URL.",
                    DEFAULT_INSTANTLY_BASE_URL,
                    DEFAULT_INSTANTLY_BASE_URL,
                ),
                Variable(
                    "BRIDGE_LEASE_SECONDS",
                    "how long the worker holds a claimed event; after a crash another pass"
                    " takes it once this has passed.",
                    f"{DEFAULT_LEASE_SECONDS:g}",
                    "120",
                ),
                Variable(
                    "BRIDGE_LOG_EMAILS",
                    f"{LOG_EMAILS_MASK} logs lead addresses as j***@example.com, {LOG_EMAILS_FULL}"
                    " logs them whole (for debugging).",
                    LOG_EMAILS_MASK,
                    LOG_EMAILS_FULL,
                ),
            ],
        ),
    ]


def variables() -> list[Variable]:
    """Every variable the file lists, in its order (secrets freshly generated)."""
    return [v for _, _, section in _sections() for v in section]


def env_file_text() -> str:
    """The whole file, with new secrets each call."""
    lines = _note(
        "instantly-ghl-bridge settings, written by `instantly-ghl-bridge init-env`. The bridge"
        " reads this file from the folder it starts in (or the file"
        f" {ENV_FILE_VAR} names); a variable set in the environment wins over it. Uncomment a"
        " line to set it, then restart the web app and the worker."
    )
    for title, note, section in _sections():
        lines += ["", f"# --- {title} " + "-" * max(3, WIDTH - len(title) - 7)]
        if note:
            lines += _note(note)
        for variable in section:
            lines += _comment(f"{variable.name}: {variable.meaning} Default: {variable.default}.")
            if variable.value:
                lines.append(f"{variable.name}={variable.value}")
            else:
                lines.append(f"# {variable.name}={variable.example}")
    return "\n".join(lines) + "\n"


def write_env_file(path: str | Path) -> bool:
    """Write the file at `path` unless something is already there; True when written.

    Made 0600 by the call that creates it, never readable by others in between; and O_EXCL
    never follows a link left where the file should be.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(env_file_text())
    return True


def _comment(text: str) -> list[str]:
    """A variable's description; lines after the first indented, so the entries stand out."""
    return textwrap.wrap(
        text, WIDTH, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False
    )


def _note(text: str) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
    )
