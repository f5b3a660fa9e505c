"""`instantly-ghl-bridge run` as an operator runs it, with real processes: Ctrl-C ends the web
app and the worker at once, and with BRIDGE_REPLICA_URL (a file:// replica) the database
survives losing the disk: replies accepted and synced, the bridge stopped, its files
deleted, `run` started again, and the same events are back, a redelivery is answered
`duplicate`, and GHL sees nothing written twice."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bridge.store import replica
from tests.faults.harness import Stack
from tests.faults.procs import HOST, Proc, wait_until
from tests.faults.scenario import assert_synced_once, replies

pytestmark = pytest.mark.slow

# Ctrl-C must end everything in a few seconds; the bound is generous for a loaded CI
# machine (an idle bridge stops in under a second), and far below gunicorn's 20 s
# graceful timeout, after which it would SIGKILL its workers.
STOPS_WITHIN = 10.0


@pytest.fixture
def runs(stack: Stack) -> Iterator[list[Proc]]:
    """`run` processes the test starts; each is stopped at the end, pass or fail."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def start_run(stack: Stack, runs: list[Proc], **env: str) -> Proc:
    """`instantly-ghl-bridge run` in a session of its own (as a terminal would start it),
    returned once the web app answers /healthz."""
    argv = [sys.executable, "-m", "bridge", "run"]
    proc = Proc("run", argv, stack.env(HOST=HOST, **env), stack._log_path("run"))
    runs.append(proc)

    def answers() -> bool:
        if not proc.alive():
            raise AssertionError(f"run exited early:\n{proc.log()[-3000:]}")
        try:
            requests.get(stack.url + "/healthz", timeout=10)
        except (requests.ConnectionError, requests.Timeout):  # booting, on a busy machine
            return False
        return True

    wait_until(answers, 60, "run's web app to answer /healthz", interval=0.1)
    return proc


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (run's gunicorn and its workers, the worker)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def ctrl_c(proc: Proc) -> set[int]:
    """SIGINT to run's whole process group, as Ctrl-C in a terminal sends it; returns the
    processes that were running below it, after waiting for run to exit."""
    below = descendants(proc.pid)
    proc.ended_by_test = True
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.popen.wait(timeout=STOPS_WITHIN)
    except subprocess.TimeoutExpired:
        still = sorted(pid for pid in below if alive(pid))
        raise AssertionError(
            f"run still there {STOPS_WITHIN} s after Ctrl-C; alive below it: {still}"
        ) from None
    print(f"run stopped {time.monotonic() - started:.2f} s after Ctrl-C")
    return below


def assert_stopped_cleanly(proc: Proc, below: set[int]) -> None:
    assert proc.popen.returncode == 0, proc.log()[-3000:]
    assert below, "run had started no processes"
    assert not [pid for pid in below if alive(pid)], "a child of run outlived it"
    assert "SIGKILL" not in proc.log(), proc.log()[-3000:]


def test_ctrl_c_on_run_ends_the_web_app_and_the_worker(stack: Stack, runs: list[Proc]) -> None:
    stack.configure()
    run = start_run(stack, runs)
    sent = replies(2, emails=2, seed=51, prefix="c")
    assert [stack.post_event(r.body).status_code for r in sent] == [202, 202]
    wait_until(lambda: stack.counts()["done"] == 2, 60, "both replies to be synced")

    below = ctrl_c(run)
    assert_stopped_cleanly(run, below)
    assert "Handling signal: int" in run.log()


def wipe_the_disk(stack: Stack) -> list[str]:
    """Delete the database, SQLite's and Litestream's files beside it, and the instance
    folder, as a platform's ephemeral disk loses them; returns what was deleted."""
    stack.db().close()
    stack._db = None
    gone = []
    for path in [*stack.workdir.glob("bridge.sqlite3*"), *stack.workdir.glob(".bridge.sqlite3*")]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        gone.append(path.name)
    shutil.rmtree(stack.workdir / "instance")
    return gone


def test_a_replicated_bridge_comes_back_whole_after_losing_its_disk(
    stack: Stack, runs: list[Proc], tmp_path: Path
) -> None:
    replica_url = (tmp_path / "replica").as_uri()
    sent = replies(7, emails=3, seed=52, prefix="rep")
    before, after = sent[:6], sent[6:]  # the last one arrives after the restore

    first = start_run(stack, runs, BRIDGE_REPLICA_URL=replica_url)
    assert "no replica yet" in first.log()
    # The replicator's lock passed to Litestream when run became it: a second run is refused.
    second_run = subprocess.run(
        [sys.executable, "-m", "bridge", "run"],
        env=stack.env(HOST=HOST, BRIDGE_REPLICA_URL=replica_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second_run.returncode == 1
    assert f"another process (pid {first.pid}) already replicates" in second_run.stderr
    answers = [stack.post_event(r.body) for r in before]
    assert [a.json()["status"] for a in answers] == ["accepted"] * 6
    wait_until(lambda: stack.counts()["done"] == 6, 60, "the six replies to be synced")
    synced = {row[0]: row[1] for row in stack.db().execute("SELECT key, status FROM events")}
    calls_before = len(stack.fake.calls)

    below = ctrl_c(first)
    assert_stopped_cleanly(first, below)
    assert "litestream shut down" in first.log()

    shared = [p for p in (tmp_path / "replica").rglob("*") if p.stat().st_mode & 0o077]
    assert not shared, f"replica files others may read: {shared[:3]}"

    deleted = wipe_the_disk(stack)
    assert "bridge.sqlite3" in deleted and ".bridge.sqlite3-litestream" in deleted

    second = start_run(stack, runs, BRIDGE_REPLICA_URL=replica_url)
    assert f"restored {stack.database} from {replica_url}: {len(before)} events" in second.log()
    restored = {row[0]: row[1] for row in stack.db().execute("SELECT key, status FROM events")}
    assert restored == synced

    again = stack.post_event(before[0].body)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    # One new reply, synced: the worker has run a pass over the restored queue since.
    assert stack.post_event(after[0].body).json()["status"] == "accepted"
    wait_until(lambda: stack.counts()["done"] == 7, 60, "the new reply to be synced")

    assert_synced_once(stack, sent)
    # After the restore GHL heard only about the new reply's lead: the contact map came back
    # with the events, so nothing already synced was written again.
    lead = stack.fake.contact_by_email(after[0].email)["id"]
    new_calls = [(c.method, c.path) for c in stack.fake.calls[calls_before:]]
    assert new_calls, "the new reply never reached GHL"
    assert all(lead in path for _, path in new_calls), new_calls

    second.ended_by_test = True
    os.killpg(second.pid, signal.SIGTERM)  # a platform's stop
    second.popen.wait(timeout=STOPS_WITHIN)
    assert "SIGKILL" not in second.log()
    assert "litestream shut down" in second.log()

    # Replication went on from the restored database: the replica now holds all seven.
    copy = tmp_path / "copy.sqlite3"
    subprocess.run(
        [replica.litestream_binary(), "restore", "-o", str(copy), replica_url],
        capture_output=True,
        check=True,
        timeout=60,
    )
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        final = dict(conn.execute("SELECT key, status FROM events").fetchall())
    finally:
        conn.close()
    assert final == {f"reply:{r.email_id}": "done" for r in sent}
