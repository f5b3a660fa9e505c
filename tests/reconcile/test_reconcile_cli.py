"""`instantly-ghl-bridge reconcile` end to end: fake Instantly and fake GHL behind `responses`."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from bridge.cli.reconcile import ProgressLine
from bridge.reconcile.reconciler import PassStats, Progress
from bridge.reconcile.runs import acquire_lock, last_run
from tests.interest_helpers import change_settings, switch_on_opportunity
from tests.support.instantly_fake import API_KEY, BASE_URL


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

    result = run_cli("--since", "2026-01-01")
    assert result.exit_code == 0, result.output
    sent = [_route(f"{call.method} {call.path}") for call in fake_ghl.calls]
    assert announced == sent
    assert any(route.endswith("/tags") for route in sent)
