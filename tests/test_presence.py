"""Worker presence: held while a worker runs (never by a drain), let go however the worker
ends, kill -9 included, and never confused by several workers or several processes asking."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bridge.events.webhook import from_webhook
from bridge.store import inbox, presence
from bridge.sync.worker import Worker
from tests.faults.procs import wait_until
from tests.helpers import reply_payload

ROOT = Path(__file__).resolve().parents[1]


def test_a_worker_is_running_while_its_presence_is_held(config):
    assert presence.running(config.database) == []
    first = presence.announce(config.database)
    second = presence.announce(config.database)  # a second worker, as the fault tests run
    assert sorted(presence.running(config.database)) == sorted([first.id, second.id])
    first.close()
    assert presence.running(config.database) == [second.id]
    second.close()
    second.close()  # twice is safe
    assert presence.running(config.database) == []
    assert list(presence.workers_dir(config.database).iterdir()) == []


def test_an_in_memory_database_has_no_worker_to_hand_to():
    assert presence.announce(":memory:") is None
    assert presence.running(":memory:") == []


def test_a_worker_killed_with_sigkill_is_gone_at_once(config, db):
    # A real `instantly-ghl-bridge worker` (no Instantly key: no scheduled reconcile).
    env = {
        **os.environ,
        "BRIDGE_DATABASE": config.database,
        "BRIDGE_INSTANCE_PATH": str(Path(config.database).parent / "instance"),
        "BRIDGE_WEBHOOK_SECRET": "presence-test-secret",
        "GHL_BASE_URL": "http://127.0.0.1:9",  # nothing is queued: never called
    }
    env.pop("INSTANTLY_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        found = wait_until(
            lambda: presence.running(config.database) or proc.poll() is not None,
            30.0,
            "the worker to announce itself",
        )
        assert proc.poll() is None, proc.stdout.read().decode()
        assert found == [name for name in found if name.startswith(f"{proc.pid}-")]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # No finally block ran in it: the kernel dropped the lock, and asking cleans up.
        assert presence.running(config.database) == []
        assert list(presence.workers_dir(config.database).iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_asking_never_takes_a_live_worker_for_a_dead_one(config):
    live = presence.announce(config.database)
    # Another process in the middle of asking holds a shared lock on each file it looks at.
    asking = os.open(live.path, os.O_RDONLY)
    try:
        assert presence.running(config.database) == [live.id]
    finally:
        os.close(asking)
    live.close()


def test_a_worker_being_announced_is_left_alone_and_a_stale_one_removed(config):
    folder = presence.workers_dir(config.database)
    folder.mkdir()
    fresh = folder / ".123-fresh"
    fresh.touch()
    stale = folder / ".456-stale"
    stale.touch()
    old = time.time() - presence.STALE_SECONDS - 5
    os.utime(stale, (old, old))
    dead = folder / "789-dead"
    dead.touch()  # a worker's file whose lock nobody holds: that process died
    assert presence.running(config.database) == []
    assert sorted(p.name for p in folder.iterdir()) == [".123-fresh"]


def test_a_file_locked_by_a_live_process_under_its_hidden_name_is_not_a_worker_yet(config):
    folder = presence.workers_dir(config.database)
    folder.mkdir()
    hidden = folder / ".1-announcing"
    fd = os.open(hidden, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        old = time.time() - presence.STALE_SECONDS - 5
        os.utime(hidden, (old, old))
        assert presence.running(config.database) == []
        assert hidden.exists()  # locked: its process lives, it is not removed
    finally:
        os.close(fd)


def watch_calls(monkeypatch, fake_ghl, database: str) -> list[list[str]]:
    """For each GHL call the fake answers, which workers were running at that moment."""
    seen: list[list[str]] = []
    handle = fake_ghl.handle

    def noting(*args, **kwargs):
        seen.append(presence.running(database))
        return handle(*args, **kwargs)

    monkeypatch.setattr(fake_ghl, "handle", noting)
    return seen


def test_the_worker_holds_it_while_it_runs_and_a_drain_never(config, db, fake_ghl, monkeypatch):
    seen = watch_calls(monkeypatch, fake_ghl, config.database)
    inbox.enqueue(db, from_webhook(reply_payload(email_id="e1", lead_email="a@x.io")))
    assert Worker(config, db=db).run(drain=True) == 1
    assert seen and all(running == [] for running in seen)

    seen.clear()
    inbox.enqueue(db, from_webhook(reply_payload(email_id="e2", lead_email="b@x.io")))
    worker = Worker(config)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: inbox.counts(db)["done"] == 2, 20.0, "the worker to sync the event")
        held = seen[0]
        assert len(held) == 1 and held[0].startswith(f"{os.getpid()}-")
        assert all(running == held for running in seen)
        assert presence.running(config.database) == held  # idle, still running
    finally:
        worker.stop()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert presence.running(config.database) == []
