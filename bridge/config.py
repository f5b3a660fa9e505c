"""Secrets and endpoints, read once from the environment (and .env)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import load_dotenv

DEFAULT_INSTANTLY_BASE_URL = "https://api.instantly.ai"
DEFAULT_GHL_BASE_URL = "https://services.leadconnectorhq.com"
DEFAULT_PORT = 8000
# How long a worker holds a claimed event. A worker killed mid-event keeps its event this
# long before another pass may take it; BRIDGE_LEASE_SECONDS shortens it (fault tests do).
DEFAULT_LEASE_SECONDS = 300.0
# How many proxies in front of the bridge it believes X-Forwarded-For and -Proto from
# (BRIDGE_TRUSTED_PROXIES); more hops than this is a mistake, not a deployment.
MAX_TRUSTED_PROXIES = 10
# The bridge keeps its files in the folder it is started from (./.env, ./instance): the
# repository for `make run`, the app's folder on a platform, any folder for an installed
# bridge. Not the package's folder, which is site-packages once installed.
RUN_DIR = Path.cwd()
DEFAULT_INSTANCE = RUN_DIR / "instance"
# BRIDGE_ENV_FILE names the .env to read instead of ./.env; a path that does not exist reads
# none. The test session points it at such a path, so a configured .env never reaches a test.
ENV_FILE_VAR = "BRIDGE_ENV_FILE"
# BRIDGE_LOG_EMAILS: lead addresses in log lines masked (j***@example.com), or in full.
LOG_EMAILS_MASK = "mask"
LOG_EMAILS_FULL = "full"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Config:
    """Everything the bridge reads from its environment."""

    database: str
    instantly_api_key: str = ""
    instantly_base_url: str = DEFAULT_INSTANTLY_BASE_URL
    ghl_token: str = ""
    ghl_location_id: str = ""
    ghl_base_url: str = DEFAULT_GHL_BASE_URL
    webhook_secret: str = ""
    admin_password: str = ""
    secret_key: str = ""
    port: int = DEFAULT_PORT
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    trusted_proxies: int = 0
    instance_path: str = str(DEFAULT_INSTANCE)
    public_url: str = ""
    allow_private_webhook_url: bool = False
    log_emails: str = LOG_EMAILS_MASK
    replica_url: str = ""
    extra: dict = field(default_factory=dict)
    # The environment the config was read from, for the variables settings name (a
    # location's token_env, a workspace's key_env); None reads os.environ.
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)

    def env_value(self, name: str) -> str:
        """An environment variable settings name, trimmed ('' when unset)."""
        env = os.environ if self.environ is None else self.environ
        return (env.get(name) or "").strip()

    @property
    def ghl_configured(self) -> bool:
        return bool(self.ghl_token and self.ghl_location_id)

    def missing(self) -> list[str]:
        """Names of settings that are needed for a full sync but not set."""
        wanted = {
            "GHL_TOKEN": self.ghl_token,
            "GHL_LOCATION_ID": self.ghl_location_id,
            "BRIDGE_WEBHOOK_SECRET": self.webhook_secret,
            "INSTANTLY_API_KEY": self.instantly_api_key,
        }
        return [name for name, value in wanted.items() if not value]

    def secret_values(self) -> list[str]:
        """Every secret value, so logs and pages can be checked against them."""
        values = [
            self.instantly_api_key,
            self.ghl_token,
            self.webhook_secret,
            self.admin_password,
            self.secret_key,
        ]
        return [v for v in values if v]


def load_config(env: dict[str, str] | None = None, dotenv_path: str | None = None) -> Config:
    """Build the Config from `env` (default: os.environ after loading .env)."""
    if env is None:
        load_dotenv(dotenv_path or env_file_path(), override=False)
        env = dict(os.environ)
    instance = Path(env.get("BRIDGE_INSTANCE_PATH") or DEFAULT_INSTANCE)
    return Config(
        database=env.get("BRIDGE_DATABASE") or str(instance / "bridge.sqlite3"),
        instantly_api_key=_instantly_key(env),
        instantly_base_url=_url(env, "INSTANTLY_BASE_URL", DEFAULT_INSTANTLY_BASE_URL),
        ghl_token=env.get("GHL_TOKEN", "").strip(),
        ghl_location_id=env.get("GHL_LOCATION_ID", "").strip(),
        ghl_base_url=_url(env, "GHL_BASE_URL", DEFAULT_GHL_BASE_URL),
        webhook_secret=env.get("BRIDGE_WEBHOOK_SECRET", "").strip(),
        admin_password=env.get("BRIDGE_ADMIN_PASSWORD", ""),
        secret_key=env.get("BRIDGE_SECRET_KEY", "").strip() or _instance_secret_key(instance),
        port=_port(env),
        lease_seconds=_seconds(env, "BRIDGE_LEASE_SECONDS", DEFAULT_LEASE_SECONDS),
        trusted_proxies=_trusted_proxies(env),
        instance_path=str(instance),
        public_url=_public_url(env),
        allow_private_webhook_url=_flag(env, "BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL"),
        log_emails=_choice(env, "BRIDGE_LOG_EMAILS", (LOG_EMAILS_MASK, LOG_EMAILS_FULL)),
        replica_url=_replica_url(env),
        environ=env,
    )


def env_file_path() -> Path:
    """The .env load_config reads: $BRIDGE_ENV_FILE when set, else ./.env."""
    return Path(os.environ.get(ENV_FILE_VAR) or RUN_DIR / ".env")


def read_key_file(path: str | Path) -> str:
    """Return the first line of a key file that is neither blank nor a # comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"INSTANTLY_API_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    raise ConfigError(f"INSTANTLY_API_KEY_FILE: {path} holds no key (only blank or # lines)")


def _instantly_key(env: dict[str, str]) -> str:
    key = env.get("INSTANTLY_API_KEY", "").strip()
    if key:
        return key
    path = env.get("INSTANTLY_API_KEY_FILE", "").strip()
    return read_key_file(path) if path else ""


def _url(env: dict[str, str], name: str, default: str) -> str:
    value = (env.get(name) or default).strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: expected an http(s) URL, got {value!r}")
    return value


def _public_url(env: dict[str, str]) -> str:
    """BRIDGE_PUBLIC_URL: where Instantly reaches this bridge, e.g. https://bridge.example.com.

    The dashboard offers it as the webhook URL instead of trusting the request's Host
    header, which any visitor chooses.
    """
    value = env.get("BRIDGE_PUBLIC_URL", "").strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"BRIDGE_PUBLIC_URL: expected an http(s) URL such as https://bridge.example.com,"
            f" got {value!r}"
        )
    if "?" in value or "#" in value:
        raise ConfigError(f"BRIDGE_PUBLIC_URL: no query string or fragment, got {value!r}")
    if parts.username is not None:
        raise ConfigError("BRIDGE_PUBLIC_URL: no user name or password in the URL")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ConfigError(f"BRIDGE_PUBLIC_URL: bad port in {value!r}") from None
    return value


def _replica_url(env: dict[str, str]) -> str:
    """BRIDGE_REPLICA_URL: where Litestream keeps the database's replica, s3://bucket/path or
    file:///absolute/folder; empty for none.

    The message never repeats the value: a URL pasted with a key in it must not reach a log.
    S3 keys go in Litestream's own LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY.
    """
    value = env.get("BRIDGE_REPLICA_URL", "").strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("s3", "file"):
        raise ConfigError(
            "BRIDGE_REPLICA_URL: expected s3://bucket/path or file:///absolute/folder, got a"
            f" {parts.scheme or 'relative'}{':' if parts.scheme else ''} URL"
        )
    if "@" in parts.netloc:
        raise ConfigError(
            "BRIDGE_REPLICA_URL: no user name or key in the URL; set LITESTREAM_ACCESS_KEY_ID"
            " and LITESTREAM_SECRET_ACCESS_KEY instead"
        )
    if parts.fragment:
        raise ConfigError("BRIDGE_REPLICA_URL: no #fragment in the URL")
    if parts.scheme == "s3" and not parts.hostname:
        raise ConfigError("BRIDGE_REPLICA_URL: an s3:// URL names its bucket: s3://bucket/path")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise ConfigError(
                "BRIDGE_REPLICA_URL: a file:// URL is a folder on this machine, written"
                " file:///absolute/folder (three slashes, no host or query)"
            )
        if not parts.path.startswith("/") or parts.path == "/":
            raise ConfigError(
                "BRIDGE_REPLICA_URL: a file:// URL names a folder by its absolute path,"
                " file:///absolute/folder"
            )
    return value


def _flag(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name}: expected 1 or 0, got {raw!r}")


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def _port(env: dict[str, str]) -> int:
    raw = env.get("PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"PORT: expected a number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"PORT: {port} is out of range")
    return port


def _trusted_proxies(env: dict[str, str]) -> int:
    raw = env.get("BRIDGE_TRUSTED_PROXIES", "").strip() or "0"
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_TRUSTED_PROXIES:
        raise ConfigError(
            f"BRIDGE_TRUSTED_PROXIES: expected how many proxies stand in front of the bridge"
            f" (0 to {MAX_TRUSTED_PROXIES}), got {raw!r}"
        )
    return int(raw)


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not 0 < value < 86400:
        raise ConfigError(f"{name}: {raw} is out of range (more than 0, less than 86400)")
    return value


def _instance_secret_key(instance: Path) -> str:
    """A signing key kept in the instance folder, so all web workers share it."""
    path = instance / "secret_key"
    if not path.exists():
        # 0700: the folder holds this key and, by default, the database.
        instance.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = instance / f".secret_key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        # link() fails if another process won the race; then its key is the key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return path.read_text().strip()
