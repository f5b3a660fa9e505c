"""What a logged-in session of the page carries, and how it ends.

The session is Flask's signed cookie. It holds a mark derived from the admin password and
the current session epoch, a random value kept in the database: logout replaces the epoch,
so every cookie issued before, a copied one included, stops opening the page at once
instead of living out its 12 hours. (One password, one admin: logging out ends the page's
sessions in every browser.)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlite_utils
from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

from bridge.store import state

EPOCH_STATE = "admin_session_epoch"


class SessionInterface(SecureCookieSessionInterface):
    """Flask's cookie session, marked Secure whenever the request came over https (directly,
    or as BRIDGE_TRUSTED_PROXIES forwarded it), so the browser never sends it over http."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure


def mark(password: str, secret_key: str, epoch: str) -> str:
    """The session's proof of login: it changes with the password and at each logout."""
    message = f"admin:{epoch}:{password}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def epoch(db: sqlite_utils.Database) -> str:
    return state.get(db, EPOCH_STATE, "")


def end_all(db: sqlite_utils.Database) -> None:
    state.put(db, EPOCH_STATE, secrets.token_hex(16))
