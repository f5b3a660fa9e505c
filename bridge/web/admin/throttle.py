"""Slowing password guessing down: per client address, and across all addresses together.

Each address has one small row in `login_attempts`: its tries in a row. Three are free;
then each further try waits twice as long as the one before, from 2 s up to a minute, and a
right password clears the row. A row untouched for an hour is pruned, so the table holds
only the last hour's addresses.

One address cannot guess faster than about one password a minute, but many addresses (a
botnet, or every visitor behind a proxy the bridge was not told to trust) could; the
address '*' counts every try across all of them, at most GLOBAL_MAX_TRIES a minute. The
trade-off: an attacker with many addresses can hold that budget spent and keep the admin
waiting for as long as they keep it up (a logged-in session is not affected), but never for
more than a minute after they stop, and never guesses faster than the budget. One address
alone never reaches it: its own waits hold it to seven tries in the first minute.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

import sqlite_utils

from bridge.store.db import immediate

FREE_TRIES = 3
FIRST_WAIT_SECONDS = 2.0
MAX_WAIT_SECONDS = 60.0
FORGET_AFTER_SECONDS = 3600.0
GLOBAL_MAX_TRIES = 30
GLOBAL_WINDOW_SECONDS = 60
EVERYONE = "*"
# An IPv6 address with a zone is 40-odd characters; anything longer is not an address.
MAX_KEY_LENGTH = 64


@dataclass(frozen=True)
class Refusal:
    """A try refused: how long to wait, and whether the limit across all addresses did it."""

    wait: float
    everyone: bool

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.wait))


def client_key(remote_addr: str | None) -> str:
    """The name a try counts against. An IPv6 client counts by its /64, the block one
    subscriber is usually given whole, so stepping through it does not start a new count."""
    try:
        ip = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return (remote_addr or "unknown")[:MAX_KEY_LENGTH]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip.exploded}/64", strict=False))
    return str(ip)


def address_wait(attempts: int, last_at: float, now: float) -> float:
    """How long an address with `attempts` tries in a row, the last at `last_at`, must
    still wait (0 when it may try now)."""
    if attempts < FREE_TRIES:
        return 0.0
    wait = min(MAX_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2 ** (attempts - FREE_TRIES))
    return max(0.0, last_at + wait - now)


def admit(db: sqlite_utils.Database, address: str, now: float) -> Refusal | None:
    """Count a try by `address` before its password is checked, or refuse it.

    The check and the count are one transaction, so tries arriving together are admitted
    one after another and never all pass the same check.
    """
    with immediate(db):
        db.execute("DELETE FROM login_attempts WHERE at < ?", [now - FORGET_AFTER_SECONDS])
        own = _row(db, address)
        wait = address_wait(*own, now) if own else 0.0
        if wait > 0:
            return Refusal(wait, everyone=False)
        window_wait = _window_wait(_row(db, EVERYONE), now)
        if window_wait > 0:
            return Refusal(window_wait, everyone=True)
        db.execute(
            "INSERT INTO login_attempts (address, attempts, at) VALUES (?, 1, ?)"
            " ON CONFLICT(address) DO UPDATE SET attempts = attempts + 1, at = excluded.at",
            [address, now],
        )
        db.execute(
            "INSERT INTO login_attempts (address, attempts, at) VALUES (:everyone, 1, :now)"
            " ON CONFLICT(address) DO UPDATE SET"
            " attempts = CASE WHEN :now - at >= :window THEN 1 ELSE attempts + 1 END,"
            " at = CASE WHEN :now - at >= :window THEN :now ELSE at END",
            {"everyone": EVERYONE, "now": now, "window": GLOBAL_WINDOW_SECONDS},
        )
    return None


def forget(db: sqlite_utils.Database, address: str) -> None:
    """A right password: the address starts afresh (the tries across addresses stay)."""
    db.execute("DELETE FROM login_attempts WHERE address = ?", [address])


def _row(db: sqlite_utils.Database, address: str) -> tuple[int, float] | None:
    return db.execute(
        "SELECT attempts, at FROM login_attempts WHERE address = ?", [address]
    ).fetchone()


def _window_wait(everyone: tuple[int, float] | None, now: float) -> float:
    """Until the current window ends, when its budget of tries across addresses is spent."""
    if not everyone:
        return 0.0
    attempts, started_at = everyone
    if attempts < GLOBAL_MAX_TRIES:
        return 0.0
    return max(0.0, started_at + GLOBAL_WINDOW_SECONDS - now)
