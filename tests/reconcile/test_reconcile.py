"""The reconciler against a fake Instantly: what it reads, what it enqueues, what it leaves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bridge import settings as settings_mod
from bridge.events.event import Event
from bridge.reconcile.reconciler import (
    FILTER_BY_STATUS,
    REPLIES,
    WATERMARK_PREFIX,
    Options,
    Reconciler,
    watermark,
)
from bridge.store import contacts, inbox, state
from bridge.sync.worker import Worker
from tests.helpers import LOCATION_ID, post_webhook, reply_payload, sample_payloads
from tests.reconcile.conftest import with_events, without_interest
from tests.support.instantly_fake import EPOCH, populate, stamp

NOW = datetime(2026, 1, 20, tzinfo=UTC)


@pytest.fixture
def settings(db):
    return settings_mod.current(db)[1]


@pytest.fixture
def reconcile(db, instantly, settings):
    """Run one reconciliation: reconcile(options=..., settings=...) -> Summary."""

    def run(options: Options | None = None, settings: dict = settings, now: datetime = NOW):
        return Reconciler(db, instantly, settings, now=lambda: now).run(options or Options())

    return run


def events(db):
    return list(db.query("SELECT key, event_type, email, source, payload FROM events ORDER BY id"))


def dump(db):
    return list(db.conn.iterdump())


# --- replies ------------------------------------------------------------------------------


def test_replies_are_paged_to_the_empty_page_and_enqueued_once_each(db, fake_instantly, reconcile):
    populate(fake_instantly, leads=250, replies=250)
    summary = reconcile(Options(statuses=False))
    assert summary.status == "ok", summary.errors
    assert (summary.replies.pages, summary.replies.found, summary.replies.new) == (3, 250, 250)
    email_calls = fake_instantly.calls_to("GET", "/api/v2/emails")
    assert len(email_calls) == 4  # 100 + 100 + 50, then the empty page
    first = email_calls[0].query
    assert first["email_type"] == ["received"] and first["sort_order"] == ["asc"]
    assert first["limit"] == ["100"]
    assert first["min_timestamp_created"] == [stamp(NOW - timedelta(days=30))]
    stored = events(db)
    assert len(stored) == 250 and {e["source"] for e in stored} == {"poll"}
    assert {e["key"] for e in stored} == {f"reply:{m['id']}" for m in fake_instantly.emails}
    # Lead data came in batches of 100 emails, never one call per lead.
    lookups = fake_instantly.calls_to("POST", "/api/v2/leads/list")
    assert all(len(c.json["contacts"]) <= 100 for c in lookups)
    assert len(lookups) <= 6
    assert watermark(db, REPLIES) == datetime.fromisoformat(
        fake_instantly.emails[-1]["timestamp_created"].replace("Z", "+00:00")
    )


def test_a_polled_reply_has_the_webhook_shape(db, fake_instantly, reconcile):
    campaign = fake_instantly.add_campaign("Trust Attorneys Q4")
    fake_instantly.add_lead(
        "Jordan.Lead@Example.com",
        campaign=campaign["id"],
        first_name="Jordan",
        last_name="Lead",
        company_name="Lead & Co",
        phone="+15555550100",
        payload={"icebreaker": "Loved your talk", "firstName": "Jordy"},
        email_replied_step=1,
        email_replied_variant=2,
    )
    reply = fake_instantly.add_reply(
        "jordan.lead@example.com", NOW - timedelta(hours=1), campaign["id"], text="Sure, 9am?"
    )
    reconcile(Options(statuses=False))
    (row,) = events(db)
    payload = json.loads(row["payload"])
    assert row["key"] == f"reply:{reply['id']}"
    assert row["email"] == "jordan.lead@example.com"
    assert payload["event_type"] == "reply_received"
    assert payload["email_id"] == reply["id"]
    assert payload["campaign_id"] == campaign["id"]
    assert payload["campaign_name"] == "Trust Attorneys Q4"
    assert payload["lead_email"] == "jordan.lead@example.com"
    assert payload["reply_text"] == "Sure, 9am?"
    assert payload["reply_subject"] == reply["subject"]
    # Lead fields under the webhook's camelCase names; custom variables top level.
    assert payload["firstName"] == "Jordan"  # the REST field wins over payload's copy
    assert payload["lastName"] == "Lead"
    assert payload["companyName"] == "Lead & Co"
    assert payload["phone"] == "+15555550100"
    assert payload["icebreaker"] == "Loved your talk"
    assert (payload["step"], payload["variant"]) == (1, 2)
    assert "payload" not in payload and "first_name" not in payload


def test_a_polled_reply_carries_every_base_field_a_real_reply_webhook_has(
    db, fake_instantly, reconcile
):
    samples = [
        body for name, body in sample_payloads() if body.get("event_type") == "reply_received"
    ]
    if not samples:
        pytest.skip("webhook samples not found in ../shared/specs/instantly/webhook-samples")
    campaign = fake_instantly.add_campaign("Q1")
    fake_instantly.add_lead(
        "a@example.com",
        campaign=campaign["id"],
        first_name="A",
        email_replied_step=1,
        email_replied_variant=1,
    )
    fake_instantly.add_reply("a@example.com", NOW - timedelta(hours=1), campaign["id"])
    reconcile(Options(statuses=False))
    payload = json.loads(events(db)[0]["payload"])
    base = {
        "event_type",
        "timestamp",
        "workspace",
        "campaign_id",
        "campaign_name",
        "lead_email",
        "email",
        "email_id",
        "reply_subject",
        "reply_text",
        "reply_html",
        "step",
        "variant",
        "email_account",
    }
    for sample in samples:
        shared = base & set(sample)
        assert shared - set(payload) == set(), f"polled reply lacks {shared - set(payload)}"


def test_overlap_rereads_are_deduped(db, fake_instantly, reconcile):
    populate(fake_instantly, leads=5, replies=5)
    first = reconcile(Options(statuses=False))
    assert first.replies.new == 5
    later = NOW + timedelta(minutes=15)
    second = reconcile(Options(statuses=False), now=later)
    # Read again from the watermark minus the overlap: same replies, nothing new.
    assert second.replies.found == 5 and second.replies.known == 5 and second.replies.new == 0
    mark = watermark(db, REPLIES)
    since = fake_instantly.calls_to("GET", "/api/v2/emails")[-1].query["min_timestamp_created"]
    assert since == [stamp(mark - timedelta(minutes=10))]
    assert len(events(db)) == 5
    # A no-change re-read never looks leads up again.
    assert len(fake_instantly.calls_to("POST", "/api/v2/leads/list")) == 2


def test_a_reply_indexed_late_is_found_by_the_overlap(db, fake_instantly, reconcile):
    fake_instantly.add_lead("a@example.com")
    fake_instantly.add_reply("a@example.com", NOW - timedelta(minutes=1))
    reconcile(Options(statuses=False))
    late = fake_instantly.add_reply("b@example.com", NOW - timedelta(minutes=4))
    summary = reconcile(Options(statuses=False), now=NOW + timedelta(minutes=15))
    assert summary.replies.new == 1
    assert f"reply:{late['id']}" in {e["key"] for e in events(db)}


def test_watermark_stays_at_the_last_committed_page_when_a_run_fails(db, fake_instantly, reconcile):
    populate(fake_instantly, leads=250, replies=250)
    emails = fake_instantly.emails

    real = fake_instantly._list_emails
    answered = []

    def fail_after_first_page(query):
        answered.append(1)
        if len(answered) == 1:  # the next page fails, retries and all
            fake_instantly.fail_next("GET", "/api/v2/emails", 500, times=5)
        return real(query)

    fake_instantly._list_emails = fail_after_first_page
    failed = reconcile(Options(statuses=False))
    assert failed.status == "error" and "500" in failed.errors[0]
    assert failed.replies.new == 100
    assert state.get(db, WATERMARK_PREFIX + REPLIES) == emails[99]["timestamp_created"]
    assert len(events(db)) == 100
    fake_instantly._list_emails = real
    again = reconcile(Options(statuses=False))
    assert again.status == "ok"
    assert again.replies.new == 150
    assert len(events(db)) == 250
    assert state.get(db, WATERMARK_PREFIX + REPLIES) == emails[-1]["timestamp_created"]


def test_watermark_unchanged_when_the_first_page_fails(db, fake_instantly, reconcile):
    populate(fake_instantly, leads=3, replies=3)
    state.put(db, WATERMARK_PREFIX + REPLIES, stamp(EPOCH))
    fake_instantly.fail_next("POST", "/api/v2/leads/list", 403, "error code: 1010")
    summary = reconcile(Options(statuses=False))
    assert summary.status == "error" and "403" in summary.errors[0]
    assert state.get(db, WATERMARK_PREFIX + REPLIES) == stamp(EPOCH)
    assert events(db) == []


def test_a_later_since_or_a_campaign_filter_does_not_move_the_watermark(
    db, fake_instantly, reconcile
):
    made = populate(fake_instantly, leads=4, campaigns=2, replies=4)
    state.put(db, WATERMARK_PREFIX + REPLIES, stamp(EPOCH))
    reconcile(Options(statuses=False, since=EPOCH + timedelta(days=1, seconds=2)))
    assert state.get(db, WATERMARK_PREFIX + REPLIES) == stamp(EPOCH)
    reconcile(Options(statuses=False, campaigns=(made[0]["id"],)))
    assert state.get(db, WATERMARK_PREFIX + REPLIES) == stamp(EPOCH)
    assert fake_instantly.calls_to("GET", "/api/v2/emails")[-1].query["campaign_id"] == [
        made[0]["id"]
    ]


def test_auto_replies_follow_the_auto_reply_setting(db, fake_instantly, reconcile, settings):
    fake_instantly.add_lead("a@example.com")
    fake_instantly.add_reply("a@example.com", NOW - timedelta(hours=2))
    auto = fake_instantly.add_reply("a@example.com", NOW - timedelta(hours=1), is_auto_reply=True)
    off = reconcile(Options(statuses=False))
    assert off.replies.found == 1
    assert [e["event_type"] for e in events(db)] == ["reply_received"]
    on = reconcile(Options(statuses=False), settings=with_events(settings, auto_reply_received=[]))
    assert on.replies.new == 1
    assert events(db)[-1]["key"] == f"reply:{auto['id']}"
    assert events(db)[-1]["event_type"] == "auto_reply_received"


def test_nothing_is_polled_for_replies_when_replies_are_not_synced(
    db, fake_instantly, reconcile, settings
):
    off = json.loads(json.dumps(settings))
    off["events"]["reply_received"]["enabled"] = False
    summary = reconcile(Options(statuses=False), settings=off)
    assert summary.replies.skipped and fake_instantly.calls == []


def test_reply_by_webhook_then_by_poll_makes_one_ghl_upsert(
    client, db, config, fake_instantly, fake_ghl, reconcile
):
    campaign = fake_instantly.add_campaign("Trust Attorneys Q4")
    fake_instantly.add_lead(
        "jordan.lead@example.com",
        campaign=campaign["id"],
        first_name="Jordan",
        last_name="Lead",
        company_name="Lead & Co",
    )
    reply = fake_instantly.add_reply(
        "jordan.lead@example.com", NOW - timedelta(hours=1), campaign["id"]
    )
    post_webhook(client, reply_payload(email_id=reply["id"], campaign_id=campaign["id"]))
    Worker(config, db=db).run(drain=True)
    summary = reconcile(Options(statuses=False))
    assert (summary.replies.found, summary.replies.known, summary.replies.new) == (1, 1, 0)
    Worker(config, db=db).run(drain=True)
    assert fake_ghl.upserts_for("jordan.lead@example.com") == 1


def test_reply_by_poll_then_by_webhook_is_a_duplicate(
    client, db, config, fake_instantly, fake_ghl, reconcile
):
    fake_instantly.add_lead("jordan.lead@example.com", first_name="Jordan")
    reply = fake_instantly.add_reply("jordan.lead@example.com", NOW - timedelta(hours=1))
    reconcile(Options(statuses=False))
    Worker(config, db=db).run(drain=True)
    answer = post_webhook(client, reply_payload(email_id=reply["id"]))
    assert answer.status_code == 200 and answer.get_json()["status"] == "duplicate"
    Worker(config, db=db).run(drain=True)
    assert fake_ghl.upserts_for("jordan.lead@example.com") == 1


# --- interest statuses ------------------------------------------------------------------


@pytest.fixture
def interest(settings):
    return with_events(settings, lead_interested=["instantly-interested"], lead_not_interested=[])


def test_statuses_are_skipped_when_no_interest_event_is_synced(
    db, fake_instantly, reconcile, settings
):
    populate(fake_instantly, leads=10, interested_every=2)
    summary = reconcile(Options(replies=False), settings=without_interest(settings))
    assert summary.statuses.skipped == "no interest event is synced in settings"
    assert fake_instantly.calls_to("POST", "/api/v2/leads/list") == []


def test_a_changed_status_becomes_an_interest_event(db, fake_instantly, reconcile, interest):
    campaign = fake_instantly.add_campaign("Q1")
    changed = stamp(NOW - timedelta(days=1))
    lead = fake_instantly.add_lead(
        "ada@example.com",
        campaign=campaign["id"],
        first_name="Ada",
        payload={"icebreaker": "hi"},
        lt_interest_status=1,
        timestamp_last_interest_change=changed,
    )
    fake_instantly.add_lead("plain@example.com", campaign=campaign["id"])
    summary = reconcile(Options(replies=False), settings=interest)
    assert (summary.statuses.found, summary.statuses.new) == (1, 1)
    (row,) = events(db)
    payload = json.loads(row["payload"])
    assert row["event_type"] == "lead_interested" and row["email"] == "ada@example.com"
    assert payload["timestamp"] == changed == lead["timestamp_last_interest_change"]
    assert payload["campaign_name"] == "Q1" and payload["firstName"] == "Ada"
    assert payload["icebreaker"] == "hi"
    bodies = [c.json for c in fake_instantly.calls_to("POST", "/api/v2/leads/list")]
    assert bodies[0] == {"limit": 100, "in_campaign": True}
    assert all("filter" not in b for b in bodies), "a scope that ends on its first page"
    again = reconcile(Options(replies=False), settings=interest)
    assert (again.statuses.found, again.statuses.known, again.statuses.new) == (1, 1, 0)


@pytest.mark.parametrize(
    ("applied", "applied_at", "expected"),
    [
        (None, None, 1),  # never applied
        ("interested", "2026-01-18T00:00:00.000Z", 0),  # same status
        ("not_interested", "2026-01-10T00:00:00.000Z", 1),  # changed since
        ("not_interested", "2026-01-19T12:00:00.000Z", 0),  # the map holds a newer one
    ],
)
def test_status_is_compared_with_the_one_last_applied(
    db, fake_instantly, reconcile, interest, applied, applied_at, expected
):
    fake_instantly.add_lead(
        "ada@example.com",
        campaign="c1",
        lt_interest_status=1,
        timestamp_last_interest_change="2026-01-19T00:00:00.000Z",
    )
    contacts.record_upsert(db, LOCATION_ID, "ada@example.com", "contact-1", {})
    db.execute("UPDATE contacts SET interest_status = ?, interest_at = ?", [applied, applied_at])
    summary = reconcile(Options(replies=False), settings=interest)
    assert summary.statuses.new == expected


def test_a_page_of_plain_leads_needs_no_event_and_no_query(db, fake_instantly, reconcile, interest):
    for i in range(30):
        fake_instantly.add_lead(f"p{i}@example.com", campaign="c1")
    queries = []
    db.conn.set_trace_callback(queries.append)
    summary = reconcile(Options(replies=False), settings=interest)
    db.conn.set_trace_callback(None)
    assert (summary.statuses.read, summary.statuses.found) == (30, 0)
    assert not [q for q in queries if "FROM contacts" in q or "INTO events" in q]


def test_a_waiting_webhook_event_of_the_same_kind_is_not_doubled(
    client, db, fake_instantly, reconcile, interest
):
    fake_instantly.add_lead(
        "ada@example.com",
        campaign="c1",
        lt_interest_status=1,
        timestamp_last_interest_change="2026-01-19T00:00:00.000Z",
    )
    inbox.enqueue(
        db,
        Event(
            key="lead_interested:webhook",
            event_type="lead_interested",
            email="ada@example.com",
            payload={},
        ),
    )
    summary = reconcile(Options(replies=False), settings=interest)
    assert (summary.statuses.found, summary.statuses.known, summary.statuses.new) == (1, 1, 0)


def test_custom_labels_use_the_label_text_as_event_type(db, fake_instantly, reconcile, settings):
    fake_instantly.add_label("Hot Lead", 7, "positive")
    fake_instantly.add_lead(
        "ada@example.com",
        campaign="c1",
        lt_interest_status=7,
        timestamp_last_interest_change="2026-01-19T00:00:00.000Z",
    )
    summary = reconcile(Options(replies=False), settings=with_events(settings, **{"Hot Lead": []}))
    assert summary.statuses.new == 1
    assert events(db)[0]["event_type"] == "Hot Lead"


def test_settings_choose_campaigns_and_lists(db, fake_instantly, reconcile, interest):
    fake_instantly.add_lead("a@example.com", campaign="c1", lt_interest_status=1)
    fake_instantly.add_lead("b@example.com", campaign="c2", lt_interest_status=1)
    fake_instantly.add_lead("c@example.com", list_id="l1", lt_interest_status=1)
    chosen = {
        **interest,
        "reconcile": {**interest["reconcile"], "campaigns": ["c2"], "lists": ["l1"]},
    }
    summary = reconcile(Options(replies=False), settings=chosen)
    assert sorted(e["email"] for e in events(db)) == ["b@example.com", "c@example.com"]
    bodies = [c.json for c in fake_instantly.calls_to("POST", "/api/v2/leads/list")]
    assert {"campaign": "c2", "limit": 100} in bodies and {"list_id": "l1", "limit": 100} in bodies
    assert not [b for b in bodies if b.get("campaign") == "c1"]
    assert summary.statuses.new == 2


def test_a_large_scope_with_few_statuses_switches_to_the_status_filters(
    db, fake_instantly, reconcile, interest
):
    populate(fake_instantly, leads=3000, interested_every=600)
    summary = reconcile(Options(replies=False), settings=interest)
    bodies = [c.json for c in fake_instantly.calls_to("POST", "/api/v2/leads/list")]
    assert "filter" not in bodies[0] and all("filter" in b for b in bodies[1:])
    assert sorted({b["filter"] for b in bodies[1:]}) == sorted(FILTER_BY_STATUS.values())
    assert summary.statuses.new == 5 and len(events(db)) == 5
    assert summary.statuses.calls <= 1 + len(FILTER_BY_STATUS) + 5  # not one per 100 leads


def test_a_scope_where_most_leads_hold_a_status_is_read_whole(
    db, fake_instantly, reconcile, interest
):
    populate(fake_instantly, leads=1000, interested_every=1)
    summary = reconcile(Options(replies=False), settings=interest)
    bodies = [c.json for c in fake_instantly.calls_to("POST", "/api/v2/leads/list")]
    assert all("filter" not in b for b in bodies)
    assert len(bodies) <= 1000 // 100 + 1
    assert summary.statuses.new == 1000


def test_a_synced_label_without_a_filter_reads_the_whole_scope(
    db, fake_instantly, reconcile, interest
):
    fake_instantly.add_label("Call later", 7, kind="neutral")
    populate(fake_instantly, leads=150, interested_every=50)
    settings = {**interest, "interest": {**interest["interest"], "sync_custom_labels": True}}
    summary = reconcile(Options(replies=False), settings=settings)
    bodies = [c.json for c in fake_instantly.calls_to("POST", "/api/v2/leads/list")]
    assert all("filter" not in b for b in bodies) and len(bodies) == 3
    assert summary.statuses.new == 3


def test_no_change_reconcile_of_1000_leads_makes_no_ghl_call(
    db, config, fake_instantly, fake_ghl, reconcile, interest
):
    populate(fake_instantly, leads=1000, interested_every=100, replies=20)
    first = reconcile(Options(), settings=interest)
    assert first.totals()["new"] == 30
    Worker(config, db=db).run(drain=True)
    for row in list(
        db.query("SELECT DISTINCT email FROM events WHERE event_type = 'lead_interested'")
    ):
        # What the interest issue's worker records once it has applied a status.
        if contacts.get(db, LOCATION_ID, row["email"]) is None:
            contacts.record_upsert(db, LOCATION_ID, row["email"], f"contact-{row['email']}", {})
        db.execute(
            "UPDATE contacts SET interest_status = 'interested', interest_at = ? WHERE email = ?",
            [stamp(NOW), row["email"]],
        )
    fake_ghl.calls.clear()
    fake_instantly.calls.clear()
    again = reconcile(Options(), settings=interest, now=NOW + timedelta(minutes=15))
    assert again.totals()["new"] == 0 and again.status == "ok"
    Worker(config, db=db).run(drain=True)
    assert fake_ghl.calls == []
    assert len(fake_instantly.calls) <= 1000 // 100 + 5
    assert fake_instantly.calls_to("GET", "/api/v2/campaigns") == []


# --- dry run --------------------------------------------------------------------------------


def test_dry_run_writes_nothing(db, fake_instantly, reconcile, interest):
    populate(fake_instantly, leads=30, interested_every=10, replies=5)
    before = dump(db)
    summary = reconcile(Options(dry_run=True, since=EPOCH), settings=interest)
    assert dump(db) == before
    assert summary.totals()["new"] == 8 == len(summary.planned)
    assert {e.source for e in summary.planned} == {"poll"}
    assert summary.watermark_after is None


def test_the_run_reports_pages_calls_and_counts(db, fake_instantly, reconcile, interest):
    populate(fake_instantly, leads=120, interested_every=60, replies=3)
    summary = reconcile(Options(), settings=interest)
    facts = summary.as_dict()
    assert facts["status"] == "ok" and facts["errors"] == []
    # statuses: the first page read whole, then the interested filter's one page
    assert facts["replies"]["pages"] == 1 and facts["statuses"]["pages"] == 2
    assert facts["totals"]["calls"] == len(fake_instantly.calls)
    assert facts["totals"]["new"] == 5
