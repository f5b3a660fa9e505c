"""A tiny fake Instantly API v2 for the reconciliation benchmark, serving N generated leads.

    python -m bench.fake_instantly --port 8766 --leads 100000 [--status-share 0.2]

Leads are computed from their index on the fly, so the server's own memory stays flat; it
runs in its own process, so the reconciler's peak RSS is measured alone. It answers what a
no-change reconciliation reads: POST /api/v2/leads/list (pages of 100, `filter` by interest
status, `contacts` by email), GET /api/v2/emails (no new replies), /lead-labels (none),
/campaigns (one). GET /_fake/calls gives the number of calls per route.
(The recon branch's tests/support/instantly_fake.py keeps every lead in memory and checks
each answer against the spec: right for tests, slow for 100,000 leads.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CAMPAIGN_ID = "5f0c2a3e-1a4b-4c1e-9a7e-b3d2c1f0e9a8"
CHANGED_AT = "2025-11-01T09:30:00.000Z"
# Instantly's lt_interest_status codes, in the order leads are given them.
CODES = (1, -1, 2, 0, -2, 3, 4, -3, -4)
FILTERS = {
    "FILTER_LEAD_INTERESTED": 1,
    "FILTER_LEAD_NOT_INTERESTED": -1,
    "FILTER_LEAD_MEETING_BOOKED": 2,
    "FILTER_LEAD_MEETING_COMPLETED": 3,
    "FILTER_LEAD_CLOSED": 4,
    "FILTER_LEAD_OUT_OF_OFFICE": 0,
    "FILTER_LEAD_WRONG_PERSON": -2,
    "FILTER_LEAD_LOST": -3,
    "FILTER_LEAD_NO_SHOW": -4,
}
PAGE = 100


def status_code(index: int, share: float) -> int | None:
    """The lead's interest status code: `share` of leads hold one, spread over all codes."""
    if (index * 7919) % 1000 >= share * 1000:
        return None
    return CODES[index % len(CODES)]


def email_of(index: int) -> str:
    return f"lead{index}@recon.example"


def lead(index: int, share: float) -> dict[str, Any]:
    """A REST Lead (the fields the reconciler reads, and the bulk real ones carry)."""
    code = status_code(index, share)
    return {
        "id": str(uuid.UUID(int=index + 1)),
        "email": email_of(index),
        "first_name": "Lead",
        "last_name": f"Number {index}",
        "company_name": "Recon & Co",
        "phone": "+15555550100",
        "website": "https://lead.example",
        "campaign": CAMPAIGN_ID,
        "organization": "086e295d-72ec-481b-8e54-260d8708afbf",
        "status": 1,
        "lt_interest_status": code,
        "timestamp_last_interest_change": CHANGED_AT if code is not None else None,
        "timestamp_created": "2025-10-01T08:00:00.000Z",
        "timestamp_updated": "2025-11-01T09:30:00.000Z",
        "email_open_count": 2,
        "email_reply_count": 1 if code is not None else 0,
        "payload": {"city": "Springfield", "personalization": "Saw your note on deeds."},
    }


class FakeInstantly:
    def __init__(self, leads: int, share: float):
        self.leads = leads
        self.share = share
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict]:
        with self._lock:
            self.calls[f"{method} {path}"] += 1
        if method == "POST" and path == "/api/v2/leads/list":
            return 200, self._leads_page(body)
        if method == "GET" and path in ("/api/v2/emails", "/api/v2/lead-labels"):
            return 200, {"items": [], "next_starting_after": None}
        if method == "GET" and path == "/api/v2/campaigns":
            return 200, {"items": [{"id": CAMPAIGN_ID, "name": "Recon Q4"}]}
        return 404, {"statusCode": 404, "message": f"no fake for {method} {path}"}

    def _leads_page(self, body: dict[str, Any]) -> dict[str, Any]:
        limit = min(int(body.get("limit") or PAGE), PAGE)
        if body.get("contacts"):
            wanted = [str(e) for e in body["contacts"]]
            found = [
                lead(int(e[4 : e.index("@")]), self.share)
                for e in wanted
                if e.startswith("lead") and e.endswith("@recon.example")
            ]
            return {"items": found[:limit], "next_starting_after": None}
        start = int(body.get("starting_after") or 0)
        code = FILTERS.get(body.get("filter") or "", "all")
        items, index = [], start
        while index < self.leads and len(items) < limit:
            if code == "all" or status_code(index, self.share) == code:
                items.append(lead(index, self.share))
            index += 1
        more = index < self.leads
        return {"items": items, "next_starting_after": str(index) if more and items else None}


def serve(fake: FakeInstantly, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if parts.path == "/_fake/calls":
                status, answer = 200, dict(fake.calls)
            else:
                body = json.loads(raw) if raw.strip() else {}
                status, answer = fake.handle(self.command, parts.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--status-share", type=float, default=0.2)
    args = parser.parse_args()
    server = serve(FakeInstantly(args.leads, args.status_share), args.port)
    print(f"fake Instantly with {args.leads} leads on http://127.0.0.1:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(0.1)


if __name__ == "__main__":
    main()
