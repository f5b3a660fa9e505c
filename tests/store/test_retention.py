"""Retention (bridge/store/retention.py): what is pruned and what is kept, in batches, with
the running totals unchanged and the space given back to the disk; and the settings that
keep an event's key longer than reconciliation looks back."""

from __future__ import annotations

import json
import logging
import time

import pytest

from bridge import settings as settings_mod
from bridge.clock import now_iso
from bridge.events.webhook import from_webhook
from bridge.settings import SettingsError
from bridge.store import db as store
from bridge.store import inbox, retention
from bridge.store import migrations as steps
from bridge.store.inbox import event_from_row
from bridge.sync.worker import Worker
from tests.helpers import EVENT_COLUMNS_BEFORE_M042, enqueue_before_m042, reply_payload

DAY = 86400.0
RETENTION = {"payload_days": 30, "event_days": 90, "call_log_days": 30, "run_days": 90}
LONG_HTML = "<div>" + "quoted thread " * 2000 + "</div>"


def stored(
    db, n: int, status: str, html: str = LONG_HTML, error: str | None = None, put=None
) -> list[int]:
    """n events with a long reply HTML, left in `status`; `put` stores one (default: the
    inbox's enqueue)."""
    ids = []
    for _ in range(n):
        seq = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        payload = reply_payload(email_id=f"{status}-{seq}", email=f"lead{seq}@example.com")
        event = from_webhook({**payload, "reply_html": html})
        event_id = put(db, event) if put else inbox.enqueue(db, event).event_id
        if status == "dead":
            inbox.dead(db, event_id, "GHL answered 422: " + "x" * 500)
        elif status in (inbox.DONE, inbox.IGNORED, inbox.SUPERSEDED):
            inbox.finish(db, event_id, status, "contact-1", error)
        elif status == inbox.PROCESSING:
            assert inbox.claim_next(db)["id"] == event_id
        ids.append(event_id)
    return ids


def call(db, event_id: int, status: int = 200, at: str | None = None) -> None:
    db["ghl_calls"].insert(
        {
            "event_id": event_id,
            "method": "POST",
            "path": "/contacts/upsert",
            "status": status,
            "duration_ms": 80.0,
            "at": at or now_iso(),
        }
    )


def statuses(db) -> dict[int, str]:
    return dict(db.execute("SELECT id, status FROM events").fetchall())


def totals(db) -> dict[str, list]:
    """Everything /metrics and /healthz count, as they read it."""
    return {
        "events": sorted(inbox.counts_by_type(db)),
        "calls": db.execute("SELECT * FROM ghl_call_totals ORDER BY status").fetchall(),
        "latency": db.execute("SELECT * FROM ghl_call_latency ORDER BY le_ms").fetchall(),
        "runs": db.execute("SELECT * FROM reconcile_totals ORDER BY status").fetchall(),
    }


def run(db, started_at: str, status: str = "ok") -> int:
    return (
        db["reconcile_runs"]
        .insert(
            {
                "trigger": "schedule",
                "status": status,
                "started_at": started_at,
                "events_found": 4,
                "events_new": 1,
            }
        )
        .last_pk
    )


def days_from_now(days: float) -> float:
    return time.time() + days * DAY


# --- what is pruned, what is kept --------------------------------------------------------


def test_before_payload_days_nothing_changes(db):
    stored(db, 3, inbox.DONE)
    before = list(db.conn.iterdump())
    pruned = retention.prune(db, RETENTION, now=days_from_now(29))
    assert not pruned.any()
    assert list(db.conn.iterdump()) == before


def test_finished_payloads_become_stubs_that_the_pages_and_event_from_row_still_read(db):
    done = stored(db, 2, inbox.DONE)
    ignored = stored(db, 1, inbox.IGNORED, error="not synced: " + "why " * 100)
    superseded = stored(db, 1, inbox.SUPERSEDED)
    pruned = retention.prune(db, RETENTION, now=days_from_now(31))
    assert (pruned.payloads, pruned.events) == (4, 0)
    for event_id in done + ignored + superseded:
        row = inbox.get(db, event_id)
        payload = json.loads(row["payload"])
        assert len(row["payload"]) < 1500
        assert payload["_pruned"]["removed"] == ["reply_html"]
        assert payload["_pruned"]["by"] == "retention.payload_days"
        # What the event page shows and a replay reads: names, ids, the reply's snippet.
        assert payload["firstName"] == "Jordan" and payload["step"] == 1
        assert payload["reply_text_snippet"] == "Sure, how about 11/26 9am ET?"
        event = event_from_row(row)
        assert event.key == row["key"] and event.payload["email_id"] == payload["email_id"]
    error = inbox.get(db, ignored[0])["last_error"]
    assert len(error) == retention.STUB_ERROR_CHARS and error.endswith("…")


def test_dead_and_queued_events_are_never_pruned(db):
    kept = stored(db, 2, inbox.DEAD) + stored(db, 1, inbox.PROCESSING)
    kept += stored(db, 2, inbox.PENDING)
    before = {i: inbox.get(db, i) for i in kept}
    retention.prune(db, RETENTION, now=days_from_now(10 * 365))
    assert {i: inbox.get(db, i) for i in kept} == before


def test_rows_are_deleted_after_event_days_and_the_totals_stay(db):
    finished = stored(db, 3, inbox.DONE) + stored(db, 1, inbox.IGNORED)
    dead = stored(db, 1, inbox.DEAD)
    pending = stored(db, 1, inbox.PENDING)
    before = totals(db)
    pruned = retention.prune(db, RETENTION, now=days_from_now(91))
    assert pruned.events == 4
    assert set(statuses(db)) == set(dead + pending)
    assert not set(finished) & set(statuses(db))
    assert totals(db) == before


def test_calls_of_finished_events_go_after_call_log_days_but_a_dead_events_stay(db):
    (done,) = stored(db, 1, inbox.DONE)
    (dead,) = stored(db, 1, inbox.DEAD)
    (queued,) = stored(db, 1, inbox.PENDING)
    for event_id in (done, dead, queued):
        call(db, event_id, 200)
        call(db, event_id, 500)
    call(db, 9999, 200)  # an event already deleted
    before = totals(db)
    pruned = retention.prune(db, RETENTION, now=days_from_now(31))
    assert pruned.calls == 3
    left = db.execute("SELECT DISTINCT event_id FROM ghl_calls ORDER BY 1").fetchall()
    assert left == [(dead,), (queued,)]
    assert totals(db) == before  # /metrics counts calls made, pruned or not


def test_a_call_whose_event_is_queued_again_while_the_batch_is_read_is_kept(db, monkeypatch):
    (event_id,) = stored(db, 1, inbox.DONE)
    call(db, event_id)
    log = retention.CallLog(db, retention._cutoff(days_from_now(31), 30))
    read = log._next_prunable

    def read_then_replay(limit: int) -> list[int]:
        ids = read(limit)
        inbox.replay(db, [event_id])  # another process, between the read and the lock
        return ids

    monkeypatch.setattr(log, "_next_prunable", read_then_replay)
    assert log.delete_batch().calls == 0
    assert db["ghl_calls"].count == 1


def test_a_call_log_batch_reads_on_past_the_calls_it_keeps(db, monkeypatch, unhurried):
    monkeypatch.setattr(retention, "BATCH_ROWS", 2)
    (dead,) = stored(db, 1, inbox.DEAD)
    (done,) = stored(db, 1, inbox.DONE)
    for event_id in (dead, dead, dead, done, done, done):
        call(db, event_id)
    sizes = [b.calls for b in retention.batches(db, RETENTION, now=days_from_now(31))]
    assert sizes[:2] == [1, 2]  # a batch is the next prunable calls, past the kept ones
    assert [r[0] for r in db.execute("SELECT event_id FROM ghl_calls")] == [dead] * 3


def test_old_reconciliation_runs_go_but_the_latest_and_a_running_one_stay(db):
    old = [run(db, f"2025-01-0{d}T00:00:00.000Z") for d in (1, 2, 3)]
    running = run(db, "2025-01-04T00:00:00.000Z", status="running")
    before = totals(db)
    now = time.time()  # the runs started well over 90 days ago
    assert retention.prune(db, RETENTION, now=now).runs == 2
    left = [r[0] for r in db.execute("SELECT id FROM reconcile_runs ORDER BY id")]
    assert left == [old[-1], running]
    assert totals(db) == before


# --- batches and the lock --------------------------------------------------------------------


@pytest.fixture
def unhurried(monkeypatch):
    """A lock budget no batch reaches, so batch sizes depend on the rows alone."""
    monkeypatch.setattr(retention, "LOCK_BUDGET_SECONDS", 3600.0)


def test_each_batch_is_one_short_transaction_of_at_most_batch_rows(db, monkeypatch, unhurried):
    monkeypatch.setattr(retention, "BATCH_ROWS", 3)
    stored(db, 7, inbox.DONE, html="<div>short</div>")
    sizes = []
    for batch in retention.batches(db, RETENTION, now=days_from_now(91)):
        assert not db.conn.in_transaction  # nothing held between batches
        assert batch.batches == 1
        sizes.append(batch.events)
    assert sizes == [3, 3, 1]
    assert statuses(db) == {}


def test_a_payload_batch_stops_at_its_size_budget(db, monkeypatch, unhurried):
    monkeypatch.setattr(retention, "BATCH_PAYLOAD_CHARS", 2 * len(LONG_HTML))
    stored(db, 5, inbox.DONE)
    sizes = [b.payloads for b in retention.batches(db, RETENTION, now=days_from_now(31))]
    assert sizes[:3] == [2, 2, 1]


def test_batch_sizes_follow_the_lock_budget():
    budget = retention.LOCK_BUDGET_SECONDS
    assert retention.next_size(100, 500, budget * 1.5) == 50
    assert retention.next_size(1, 500, budget * 10) == 1
    assert retention.next_size(100, 500, budget * 0.75) == 100
    assert retention.next_size(100, 500, budget * 0.1) == 200
    assert retention.next_size(400, 500, 0.0) == 500


def test_a_payload_batch_stops_writing_once_it_has_held_the_lock_its_budget(db, monkeypatch):
    monkeypatch.setattr(retention, "LOCK_BUDGET_SECONDS", 0.0)
    stored(db, 4, inbox.DONE)
    sizes = [b.payloads for b in retention.batches(db, RETENTION, now=days_from_now(31))]
    assert sizes[:4] == [1, 1, 1, 1]
    assert retention.prune(db, RETENTION, now=days_from_now(31)).payloads == 0


def test_batches_commit_without_waiting_for_the_disk_and_the_connection_is_left_as_it_was(
    db, monkeypatch
):
    stored(db, 3, inbox.DONE)
    modes = []
    real = retention._delete_ids

    def delete_ids(db, table, ids):
        modes.append(db.execute("PRAGMA synchronous").fetchone()[0])
        real(db, table, ids)

    monkeypatch.setattr(retention, "_delete_ids", delete_ids)
    retention.prune(db, RETENTION, now=days_from_now(91))
    assert modes == [1]  # NORMAL: in WAL mode, no fsync inside the lock
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again


def test_a_webhook_waits_for_the_writers_lock_that_a_batch_holds(db, config, monkeypatch):
    """The pruner takes the same lock as the webhook's group commit, so a delivery lines
    up behind one batch instead of meeting SQLite's busy sleeps."""
    stored(db, 2, inbox.DONE, html="<div>short</div>")
    lock = store.writer(config.database)
    seen = []
    real_delete = retention._delete_ids

    def delete_ids(db, table, ids):
        seen.append(lock._mutex.locked())
        real_delete(db, table, ids)

    monkeypatch.setattr(retention, "_delete_ids", delete_ids)
    retention.prune(db, RETENTION, now=days_from_now(91))
    assert seen == [True]
    assert not lock._mutex.locked()


@pytest.mark.parametrize("days, pruned", [(31, "payloads"), (91, "events")])
def test_two_pruners_interleaved_batch_by_batch_prune_each_row_once(
    db, config, monkeypatch, days, pruned
):
    monkeypatch.setattr(retention, "BATCH_ROWS", 2)
    stored(db, 5, inbox.DONE)
    (dead,) = stored(db, 1, inbox.DEAD)
    before = totals(db)
    other = store.connect(config.database)
    now = days_from_now(days)
    passes = [retention.batches(db, RETENTION, now), retention.batches(other, RETENTION, now)]
    done = 0
    while passes:
        for each in list(passes):
            batch = next(each, None)
            if batch is None:
                passes.remove(each)
            else:
                done += getattr(batch, pruned)
    other.close()
    assert done == 5
    left = db.execute("SELECT id, status, payload FROM events").fetchall()
    if pruned == "events":
        assert [row[:2] for row in left] == [(dead, "dead")]
    else:
        stubs = [json.loads(row[2]) for row in left if row[1] == "done"]
        assert len(stubs) == 5 and all("reply_html" not in stub for stub in stubs)
    assert totals(db) == before


# --- space given back --------------------------------------------------------------------


def pages(db) -> tuple[int, int]:
    return tuple(db.execute(f"PRAGMA {n}").fetchone()[0] for n in ("page_count", "freelist_count"))


def test_the_database_is_incremental_vacuum_after_migrating(db):
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_pruned_pages_are_given_back_to_the_disk(db, monkeypatch):
    monkeypatch.setattr(retention, "VACUUM_PAGES", 100)
    monkeypatch.setattr(retention, "KEEP_FREE_PAGES", 10)
    stored(db, 60, inbox.DONE)  # 60 x 28 KB of reply HTML
    full, _ = pages(db)
    pruned = retention.prune(db, RETENTION, now=days_from_now(31))
    assert pruned.payloads == 60
    assert pruned.pages > 300
    count, free = pages(db)
    assert free <= retention.KEEP_FREE_PAGES
    assert count == full - pruned.pages
    assert pruned.batches > pruned.pages // 100  # given back 100 pages at a time


def test_few_free_pages_are_left_for_the_next_inserts(db):
    stored(db, 1, inbox.DONE, html="<div>short</div>")
    retention.prune(db, RETENTION, now=days_from_now(91))
    assert retention.give_back_pages(db).batches == 0


# --- settings ----------------------------------------------------------------------------


def test_the_defaults_keep_keys_longer_than_reconciliation_looks_back(db):
    settings = settings_mod.current(db)[1]
    assert settings["retention"] == RETENTION
    assert settings["retention"]["event_days"] > settings["reconcile"]["first_run_days"]


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"retention": {"event_days": 20}},
            "retention.event_days (20) must be longer than reconcile.first_run_days (30)",
        ),
        (
            {"retention": {"event_days": 30}},
            "retention.event_days (30) must be longer than reconcile.first_run_days (30)",
        ),
        (
            {
                "retention": {"event_days": 1},
                "reconcile": {"first_run_days": 0, "overlap_minutes": 1440},
            },
            "retention.event_days (1) must be longer than reconcile.overlap_minutes (1440",
        ),
        ({"retention": {"payload_days": 0}}, "greater than or equal to 1"),
        ({"retention": {"call_log_days": -5}}, "greater than or equal to 1"),
        ({"retention": {"run_days": 10_000}}, "less than or equal to 3660"),
    ],
)
def test_retention_settings_that_would_forget_too_soon_are_refused(raw, message):
    with pytest.raises(settings_mod.SettingsError) as caught:
        settings_mod.validate_settings(raw)
    assert message in str(caught.value)
    assert list(caught.value.messages)[0].startswith("retention.")


def test_settings_stored_before_retention_outlast_their_own_long_first_run():
    settings = settings_mod.validate_settings({"reconcile": {"first_run_days": 120}})
    assert settings["retention"]["event_days"] == 121
    # Set on purpose, the same value is an error naming both settings.
    with pytest.raises(settings_mod.SettingsError, match="reconcile.first_run_days"):
        settings_mod.validate_settings(
            {"reconcile": {"first_run_days": 120}, "retention": {"event_days": 90}}
        )


def test_saving_settings_that_forget_too_soon_is_refused(db):
    _, settings = settings_mod.current(db)
    settings["retention"]["event_days"] = 14
    with pytest.raises(settings_mod.SettingsError, match="retention.event_days \\(14\\)"):
        settings_mod.save(db, settings)


def store_unchecked(db, **sections) -> None:
    """Settings as a database could hold them (written by hand, or by an older bridge)."""
    _, settings = settings_mod.current(db)
    for name, values in sections.items():
        settings[name].update(values)
    db.execute(
        "UPDATE settings SET body = ?, version = version + 1 WHERE id = 1", [json.dumps(settings)]
    )


def test_the_worker_refuses_to_start_naming_both_settings(db, config, caplog):
    store_unchecked(db, retention={"event_days": 20})
    with caplog.at_level(logging.ERROR, "bridge.worker"), pytest.raises(SettingsError):
        Worker(config, db=db).run()
    message = (
        "worker not started: invalid settings: retention.event_days: retention.event_days "
        "(20) must be longer than reconcile.first_run_days (30)"
    )
    assert any(r.getMessage().startswith(message) for r in caplog.records)


def test_the_worker_command_exits_with_the_message(db, runner):
    store_unchecked(db, retention={"event_days": 20})
    result = runner.invoke(["worker"])
    assert result.exit_code == 1
    assert "retention.event_days (20) must be longer than reconcile.first_run_days (30)" in (
        result.output
    )


# --- the worker's pass -------------------------------------------------------------------


def test_the_worker_prunes_between_claims_and_logs_one_line(db, config, fake_ghl, caplog):
    stored(db, 4, inbox.DONE)
    stored(db, 1, inbox.DEAD)
    # Finished long ago: the worker prunes by the real clock.
    db.execute("UPDATE events SET updated_at = '2020-01-01T00:00:00.000Z' WHERE status = 'done'")
    worker = Worker(config, db=db)
    naps = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        worker.stop()

    worker.sleep = nap
    with caplog.at_level(logging.INFO, "bridge.worker"):
        assert worker.run() == 0
    assert list(statuses(db).values()) == ["dead"]
    assert naps == [0.5]  # the pass ran to its end before the worker first idled
    lines = [r.getMessage() for r in caplog.records if "retention:" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("retention: pruned 4 events, 0 payloads, 0 GHL calls")
    assert "@" not in lines[0]


def test_a_drain_leaves_pruning_to_the_running_worker(db, config, fake_ghl):
    stored(db, 2, inbox.DONE)
    db.execute("UPDATE events SET updated_at = '2020-01-01T00:00:00.000Z'")
    Worker(config, db=db).run(drain=True)
    assert len(statuses(db)) == 2


@pytest.mark.admin
def test_the_event_page_and_the_dashboard_show_a_pruned_event(db, logged_in):
    (event_id,) = stored(db, 1, inbox.DONE, error="superseded by a newer status")
    retention.prune(db, RETENTION, now=days_from_now(31))
    page = logged_in.get(f"/events/{event_id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "retention.payload_days" in text and "quoted thread" not in text
    assert "Sure, how about 11/26 9am ET?" in text  # the reply's snippet is kept
    assert logged_in.get("/").status_code == 200


def triggers(db) -> list[str]:
    return sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'"))


def test_m039_turns_a_database_that_has_rows_incremental_and_keeps_them(
    tmp_path, monkeypatch, caplog
):
    db = store.connect(tmp_path / "old.sqlite3")
    store.load_migrations().apply(db, stop_before="m039_incremental_vacuum")
    put = enqueue_before_m042
    ids = stored(db, 3, inbox.DONE, put=put) + stored(db, 1, inbox.DEAD, put=put)
    rows = f"SELECT id, {EVENT_COLUMNS_BEFORE_M042} FROM events ORDER BY id"
    before = (list(db.execute(rows)), totals(db), triggers(db))
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    monkeypatch.setattr(steps, "SLOW_VACUUM_BYTES", 0)
    with caplog.at_level(logging.WARNING, "bridge.store"):
        applied = store.migrate(db)
    assert applied[:2] == ["m039_incremental_vacuum", "m040_events_finished_index"]
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    after = (list(db.execute(rows)), totals(db), triggers(db))
    assert after == before and len(after[0]) == len(ids)
    assert any("takes a while" in r.getMessage() for r in caplog.records)
    db.close()
