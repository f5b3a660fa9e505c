"""Backup and restore against a real bridge: gunicorn as the Procfile runs it and
`instantly-ghl-bridge worker`, with the fake GHL on loopback.

A backup taken while deliveries keep arriving is whole and holds every event committed
before it began; a restore is refused while the web app or a worker runs, and once they
are stopped it brings back the events and the contact map, so a redelivery is answered
`duplicate` and costs no GHL call. The replaced database is kept aside, whole.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from bridge.store import backup as backups
from tests.faults.harness import Stack
from tests.faults.procs import wait_until
from tests.faults.scenario import replies
from tests.helpers import keys_in

pytestmark = pytest.mark.slow

IN_USE = (
    "Error: the web app or a worker is using {}: stop them (Ctrl-C make run, or stop the"
    " service) and try again\n"
)


def totals_agree(path: Path) -> bool:
    """m036's running totals match the finished events row for row: they are written by
    triggers in the same transactions, so a snapshot cut between two would disagree."""
    conn = sqlite3.connect(path)
    try:
        kept = set(conn.execute("SELECT event_type, status, events FROM event_totals"))
        counted = set(
            conn.execute(
                "SELECT event_type, status, COUNT(*) FROM events"
                " WHERE status NOT IN ('pending', 'processing') GROUP BY event_type, status"
            )
        )
    finally:
        conn.close()
    return {row for row in kept if row[2]} == counted


class Deliveries:
    """Replies posted one after another from a thread until stopped, as a busy Instantly."""

    def __init__(self, stack: Stack, seed: int):
        self.stack = stack
        self.pending = replies(5000, emails=50, seed=seed, prefix="live")
        self.answers: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._post, name="deliveries")

    def _post(self) -> None:
        for reply in self.pending:
            if self._stop.is_set():
                return
            self.answers.append(self.stack.post_event(reply.body).status_code)

    def __enter__(self) -> Deliveries:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the deliveries thread did not stop"


def test_a_backup_taken_while_deliveries_arrive_is_whole(stack: Stack, tmp_path: Path) -> None:
    stack.configure()
    stack.start_web(workers=2, threads=4)
    stack.start_worker()
    first = replies(30, emails=10, seed=71, prefix="before")
    assert [stack.post_event(r.body).status_code for r in first] == [202] * len(first)
    target = tmp_path / "backup.sqlite3"

    with Deliveries(stack, seed=72) as deliveries:
        wait_until(lambda: len(deliveries.answers) >= 20, 30, "deliveries to flow")
        answered_before = len(deliveries.answers)
        done = stack.cli("backup", str(target))
        answered_after = len(deliveries.answers)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"backup of {stack.database} written to {target}"
    # The web app kept answering while the copy was made, every delivery stored.
    assert answered_after > answered_before
    assert set(deliveries.answers) == {202}
    copied = keys_in(target)
    # Everything answered 202 before the backup began was committed, so it is in the copy;
    # nothing is in it that was not sent.
    committed = first + deliveries.pending[:answered_before]
    assert {f"reply:{r.email_id}" for r in committed} <= copied
    sent = first + deliveries.pending[: len(deliveries.answers)]
    assert copied <= {f"reply:{r.email_id}" for r in sent}
    summary = backups.verify(target)  # integrity_check, and the bridge's migrations
    assert sum(summary.events.values()) == len(copied)
    assert totals_agree(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def close_test_reader(stack: Stack) -> None:
    """The test's own connection is a user of the database like any process; it must not
    stay on the file a restore moves aside."""
    stack.db().close()
    stack._db = None


def test_restore_is_refused_while_the_bridge_runs_and_brings_everything_back_after(
    stack: Stack, tmp_path: Path
) -> None:
    stack.configure()
    web = stack.start_web()
    worker = stack.start_worker()
    kept = replies(6, emails=3, seed=81, prefix="kept")
    assert [stack.post_event(r.body).status_code for r in kept] == [202] * 6
    stack.wait_all_final(6, timeout=60)
    target = tmp_path / "backup.sqlite3"
    assert stack.cli("backup", str(target)).returncode == 0
    lost = replies(3, emails=3, seed=82, prefix="lost")  # after the backup: not in it
    assert [stack.post_event(r.body).status_code for r in lost] == [202] * 3
    stack.wait_all_final(9, timeout=60)
    contact_ids = {
        row[0]: row[1] for row in stack.db().execute("SELECT email, contact_id FROM contacts")
    }

    while_web_runs = stack.cli("restore", str(target))
    web.stop()
    while_worker_runs = stack.cli("restore", str(target))
    worker.stop()
    close_test_reader(stack)
    restored = stack.cli("restore", str(target))

    for refused in (while_web_runs, while_worker_runs):
        assert (refused.returncode, refused.stderr) == (1, IN_USE.format(stack.database))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    first_line = restored.stdout.splitlines()[0]
    prefix = "the database that was there is kept as "
    assert first_line.startswith(prefix), restored.stdout
    aside = Path(first_line.removeprefix(prefix))
    assert aside.parent == stack.database.parent
    everything = {f"reply:{r.email_id}" for r in kept + lost}
    assert keys_in(aside) == everything
    assert backups.verify(aside).events["done"] == 9
    assert keys_in(stack.database) == {f"reply:{r.email_id}" for r in kept}
    assert stat.S_IMODE(os.stat(stack.database).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(aside).st_mode) == 0o600
    restored_ids = {
        row[0]: row[1] for row in stack.db().execute("SELECT email, contact_id FROM contacts")
    }
    assert restored_ids == {r.email: contact_ids[r.email] for r in kept}

    calls = len(stack.fake.calls)
    stack.start_web()
    stack.start_worker()
    again = stack.post_event(kept[0].body)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert stack.wait_all_final(6, timeout=60)["done"] == 6
    assert len(stack.fake.calls) == calls  # nothing synced a second time
