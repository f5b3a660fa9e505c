"""Logging set-up, with a filter that masks secret values wherever they appear."""

from __future__ import annotations

import logging
import sys

from bridge.config import Config

MASK = "[redacted]"


class RedactSecrets(logging.Filter):
    """Replace any configured secret value in a record's final message."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = message
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, MASK)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self.secrets:
                text = text.replace(secret, MASK)
            record.exc_text, record.exc_info = text, None
        return True


def configure_logging(config: Config, level: int = logging.INFO) -> None:
    """One stderr handler on the 'bridge' logger, secrets masked; idempotent."""
    logger = logging.getLogger("bridge")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_bridge", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._bridge = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(config.secret_values()))
    logger.addHandler(handler)
