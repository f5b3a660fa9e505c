"""Location tokens entered on the settings page, kept encrypted at rest (Fernet, keyed from
BRIDGE_SECRET_KEY), in their own table so a settings export never holds one."""

from __future__ import annotations

import base64
import hashlib

import sqlite_utils
from cryptography.fernet import Fernet, InvalidToken

from bridge.clock import now_iso

# Derived, not the secret key itself: the same key also signs the page's sessions.
_PURPOSE = b"instantly-ghl-bridge location tokens\x00"


class TokenUnreadable(Exception):
    """A stored token that this BRIDGE_SECRET_KEY cannot decrypt; the message names the
    location and what to do, never any part of the token."""


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(_PURPOSE + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def store(db: sqlite_utils.Database, secret_key: str, location_id: str, token: str) -> None:
    """Keep `token` for the location, encrypted, replacing one stored before."""
    sealed = _fernet(secret_key).encrypt(token.strip().encode()).decode()
    db.execute(
        "INSERT INTO location_tokens (location_id, token, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT(location_id) DO UPDATE SET token = excluded.token,"
        " updated_at = excluded.updated_at",
        [location_id, sealed, now_iso()],
    )


def read(db: sqlite_utils.Database, secret_key: str, location_id: str, name: str = "") -> str:
    """The location's stored token ('' when none is stored); TokenUnreadable when the key
    cannot decrypt it."""
    row = db.execute(
        "SELECT token FROM location_tokens WHERE location_id = ?", [location_id]
    ).fetchone()
    if row is None:
        return ""
    try:
        return _fernet(secret_key).decrypt(row[0].encode()).decode()
    except (InvalidToken, ValueError):
        raise TokenUnreadable(
            f"location {name or location_id}: its token stored from the settings page cannot "
            "be decrypted with this BRIDGE_SECRET_KEY (was the key changed?); enter the token "
            "again on the settings page"
        ) from None


def stored(db: sqlite_utils.Database) -> set[str]:
    """The locations that have a token stored from the page."""
    return {row[0] for row in db.execute("SELECT location_id FROM location_tokens")}


def forget(db: sqlite_utils.Database, location_id: str) -> None:
    db.execute("DELETE FROM location_tokens WHERE location_id = ?", [location_id])
