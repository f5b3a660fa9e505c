"""One timestamp format: what the bridge writes now, what m032 makes of rows written before,
and comparisons that hold across both."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bridge.clock import iso, now_iso, parse_time
from bridge.events.webhook import from_webhook
from bridge.store import contacts, ghl_writes, inbox, state
from bridge.store import db as store
from tests.helpers import LOCATION_ID, reply_payload

FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def test_everything_the_bridge_writes_has_the_one_format(db):
    event_id = inbox.enqueue(db, from_webhook(reply_payload())).event_id
    inbox.finish(db, event_id, "done", "c1")
    record = contacts.record_upsert(db, LOCATION_ID, "a@example.com", "c1", {"firstName": "A"})
    contacts.record_tags(db, record, ["x"])
    ghl_writes.done(db, LOCATION_ID, "note:1", "note", "c1", "n1")
    state.put(db, "probe", 1)
    stamps = [
        *db.execute("SELECT received_at FROM events UNION ALL SELECT updated_at FROM events"),
        *db.execute("SELECT updated_at FROM contacts"),
        *db.execute("SELECT at FROM ghl_writes"),
        *db.execute("SELECT updated_at FROM state"),
        *db.execute("SELECT updated_at FROM settings"),
    ]
    assert stamps and all(FORMAT.match(value) for (value,) in stamps), stamps
    assert FORMAT.match(now_iso())


@given(moments)
def test_the_format_sorts_as_text_in_time_order(moment):
    later = moment + timedelta(milliseconds=1)
    assert iso(moment) < iso(later)
    assert parse_time(iso(moment)) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@given(moments)
def test_older_forms_are_read_as_the_same_moment(moment):
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    for old in (
        moment.isoformat(),  # +00:00 with microseconds (settings, before)
        moment.isoformat(timespec="milliseconds"),  # +00:00 (the inbox's clock, before)
        iso(moment),
    ):
        assert parse_time(old) == moment


def test_m032_rewrites_rows_written_before_in_the_one_format(config):
    database = store.connect(config.database)
    store.load_migrations().apply(database, stop_before="m032_timestamps_in_one_format")
    rows = {
        "2026-01-05T09:00:00.123+00:00": "2026-01-05T09:00:00.123Z",
        "2026-01-05T09:00:01.123456+00:00": "2026-01-05T09:00:01.123Z",
        "2026-01-05T11:00:02.500+02:00": "2026-01-05T09:00:02.500Z",
        "2026-01-05T09:00:03.000Z": "2026-01-05T09:00:03.000Z",
    }
    for n, written in enumerate(rows):
        database["events"].insert(
            {
                "key": f"k{n}",
                "source": "webhook",
                "event_type": "reply_received",
                "payload": "{}",
                "status": "pending",
                "attempts": 0,
                "received_at": written,
                "updated_at": written,
                "occurred_at": "",
            }
        )
    database["state"].insert({"name": "odd", "value": "1", "updated_at": "not a time"})
    assert store.migrate(database)[0] == "m032_timestamps_in_one_format"
    got = [r[0] for r in database.execute("SELECT received_at FROM events ORDER BY id")]
    assert got == list(rows.values())
    assert database.execute("SELECT occurred_at FROM events LIMIT 1").fetchone()[0] == ""
    assert database.execute("SELECT updated_at FROM state WHERE name = 'odd'").fetchone()[0] == (
        "not a time"
    )
    # Text order is time order again: the earliest pending event is found by MIN().
    oldest = database.execute("SELECT MIN(received_at) FROM events").fetchone()[0]
    assert oldest == "2026-01-05T09:00:00.123Z"
    database.close()


def test_the_oldest_pending_age_reads_either_form(db):
    event_id = inbox.enqueue(db, from_webhook(reply_payload())).event_id
    db.execute(
        "UPDATE events SET received_at = ? WHERE id = ?",
        ["2026-01-05T09:00:00.000+00:00", event_id],
    )
    then = datetime(2026, 1, 5, 9, 0, 10, tzinfo=UTC).timestamp()
    assert inbox.oldest_pending_age(db, now=then) == 10.0
