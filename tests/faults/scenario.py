"""Events for fault runs, and the checks that every accepted event reached GHL once."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.sync.steps import normalise_tag
from tests.faults.harness import Stack
from tests.helpers import reply_payload
from tests.support.ghl_fake import RecordedCall

CAMPAIGNS = ("Alpha Outreach", "Beta Follow-up")


@dataclass(frozen=True)
class Reply:
    """One reply delivery: its body, and what the bridge should make of it in GHL."""

    email: str
    campaign: str
    body: dict[str, Any]

    @property
    def email_id(self) -> str:
        return self.body["email_id"]

    @property
    def tags(self) -> set[str]:
        return {"instantly-replied", normalise_tag(f"instantly-campaign-{self.campaign}")}


def replies(
    count: int, emails: int, seed: int, campaigns: Iterable[str] = CAMPAIGNS, prefix: str = "r"
) -> list[Reply]:
    """`count` distinct replies from `emails` leads (a lead replies more than once).

    Several replies per lead keep the GHL calls, and so the time spent under GHL's rate
    limit, small: a known contact with the same fields and tags costs no call.
    """
    rng = random.Random(seed)
    campaigns = list(campaigns)
    out = []
    for i in range(count):
        lead = i % emails
        email = f"lead{lead:04d}.{prefix}@example.com"
        campaign = rng.choice(campaigns)
        body = reply_payload(
            email_id=f"{prefix}-{seed}-{i:05d}",
            lead_email=email.upper() if i % 7 == 0 else email,  # GHL must still see one lead
            email=email,
            firstName=f"Lead{lead}",
            lastName="Fault",
            companyName=f"Co {lead}",
            campaign_name=campaign,
            campaign_id=f"cmp-{campaign.split()[0].lower()}",
            timestamp=f"2026-01-05T10:{(i // 60) % 60:02d}:{i % 60:02d}.000Z",
            reply_text=f"Reply {i}: sounds good.",
        )
        out.append(Reply(email, campaign, body))
    return out


@dataclass
class GHLFigures:
    """What GHL saw per lead, for the checks and the report."""

    contacts_per_email: dict[str, int]
    upserts_per_email: dict[str, int]
    tag_sends: Counter[tuple[str, str]]  # (contact id, tag) -> times it was sent
    resent_tag_calls: int  # tag calls (one contact's or bulk) that sent a pair sent before
    calls: int
    statuses: Counter[int]


def ghl_figures(stack: Stack, emails: Iterable[str]) -> GHLFigures:
    fake = stack.fake
    wanted = set(emails)
    with fake._lock:  # the server thread appends while we read
        contacts = list(fake.contacts.values())
        calls = list(fake.calls)
    per_email = Counter(c.get("emailLowerCase") for c in contacts)
    tag_sends: Counter[tuple[str, str]] = Counter()
    resent = 0
    for call in calls:
        pairs = [(c, tag.lower()) for c in _tagged_contacts(call) for tag in call.json["tags"]]
        resent += any(pair in tag_sends for pair in pairs)
        tag_sends.update(pairs)
    return GHLFigures(
        contacts_per_email={e: per_email.get(e, 0) for e in wanted},
        upserts_per_email={e: fake.upserts_for(e) for e in wanted},
        tag_sends=tag_sends,
        resent_tag_calls=resent,
        calls=len(calls),
        statuses=Counter(call.status for call in calls),
    )


def _tagged_contacts(call: RecordedCall) -> list[str]:
    """The contacts an accepted add-tags call wrote: its path's, or a bulk call's list."""
    if call.method != "POST" or not 200 <= call.status < 300:
        return []
    if call.path == "/contacts/bulk/tags/update/add":
        return list(call.json.get("contacts") or [])
    if call.path.endswith("/tags"):
        return [call.path.split("/")[2]]
    return []


def assert_synced_once(stack: Stack, sent: list[Reply], extra_passes: int = 0) -> GHLFigures:
    """Every accepted reply is done, and GHL holds one contact per lead with each tag once.

    `extra_passes` is how many events may have been written twice: a worker killed between
    GHL's answer and the bridge's record of it repeats that one call on the next pass (the
    upsert is by email, so it finds the same contact). Without crashes it is 0.
    """
    db = stack.db()
    keys = {f"reply:{r.email_id}" for r in sent}
    rows = {row[0]: row[1] for row in db.execute("SELECT key, status FROM events")}
    missing = keys - rows.keys()
    assert not missing, (
        f"{len(missing)} accepted replies are not in the inbox: {sorted(missing)[:5]}"
    )
    unfinished = {k: s for k, s in rows.items() if k in keys and s != "done"}
    assert not unfinished, f"{len(unfinished)} replies not done: {list(unfinished.items())[:5]}"

    expected_tags: dict[str, set[str]] = {}
    for reply in sent:
        expected_tags.setdefault(reply.email, set()).update(reply.tags)
    figures = ghl_figures(stack, expected_tags)
    doubled = {e: n for e, n in figures.contacts_per_email.items() if n != 1}
    assert not doubled, f"leads without exactly one GHL contact: {doubled}"
    too_many = {e: n for e, n in figures.upserts_per_email.items() if n > 1 + extra_passes}
    assert not too_many, f"leads upserted more than 1 + {extra_passes} times: {too_many}"
    extra_upserts = sum(figures.upserts_per_email.values()) - len(expected_tags)

    for email, tags in expected_tags.items():
        contact = stack.fake.contact_by_email(email)
        assert set(contact["tags"]) == tags, (email, contact["tags"], tags)
        assert len(contact["tags"]) == len(set(contact["tags"])), contact["tags"]
        notes = [n["body"] for n in stack.fake.notes.get(contact["id"], [])]
        assert len(notes) == len(set(notes)), f"a note written twice for {email}: {notes}"
    resent = figures.resent_tag_calls
    # Each crash repeats at most the one call it interrupted: an upsert or an add-tags (one
    # contact's, or a bulk one for several).
    assert extra_upserts + resent <= extra_passes, (
        f"{extra_upserts} upserts beyond one per lead and {resent} tags sent again: "
        f"more than the {extra_passes} repeated calls allowed"
    )
    assert not stack.fake.spec_errors, stack.fake.spec_errors
    return figures
