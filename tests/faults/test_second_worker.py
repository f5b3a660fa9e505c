"""A second sync loop: two `instantly-ghl-bridge worker` processes and a `instantly-ghl-bridge worker --drain` sync one
inbox at once. Each contact's events are applied one at a time and in order, so every lead
that went interested -> meeting booked -> won carries only the won tag, and the contact
map holds what GHL holds."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from bridge import settings as settings_mod
from bridge.store import contacts
from tests.faults.harness import LOCATION_ID, Stack
from tests.interest_helpers import interest_payload

pytestmark = pytest.mark.slow

LEADS = 60
STEPS = ("lead_interested", "lead_meeting_booked", "lead_closed")
# Long enough that a second worker's call to the same contact lands inside the first's.
GHL_DELAY_SECONDS = 0.03


def lead_email(n: int) -> str:
    return f"lead{n:03d}.second@example.com"


def deliveries() -> list[dict[str, Any]]:
    """Each lead's three statuses, one second apart, lead by lead: a lead's events sit
    next to each other in the queue, where two workers take them at the same moment."""
    out = []
    for n in range(LEADS):
        for step, event_type in enumerate(STEPS):
            moment = n * len(STEPS) + step
            out.append(
                interest_payload(
                    event_type,
                    f"2026-02-01T09:{moment // 60:02d}:{moment % 60:02d}.000Z",
                    lead_email=lead_email(n),
                    email=lead_email(n),
                    firstName=f"Lead{n}",
                )
            )
    return out


class CallTimes:
    """Wraps the fake GHL's request handler: a delay per call, and when each call to a
    contact began and ended, to find two calls to one contact in flight at once."""

    def __init__(self, stack: Stack, delay: float):
        self.fake = stack.fake
        self.delay = delay
        self.handle = stack.fake.handle
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.lock = threading.Lock()
        stack.fake.handle = self.timed

    def timed(self, method: str, path: str, query: Any, headers: Any, body: bytes) -> Any:
        began = time.monotonic()
        time.sleep(self.delay)  # outside the fake's lock: other calls go on meanwhile
        answer = self.handle(method, path, query, headers, body)
        ended = time.monotonic()
        with self.lock:
            for contact in self.contacts_of(path, answer, body):
                self.spans[contact].append((began, ended))
        return answer

    @staticmethod
    def contacts_of(path: str, answer: Any, body: bytes) -> list[str]:
        """The contact ids a call wrote: in the path, an upsert's answer, or a bulk call's
        body (each contact it names)."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["contacts", "upsert"]:
            found = (answer[2].get("contact") or {}).get("id")
            return [found] if found else []
        if parts[:2] == ["contacts", "bulk"]:
            return list(json.loads(body or b"{}").get("contacts") or [])
        return [parts[1]] if parts[0] == "contacts" and len(parts) > 1 else []

    def overlapping(self) -> dict[str, int]:
        """Per contact, how many of its calls began before the previous one ended."""
        found = {}
        for contact, spans in self.spans.items():
            ordered = sorted(spans)
            clashes = sum(1 for a, b in zip(ordered, ordered[1:], strict=False) if b[0] < a[1])
            if clashes:
                found[contact] = clashes
        return found


def status_tags() -> set[str]:
    """Every interest status's tags, as config/defaults.toml names them."""
    tags = settings_mod.load_defaults()["interest"]["tags"]
    return {tag for status_tags in tags.values() for tag in status_tags}


def test_two_workers_and_a_drain_apply_each_contacts_events_one_at_a_time(stack):
    # Each worker paces itself to GHL's 100 requests / 10 s, so together they would exceed
    # the fake's limit; 429s are another test's subject, not this one's.
    stack.fake.rate_limit = None
    calls = CallTimes(stack, GHL_DELAY_SECONDS)
    stack.configure(backoff_base_seconds=0.2, backoff_max_seconds=1)
    stack.start_web()
    sent = deliveries()
    answers = [stack.post_event(body).status_code for body in sent]
    assert answers == [202] * len(sent)

    stack.start_worker()
    stack.start_worker()
    drains: list[int] = []
    drain = threading.Thread(
        target=lambda: drains.append(stack.cli("worker", "--drain", timeout=120).returncode)
    )
    drain.start()
    counts = stack.wait_all_final(len(sent), timeout=120)
    drain.join(timeout=120)
    assert drains == [0], stack.cli_runs[-1:]
    assert counts["dead"] == 0, counts

    db = stack.db()
    wrong_tags, map_differs = {}, {}
    for n in range(LEADS):
        email = lead_email(n)
        contact = stack.fake.contact_by_email(email)
        held = set(contact["tags"]) & status_tags()
        if held != {"instantly-won"}:
            wrong_tags[email] = sorted(held)
        record = contacts.get(db, LOCATION_ID, email)
        mapped = (record.contact_id, set(record.tags)) if record else None
        if mapped != (contact["id"], set(contact["tags"])):
            map_differs[email] = (mapped, contact["id"], sorted(contact["tags"]))
    assert not wrong_tags, f"{len(wrong_tags)} of {LEADS} leads: {list(wrong_tags.items())[:3]}"
    assert not map_differs, f"{len(map_differs)} of {LEADS}: {list(map_differs.items())[:3]}"
    assert len(stack.fake.contacts) == LEADS
    clashes = calls.overlapping()
    assert not clashes, f"{len(clashes)} contacts were written by two calls at once"
    assert not stack.fake.spec_errors, stack.fake.spec_errors

    bulk = sum(1 for call in stack.fake.calls if call.path.startswith("/contacts/bulk/"))
    print(f"queue {counts}; {len(stack.fake.calls)} GHL calls, {bulk} of them bulk tag calls")
