"""The worker's reconciliation schedule, the SQLite lock, and run requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from bridge import settings as settings_mod
from bridge.clients.instantly import Stopped
from bridge.reconcile.runs import (
    LOCK,
    SCHEDULE,
    Busy,
    acquire_lock,
    last_run,
    report,
    request_run,
    requested,
)
from bridge.reconcile.scheduler import CHECK_JOB, RUN_JOB, ReconcileScheduler
from bridge.store import db as store
from bridge.store import state
from tests.support.instantly_fake import API_KEY, BASE_URL, FakeInstantly, populate
from tests.support.instantly_server import serving

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def recon_config(config):
    return replace(config, instantly_api_key=API_KEY, instantly_base_url=BASE_URL)


@pytest.fixture
def scheduler(recon_config, instantly):
    made = ReconcileScheduler(
        recon_config,
        scheduler=BackgroundScheduler(timezone=UTC),
        client_factory=lambda workspace, sleep: instantly,
        now=lambda: NOW,
    )
    yield made
    made.shutdown()


def test_the_run_job_is_an_interval_job_with_one_instance_and_coalescing(db, scheduler):
    scheduler.apply_settings(db)
    job = scheduler.scheduler.get_job(RUN_JOB)
    assert job.trigger.interval == timedelta(minutes=15)
    assert job.max_instances == 1 and job.coalesce is True
    assert job.next_run_time == NOW + timedelta(seconds=30)  # never run: soon after start
    assert state.get(db, SCHEDULE) == {
        "enabled": True,
        "interval_minutes": 15,
        "next_run_at": "2026-03-01T12:00:30.000Z",
    }


def test_the_first_run_follows_the_last_one(db, scheduler):
    db["reconcile_runs"].insert(
        {"trigger": "cli", "status": "ok", "started_at": (NOW - timedelta(minutes=5)).isoformat()}
    )
    assert scheduler.first_run_at(db, 15) == NOW + timedelta(minutes=10)
    db["reconcile_runs"].insert(
        {"trigger": "cli", "status": "ok", "started_at": (NOW - timedelta(hours=5)).isoformat()}
    )
    assert scheduler.first_run_at(db, 15) == NOW + timedelta(seconds=30)


def test_changed_settings_reschedule_or_stop_the_job(db, scheduler):
    scheduler.apply_settings(db)
    _, settings = settings_mod.current(db)
    settings["reconcile"]["interval_minutes"] = 60
    settings_mod.save(db, settings)
    scheduler.apply_settings(db)
    assert scheduler.scheduler.get_job(RUN_JOB).trigger.interval == timedelta(minutes=60)
    settings["reconcile"]["enabled"] = False
    settings_mod.save(db, settings)
    scheduler.apply_settings(db)
    assert scheduler.scheduler.get_job(RUN_JOB) is None
    assert state.get(db, SCHEDULE)["enabled"] is False


def test_start_without_an_instantly_key_schedules_nothing(config, db):
    made = ReconcileScheduler(config, scheduler=BackgroundScheduler(timezone=UTC))
    assert made.start() is False
    assert made.scheduler.get_jobs() == []
    assert state.get(db, SCHEDULE) == {"enabled": False, "reason": "INSTANTLY_API_KEY is not set"}
    made.shutdown()


def test_start_adds_both_jobs(db, recon_config, instantly):
    scheduler = ReconcileScheduler(recon_config, client_factory=lambda workspace, sleep: instantly)
    assert scheduler.start() is True
    try:  # looked at before any job is due: the first run is 30 s away
        assert {job.id for job in scheduler.scheduler.get_jobs()} == {RUN_JOB, CHECK_JOB}
        check = scheduler.scheduler.get_job(CHECK_JOB)
        assert check.max_instances == 1 and check.trigger.interval == timedelta(seconds=5)
    finally:
        scheduler.shutdown()


def test_a_request_is_answered_by_the_next_check(db, scheduler, fake_instantly):
    populate(fake_instantly, leads=3, replies=3)
    request_run(db, by="page")
    assert requested(db)["by"] == "page"
    scheduler.check()
    run = last_run(db)
    assert (run["trigger"], run["status"]) == ("request", "ok")
    assert requested(db) is None
    assert report(db)["last_run"]["id"] == run["id"]


def test_a_request_waits_while_another_run_holds_the_lock(db, scheduler, fake_instantly):
    acquire_lock(db, "cli")
    request_run(db)
    scheduler.check()
    assert requested(db) is not None
    assert last_run(db) is None and fake_instantly.calls == []
    assert report(db)["running"]["what"] == "cli"


def test_a_stopping_worker_ends_the_run_at_the_next_page(db, scheduler, fake_instantly):
    populate(fake_instantly, leads=3, replies=3)
    scheduler.apply_settings(db)
    pages = []
    scheduler.client_factory = lambda workspace, sleep: _StopAfterFirstCall(scheduler, pages)
    scheduler.run_once("schedule")
    run = last_run(db)
    assert run["status"] == "stopped" and len(pages) == 1
    assert state.get(db, SCHEDULE)["next_run_at"] == "2026-03-01T12:15:00.000Z"
    scheduler.run_once("schedule")  # a stopped scheduler starts no new run
    assert last_run(db)["id"] == run["id"]
    with pytest.raises(Stopped):
        scheduler._sleep(60)


class _StopAfterFirstCall:
    """An Instantly client whose first answer comes as the worker is told to stop."""

    def __init__(self, scheduler, pages):
        self.scheduler, self.pages, self.calls = scheduler, pages, 0

    def list_emails(self, cursor=None, **filters):
        from bridge.clients.instantly import Page

        self.calls += 1
        self.pages.append(cursor)
        self.scheduler._stop.set()
        return Page(
            [{"id": "e1", "timestamp_created": "2026-02-28T00:00:00.000Z", "ue_type": 2}], "e1"
        )


def test_the_lock_expires_and_is_released(db):
    now = [1000.0]
    first = acquire_lock(db, "schedule", clock=lambda: now[0], seconds=60)
    with pytest.raises(Busy, match="another reconciliation"):
        acquire_lock(db, "cli", clock=lambda: now[0])
    now[0] += 59
    first.renew()
    now[0] += 59
    with pytest.raises(Busy):
        acquire_lock(db, "cli", clock=lambda: now[0])
    now[0] += 2
    taken = acquire_lock(db, "cli", clock=lambda: now[0])  # the holder died: taken over
    first.release()  # not the owner any more: leaves the new hold alone
    assert state.get(db, LOCK)["owner"] == taken.owner
    taken.release()
    assert state.get(db, LOCK) is None


def test_healthz_reports_reconciliation_and_a_failed_run(client, db):
    assert client.get("/healthz").get_json()["reconcile"]["last_run"] is None
    db["reconcile_runs"].insert(
        {
            "trigger": "schedule",
            "status": "error",
            "started_at": NOW.isoformat(),
            "finished_at": NOW.isoformat(),
            "errors": json.dumps(["Instantly 401: bad key"]),
        }
    )
    body = client.get("/healthz").get_json()
    assert body["reconcile"]["last_run"]["status"] == "error"
    (warning,) = body["warnings"]
    assert warning.startswith("last reconciliation failed: Instantly 401: bad key: check")


@pytest.mark.slow
def test_bridge_worker_runs_a_requested_reconciliation(tmp_path, env):
    """A real `instantly-ghl-bridge worker` process against the fake Instantly over HTTP."""
    fake = FakeInstantly()
    populate(fake, leads=20)
    for i in range(4):
        fake.add_reply(f"lead{i:06d}@example.com", datetime.now(UTC) - timedelta(hours=i + 1))
    with serving(fake) as url:
        proc_env = {**os.environ, **env, "INSTANTLY_API_KEY": API_KEY, "INSTANTLY_BASE_URL": url}
        proc_env.pop("GHL_TOKEN")  # the worker idles on the queue; reconciliation still runs
        db = store.connect(env["BRIDGE_DATABASE"])
        store.migrate(db)
        request_run(db, by="test")
        worker = subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker"],
            env=proc_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while last_run(db) is None and time.monotonic() < deadline and worker.poll() is None:
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGTERM)
            output = worker.communicate(timeout=30)[0].decode()
        run = last_run(db)
        assert run is not None, output
        assert (run["trigger"], run["status"], run["events_new"]) == ("request", "ok", 4), output
        assert db.execute("SELECT COUNT(*) FROM events WHERE source = 'poll'").fetchone()[0] == 4
        assert fake.writes() == [] and fake.spec_errors == []
        assert API_KEY not in output
        db.close()
