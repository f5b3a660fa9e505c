"""Row 2: GHL calls per event, through the whole path (webhook -> inbox -> worker -> GHL)
against the fake GHL over HTTP, compared with the floor for each case."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from bench import procs
from bench.payloads import SECRET, WEBHOOK_PATH, reply_body
from bridge import create_app
from bridge import settings as settings_mod
from bridge.config import load_config
from bridge.store import db as store
from bridge.sync.worker import Worker
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer

LEAD = "casey.calls@example.test"
INBOX_LEAD = "robin.inbox@example.test"


class Bridge:
    """One bridge (app + worker) on a fresh database, talking to one fake GHL."""

    def __init__(self, workdir: Path, ghl_url: str, fake: FakeGHL):
        env = procs.bridge_env(workdir, ghl_url=ghl_url)
        self.config = load_config(env)
        logging.disable(logging.INFO)  # keep the table readable
        self.app = create_app({"BRIDGE_CONFIG": self.config})
        self.client = self.app.test_client()
        self.db = store.connect(self.config.database)
        self.worker = Worker(self.config, db=self.db)
        self.fake = fake

    def deliver(self, body: dict[str, Any]) -> str:
        """POST a delivery as Instantly does, run the worker until idle; the answer's status."""
        answer = self.client.post(
            WEBHOOK_PATH,
            data=json.dumps(body),
            headers={"X-Bridge-Secret": SECRET, "Content-Type": "application/json"},
        )
        self.worker.run(drain=True)
        return answer.get_json().get("status", f"HTTP {answer.status_code}")

    def calls_for(self, body: dict[str, Any]) -> tuple[int, str]:
        before = len(self.fake.calls)
        status = self.deliver(body)
        return len(self.fake.calls) - before, status

    def close(self) -> None:
        self.db.close()
        store.forget_cached()
        logging.disable(logging.NOTSET)


def interest_body(timestamp: str) -> dict[str, Any]:
    """A lead_interested delivery shaped like the captured sample."""
    body = reply_body("", LEAD, event_type="lead_interested", timestamp=timestamp)
    for name in ("email_id", "is_first", "email_account", "unibox_url"):
        body.pop(name)
    return body


def run(out: Path) -> dict[str, Any]:
    workdir = out / "calls"
    shutil.rmtree(workdir, ignore_errors=True)
    fake = FakeGHL(validate=True)
    with FakeGHLServer(fake) as server:
        bridge = Bridge(workdir, server.url, fake)
        try:
            rows = measure(bridge)
        finally:
            bridge.close()
    return {"rows": rows, "spec_errors": list(fake.spec_errors)}


def measure(bridge: Bridge) -> list[dict[str, Any]]:
    first = reply_body("calls-1", LEAD, campaign_name="Trust Attorneys Q4")
    rows = []

    def row(case: str, floor: int, calls: int | None, answer: str, note: str = "") -> None:
        rows.append({"case": case, "floor": floor, "calls": calls, "answer": answer, "note": note})

    calls, answer = bridge.calls_for(first)
    row("first reply, new contact", 2, calls, answer)
    calls, answer = bridge.calls_for(first)
    row("the same reply again", 0, calls, answer)
    before = len(bridge.fake.calls)
    replayed = bridge.db.execute("SELECT id FROM events ORDER BY id LIMIT 1").fetchone()[0]
    bridge.db.execute(
        "UPDATE events SET status = 'pending', next_attempt_at = 0 WHERE id = ?", [replayed]
    )
    bridge.worker.run(drain=True)
    row("the same event synced twice (lease expiry)", 0, len(bridge.fake.calls) - before, "-")
    second = reply_body("calls-2", LEAD, campaign_name="Estate Planners Q1")
    calls, answer = bridge.calls_for(second)
    row("tag-only change, known contact", 1, calls, answer, "new campaign tag")

    first_status, _ = bridge.calls_for(interest_body("2025-11-25T10:00:00.000Z"))
    calls, answer = bridge.calls_for(interest_body("2025-11-26T10:00:00.000Z"))
    row("a no-op status", 0, calls, answer, f"the first lead_interested cost {first_status}")

    # Replies in GHL's inbox (actions.reply_message): the contact, its tags, its conversation
    # made (GHL just made the contact: nothing to search for) and the email; then the email.
    _, current = settings_mod.current(bridge.db)
    current["actions"]["reply_message"]["enabled"] = True
    settings_mod.save(bridge.db, current)
    inbox_first = reply_body("inbox-1", INBOX_LEAD)
    calls, answer = bridge.calls_for(inbox_first)
    row("first reply, new contact, reply in GHL's inbox", 4, calls, answer)
    later = reply_body("inbox-2", INBOX_LEAD, timestamp="2025-11-25T08:00:00.000Z")
    calls, answer = bridge.calls_for(later)
    row("a later reply of the thread, reply in GHL's inbox", 1, calls, answer)
    calls, answer = bridge.calls_for(later)
    row("the same reply again, reply in GHL's inbox", 0, calls, answer)
    return rows


if __name__ == "__main__":
    print(json.dumps(run(procs.OUT), indent=2))
