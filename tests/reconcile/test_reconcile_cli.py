"""`instantly-ghl-bridge reconcile` end to end: fake Instantly and fake GHL behind `responses`;
with a worker running, the worker in a process of its own against a fake GHL over HTTP."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.cli.reconcile import ProgressLine, sync_line
from bridge.reconcile import handoff
from bridge.reconcile.reconciler import PassStats, Progress
from bridge.reconcile.runs import acquire_lock, last_run
from bridge.store import presence
from bridge.sync.worker import Worker
from tests.faults.procs import wait_until
from tests.helpers import LOCATION_ID
from tests.interest_helpers import change_settings, switch_on_opportunity
from tests.support.ghl_server import FakeGHLServer
from tests.support.instantly_fake import API_KEY, BASE_URL

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(env):
    """The bridge's environment, with the fake Instantly's key and address."""
    return {**env, "INSTANTLY_API_KEY": API_KEY, "INSTANTLY_BASE_URL": BASE_URL}


@pytest.fixture
def run_cli(runner, db):
    def run(*args: str):
        return runner.invoke(["reconcile", *args], catch_exceptions=False)

    return run


@pytest.fixture
def workspace(fake_instantly):
    recent = datetime.now(UTC) - timedelta(days=2)
    campaign = fake_instantly.add_campaign("Q1 outreach")
    for i in range(3):
        fake_instantly.add_lead(
            f"ada{i}@example.com", campaign=campaign["id"], first_name=f"Ada{i}"
        )
        fake_instantly.add_reply(
            f"ada{i}@example.com", recent + timedelta(minutes=i), campaign["id"]
        )
    return fake_instantly


def test_dry_run_since_prints_the_summary_and_writes_nothing(run_cli, db, workspace, fake_ghl):
    before = list(db.conn.iterdump())
    result = run_cli("--since", "2026-01-01", "--dry-run")
    assert result.exit_code == 0, result.output
    assert list(db.conn.iterdump()) == before
    out = result.output
    assert "Dry run: nothing was written. Would enqueue 3 events." in out
    assert 'reply_received ada0@example.com "Q1 outreach"' in out
    assert (
        "GHL: upsert contact (firstName); add tags instantly-replied, instantly-campaign-q1 outreach"
        in out
    )
    assert "Replies from 2026-01-01T00:00:00.000Z" in out
    for label in (
        "pages fetched",
        "Instantly calls",
        "events found",
        "already known",
        "would be new",
        "errors",
    ):
        assert label in out
    assert "statuses: skipped" not in out  # interest statuses sync by default
    assert fake_ghl.calls == []
    assert API_KEY not in out


def test_json_summary(run_cli, workspace):
    result = run_cli("--since", "2026-01-01T00:00:00Z", "--dry-run", "--json")
    assert result.exit_code == 0
    body = json.loads(result.output)
    assert body["dry_run"] is True and body["status"] == "ok"
    assert body["totals"]["new"] == 3 and body["replies"]["found"] == 3
    assert body["totals"]["calls"] == len(workspace.calls)
    assert [e["email"] for e in body["would_enqueue"]] == [
        "ada0@example.com",
        "ada1@example.com",
        "ada2@example.com",
    ]
    assert body["sync"] is None


def test_a_real_run_enqueues_syncs_and_is_recorded(run_cli, db, workspace, fake_ghl):
    result = run_cli()
    assert result.exit_code == 0, result.output
    assert "sync: 3 events processed (done 3)" in result.output
    assert fake_ghl.upserts_for("ada1@example.com") == 1
    run = last_run(db)
    assert (run["trigger"], run["status"], run["events_new"]) == ("cli", "ok", 3)
    assert run["instantly_calls"] == len(workspace.calls)
    again = run_cli("--json")
    assert json.loads(again.output)["totals"]["new"] == 0
    assert json.loads(again.output)["sync"] == {"processed": 0}
    assert "sync: nothing new to sync" in run_cli().output
    assert fake_ghl.upserts_for("ada1@example.com") == 1


def test_no_sync_only_enqueues(run_cli, db, workspace, fake_ghl):
    result = run_cli("--no-sync")
    assert result.exit_code == 0
    assert db.execute("SELECT COUNT(*) FROM events WHERE status = 'pending'").fetchone()[0] == 3
    assert fake_ghl.calls == []


def test_errors_exit_non_zero_without_leaking_the_key(run_cli, workspace):
    echo = {"statusCode": 401, "error": "Unauthorized", "message": f"bad key {API_KEY}"}
    workspace.fail_next("GET", "/api/v2/emails", 401, echo)
    result = run_cli("--replies-only")
    assert result.exit_code == 1
    assert "replies: error: Instantly 401" in result.output
    assert API_KEY not in result.output


def test_a_second_run_waits_for_the_first(run_cli, db, workspace):
    acquire_lock(db, "schedule")
    result = run_cli()
    assert result.exit_code == 1
    assert "another reconciliation (schedule" in result.output
    assert workspace.calls == []


def test_options_are_checked(run_cli, monkeypatch):
    assert run_cli("--replies-only", "--statuses-only").exit_code == 2
    assert "not a date" in run_cli("--since", "yesterday").output
    assert run_cli("--since", "2026-02-01", "--until", "2026-01-01").exit_code == 2
    monkeypatch.setenv("INSTANTLY_API_KEY", "")
    result = run_cli("--dry-run")
    assert result.exit_code == 1 and "INSTANTLY_API_KEY" in result.output


def test_progress_line_draws_a_bar_or_counts():
    stream = io.StringIO()
    line = ProgressLine(stream, interval=0.0)
    line(Progress("replies", PassStats(pages=2, read=200, new=5), 0.5))
    assert "[############------------]  50%  pages 2  read 200  new 5" in stream.getvalue()
    line(Progress("statuses", PassStats(pages=12, read=1200), None))
    assert stream.getvalue().endswith("statuses pages 12  read 1,200  new 0")
    line.close()
    assert stream.getvalue().endswith("\r\x1b[K")


def _route(call: str) -> str:
    """'POST /contacts/<id>/tags' with the ids GHL makes up left out."""
    method, path = call.split(" ", 1)
    path = re.sub(r"^/contacts/(?!upsert$)[^/]+", "/contacts/{id}", path)
    path = re.sub(r"^/opportunities/(?!search$|pipelines$)[^/]+", "/opportunities/{id}", path)
    return f"{method} {path}"


@pytest.mark.parametrize("action", ["none", "reply_note", "workflow", "opportunity"])
def test_dry_run_announces_the_calls_the_real_run_then_makes(
    run_cli, db, workspace, fake_ghl, action
):
    campaign = workspace.add_campaign("Q2 outreach")
    for i, code in enumerate((1, 2, 4)):  # interested, meeting booked, won
        workspace.add_lead(
            f"grace{i}@example.com",
            campaign=campaign["id"],
            first_name=f"Grace{i}",
            lt_interest_status=code,
            timestamp_last_interest_change=(datetime.now(UTC) - timedelta(hours=i + 1)).isoformat(),
        )
    if action == "reply_note":
        change_settings(db, "actions.reply_note", enabled=True)
    elif action == "workflow":
        workflow_id = fake_ghl.add_workflow("Hot leads")
        change_settings(db, "actions.workflow", enabled=True, workflow_id=workflow_id)
    elif action == "opportunity":
        switch_on_opportunity(db, fake_ghl, ("Interested", "Won"), stages={"closed": "Won"})
    planned = json.loads(run_cli("--since", "2026-01-01", "--dry-run", "--json").output)
    announced = [_route(c) for event in planned["would_enqueue"] for c in event["ghl_calls"]]
    assert fake_ghl.calls == []
    assert len(planned["would_enqueue"]) == 6
    told = run_cli("--since", "2026-01-01", "--dry-run").output
    assert f"at most {len(announced)} GHL calls" in told

    result = run_cli("--since", "2026-01-01")
    assert result.exit_code == 0, result.output
    # The same calls, but for the tags several contacts of a batch miss alike: the worker
    # adds them in one bulk call where the dry run, planning each event alone, lists one
    # tag call per contact. So it makes at most the calls announced, as the summary says.
    sent, joined = [], 0
    for call in fake_ghl.calls:
        if call.path == "/contacts/bulk/tags/update/add":
            sent += ["POST /contacts/{id}/tags"] * len(call.json["contacts"])
            joined += len(call.json["contacts"]) - 1
        else:
            sent.append(_route(f"{call.method} {call.path}"))
    assert sorted(announced) == sorted(sent)
    assert len(fake_ghl.calls) == len(announced) - joined
    assert any(route.endswith("/tags") for route in sent)


# --- the one writer: a running worker syncs what reconcile enqueued -------------------------


@contextlib.contextmanager
def worker_process(database: str, ghl_url: str, log: Path) -> Iterator[subprocess.Popen]:
    """`instantly-ghl-bridge worker` in a process of its own, against a fake GHL over HTTP,
    running (its presence held) when the block starts. Without an Instantly key: it never
    reconciles on a schedule."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("INSTANTLY_")}
    env["GHL_BASE_URL"] = ghl_url
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: presence.running(database) or proc.poll() is not None,
                30.0,
                "the worker to start",
            )
            assert proc.poll() is None, log.read_text()
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def ghl_server():
    with FakeGHLServer() as server:
        yield server


def test_a_running_worker_syncs_what_reconcile_enqueued(
    run_cli, config, workspace, fake_ghl, ghl_server, tmp_path
):
    with worker_process(config.database, ghl_server.url, tmp_path / "worker.log"):
        result = run_cli()
    assert result.exit_code == 0, result.output
    assert "sync: 3 events processed by the running worker (done 3)" in result.output
    # The worker wrote each contact once; reconcile itself sent nothing to GHL.
    assert [ghl_server.fake.upserts_for(f"ada{i}@example.com") for i in range(3)] == [1, 1, 1]
    assert fake_ghl.calls == []


def test_a_paused_location_ends_the_wait_with_its_reason(
    run_cli, config, workspace, fake_ghl, ghl_server, tmp_path
):
    ghl_server.fake.default.fail_for(600, 401)  # the token was revoked
    started = time.monotonic()
    with worker_process(config.database, ghl_server.url, tmp_path / "worker.log"):
        result = run_cli("--json")
    # Well before the worker's next try of the token (a minute): nothing can progress.
    assert time.monotonic() - started < 45
    assert result.exit_code == 0, result.output
    sync = json.loads(result.stdout)["sync"]
    assert sync["by"] == ["worker"] and sync["pending"] == 3 and sync["processed"] == 0
    (left,) = sync["left"]
    assert (left["kind"], left["events"], left["location_id"]) == ("paused", 3, LOCATION_ID)
    assert "GHL writes to" in left["why"] and "are paused: GHL answered 401" in left["why"]
    assert fake_ghl.calls == []

    text = sync_line(sync)
    assert text.startswith("sync: 0 events processed by the running worker; 3 wait: GHL writes")
    assert "check GHL_TOKEN" in text


def test_events_due_for_a_retry_later_end_the_wait_saying_when(
    run_cli, config, workspace, fake_ghl, ghl_server, tmp_path
):
    ghl_server.fake.default.fail_for(600, 503)
    with worker_process(config.database, ghl_server.url, tmp_path / "worker.log"):
        result = run_cli()
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("sync:"))
    assert re.fullmatch(
        r"sync: 0 events processed by the running worker; 3 wait for a retry (at|from)"
        r" \d\d:\d\d UTC \(GHL 503: .+\)",
        line,
    ), line
    assert fake_ghl.calls == []


def test_with_no_worker_reconcile_syncs_itself(run_cli, config, workspace, fake_ghl):
    assert presence.running(config.database) == []
    sync = json.loads(run_cli("--json").stdout)["sync"]
    assert sync == {"processed": 3, "done": 3, "by": ["reconcile"], "left": []}
    assert [fake_ghl.upserts_for(f"ada{i}@example.com") for i in range(3)] == [1, 1, 1]


def hook_looks(monkeypatch, act) -> None:
    """Call `act(worker)` before each look reconcile takes at its events while they sync."""
    look = handoff.look

    def looking(*args, **kwargs):
        act(kwargs["worker"])
        return look(*args, **kwargs)

    monkeypatch.setattr(handoff, "look", looking)


def test_a_worker_that_stops_while_reconcile_waits_leaves_it_the_rest(
    run_cli, config, workspace, fake_ghl, monkeypatch
):
    # A worker that is running but gets no event synced before it stops.
    running = presence.announce(config.database)
    hook_looks(monkeypatch, lambda worker: worker and running.close())
    result = run_cli()
    assert result.exit_code == 0, result.output
    assert (
        "sync: 3 events processed (done 3): the running worker stopped while this command"
        " waited, so it synced the rest itself" in result.output
    )
    assert [fake_ghl.upserts_for(f"ada{i}@example.com") for i in range(3)] == [1, 1, 1]


def test_a_worker_starting_while_reconcile_syncs_takes_the_rest_over(
    run_cli, config, db, workspace, fake_ghl, monkeypatch
):
    worker = Worker(config)
    thread = threading.Thread(target=worker.run, daemon=True)
    running = presence.running

    def start_worker(worker_runs: bool) -> None:
        if not worker_runs and not thread.is_alive():
            thread.start()
            wait_until(lambda: running(config.database), 20.0, "the worker to start")

    # Every GHL call waits until reconcile has seen the worker: its own sync is then under
    # way, with something left to hand over.
    seen = threading.Event()

    def noting(database):
        found = running(database)
        if found:
            seen.set()
        return found

    handle = fake_ghl.handle

    def held(*args, **kwargs):
        seen.wait(20.0)
        return handle(*args, **kwargs)

    monkeypatch.setattr(presence, "running", noting)
    monkeypatch.setattr(fake_ghl, "handle", held)
    hook_looks(monkeypatch, start_worker)
    try:
        sync = json.loads(run_cli("--json").stdout)["sync"]
    finally:
        worker.stop()
        thread.join(timeout=20)
    assert sync["by"] == ["reconcile", "worker"]
    assert (sync["processed"], sync["done"], sync["left"]) == (3, 3, [])
    # Handed over, not done twice: each contact was written once.
    assert [fake_ghl.upserts_for(f"ada{i}@example.com") for i in range(3)] == [1, 1, 1]
    assert sync_line(sync) == (
        "sync: 3 events processed (done 3): a worker started while this command synced, and"
        " took the rest over"
    )


def test_the_wait_for_a_worker_is_capped(run_cli, config, workspace, fake_ghl):
    # A worker that is running but never gets to these events (busy elsewhere, stuck).
    with presence.announce(config.database):
        started = time.monotonic()
        result = run_cli("--max-wait", "0.02")
    assert 1.0 <= time.monotonic() - started < 20
    assert result.exit_code == 0, result.output
    assert (
        "sync: 0 events processed by the running worker; stopped waiting after 0.02 min:"
        " 3 are still queued for the running worker, which carries on with them"
    ) in result.output
    assert fake_ghl.calls == []
    assert run_cli("--max-wait", "0").exit_code == 2


def test_the_sync_line_names_one_event_in_the_singular():
    sync = {
        "processed": 2,
        "done": 1,
        "dead": 1,
        "by": ["worker"],
        "left": [
            {"events": 1, "kind": "unrouted", "why": "are held (unrouted): no route"},
            {"events": 1, "kind": "retry", "why": "wait for a retry at 10:02 UTC (GHL 503: x)"},
        ],
    }
    assert sync_line(sync) == (
        "sync: 2 events processed by the running worker (done 1, dead 1); 1 is held"
        " (unrouted): no route; 1 waits for a retry at 10:02 UTC (GHL 503: x)"
    )
