"""An event whose payload retention pruned is still known by its key: a redelivery or a
reconciliation of the same reply is a duplicate and costs no GHL call, until
retention.event_days; `reconcile --since` further back than that says what it costs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from bridge import settings as settings_mod
from bridge.reconcile.reconciler import Options, Reconciler
from bridge.store import inbox, retention
from bridge.sync.worker import Worker
from tests.helpers import post_webhook, reply_payload
from tests.support.instantly_fake import API_KEY, BASE_URL

DAY = 86400.0
EMAIL = "jordan.lead@example.com"


@pytest.fixture
def settings(db):
    return settings_mod.current(db)[1]


def prune_at(db, settings, days: float) -> retention.Pruned:
    return retention.prune(db, settings["retention"], now=time.time() + days * DAY)


def synced_reply(client, db, config, fake_ghl, **overrides) -> dict:
    body = reply_payload(**overrides, reply_html="<div>" + "thread " * 3000 + "</div>")
    assert post_webhook(client, body).get_json()["status"] == "accepted"
    assert Worker(config, db=db).run(drain=True) == 1
    assert db.execute("SELECT status FROM events").fetchone()[0] == "done"
    return body


def test_a_redelivery_after_its_payload_was_pruned_is_a_duplicate(
    client, db, config, fake_ghl, settings
):
    body = synced_reply(client, db, config, fake_ghl)
    calls = len(fake_ghl.calls)
    assert prune_at(db, settings, 31).payloads == 1
    assert "_pruned" in json.loads(db.execute("SELECT payload FROM events").fetchone()[0])
    answer = post_webhook(client, body)
    assert answer.status_code == 200 and answer.get_json()["status"] == "duplicate"
    assert Worker(config, db=db).run(drain=True) == 0
    assert len(fake_ghl.calls) == calls


def test_a_redelivery_after_event_days_is_taken_as_new(client, db, config, fake_ghl, settings):
    body = synced_reply(client, db, config, fake_ghl)
    assert prune_at(db, settings, settings["retention"]["event_days"] + 1).events == 1
    assert post_webhook(client, body).get_json()["status"] == "accepted"


def test_a_reconciliation_of_a_pruned_reply_finds_it_known_and_calls_ghl_for_nothing(
    client, db, config, fake_ghl, fake_instantly, instantly, settings
):
    replied = datetime.now(UTC) - timedelta(hours=2)
    fake_instantly.add_lead(EMAIL, first_name="Jordan")
    reply = fake_instantly.add_reply(EMAIL, replied)
    synced_reply(client, db, config, fake_ghl, email_id=reply["id"])
    calls = len(fake_ghl.calls)
    assert prune_at(db, settings, 31).payloads == 1
    # Reconciliation re-reading that day, whenever it runs within event_days.
    later = datetime.now(UTC) + timedelta(days=31)
    summary = Reconciler(db, instantly, settings, now=lambda: later).run(
        Options(since=replied - timedelta(minutes=5), statuses=False)
    )
    assert (summary.replies.found, summary.replies.known, summary.replies.new) == (1, 1, 0)
    assert Worker(config, db=db).run(drain=True) == 0
    assert len(fake_ghl.calls) == calls
    assert inbox.counts(db)["done"] == 1


# --- reconcile --since beyond retention ----------------------------------------------------


@pytest.fixture
def env(env):
    return {**env, "INSTANTLY_API_KEY": API_KEY, "INSTANTLY_BASE_URL": BASE_URL}


@pytest.fixture
def run_cli(runner, db, fake_instantly):
    def run(*args: str):
        return runner.invoke(["reconcile", "--dry-run", *args], catch_exceptions=False)

    return run


def day(days_ago: int) -> str:
    return f"{datetime.now(UTC) - timedelta(days=days_ago):%Y-%m-%d}"


def test_since_older_than_event_days_warns_that_old_replies_come_back(run_cli):
    result = run_cli("--since", day(120))
    assert result.exit_code == 0, result.output
    assert f"warning: --since {day(120)} is older than retention.event_days (90 days)" in (
        result.stderr
    )
    assert "enqueued and synced again" in result.stderr


def test_since_within_event_days_says_nothing(run_cli):
    result = run_cli("--since", day(60))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr


def test_the_json_summary_carries_the_warning(run_cli):
    result = run_cli("--since", day(120), "--json")
    (warning,) = json.loads(result.stdout)["warnings"]
    assert "retention.event_days (90 days)" in warning
    assert "warnings" not in json.loads(run_cli("--since", day(5), "--json").stdout)
