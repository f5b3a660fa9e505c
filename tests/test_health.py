"""/healthz for an uptime monitor: ok (200), degraded (200; 503 with ?strict=1) and
unhealthy (503), each state reached and left the way it happens in use, and
`instantly-ghl-bridge status` saying the same."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime

import pytest

from bridge import create_app
from bridge.clock import iso, parse_time
from bridge.config import load_config
from bridge.events.webhook import from_webhook
from bridge.reconcile import runs
from bridge.setup import health
from bridge.setup.health import BACKLOG_SECONDS, GHL_FAILING_SECONDS, report
from bridge.store import db as store
from bridge.store import inbox, state
from tests.helpers import LOCATION_ID, post_webhook, reply_payload


def ago(seconds: float) -> str:
    """A stored timestamp `seconds` before now."""
    return iso(datetime.fromtimestamp(time.time() - seconds, UTC))


def healthz(client, query: str = "") -> tuple[int, dict]:
    answer = client.get("/healthz" + query)
    return answer.status_code, answer.get_json()


def dead_event(db) -> int:
    event_id = inbox.enqueue(db, from_webhook(reply_payload(email_id="dead-1"))).event_id
    inbox.dead(db, event_id, "GHL 422: phone is invalid")
    return event_id


def failed_run(db) -> None:
    stamp = ago(60)
    db[runs.RUNS_TABLE].insert(
        {
            "trigger": "schedule",
            "status": "error",
            "started_at": stamp,
            "finished_at": stamp,
            "errors": json.dumps(["Instantly 401: bad key"]),
        }
    )


# --- ok -----------------------------------------------------------------------------------


def test_a_configured_bridge_with_nothing_wrong_is_ok(client):
    code, body = healthz(client)
    assert code == 200
    assert (body["status"], body["problems"], body["warnings"]) == ("ok", [], [])
    assert body["failing_checks"] == []
    # Today's facts are all still there, beside the new ones.
    for fact in ("database", "queue", "oldest_pending_seconds", "ghl_paused", "last_ghl_error"):
        assert fact in body
    assert (body["oldest_due_seconds"], body["ghl_failing_since"]) == (None, None)


def test_strict_is_200_while_ok(client):
    assert healthz(client, "?strict=1")[0] == 200


# --- degraded -----------------------------------------------------------------------------


def test_dead_letters_are_degraded_200_and_503_when_strict_until_replayed(
    client, db, worker, fake_ghl
):
    dead_event(db)
    code, body = healthz(client)
    assert (code, body["status"], body["problems"]) == (200, "degraded", [])
    (warning,) = body["warnings"]
    assert warning.startswith("1 dead event waits:") and "instantly-ghl-bridge replay" in warning
    assert body["failing_checks"] == ["dead_events"]
    assert healthz(client, "?strict=1")[0] == 503

    inbox.replay(db)
    worker.run(drain=True)
    code, body = healthz(client, "?strict=1")
    assert (code, body["status"], body["warnings"]) == (200, "ok", [])


@pytest.mark.parametrize(
    "query", ["?strict=1", "?strict", "?strict=true", "?strict=YES", "?strict=on"]
)
def test_strict_spellings_that_mean_yes(client, db, query):
    dead_event(db)
    assert healthz(client, query)[0] == 503


@pytest.mark.parametrize("query", ["", "?strict=0", "?strict=false", "?strict=no", "?other=1"])
def test_strict_spellings_that_mean_no(client, db, query):
    dead_event(db)
    assert healthz(client, query)[0] == 200


def test_a_strict_value_that_is_neither_is_a_400_that_says_so(client):
    code, body = healthz(client, "?strict=maybe")
    assert code == 400
    assert body == {"error": "strict must be 1 or 0 (also true/false, yes/no, on/off)"}


def test_a_failed_reconciliation_is_degraded_until_a_run_succeeds(client, db):
    failed_run(db)
    code, body = healthz(client)
    assert (code, body["status"], body["failing_checks"]) == (200, "degraded", ["reconcile_failed"])
    (warning,) = body["warnings"]
    assert warning.startswith("last reconciliation failed: Instantly 401: bad key: check")

    stamp = ago(0)
    db[runs.RUNS_TABLE].insert(
        {"trigger": "schedule", "status": "ok", "started_at": stamp, "finished_at": stamp}
    )
    assert healthz(client)[1]["status"] == "ok"


# --- GHL failing: a blip is degraded, an outage is unhealthy --------------------------------


def test_a_ghl_call_that_fails_starts_the_clock_and_one_that_answers_stops_it(
    client, db, config, worker, fake_ghl
):
    fake_ghl.fail_next(1, 503)
    post_webhook(client, reply_payload())
    worker.run(drain=True)
    assert inbox.counts(db)["pending"] == 1, "the event waits for its retry"
    failing = state.get(db, state.scoped(state.GHL_FAILING_SINCE, LOCATION_ID))
    assert failing["status"] == 503
    at = parse_time(failing["at"]).timestamp()

    soon = report(db, config, now=at + 60)
    assert (soon["status"], soon["failing_checks"]) == ("degraded", ["ghl_errors"])
    (warning,) = soon["warnings"]
    assert warning.startswith("every GHL call has failed for 60 s (since ")
    assert "last: HTTP 503" in warning

    later = report(db, config, now=at + GHL_FAILING_SECONDS + 1)
    assert later["status"] == "unhealthy"
    assert later["failing_checks"] == ["ghl_failing"]
    (problem,) = later["problems"]
    assert problem.startswith(f"every GHL call has failed for {GHL_FAILING_SECONDS + 1} s")
    assert "check GHL's status page" in problem
    assert later["ghl_failing_seconds"] == GHL_FAILING_SECONDS + 1

    db.execute("UPDATE events SET next_attempt_at = 0")
    worker.run(drain=True)
    assert state.get(db, state.scoped(state.GHL_FAILING_SINCE, LOCATION_ID)) is None
    code, body = healthz(client)
    assert (code, body["status"]) == (200, "ok")


def test_ghl_failing_for_longer_than_the_threshold_answers_503(client, db):
    state.put(
        db,
        state.scoped(state.GHL_FAILING_SINCE, LOCATION_ID),
        {"at": ago(GHL_FAILING_SECONDS + 60), "status": 0},
    )
    state.put(
        db,
        state.scoped(state.GHL_LAST_ERROR, LOCATION_ID),
        {"status": 0, "message": "ConnectionError", "at": ago(5)},
    )
    code, body = healthz(client)
    assert (code, body["status"], body["failing_checks"]) == (503, "unhealthy", ["ghl_failing"])
    assert "last: no answer (network error or timeout): ConnectionError" in body["problems"][0]


def test_a_later_failure_keeps_the_first_failures_time(db):
    state.note_ghl_call(db, 0, LOCATION_ID)
    first = state.get(db, state.scoped(state.GHL_FAILING_SINCE, LOCATION_ID))
    state.note_ghl_call(db, 502, LOCATION_ID)
    assert state.get(db, state.scoped(state.GHL_FAILING_SINCE, LOCATION_ID)) == first


@pytest.mark.parametrize("status", [0, 408, 500, 502, 503, 504])
def test_what_counts_as_ghl_failing(db, status):
    state.note_ghl_call(db, status, LOCATION_ID)
    assert state.get(db, state.scoped(state.GHL_FAILING_SINCE, LOCATION_ID))["status"] == status


@pytest.mark.parametrize("status", [200, 201, 400, 401, 404, 422, 429])
def test_any_answer_from_a_ghl_that_is_up_clears_it(db, status):
    state.note_ghl_call(db, 503, LOCATION_ID)
    state.note_ghl_call(db, status, LOCATION_ID)
    assert state.get(db, state.scoped(state.GHL_FAILING_SINCE, LOCATION_ID)) is None


# --- unhealthy: the bridge cannot do its job -----------------------------------------------


def test_a_backlog_the_worker_has_not_taken_is_unhealthy_and_clears_when_it_drains(
    client, db, config, worker, fake_ghl
):
    post_webhook(client, reply_payload())
    received = inbox.get(db, 1)["next_attempt_at"]
    fresh = report(db, config, now=received + 60)
    assert (fresh["status"], fresh["oldest_due_seconds"]) == ("ok", 60.0)

    stuck = report(db, config, now=received + BACKLOG_SECONDS + 1)
    assert (stuck["status"], stuck["failing_checks"]) == ("unhealthy", ["backlog"])
    (problem,) = stuck["problems"]
    assert f"waited {BACKLOG_SECONDS + 1} s for the worker" in problem
    assert "instantly-ghl-bridge worker" in problem

    worker.run(drain=True)
    later = report(db, config, now=received + BACKLOG_SECONDS + 1)
    assert (later["status"], later["oldest_due_seconds"]) == ("ok", None)


def test_a_backlog_behind_paused_writes_points_at_the_pause_not_the_worker(client, db, config):
    post_webhook(client, reply_payload())
    received = inbox.get(db, 1)["next_attempt_at"]
    state.put(
        db,
        state.scoped(state.GHL_PAUSE, LOCATION_ID),
        {"reason": "GHL answered 401", "since": ago(5), "probe_at": 0},
    )
    facts = report(db, config, now=received + BACKLOG_SECONDS + 1)
    assert facts["failing_checks"] == ["backlog", "ghl_paused"]
    (paused, backlog) = facts["problems"]
    assert paused.startswith("GHL writes paused")
    assert backlog.endswith("nothing syncs until the GHL problem above is fixed")


def test_an_event_waiting_for_its_retry_time_is_not_a_backlog(client, db, config):
    post_webhook(client, reply_payload())
    now = time.time()
    inbox.retry_later(db, 1, 2 * BACKLOG_SECONDS, "GHL 503", now=now)
    facts = report(db, config, now=now + BACKLOG_SECONDS + 1)
    assert (facts["status"], facts["oldest_due_seconds"]) == ("ok", None)
    assert facts["oldest_pending_seconds"] is not None


def test_a_replayed_event_is_due_from_its_replay(client, db, config):
    event_id = dead_event(db)
    db.execute(
        "UPDATE events SET updated_at = ? WHERE id = ?", [ago(3 * BACKLOG_SECONDS), event_id]
    )
    inbox.replay(db)  # due at 0, "at once", and stamped now
    replayed = parse_time(inbox.get(db, event_id)["updated_at"]).timestamp()
    assert report(db, config, now=replayed + 10)["oldest_due_seconds"] == 10.0
    assert "backlog" in report(db, config, now=replayed + BACKLOG_SECONDS + 1)["failing_checks"]


def test_an_event_whose_lease_ran_out_is_due_from_then(client, db, config):
    post_webhook(client, reply_payload())
    now = time.time()
    inbox.claim_next(db, lease_seconds=30, now=now, owner="gone")
    assert report(db, config, now=now + 10)["oldest_due_seconds"] is None, "still leased"
    facts = report(db, config, now=now + 30 + BACKLOG_SECONDS + 1)
    assert facts["oldest_due_seconds"] == BACKLOG_SECONDS + 1
    assert facts["status"] == "unhealthy"


def test_paused_writes_are_unhealthy_until_they_resume(client, db, worker, fake_ghl):
    fake_ghl.fail_next(1, 401, body={"statusCode": 401, "message": "Invalid token"})
    post_webhook(client, reply_payload())
    worker.run(drain=True)
    code, body = healthz(client)
    assert (code, body["status"], body["failing_checks"]) == (503, "unhealthy", ["ghl_paused"])
    (problem,) = body["problems"]
    assert problem.startswith("GHL writes paused: GHL answered 401 (Invalid token)")
    assert "resumes by itself" in problem

    state.put(
        db,
        state.scoped(state.GHL_PAUSE, LOCATION_ID),
        {**state.get(db, state.scoped(state.GHL_PAUSE, LOCATION_ID)), "probe_at": 0},
    )
    db.execute("UPDATE events SET next_attempt_at = 0")
    worker.run(drain=True)
    code, body = healthz(client)
    assert (code, body["status"]) == (200, "ok")


def test_a_database_that_cannot_be_read_is_unhealthy_not_a_500(client, monkeypatch):
    def unreadable(*_args, **_kwargs):
        raise sqlite3.DatabaseError("file is not a database")

    monkeypatch.setattr("bridge.web.health.report", unreadable)
    code, body = healthz(client)
    assert (code, body["status"], body["failing_checks"]) == (
        503,
        "unhealthy",
        ["database_unreachable"],
    )
    assert body["problems"][0].startswith("database cannot be read: file is not a database;")
    assert body["warnings"] == []


def test_a_database_not_migrated_is_unhealthy_and_says_what_to_run(config, tmp_path):
    # The web app migrates as it starts, so this is a database put in place under it (a
    # restore from an older bridge) or `status` run before `migrate`.
    fresh = store.connect(tmp_path / "new.sqlite3")
    facts = report(fresh, config)
    assert (facts["status"], facts["database"]) == ("unhealthy", "not migrated")
    assert facts["failing_checks"] == ["database_not_migrated"]
    (problem,) = facts["problems"]
    assert problem.startswith("database not migrated: run `instantly-ghl-bridge migrate`")


@pytest.mark.parametrize(
    ("unset", "check"),
    [
        ("GHL_TOKEN", "ghl_credentials_missing"),
        ("GHL_LOCATION_ID", "ghl_credentials_missing"),
        ("BRIDGE_WEBHOOK_SECRET", "webhook_secret_missing"),
    ],
)
def test_a_fresh_install_without_credentials_says_what_is_missing(env, db, unset, check):
    # `make run` on a fresh clone: webhooks queue, nothing syncs, and the monitor is told.
    config = load_config({**env, unset: ""})
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True})
    try:
        code, body = healthz(app.test_client())
    finally:
        store.forget_cached()
    assert (code, body["status"], body["failing_checks"]) == (503, "unhealthy", [check])
    (problem,) = body["problems"]
    assert problem.startswith(f"{unset} is not set:") and "restart" in problem
    assert unset in body["missing"]


# --- the whole way: ok -> degraded -> unhealthy -> degraded -> ok ---------------------------


def test_ok_degraded_unhealthy_and_back(client, db, worker, fake_ghl):
    assert healthz(client)[1]["status"] == "ok"
    fake_ghl.fail_next(1, 422, body={"statusCode": 422, "message": ["phone must be valid"]})
    post_webhook(client, reply_payload())
    worker.run(drain=True)
    assert healthz(client)[1]["status"] == "degraded"  # a dead letter

    state.put(
        db,
        state.scoped(state.GHL_PAUSE, LOCATION_ID),
        {"reason": "GHL answered 401", "since": ago(5), "probe_at": 0},
    )
    code, body = healthz(client)
    assert (code, body["status"]) == (503, "unhealthy")
    assert body["failing_checks"] == ["dead_events", "ghl_paused"]
    assert len(body["problems"]) == 1 and len(body["warnings"]) == 1

    state.delete(db, state.scoped(state.GHL_PAUSE, LOCATION_ID))
    code, body = healthz(client)
    assert (code, body["status"]) == (200, "degraded")

    inbox.replay(db)
    worker.run(drain=True)
    code, body = healthz(client, "?strict=1")
    assert (code, body["status"], body["failing_checks"]) == (200, "ok", [])


def test_every_check_has_a_severity_and_no_other_name_is_used():
    assert set(health.CHECKS.values()) == {health.PROBLEM, health.WARNING}
    findings = health.Findings()
    with pytest.raises(ValueError, match="unknown health check"):
        findings.add("made_up", "x")


# --- `instantly-ghl-bridge status` --------------------------------------------------------


def test_status_prints_the_state_problems_and_warnings(runner, db):
    dead_event(db)
    state.put(
        db,
        state.scoped(state.GHL_PAUSE, LOCATION_ID),
        {"reason": "GHL answered 401", "since": ago(5), "probe_at": 0},
    )
    result = runner.invoke(["status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "status: unhealthy"
    assert any(line.startswith("problem: GHL writes paused: GHL answered 401") for line in lines)
    assert any(line.startswith("warning: 1 dead event waits:") for line in lines)
    assert any(line.startswith("dead #1 reply_received") for line in lines)


def test_status_json_carries_the_state_and_warnings(runner, db):
    failed_run(db)
    result = runner.invoke(["status", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert (facts["status"], facts["problems"], facts["failing_checks"]) == (
        "degraded",
        [],
        ["reconcile_failed"],
    )
    assert facts["warnings"][0].startswith("last reconciliation failed")
