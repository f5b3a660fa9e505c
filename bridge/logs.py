"""Logging set-up, with filters that mask secret values and (unless BRIDGE_LOG_EMAILS=full)
email addresses wherever they appear."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable

from bridge.config import LOG_EMAILS_FULL, Config

MASK = "[redacted]"
# An address as it shows in a log line: no spaces, quotes, brackets or separators around
# it, and a dot in the domain; Unicode is allowed (josé@exämple.com). The lengths are
# RFC 5321's limits, and keep a long line without an address from costing more than a scan.
_CHAR = r"[^\s@<>()\[\]{},;:\"'`]"
_LAST = r"[^\s@<>()\[\]{},;:\"'`.]"
EMAIL = re.compile(rf"(?P<local>{_CHAR}{{1,64}})@(?P<domain>{_CHAR}{{1,252}}\.{_LAST}{{1,63}})")


def mask_email(text: str) -> str:
    """`jordan@example.com` → `j***@example.com`: enough to tell leads apart in a log, not
    enough to mail them. Every address in `text` is masked; the rest stays as it is."""
    if "@" not in text:
        return text
    return EMAIL.sub(lambda m: f"{m['local'][0]}***@{m['domain']}", text)


class RewriteRecords(logging.Filter):
    """Rewrites each record's final message and traceback text with `rewrite` before any
    handler writes it."""

    def __init__(self, rewrite: Callable[[str], str]):
        super().__init__()
        self.rewrite = rewrite

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.rewrite(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        # Rewritten as text, so that a second filter still sees what the first one left.
        if record.exc_text:
            record.exc_text = self.rewrite(record.exc_text)
        return True


# Secrets learnt after logging was set up: the tokens and keys of locations and workspaces
# that settings declare (bridge/locations/registry.py), added as they are read.
_LEARNT: set[str] = set()


def add_secrets(values: list[str]) -> None:
    """Mask these values too from now on (a location's token, a workspace's key)."""
    _LEARNT.update(v for v in values if len(v) >= 4)


def redact_secrets(secrets: list[str]) -> Callable[[str], str]:
    """A rewrite replacing each secret value (4 characters or more), and every one added
    since with add_secrets, with MASK."""
    values = [s for s in secrets if len(s) >= 4]

    def rewrite(text: str) -> str:
        for secret in (*values, *tuple(_LEARNT)):
            text = text.replace(secret, MASK)
        return text

    return rewrite


def configure_logging(config: Config, level: int = logging.INFO) -> None:
    """One stderr handler on the 'bridge' logger, secrets and addresses masked; idempotent."""
    logger = logging.getLogger("bridge")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_bridge", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._bridge = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RewriteRecords(redact_secrets(config.secret_values())))
    # Lead addresses are personal data, and logs are kept longer and read more widely
    # than the database.
    if config.log_emails != LOG_EMAILS_FULL:
        handler.addFilter(RewriteRecords(mask_email))
    logger.addHandler(handler)
