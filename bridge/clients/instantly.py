"""The Instantly API v2 client: read only, paced, and loud about errors.

The bridge never writes to Instantly. The one POST it makes is `/api/v2/leads/list`, which
is a read that takes its filters in a JSON body; the client refuses any other non-GET call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from bridge.clients.ghl import retry_after_seconds
from bridge.clients.ratelimit import SlidingWindowLimiter

API = "/api/v2"
EMAILS_PATH = f"{API}/emails"
LEADS_LIST_PATH = f"{API}/leads/list"
CAMPAIGNS_PATH = f"{API}/campaigns"
LEAD_LISTS_PATH = f"{API}/lead-lists"
LEAD_LABELS_PATH = f"{API}/lead-labels"
# The only non-GET call allowed: a read with its filters in the body.
READ_ONLY_POSTS = frozenset({LEADS_LIST_PATH})

PAGE_LIMIT = 100  # the documented maximum; leads/list answers 400 above it
# Instantly sits behind Cloudflare, which has answered 403 (error 1010) to clients
# without a browser-like User-Agent.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36 instantly-ghl-bridge/0.1"
)
# Instantly allows 100 requests/s and 6,000/min per workspace, shared by every key and
# tool the workspace uses; the bridge takes a fifth of that.
RATE_LIMIT = 20
RATE_WINDOW_SECONDS = 1.0
# GET /api/v2/emails allows 20 requests/min. Two spare slots absorb clock skew and
# network jitter, so normal running never meets the limit.
EMAILS_RATE_LIMIT = 18
EMAILS_RATE_WINDOW_SECONDS = 60.0
TIMEOUT = (5.0, 60.0)
MAX_TRIES = 5
RETRY_BASE_SECONDS = 2.0


class InstantlyError(Exception):
    """An Instantly call failed. `status` is the HTTP status, 0 for a network error."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        self.status = status
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"Instantly {status or 'network error'}: {message}")


class InstantlyTransient(InstantlyError):
    """Network errors, timeouts, 5xx: retried a few times, then reported."""


class InstantlyRateLimited(InstantlyTransient):
    """429: wait, then try again."""


class InstantlyAuthError(InstantlyError):
    """401/403: a wrong key, a missing scope, or Cloudflare refusing the client."""


class InstantlyRejected(InstantlyError):
    """Another 4xx: the request is wrong as it stands (or 402: no paid plan)."""


class Stopped(Exception):
    """The caller asked the client to stop (worker shutdown) while it waited."""


@dataclass(frozen=True)
class Page:
    """One page of a list answer."""

    items: list[dict[str, Any]]
    next_starting_after: str | None


@dataclass(frozen=True)
class Call:
    """One HTTP exchange with Instantly, for counting and logs."""

    method: str
    path: str
    status: int
    duration_ms: float


class InstantlyClient:
    """The reads the reconciler makes, each paced and retried."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        session: requests.Session | None = None,
        limiter: SlidingWindowLimiter | None = None,
        emails_limiter: SlidingWindowLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        recorder: Callable[[Call], None] | None = None,
    ):
        if not api_key:
            raise ValueError("INSTANTLY_API_KEY is not set")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        self.limiter = limiter or SlidingWindowLimiter(RATE_LIMIT, RATE_WINDOW_SECONDS, sleep=sleep)
        self.emails_limiter = emails_limiter or SlidingWindowLimiter(
            EMAILS_RATE_LIMIT, EMAILS_RATE_WINDOW_SECONDS, sleep=sleep
        )
        self.sleep = sleep
        self.recorder = recorder
        self.calls = 0

    # --- the reads ------------------------------------------------------------------------

    def list_emails(self, starting_after: str | None = None, **filters: Any) -> Page:
        """GET /api/v2/emails (20 requests/min): one page, `limit` 100 unless given."""
        params = {"limit": PAGE_LIMIT, **filters}
        if starting_after:
            params["starting_after"] = starting_after
        return self._page("GET", EMAILS_PATH, params=_query(params))

    def list_leads(self, starting_after: str | None = None, **filters: Any) -> Page:
        """POST /api/v2/leads/list: one page of leads matching the body's filters."""
        body = {"limit": PAGE_LIMIT, **filters}
        if body["limit"] > PAGE_LIMIT:
            raise ValueError(f"leads/list limit must be <= {PAGE_LIMIT}")
        if starting_after:
            body["starting_after"] = starting_after
        return self._page("POST", LEADS_LIST_PATH, json=body)

    def list_campaigns(self, starting_after: str | None = None) -> Page:
        return self._page("GET", CAMPAIGNS_PATH, params=_query(_paged({}, starting_after)))

    def list_lead_lists(self, starting_after: str | None = None) -> Page:
        return self._page("GET", LEAD_LISTS_PATH, params=_query(_paged({}, starting_after)))

    def list_lead_labels(self, starting_after: str | None = None) -> Page:
        return self._page("GET", LEAD_LABELS_PATH, params=_query(_paged({}, starting_after)))

    def leads_by_email(self, emails: Iterable[str]) -> Iterator[dict[str, Any]]:
        """Every lead record (one per campaign or list) for these emails, 100 emails a call."""
        wanted = sorted(set(emails))
        for start in range(0, len(wanted), PAGE_LIMIT):
            chunk = wanted[start : start + PAGE_LIMIT]
            for page in pages(lambda cursor, chunk=chunk: self.list_leads(cursor, contacts=chunk)):
                yield from page.items

    # --- transport ------------------------------------------------------------------------

    def _page(self, method: str, path: str, **kwargs: Any) -> Page:
        data = self._request(method, path, **kwargs)
        items = data.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            # Never read a malformed answer as "no results": that would hide lost data.
            raise InstantlyTransient(200, f"{method} {path}: answer has no list of items")
        cursor = data.get("next_starting_after")
        return Page(items, str(cursor) if cursor not in (None, "") else None)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method != "GET" and path not in READ_ONLY_POSTS:
            raise ValueError(f"the bridge never writes to Instantly: refusing {method} {path}")
        tries = 0
        while True:
            tries += 1
            try:
                return self._send(method, path, **kwargs)
            except InstantlyRateLimited as exc:
                wait = exc.retry_after
                if wait is None:
                    wait = EMAILS_RATE_WINDOW_SECONDS if path == EMAILS_PATH else 10.0
                self.limiter.block_for(wait)
                if path == EMAILS_PATH:
                    self.emails_limiter.block_for(wait)
                if tries >= MAX_TRIES:
                    raise
            except InstantlyTransient:
                if tries >= MAX_TRIES:
                    raise
                self.sleep(RETRY_BASE_SECONDS * 2 ** (tries - 1))

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if path == EMAILS_PATH:
            self.emails_limiter.acquire()
        self.limiter.acquire()
        self.calls += 1
        started = time.perf_counter()
        try:
            response = self.session.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            self._record(method, path, 0, started)
            raise InstantlyTransient(0, self._clean(f"{type(exc).__name__}: {exc}")) from None
        self._record(method, path, response.status_code, started)
        if response.status_code >= 400:
            raise self._error(method, path, response)
        try:
            data = response.json()
        except ValueError:
            raise InstantlyTransient(
                response.status_code, f"{method} {path}: answer is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise InstantlyTransient(
                response.status_code, f"{method} {path}: answer is not a JSON object"
            )
        return data

    def _error(self, method: str, path: str, response: requests.Response) -> InstantlyError:
        status = response.status_code
        message = self._clean(f"{method} {path}: {_message(response)}")
        if status == 429:
            return InstantlyRateLimited(status, message, retry_after_seconds(response))
        if status == 401:
            return InstantlyAuthError(status, message + " (check INSTANTLY_API_KEY)")
        if status == 403:
            return InstantlyAuthError(
                status,
                message + " (the key lacks a scope such as all:read, or Cloudflare refused the"
                " client; this is an error, not an empty result)",
            )
        if status >= 500 or status == 408:
            return InstantlyTransient(status, message)
        return InstantlyRejected(status, message)

    def _clean(self, text: str) -> str:
        """Error text never carries the key, whatever a server or library echoes back."""
        text = " ".join(text.split()).replace(self._api_key, "[redacted]")
        return text if len(text) <= 500 else text[:499] + "…"

    def _record(self, method: str, path: str, status: int, started: float) -> None:
        if self.recorder:
            duration = round((time.perf_counter() - started) * 1000, 2)
            self.recorder(Call(method, path, status, duration))


def pages(fetch: Callable[[str | None], Page]) -> Iterator[Page]:
    """Follow `next_starting_after` until an empty page (a last page may still carry one)."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        if not page.items:
            return
        yield page
        if page.next_starting_after is None:
            return
        if page.next_starting_after == cursor:
            raise InstantlyTransient(200, "pagination cursor did not advance")
        cursor = page.next_starting_after


def _paged(params: dict[str, Any], starting_after: str | None) -> dict[str, Any]:
    params = {"limit": PAGE_LIMIT, **params}
    if starting_after:
        params["starting_after"] = starting_after
    return params


def _query(params: dict[str, Any]) -> dict[str, str]:
    """Query values as Instantly reads them: booleans lowercase, None left out."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _message(response: requests.Response) -> str:
    """Instantly's error message ({statusCode, error, message}), or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return f"{response.status_code} {text[:200] or response.reason or 'no message'}"
    if isinstance(data, dict):
        message = data.get("message") or data.get("error")
        if isinstance(message, list):
            message = "; ".join(str(m) for m in message)
        if message:
            return f"{response.status_code} {message}"
    return f"{response.status_code} {str(data)[:200]}"
