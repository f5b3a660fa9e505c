"""An in-memory Instantly API v2: the reads the bridge makes, and the webhooks API it writes
its own subscriptions with (`/api/v2/webhooks`), behaving as the real one does.

What it copies from the real API (../shared/notes/api-notes.md and the OpenAPI file):
- cursor paging with `starting_after` / `next_starting_after`; a last page still carries
  a cursor, so only an empty page ends a listing;
- `limit` 1..100, anything else answers 400;
- `GET /api/v2/emails` allows 20 requests per minute (clock injected), then 429 with the
  documented body;
- a client without a browser-like User-Agent gets Cloudflare's 403 (error 1010), a wrong
  or missing key 401;
- when the spec is present, each request is checked against it and a bad one answers 400.

Every call is recorded (`calls`), including any write, so a test can prove the bridge
never made one (`writes()`). Leads are stored compactly and built into full `Lead`
objects a page at a time, so 100,000 of them fit in a fake server without fuss.
"""

from __future__ import annotations

import bisect
import collections
import copy
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "instantly-test-key-7d1e"
BASE_URL = "https://api.instantly.ai"
ORGANIZATION = "086e295d-72ec-481b-8e54-260d8708afbf"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
EMAILS_PER_MINUTE = 20
LEADS_LIST = "/api/v2/leads/list"
WEBHOOKS = "/api/v2/webhooks"
_WEBHOOK_PATH = re.compile(re.escape(WEBHOOKS) + r"/([^/]+)(/resume)?")
# A webhook's `status`: delivering, or switched off by Instantly after failed deliveries.
WEBHOOK_ACTIVE, WEBHOOK_DISABLED = 1, -1
# What PATCH /api/v2/webhooks/{id} may change (the spec's request body).
WEBHOOK_EDITABLE = (
    "campaign",
    "name",
    "target_hook_url",
    "event_type",
    "custom_interest_value",
    "headers",
)
TOO_MANY = {"statusCode": 429, "error": "Too Many Requests", "message": "Rate limit exceeded"}

# leads/list `filter` values the fake understands, as lt_interest_status codes.
STATUS_FILTERS = {
    "FILTER_LEAD_INTERESTED": 1,
    "FILTER_LEAD_MEETING_BOOKED": 2,
    "FILTER_LEAD_MEETING_COMPLETED": 3,
    "FILTER_LEAD_CLOSED": 4,
    "FILTER_LEAD_OUT_OF_OFFICE": 0,
    "FILTER_LEAD_NOT_INTERESTED": -1,
    "FILTER_LEAD_WRONG_PERSON": -2,
    "FILTER_LEAD_LOST": -3,
    "FILTER_LEAD_NO_SHOW": -4,
}
LABEL_FILTERS = {
    "FILTER_LEAD_CUSTOM_LABEL_POSITIVE": "positive",
    "FILTER_LEAD_CUSTOM_LABEL_NEGATIVE": "negative",
}
LEAD_FIELDS = (
    "campaign",
    "list_id",
    "first_name",
    "last_name",
    "company_name",
    "job_title",
    "phone",
    "website",
    "personalization",
    "payload",
    "lt_interest_status",
    "timestamp_last_interest_change",
    "email_reply_count",
    "email_replied_step",
    "email_replied_variant",
)


def stamp(moment: datetime) -> str:
    """Instantly's timestamp format."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _parse(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Call:
    """One request the fake received, and what it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    json: Any
    headers: dict[str, str]
    status: int = 0
    at: float = 0.0  # the fake clock's time when it arrived


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeInstantly:
    """The workspace: campaigns, lists, labels, leads and emails, plus the HTTP surface."""

    def __init__(
        self,
        api_key: str = API_KEY,
        clock: Callable[[], float] = time.monotonic,
        validate: bool = True,
        organization: str = ORGANIZATION,
        id_tag: str = "7c81",
    ):
        """`organization` is the workspace's id in what it answers; `id_tag` (4 hex digits)
        sets its ids apart from another fake workspace's, as Instantly's UUIDs are."""
        self.api_key = api_key
        self.organization = organization
        self.id_tag = id_tag
        self.clock = clock
        self.calls: list[Call] = []
        self.spec_errors: list[str] = []
        self.campaigns: list[dict[str, Any]] = []
        self.lists: list[dict[str, Any]] = []
        self.labels: list[dict[str, Any]] = []
        self.emails: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []
        self._leads: dict[str, dict[str, Any]] = {}
        self._lead_ids: list[str] = []  # sorted: leads/list pages in id order
        self._by_email: dict[str, list[str]] = collections.defaultdict(list)
        self._email_calls: collections.deque[float] = collections.deque()
        self._failures: dict[tuple[str, str], list[_Failure]] = collections.defaultdict(list)
        self._seq = 0
        self._lock = threading.RLock()
        self._spec = None
        if validate:
            from tests.support.specs import instantly_spec, specs_available

            if specs_available():
                self._spec = instantly_spec()

    # --- building the workspace -------------------------------------------------------------

    def _next_id(self) -> str:
        self._seq += 1
        n = self._seq
        return f"{n:08x}-{self.id_tag}-4444-84bb-{n:012x}"

    def add_campaign(self, name: str) -> dict[str, Any]:
        campaign = {
            "id": self._next_id(),
            "name": name,
            "status": 1,
            "campaign_schedule": {
                "schedules": [
                    {
                        "name": "Weekdays",
                        "timing": {"from": "09:00", "to": "17:00"},
                        "days": {"1": True, "2": True, "3": True, "4": True, "5": True},
                        "timezone": "Etc/GMT+12",
                    }
                ]
            },
            "timestamp_created": stamp(EPOCH),
            "timestamp_updated": stamp(EPOCH),
        }
        self.campaigns.append(campaign)
        return campaign

    def add_list(self, name: str) -> dict[str, Any]:
        lead_list = {
            "id": self._next_id(),
            "organization_id": self.organization,
            "name": name,
            "has_enrichment_task": False,
            "timestamp_created": stamp(EPOCH),
        }
        self.lists.append(lead_list)
        return lead_list

    def add_label(self, label: str, interest_status: int, kind: str = "positive") -> dict[str, Any]:
        record = {
            "id": self._next_id(),
            "timestamp_created": stamp(EPOCH),
            "created_by": self.organization,
            "organization_id": self.organization,
            "label": label,
            "interest_status_label": kind,
            "interest_status": interest_status,
            "description": None,
            "use_with_ai": False,
        }
        self.labels.append(record)
        return record

    def add_lead(self, email: str, **fields: Any) -> dict[str, Any]:
        """A lead (REST Lead fields, snake_case; custom variables in `payload`)."""
        unknown = set(fields) - set(LEAD_FIELDS)
        if unknown:
            raise TypeError(f"add_lead: unknown lead fields {sorted(unknown)}")
        with self._lock:
            lead_id = self._next_id()
            record = {"id": lead_id, "email": email, "seq": self._seq}
            record.update({k: v for k, v in fields.items() if v is not None})
            self._leads[lead_id] = record
            bisect.insort(self._lead_ids, lead_id)
            self._by_email[email.lower()].append(lead_id)
        return self.lead(lead_id)

    def set_status(self, lead_id: str, code: int | None, at: datetime) -> None:
        """Change a lead's interest status, as a person in the Unibox would."""
        record = self._leads[lead_id]
        if code is None:
            record.pop("lt_interest_status", None)
        else:
            record["lt_interest_status"] = code
        record["timestamp_last_interest_change"] = stamp(at)

    def leads_for(self, email: str) -> list[dict[str, Any]]:
        return [self.lead(i) for i in self._by_email.get(email.lower(), [])]

    def lead(self, lead_id: str) -> dict[str, Any]:
        """The full Lead object, as the API answers it."""
        record = self._leads[lead_id]
        created = EPOCH + timedelta(seconds=record["seq"])
        lead = {
            "id": lead_id,
            "timestamp_created": stamp(created),
            "timestamp_updated": record.get("timestamp_last_interest_change") or stamp(created),
            "organization": self.organization,
            "status": 1,
            "email": record["email"],
            "email_open_count": 0,
            "email_reply_count": record.get("email_reply_count", 0),
            "email_click_count": 0,
            "company_domain": record["email"].rsplit("@", 1)[-1],
            "status_summary": {},
            "campaign": record.get("campaign"),
            "list_id": record.get("list_id"),
            "payload": record.get("payload"),
        }
        for name in LEAD_FIELDS:
            if name in record and name not in lead:
                lead[name] = record[name]
        return lead

    def add_reply(
        self,
        lead_email: str,
        at: datetime,
        campaign_id: str | None = None,
        subject: str = "Re: Quick question",
        text: str = "Sounds good, tell me more.",
        is_auto_reply: bool = False,
        email_id: str | None = None,
    ) -> dict[str, Any]:
        """A received email (ue_type 2) from a lead, as GET /api/v2/emails lists it."""
        email = {
            "id": email_id or self._next_id(),
            "timestamp_created": stamp(at),
            "timestamp_email": stamp(at - timedelta(seconds=30)),
            "message_id": f"<{self._seq}@mail.example.com>",
            "subject": subject,
            "from_address_email": lead_email,
            "to_address_email_list": "sender@agency.example",
            "body": {"text": text, "html": f"<div>{text}</div>"},
            "organization_id": self.organization,
            "eaccount": "sender@agency.example",
            "campaign_id": campaign_id,
            "lead": lead_email,
            "ue_type": 2,
            "is_auto_reply": 1 if is_auto_reply else 0,
            "i_status": 0,
            "thread_id": self._next_id(),
            "content_preview": text[:100],
        }
        with self._lock:
            self.emails.append(email)
            self.emails.sort(key=lambda e: (e["timestamp_created"], e["id"]))
        return email

    def add_webhook(
        self,
        target_hook_url: str,
        event_type: str | None,
        headers: dict[str, str] | None = None,
        status: int = WEBHOOK_ACTIVE,
        name: str | None = None,
        campaign: str | None = None,
    ) -> dict[str, Any]:
        """A webhook subscription as GET /api/v2/webhooks lists it (the `Webhook` schema)."""
        now = stamp(datetime.now(UTC))
        hook = {
            "id": self._next_id(),
            "organization": self.organization,
            "campaign": campaign,
            "name": name,
            "target_hook_url": target_hook_url,
            "event_type": event_type,
            "custom_interest_value": None,
            "headers": headers,
            "timestamp_created": now,
            "status": status,
            "timestamp_error": now if status == WEBHOOK_DISABLED else None,
        }
        with self._lock:
            self.webhooks.append(hook)
        return copy.deepcopy(hook)

    def disable_webhook(self, hook_id: str) -> None:
        """Switch a webhook off, as Instantly does after its deliveries keep failing."""
        hook = self._webhook(hook_id)
        assert hook is not None, f"no webhook {hook_id}"
        hook["status"] = WEBHOOK_DISABLED
        hook["timestamp_error"] = stamp(datetime.now(UTC))

    def subscribers(self, event_type: str) -> list[dict[str, Any]]:
        """The active webhooks Instantly would deliver an event of this type to (those for
        the type and those for all events), each with the headers it sends."""
        with self._lock:
            return [
                copy.deepcopy(h)
                for h in self.webhooks
                if h["status"] != WEBHOOK_DISABLED and h["event_type"] in (event_type, "all_events")
            ]

    def fail_next(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` calls to METHOD PATH with this status and body."""
        reason = {500: "Internal Server Error", 401: "Unauthorized"}.get(status, "Error")
        body = (
            body if body is not None else {"statusCode": status, "error": reason, "message": reason}
        )
        for _ in range(times):
            self._failures[(method.upper(), path)].append(_Failure(status, body, headers or {}))

    # --- what the tests read --------------------------------------------------------------

    def calls_to(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if c.method == method.upper() and c.path == path]

    def writes(self) -> list[Call]:
        """Calls that could change Instantly: everything but GET and the read-only POST."""
        return [c for c in self.calls if c.method != "GET" and c.path != LEADS_LIST]

    # --- HTTP -----------------------------------------------------------------------------

    def handle(
        self, method: str, url: str, headers: dict[str, str], body: bytes | str | None
    ) -> tuple[int, dict[str, str], str]:
        """Answer one request: (status, headers, body text)."""
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        raw = body.decode() if isinstance(body, bytes) else body
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw
        headers = {k.lower(): v for k, v in headers.items()}
        call = Call(method.upper(), parts.path, query, payload, headers, at=self.clock())
        with self._lock:
            self.calls.append(call)
            status, extra, answer = self._answer(call, url)
        call.status = status
        text = answer if isinstance(answer, str) else json.dumps(answer)
        kind = "text/html" if isinstance(answer, str) else "application/json"
        return status, {"Content-Type": kind, **extra}, text

    def _answer(self, call: Call, url: str) -> tuple[int, dict[str, str], Any]:
        if "mozilla/" not in call.headers.get("user-agent", "").lower():
            return 403, {}, "error code: 1010"  # Cloudflare's browser integrity check
        if call.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, _error(401, "Unauthorized", "Invalid API key")
        if self._spec is not None:
            errors = self._spec.validate_request(
                call.method, url, call.headers, {}, call.json if call.method != "GET" else None
            )
            if errors:
                self.spec_errors.extend(f"{call.method} {call.path}: {e}" for e in errors)
                return 400, {}, _error(400, "Bad Request", "; ".join(errors))
        failures = self._failures.get((call.method, call.path))
        if failures:
            failure = failures.pop(0)
            return failure.status, failure.headers, failure.body
        route = (call.method, call.path)
        if route == ("GET", "/api/v2/emails"):
            return self._list_emails(call.query)
        if route == ("POST", LEADS_LIST):
            return self._list_leads(call.json if isinstance(call.json, dict) else {})
        if route == ("GET", "/api/v2/campaigns"):
            return self._list_simple(self.campaigns, call.query)
        if route == ("GET", "/api/v2/lead-lists"):
            return self._list_simple(self.lists, call.query)
        if route == ("GET", "/api/v2/lead-labels"):
            return self._list_simple(self.labels, call.query)
        if call.path == WEBHOOKS or call.path.startswith(WEBHOOKS + "/"):
            return self._webhooks_api(call)
        return 404, {}, _error(404, "Not Found", f"the fake has no {call.method} {call.path}")

    def _limit(self, raw: Any) -> int | None:
        try:
            limit = int(raw if raw is not None else 100)
        except (TypeError, ValueError):
            return None
        return limit if 1 <= limit <= 100 else None

    def _list_emails(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        now = self.clock()
        while self._email_calls and self._email_calls[0] <= now - 60.0:
            self._email_calls.popleft()
        if len(self._email_calls) >= EMAILS_PER_MINUTE:
            return 429, {}, TOO_MANY
        self._email_calls.append(now)
        one = {k: v[-1] for k, v in query.items()}
        limit = self._limit(one.get("limit"))
        if limit is None:
            return 400, {}, _error(400, "Bad Request", "querystring/limit must be <= 100")
        types = {"received": {2}, "sent": {1, 3}, "manual": {3}}
        wanted = types.get(one.get("email_type", ""))
        low = _parse(one["min_timestamp_created"]) if "min_timestamp_created" in one else None
        high = _parse(one["max_timestamp_created"]) if "max_timestamp_created" in one else None
        ordered = self.emails if one.get("sort_order") == "asc" else self.emails[::-1]
        cursor = one.get("starting_after")
        started = cursor is None
        items = []
        for email in ordered:
            if not started:
                started = email["id"] == cursor
                continue
            created = _parse(email["timestamp_created"])
            if wanted is not None and email["ue_type"] not in wanted:
                continue
            if (low and created < low) or (high and created > high):
                continue
            if "campaign_id" in one and email["campaign_id"] != one["campaign_id"]:
                continue
            if "lead" in one and email["lead"] != one["lead"]:
                continue
            items.append(email)
            if len(items) == limit:
                break
        return 200, {}, _page(items)

    def _list_leads(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        limit = self._limit(body.get("limit"))
        if limit is None:
            return 400, {}, _error(400, "Bad Request", "body/limit must be <= 100")
        supported = {
            "campaign",
            "list_id",
            "in_campaign",
            "in_list",
            "contacts",
            "filter",
            "limit",
            "starting_after",
        }
        unsupported = set(body) - supported
        if unsupported:
            # Never answer a filter it does not implement as if it had applied it.
            return 400, {}, _error(400, "Bad Request", f"fake: unsupported {sorted(unsupported)}")
        codes = self._filter_codes(body.get("filter"))
        if codes is False:
            return 400, {}, _error(400, "Bad Request", f"fake: unsupported filter {body['filter']}")
        cursor = body.get("starting_after")
        if body.get("contacts") is not None:
            ids = sorted(
                i for e in body["contacts"] for i in self._by_email.get(str(e).lower(), [])
            )
            start = bisect.bisect_right(ids, cursor) if cursor else 0
        else:
            ids = self._lead_ids
            start = bisect.bisect_right(ids, cursor) if cursor else 0
        items = []
        for lead_id in ids[start:]:
            record = self._leads[lead_id]
            if "campaign" in body and record.get("campaign") != body["campaign"]:
                continue
            if "list_id" in body and record.get("list_id") != body["list_id"]:
                continue
            if "in_campaign" in body and bool(record.get("campaign")) != body["in_campaign"]:
                continue
            if "in_list" in body and bool(record.get("list_id")) != body["in_list"]:
                continue
            if codes is not None and record.get("lt_interest_status") not in codes:
                continue
            items.append(self.lead(lead_id))
            if len(items) == limit:
                break
        return 200, {}, _page(items)

    def _filter_codes(self, name: str | None) -> set[int] | None | bool:
        if name is None:
            return None
        if name in STATUS_FILTERS:
            return {STATUS_FILTERS[name]}
        if name in LABEL_FILTERS:
            kind = LABEL_FILTERS[name]
            return {
                lab["interest_status"]
                for lab in self.labels
                if lab["interest_status_label"] == kind
            }
        return False

    def _list_simple(
        self, records: list[dict[str, Any]], query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], Any]:
        one = {k: v[-1] for k, v in query.items()}
        limit = self._limit(one.get("limit"))
        if limit is None:
            return 400, {}, _error(400, "Bad Request", "querystring/limit must be <= 100")
        ordered = sorted(records, key=lambda r: r["id"])
        cursor = one.get("starting_after")
        if cursor:
            ordered = [r for r in ordered if r["id"] > cursor]
        return 200, {}, _page(ordered[:limit])

    # --- the webhooks API: the one thing the bridge writes ------------------------------------

    def _webhooks_api(self, call: Call) -> tuple[int, dict[str, str], Any]:
        if call.path == WEBHOOKS:
            if call.method == "GET":
                return self._list_webhooks(call.query)
            if call.method == "POST":
                return self._create_webhook(call.json if isinstance(call.json, dict) else {})
            return 404, {}, _error(404, "Not Found", f"the fake has no {call.method} {call.path}")
        match = _WEBHOOK_PATH.fullmatch(call.path)
        hook = self._webhook(match.group(1)) if match else None
        if hook is None:
            return 404, {}, _error(404, "Not Found", "Webhook not found")
        action = (call.method, bool(match and match.group(2)))
        if action == ("GET", False):
            return 200, {}, copy.deepcopy(hook)
        if action == ("PATCH", False):
            body = call.json if isinstance(call.json, dict) else {}
            hook.update({k: v for k, v in body.items() if k in WEBHOOK_EDITABLE})
            return 200, {}, copy.deepcopy(hook)
        if action == ("DELETE", False):
            self.webhooks.remove(hook)
            return 200, {}, copy.deepcopy(hook)
        if action == ("POST", True):
            hook["status"], hook["timestamp_error"] = WEBHOOK_ACTIVE, None
            return 200, {}, copy.deepcopy(hook)
        return 404, {}, _error(404, "Not Found", f"the fake has no {call.method} {call.path}")

    def _list_webhooks(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        one = {k: v[-1] for k, v in query.items()}
        hooks = [
            h
            for h in self.webhooks
            if one.get("event_type") in (None, h["event_type"])
            and one.get("campaign") in (None, h["campaign"])
        ]
        return self._list_simple(copy.deepcopy(hooks), query)

    def _create_webhook(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        url = body.get("target_hook_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return 400, {}, _error(400, "Bad Request", "body/target_hook_url must match ^https?://")
        headers = body.get("headers")
        hook = self.add_webhook(
            url,
            body.get("event_type"),
            headers=dict(headers) if isinstance(headers, dict) else None,
            name=body.get("name"),
            campaign=body.get("campaign"),
        )
        return 200, {}, hook

    def _webhook(self, hook_id: str) -> dict[str, Any] | None:
        return next((h for h in self.webhooks if h["id"] == hook_id), None)


def _page(items: list[dict[str, Any]]) -> dict[str, Any]:
    # Like the real API, the last page still names a cursor; only an empty page ends.
    page: dict[str, Any] = {"items": items}
    if items:
        page["next_starting_after"] = items[-1]["id"]
    return page


def _error(status: int, error: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "error": error, "message": message}


def populate(
    fake: FakeInstantly,
    leads: int,
    campaigns: int = 1,
    interested_every: int = 0,
    replies: int = 0,
    replied_at: datetime = EPOCH + timedelta(days=1),
) -> list[dict[str, Any]]:
    """A workspace of `leads` leads spread over `campaigns` campaigns; every
    `interested_every`-th lead is marked interested; the first `replies` leads replied,
    a second apart from `replied_at`."""
    made = [fake.add_campaign(f"Campaign {n + 1}") for n in range(campaigns)]
    for i in range(leads):
        campaign = made[i % campaigns]["id"]
        interested = bool(interested_every) and i % interested_every == 0
        fake.add_lead(
            f"lead{i:06d}@example.com",
            campaign=campaign,
            first_name=f"First{i}",
            last_name=f"Last{i}",
            company_name=f"Company {i % 97}",
            payload={"icebreaker": f"Saw your post #{i}"},
            lt_interest_status=1 if interested else None,
            timestamp_last_interest_change=stamp(EPOCH + timedelta(hours=1, seconds=i))
            if interested
            else None,
            email_reply_count=1 if i < replies else 0,
        )
        if i < replies:
            fake.add_reply(f"lead{i:06d}@example.com", replied_at + timedelta(seconds=i), campaign)
    return made
