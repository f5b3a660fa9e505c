"""The bridge's schema, as ordered sqlite-utils migration steps.

Append new steps at the end; never edit a step that has shipped.
"""

import json
import logging

from sqlite_utils import Database, Migrations

migrations = Migrations("instantly-ghl-bridge")


@migrations()
def m001_event_inbox(db: Database) -> None:
    """Every accepted event, webhook or poll, keyed so that it is stored once."""
    db["events"].create(
        {
            "id": int,
            "key": str,
            "source": str,  # webhook | poll | replay
            "event_type": str,
            "email": str,
            "campaign_id": str,
            "campaign_name": str,
            "occurred_at": str,  # the event's own time (ISO 8601, UTC)
            "payload": str,  # JSON as received
            "status": str,  # pending | processing | done | ignored | superseded | dead
            "attempts": int,
            "next_attempt_at": float,  # epoch seconds
            "lease_until": float,
            "last_error": str,
            "contact_id": str,
            "received_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"key", "source", "event_type", "payload", "status", "attempts"},
        defaults={"status": "pending", "attempts": 0, "next_attempt_at": 0.0},
    )
    db["events"].create_index(["key"], unique=True)
    db["events"].create_index(["status", "next_attempt_at"])
    db["events"].create_index(["email"])


@migrations()
def m002_contact_map(db: Database) -> None:
    """What the bridge has written to GHL, per normalised email."""
    db["contacts"].create(
        {
            "email": str,
            "contact_id": str,
            "fields": str,  # JSON of the upsert fields last written
            "fields_hash": str,
            "tags": str,  # JSON list of tags the bridge has applied
            "interest_status": str,
            "interest_at": str,
            "updated_at": str,
        },
        pk="email",
    )


@migrations()
def m003_ghl_call_log(db: Database) -> None:
    """Every GHL call made for an event: the sync log."""
    db["ghl_calls"].create(
        {
            "id": int,
            "event_id": int,
            "method": str,
            "path": str,
            "status": int,  # HTTP status, 0 for a network error
            "duration_ms": float,
            "error": str,
            "at": str,
        },
        pk="id",
    )
    db["ghl_calls"].create_index(["event_id"])


@migrations()
def m004_settings_and_state(db: Database) -> None:
    """Editable mapping settings, and small named state values (pauses, caches)."""
    db["settings"].create(
        {"id": int, "version": int, "body": str, "updated_at": str},
        pk="id",
    )
    db["state"].create({"name": str, "value": str, "updated_at": str}, pk="name")


@migrations()
def m010_interest_and_actions(db: Database) -> None:
    """Interest-status tags in the contact map, the keyed record of GHL writes that are
    not idempotent on GHL's side (notes, opportunities) or done once (workflow, DND),
    and the new event settings for installs whose settings were stored before them."""
    # The tags the current interest status added: removed when the status changes.
    db["contacts"].add_column("interest_tags", str)
    db["ghl_writes"].create(
        {
            "key": str,  # note:<event key> | workflow:<contact>:<workflow> | ...
            "kind": str,  # note | workflow | opportunity | dnd
            "contact_id": str,
            "ghl_id": str,  # the note or opportunity id GHL answered
            "state": str,  # intent (call may have happened) | done (GHL confirmed)
            "detail": str,  # JSON: what was written (e.g. the opportunity's stage)
            "at": str,
        },
        pk="key",
        not_null={"kind", "state"},
    )
    # Written out here, not read from config/defaults.toml: a shipped step must not
    # change when the defaults file does.
    new_events = {
        "lead_unsubscribed": {"enabled": True, "dnd": True, "tags": ["instantly-unsubscribed"]},
        "email_bounced": {"enabled": False, "dnd": False, "tags": ["instantly-bounced"]},
        "auto_reply_received": {"enabled": False, "tags": ["instantly-auto-reply"]},
    }
    for row in db.query("SELECT id, version, body FROM settings"):
        body = json.loads(row["body"])
        events = body.setdefault("events", {})
        added = {name: rule for name, rule in new_events.items() if name not in events}
        if added:
            events.update(added)
            db.execute(
                "UPDATE settings SET body = ?, version = ? WHERE id = ?",
                [json.dumps(body), row["version"] + 1, row["id"]],
            )


@migrations()
def m020_reconcile_runs(db: Database) -> None:
    """One row per reconciliation run: what it read, found and enqueued, and its errors."""
    db["reconcile_runs"].create(
        {
            "id": int,
            "trigger": str,  # schedule | request | cli
            "status": str,  # running | ok | error | stopped
            "started_at": str,
            "finished_at": str,
            "options": str,  # JSON: since, until, campaigns, lists, passes
            "pages": int,
            "instantly_calls": int,
            "events_found": int,
            "events_known": int,
            "events_new": int,
            "errors": str,  # JSON list of messages
            "detail": str,  # JSON: the per-pass figures and watermarks
        },
        pk="id",
        not_null={"trigger", "status", "started_at"},
    )
    db["reconcile_runs"].create_index(["started_at"])


@migrations()
def m030_events_without_email_index(db: Database) -> None:
    """Drop the events' email index: every webhook wrote a page of it, and the one query by
    email (reconciliation: is this lead's event still waiting?) also asks for pending or
    processing events, which the status index finds."""
    db.execute("DROP INDEX IF EXISTS idx_events_email")


@migrations()
def m031_contacts_without_fields_hash(db: Database) -> None:
    """Drop the contact map's fields_hash: it was written on every upsert and never read
    (the map compares the fields themselves)."""
    if "fields_hash" in db["contacts"].columns_dict:
        db["contacts"].transform(drop={"fields_hash"})


# Every text timestamp the bridge writes, by table.
TIMESTAMP_COLUMNS = {
    "events": ("occurred_at", "received_at", "updated_at"),
    "contacts": ("interest_at", "updated_at"),
    "ghl_calls": ("at",),
    "ghl_writes": ("at",),
    "settings": ("updated_at",),
    "state": ("updated_at",),
    "reconcile_runs": ("started_at", "finished_at"),
}
CANONICAL_TIME = "strftime('%Y-%m-%dT%H:%M:%fZ', {column})"


@migrations()
def m032_timestamps_in_one_format(db: Database) -> None:
    """Rewrite stored timestamps in the one format the bridge now writes (ISO 8601 UTC,
    milliseconds, Z), so they compare correctly as text. Rows written before held three
    forms (+00:00, Z, microseconds); a value SQLite cannot read is left as it is."""
    for table, columns in TIMESTAMP_COLUMNS.items():
        for column in columns:
            canonical = CANONICAL_TIME.format(column=column)
            db.execute(
                f"UPDATE {table} SET {column} = {canonical}"
                f" WHERE {canonical} IS NOT NULL AND {column} != {canonical}"
            )


@migrations()
def m033_login_attempts(db: Database) -> None:
    """Password tries, one small row per client address instead of one JSON row of them all
    rewritten at every wrong password. `at` is the latest try of an address, or the start
    of the current window for the limit across all addresses (address '*'); rows an hour
    old are pruned by it."""
    db["login_attempts"].create(
        {"address": str, "attempts": int, "at": float},
        pk="address",
        not_null={"attempts", "at"},
    )
    db["login_attempts"].create_index(["at"])
    db.execute("DELETE FROM state WHERE name = 'login_failures'")


@migrations()
def m034_emails_in_nfc(db: Database) -> None:
    """Rewrite stored emails in the form the bridge now keys them by: NFC, lowercase, NFC.
    Before, a precomposed "é" and "e" + combining accent were two addresses; an old
    decomposed row must still be found, or its contact is upserted again and the interest
    status it holds is lost. A contact-map row whose NFC form has a row already is left as
    it is: both are GHL contacts by now, and events find the NFC one. Only rows holding a
    character outside printable ASCII are read."""
    import unicodedata

    def nfc(email: str) -> str:
        return unicodedata.normalize("NFC", unicodedata.normalize("NFC", email).lower())

    outside_ascii = "*[^ -~]*"  # a GLOB: any character but printable ASCII
    found = db.execute("SELECT email FROM contacts WHERE email GLOB ?", [outside_ascii])
    for (email,) in found.fetchall():
        db.execute(
            "UPDATE contacts SET email = ? WHERE email = ?"
            " AND NOT EXISTS (SELECT 1 FROM contacts WHERE email = ?)",
            [nfc(email), email, nfc(email)],
        )
    found = db.execute("SELECT id, email FROM events WHERE email GLOB ?", [outside_ascii])
    for event_id, email in found.fetchall():
        db.execute("UPDATE events SET email = ? WHERE id = ?", [nfc(email), event_id])


# The upper bounds of the GHL call latency histogram, in milliseconds: GHL answers in tens
# to hundreds of milliseconds; a timeout takes 30 s. Counted per bucket as calls are made,
# so changing them takes a step of its own.
@migrations()
def m035_future_event_times(db: Database) -> None:
    """Order by its arrival an event stored with a time more than 5 minutes after it
    arrived, as the bridge now does on arrival (its payload keeps the time it claimed), and
    give a contact whose status was applied at such a time the arrival of the event that
    set it (else the row's last update): a status dated 2999 superseded every real one."""
    ahead = "strftime('%Y-%m-%dT%H:%M:%fZ', {arrived}, '+5 minutes')"
    db.execute(
        "UPDATE contacts SET interest_at = COALESCE("
        " (SELECT MAX(e.received_at) FROM events e"
        "  WHERE e.email = contacts.email AND e.occurred_at = contacts.interest_at),"
        " updated_at)"
        f" WHERE interest_at > {ahead.format(arrived='updated_at')}"
    )
    db.execute(
        "UPDATE events SET occurred_at = received_at"
        f" WHERE occurred_at > {ahead.format(arrived='received_at')}"
    )


LATENCY_BOUNDS_MS = (50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0)
QUEUED = "('pending', 'processing')"
RUNNING_TOTALS = (
    """
CREATE TABLE event_totals (
    event_type TEXT NOT NULL, status TEXT NOT NULL, events INTEGER NOT NULL,
    PRIMARY KEY (event_type, status)
) WITHOUT ROWID
""",
    f"""
INSERT INTO event_totals
    SELECT event_type, status, COUNT(*) FROM events WHERE status NOT IN {QUEUED}
    GROUP BY event_type, status
""",
    f"""
CREATE TRIGGER event_totals_insert AFTER INSERT ON events
WHEN NEW.status NOT IN {QUEUED}
BEGIN
    INSERT INTO event_totals VALUES (NEW.event_type, NEW.status, 1)
    ON CONFLICT (event_type, status) DO UPDATE SET events = events + 1;
END
""",
    f"""
CREATE TRIGGER event_totals_update AFTER UPDATE OF status, event_type ON events
WHEN OLD.status IS NOT NEW.status OR OLD.event_type IS NOT NEW.event_type
BEGIN
    -- A queued status has no row here, so leaving the queue subtracts nothing.
    UPDATE event_totals SET events = events - 1
    WHERE event_type = OLD.event_type AND status = OLD.status;
    INSERT INTO event_totals SELECT NEW.event_type, NEW.status, 1
    WHERE NEW.status NOT IN {QUEUED}
    ON CONFLICT (event_type, status) DO UPDATE SET events = events + 1;
END
""",
    """
CREATE TRIGGER event_totals_delete AFTER DELETE ON events
BEGIN
    UPDATE event_totals SET events = events - 1
    WHERE event_type = OLD.event_type AND status = OLD.status;
END
""",
    """
CREATE TABLE ghl_call_totals (
    status INTEGER NOT NULL PRIMARY KEY, calls INTEGER NOT NULL, duration_ms REAL NOT NULL
) WITHOUT ROWID
""",
    """
INSERT INTO ghl_call_totals
    SELECT IFNULL(status, 0), COUNT(*), IFNULL(SUM(duration_ms), 0) FROM ghl_calls
    GROUP BY IFNULL(status, 0)
""",
    """
CREATE TABLE ghl_call_latency (
    le_ms REAL NOT NULL PRIMARY KEY, calls INTEGER NOT NULL
) WITHOUT ROWID
""",
    """
CREATE TRIGGER ghl_call_totals_insert AFTER INSERT ON ghl_calls
BEGIN
    INSERT INTO ghl_call_totals VALUES (IFNULL(NEW.status, 0), 1, IFNULL(NEW.duration_ms, 0))
    ON CONFLICT (status) DO UPDATE
    SET calls = calls + 1, duration_ms = duration_ms + excluded.duration_ms;
    UPDATE ghl_call_latency SET calls = calls + 1 WHERE le_ms >= NEW.duration_ms;
END
""",
    """
CREATE TABLE reconcile_totals (
    status TEXT NOT NULL PRIMARY KEY, runs INTEGER NOT NULL,
    events_found INTEGER NOT NULL, events_new INTEGER NOT NULL
) WITHOUT ROWID
""",
    """
INSERT INTO reconcile_totals
    SELECT status, COUNT(*), IFNULL(SUM(events_found), 0), IFNULL(SUM(events_new), 0)
    FROM reconcile_runs GROUP BY status
""",
    """
CREATE TRIGGER reconcile_totals_insert AFTER INSERT ON reconcile_runs
BEGIN
    INSERT INTO reconcile_totals
    VALUES (NEW.status, 1, IFNULL(NEW.events_found, 0), IFNULL(NEW.events_new, 0))
    ON CONFLICT (status) DO UPDATE SET runs = runs + 1,
        events_found = events_found + excluded.events_found,
        events_new = events_new + excluded.events_new;
END
""",
    """
CREATE TRIGGER reconcile_totals_update
AFTER UPDATE OF status, events_found, events_new ON reconcile_runs
BEGIN
    UPDATE reconcile_totals SET runs = runs - 1,
        events_found = events_found - IFNULL(OLD.events_found, 0),
        events_new = events_new - IFNULL(OLD.events_new, 0)
    WHERE status = OLD.status;
    INSERT INTO reconcile_totals
    SELECT NEW.status, 1, IFNULL(NEW.events_found, 0), IFNULL(NEW.events_new, 0) WHERE true
    ON CONFLICT (status) DO UPDATE SET runs = runs + 1,
        events_found = events_found + excluded.events_found,
        events_new = events_new + excluded.events_new;
END
""",
    """
CREATE TRIGGER reconcile_totals_delete AFTER DELETE ON reconcile_runs
BEGIN
    UPDATE reconcile_totals SET runs = runs - 1,
        events_found = events_found - IFNULL(OLD.events_found, 0),
        events_new = events_new - IFNULL(OLD.events_new, 0)
    WHERE status = OLD.status;
END
""",
)


@migrations()
def m036_running_totals(db: Database) -> None:
    """Totals kept by triggers, so /metrics and /healthz cost the same at any history length
    (a full count took 4 s at a year's events): finished events by type and status, GHL calls
    by status with their latency histogram, reconciliation runs by status. Pending and
    processing events are not kept here but counted through the status index, so the
    webhook's insert writes nothing more. GHL call totals count calls made: deleting a call
    row leaves them. A later step that rebuilds one of these tables (sqlite-utils
    `transform`) drops its triggers and must create them again."""
    for statement in RUNNING_TOTALS:
        db.execute(statement)
    for bound in LATENCY_BOUNDS_MS:
        db.execute(
            "INSERT INTO ghl_call_latency VALUES (?, (SELECT COUNT(*) FROM ghl_calls"
            " WHERE duration_ms <= ?))",
            [bound, bound],
        )


@migrations()
def m037_events_leased_email_index(db: Database) -> None:
    """Index the leased events by email, so a claim can skip a contact another worker holds.
    Partial on 'processing': a webhook inserts 'pending' rows and never writes it."""
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_events_leased_email"
        " ON events (email, lease_until) WHERE status = 'processing'"
    )


@migrations()
def m038_event_lease_owner(db: Database) -> None:
    """Which sync loop holds an event's lease (bridge/store/leases.py), so a lease whose
    holder died is released at once instead of when it expires."""
    db["events"].add_column("lease_owner", str)


# A database this large takes long enough to rewrite that the step says so first.
SLOW_VACUUM_BYTES = 100 * 1024 * 1024


@migrations(transactional=False)
def m039_incremental_vacuum(db: Database) -> None:
    """Let retention give freed pages back to the disk (PRAGMA incremental_vacuum): without
    auto_vacuum a deleted row's pages stay in the file for SQLite to reuse, and the file
    never shrinks. Turning it on for a database that has tables takes a VACUUM, which
    rewrites the whole file (and needs as much free disk again while it runs), outside a
    transaction: hence not transactional."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # already INCREMENTAL
        return
    pages, size = (
        db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "page_size")
    )
    if pages * size >= SLOW_VACUUM_BYTES:
        logging.getLogger("bridge.store").warning(
            "m039_incremental_vacuum: rewriting the %.0f MiB database once (VACUUM) so that "
            "pruned rows give their space back to the disk; this takes a while and needs "
            "as much free disk again",
            pages * size / 2**20,
        )
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("VACUUM")


@migrations()
def m040_events_finished_index(db: Database) -> None:
    """Index finished events by when they finished, so retention finds the ones to prune
    oldest first without scanning the table. Partial: a webhook inserts 'pending' rows and
    never writes it."""
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_events_finished_updated ON events (updated_at)"
        " WHERE status IN ('done', 'ignored', 'superseded')"
    )


@migrations()
def m041_ghl_call_request(db: Database) -> None:
    """What each GHL call sent (its JSON body or query, capped, never a header), for the
    event's page. An added column keeps the table, and so m036's triggers on it."""
    db["ghl_calls"].add_column("request", str)


EVENT_TOTALS_BY_LOCATION = (
    "DROP TRIGGER event_totals_insert",
    "DROP TRIGGER event_totals_update",
    "DROP TRIGGER event_totals_delete",
    "DROP TABLE event_totals",
    """
CREATE TABLE event_totals (
    location_id TEXT NOT NULL, event_type TEXT NOT NULL, status TEXT NOT NULL,
    events INTEGER NOT NULL,
    PRIMARY KEY (location_id, event_type, status)
) WITHOUT ROWID
""",
    f"""
INSERT INTO event_totals
    SELECT IFNULL(location_id, ''), event_type, status, COUNT(*) FROM events
    WHERE status NOT IN {QUEUED} GROUP BY IFNULL(location_id, ''), event_type, status
""",
    f"""
CREATE TRIGGER event_totals_insert AFTER INSERT ON events
WHEN NEW.status NOT IN {QUEUED}
BEGIN
    INSERT INTO event_totals VALUES (IFNULL(NEW.location_id, ''), NEW.event_type, NEW.status, 1)
    ON CONFLICT (location_id, event_type, status) DO UPDATE SET events = events + 1;
END
""",
    f"""
CREATE TRIGGER event_totals_update AFTER UPDATE OF status, event_type, location_id ON events
WHEN OLD.status IS NOT NEW.status OR OLD.event_type IS NOT NEW.event_type
    OR OLD.location_id IS NOT NEW.location_id
BEGIN
    -- A queued status has no row here, so leaving the queue subtracts nothing.
    UPDATE event_totals SET events = events - 1
    WHERE location_id = IFNULL(OLD.location_id, '') AND event_type = OLD.event_type
        AND status = OLD.status;
    INSERT INTO event_totals
    SELECT IFNULL(NEW.location_id, ''), NEW.event_type, NEW.status, 1
    WHERE NEW.status NOT IN {QUEUED}
    ON CONFLICT (location_id, event_type, status) DO UPDATE SET events = events + 1;
END
""",
    """
CREATE TRIGGER event_totals_delete AFTER DELETE ON events
BEGIN
    UPDATE event_totals SET events = events - 1
    WHERE location_id = IFNULL(OLD.location_id, '') AND event_type = OLD.event_type
        AND status = OLD.status;
END
""",
)


@migrations()
def m042_locations(db: Database) -> None:
    """Many GHL locations in one bridge (bridge/locations/). An event's location is decided
    when it is synced (NULL before; an event finished before this step was synced to
    GHL_LOCATION_ID's location); its workspace is where it came from. The contact map and
    the keyed GHL writes are per location: the same email in two clients is two contacts.
    Their rows from before get location '' and are adopted by GHL_LOCATION_ID's location
    when the bridge next starts (bridge/store/adopt.py). Finished-event totals are kept
    per location too, for /metrics' location label."""
    db["events"].add_column("location_id", str)
    db["events"].add_column("workspace_id", str)
    # A lane's claim, and the events not routed yet (location NULL), in one index: the
    # webhook's insert of a pending row writes one index more, not two.
    db.execute(
        "CREATE INDEX idx_events_lane ON events (location_id, status, next_attempt_at, id)"
        f" WHERE status IN {QUEUED}"
    )
    db.execute("CREATE INDEX idx_events_held ON events (id) WHERE status = 'unrouted'")
    for table, key in (("contacts", "email"), ("ghl_writes", "key")):
        db[table].add_column("location_id", str, not_null_default="")
        db[table].transform(pk=("location_id", key))
    db["ghl_calls"].add_column("location_id", str)
    db["location_tokens"].create(
        {"location_id": str, "token": str, "updated_at": str}, pk="location_id"
    )
    for statement in EVENT_TOTALS_BY_LOCATION:
        db.execute(statement)


@migrations()
def m043_ghl_budget(db: Database) -> None:
    """Each GHL location's request budget (bridge/clients/budget.py), shared by every process
    that writes to it: the calls in its burst window, a 429's wait, GHL's last reported
    limits and daily remainder, the daily reserve in force and the daily hold."""
    db["ghl_budget"].create(
        {
            "location_id": str,
            "calls": str,
            "not_before": float,
            "max_calls": int,
            "window_seconds": float,
            "daily_limit": int,
            "daily_remaining": int,
            "reported_at": float,
            "reserve": int,
            "held_since": float,
            "probe_at": float,
        },
        pk="location_id",
    )


@migrations()
def m044_conversations(db: Database) -> None:
    """What the reply-message action (bridge/sync/reply_message.py) keeps of GHL's
    Conversations: the contact map remembers the contact's conversation (NULL until the
    action first finds or makes it); `email_threads` holds, per location, contact and thread
    key, the emailMessageId GHL last answered for it, which a later reply of that thread is
    threaded under. One row per thread of a contact: retention has nothing to prune here."""
    db["contacts"].add_column("conversation_id", str)
    db["email_threads"].create(
        {
            "location_id": str,
            "contact_id": str,
            "thread_key": str,
            "email_message_id": str,
            "at": str,
        },
        pk=("location_id", "contact_id", "thread_key"),
        not_null={"email_message_id"},
    )
