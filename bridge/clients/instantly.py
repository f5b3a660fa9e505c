"""The Instantly API v2 client: paced, loud about errors, and all but read only.

Reconciliation reads emails, leads, campaigns and labels; setting up reads campaigns,
lead lists and webhooks, and writes the one thing the bridge ever writes to Instantly:
its own webhook subscriptions. `POST /api/v2/leads/list` is a read that takes its filters
in a JSON body. The client refuses any other call that is not a GET.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import requests

from bridge.clients.errors import ServiceError
from bridge.clients.ratelimit import SlidingWindowLimiter, retry_after_seconds

API = "/api/v2"
EMAILS_PATH = f"{API}/emails"
LEADS_LIST_PATH = f"{API}/leads/list"
CAMPAIGNS_PATH = f"{API}/campaigns"
LEAD_LISTS_PATH = f"{API}/lead-lists"
LEAD_LABELS_PATH = f"{API}/lead-labels"
WEBHOOKS_PATH = f"{API}/webhooks"
# The only calls that are not a GET: a read with its filters in the body, and the
# bridge's own webhook subscriptions (create, set headers, resume).
ALLOWED_WRITES = (
    ("POST", re.compile(re.escape(LEADS_LIST_PATH))),
    ("POST", re.compile(re.escape(WEBHOOKS_PATH))),
    ("PATCH", re.compile(re.escape(WEBHOOKS_PATH) + r"/[^/]+")),
    ("POST", re.compile(re.escape(WEBHOOKS_PATH) + r"/[^/]+/resume")),
)

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
# A person waits on setting-up calls (doctor, the settings page, `webhook register`):
# one try each, a shorter read timeout.
SETUP_TIMEOUT = (5.0, 15.0)
# A cursor that never ends must not loop for ever when reading a whole list: 5,000 items.
MAX_PAGES = 50


class InstantlyError(ServiceError):
    """An Instantly call failed. `status` is the HTTP status, 0 for a network error."""

    service = "Instantly"


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


class InstantlyClient:
    """Every call the bridge makes to Instantly, each paced; retried unless `tries` is 1."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        session: requests.Session | None = None,
        limiter: SlidingWindowLimiter | None = None,
        emails_limiter: SlidingWindowLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: tuple[float, float] = TIMEOUT,
        tries: int = MAX_TRIES,
        key_name: str = "INSTANTLY_API_KEY",
    ):
        """`key_name` is the variable the key came from, named in errors about it (an
        agency's bridge has a key per workspace)."""
        if not api_key:
            raise ValueError(f"{key_name} is not set")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.key_name = key_name
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
        self.timeout = timeout
        self.tries = tries
        self.calls = 0

    @classmethod
    def for_setup(
        cls,
        base_url: str,
        api_key: str,
        timeout: tuple[float, float] = SETUP_TIMEOUT,
        key_name: str = "INSTANTLY_API_KEY",
    ) -> InstantlyClient:
        """A client for calls a person waits on: one try each, a shorter timeout."""
        return cls(base_url, api_key, timeout=timeout, tries=1, key_name=key_name)

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

    # --- setting up: whole lists, and the bridge's own webhooks -----------------------------

    def check_key(self) -> int:
        """GET /api/v2/campaigns?limit=1: proves the key works; returns campaigns seen (0-1).

        Campaigns (scope campaigns:read) rather than the workspace: the bridge needs
        that scope anyway, for reconciliation and the settings page.
        """
        return len(self._page("GET", CAMPAIGNS_PATH, params={"limit": 1}).items)

    def campaigns(self) -> list[dict[str, Any]]:
        """Every campaign: GET /api/v2/campaigns, paginated."""
        return self._all(self.list_campaigns)

    def lead_lists(self) -> list[dict[str, Any]]:
        """Every lead list: GET /api/v2/lead-lists, paginated."""
        return self._all(self.list_lead_lists)

    def webhooks(self) -> list[dict[str, Any]]:
        """Every webhook of the workspace: GET /api/v2/webhooks, paginated."""
        return self._all(
            lambda cursor: self._page("GET", WEBHOOKS_PATH, params=_query(_paged({}, cursor)))
        )

    def create_webhook(
        self, target_hook_url: str, event_type: str, name: str, headers: dict[str, str]
    ) -> dict[str, Any]:
        """POST /api/v2/webhooks for all campaigns of the workspace."""
        body = {
            "target_hook_url": target_hook_url,
            "event_type": event_type,
            "name": name,
            "headers": headers,
        }
        return self._request("POST", WEBHOOKS_PATH, json=body)

    def update_webhook_headers(self, webhook_id: str, headers: dict[str, str]) -> dict[str, Any]:
        """PATCH /api/v2/webhooks/{id}: replace the headers sent with each delivery."""
        return self._request("PATCH", f"{WEBHOOKS_PATH}/{webhook_id}", json={"headers": headers})

    def resume_webhook(self, webhook_id: str) -> dict[str, Any]:
        """POST /api/v2/webhooks/{id}/resume: re-enable one Instantly switched off.

        The operation declares no body, so none is sent: an empty body with a JSON
        content type is itself a 400 on servers that parse JSON strictly.
        """
        return self._request("POST", f"{WEBHOOKS_PATH}/{webhook_id}/resume")

    def _all(self, fetch: Callable[[str | None], Page]) -> list[dict[str, Any]]:
        return [item for page in itertools.islice(pages(fetch), MAX_PAGES) for item in page.items]

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
        if method != "GET" and not _allowed_write(method, path):
            raise ValueError(
                "the bridge never writes to Instantly, except its own webhooks:"
                f" refusing {method} {path}"
            )
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
                if tries >= self.tries:
                    raise
            except InstantlyTransient:
                if tries >= self.tries:
                    raise
                self.sleep(RETRY_BASE_SECONDS * 2 ** (tries - 1))

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if path == EMAILS_PATH:
            self.emails_limiter.acquire()
        self.limiter.acquire()
        self.calls += 1
        try:
            response = self.session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise InstantlyTransient(0, self._clean(f"{type(exc).__name__}: {exc}")) from None
        if response.status_code >= 400:
            raise self._error(method, path, response)
        try:
            data = response.json()
        except ValueError:
            raise InstantlyTransient(
                response.status_code,
                self._clean(f"{method} {path}: answer is not JSON: {response.text}"),
            ) from None
        if not isinstance(data, dict):
            raise InstantlyTransient(
                response.status_code, f"{method} {path}: answer is not a JSON object"
            )
        return data

    def _error(self, method: str, path: str, response: requests.Response) -> InstantlyError:
        status = response.status_code
        explained = _explain(status, _message(response), self.key_name)
        message = self._clean(f"{explained} ({method} {path})")
        if status == 429:
            return InstantlyRateLimited(status, message, retry_after_seconds(response))
        if status in (401, 403):
            return InstantlyAuthError(status, message)
        if status >= 500 or status == 408:
            return InstantlyTransient(status, message)
        return InstantlyRejected(status, message)

    def _clean(self, text: str) -> str:
        """Error text never carries the key, whatever a server or library echoes back."""
        text = " ".join(text.split()).replace(self._api_key, "[redacted]")
        return text if len(text) <= 500 else text[:499] + "…"


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


def _allowed_write(method: str, path: str) -> bool:
    return any(method == m and pattern.fullmatch(path) for m, pattern in ALLOWED_WRITES)


def _message(response: requests.Response) -> str:
    """Instantly's error message ({statusCode, error, message}), or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason or "no message"
    if isinstance(data, dict):
        message = data.get("message") or data.get("error")
        if isinstance(message, list):
            message = "; ".join(str(m) for m in message)
        if message:
            return str(message)
    return str(data)[:200]


def _explain(status: int, message: str, key_name: str) -> str:
    """What an error status means for the person reading it."""
    if status == 401:
        return f"the API key was refused ({message}); check {key_name}"
    if status == 403:
        # Never read a 403 as "nothing there": it is a missing scope or Cloudflare.
        return (
            f"forbidden ({message}): the key lacks a scope this call needs (such as all:read),"
            " or Cloudflare refused the client; this is an error, not an empty result"
        )
    if status == 402:
        return f"the workspace has no active paid plan ({message})"
    return message
