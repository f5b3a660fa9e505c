"""Lease owners: a live owner's lock cannot be taken, a dead one's can, and only a dead
owner's leases are released."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bridge.events.webhook import from_webhook
from bridge.store import inbox, leases
from tests.helpers import reply_payload


def test_an_owner_is_alive_while_it_holds_its_lock(config):
    owner = leases.LeaseOwner(config.database)
    assert leases.owner_alive(config.database, owner.id)
    owner.close()
    assert not leases.owner_alive(config.database, owner.id)
    assert not leases.owner_alive(config.database, "never-existed")


def test_only_a_dead_owners_leases_are_released(config, db):
    for n in range(2):
        inbox.enqueue(db, from_webhook(reply_payload(email_id=f"e{n}", lead_email=f"l{n}@x.io")))
    live = leases.LeaseOwner(config.database)
    inbox.claim_next(db, owner=live.id)
    # Another process claims the second event and dies without a word, as under kill -9.
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import os
            from bridge.store import db as store, inbox, leases
            db = store.connect({config.database!r})
            owner = leases.LeaseOwner({config.database!r})
            inbox.claim_next(db, owner=owner.id)
            os._exit(9)
        """),
        ],
        capture_output=True,
        text=True,
    )
    assert died.returncode == 9, died.stderr
    assert inbox.counts(db)["processing"] == 2

    assert leases.release_dead_owners(db, config.database, me="someone-else") == 1
    rows = dict(db.execute("SELECT status, lease_owner FROM events").fetchall())
    assert rows == {"processing": live.id, "pending": None}
    # Its file is gone with it; the live owner's stays.
    assert [p.name for p in leases.owners_dir(config.database).iterdir()] == [live.id]
    live.close()
