"""The GoHighLevel API v2 client: only the calls the bridge makes, only declared fields."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from bridge.clients.budget import Budget, BudgetSpent
from bridge.clients.errors import ServiceError
from bridge.clients.ratelimit import read_retry_after
from bridge.logs import MASK

API_VERSION = "2021-07-28"
# A 429 that does not say how long to wait holds the next call for GHL's burst window.
RATE_WINDOW_SECONDS = 10.0
TIMEOUT = (5.0, 30.0)
USER_AGENT = "instantly-ghl-bridge/0.1 (+https://github.com/)"
# What a call sent is kept for the event's page up to this many characters: a note holds
# a whole reply, and the log must not grow by it on every try.
SENT_LIMIT = 4096


class GHLError(ServiceError):
    """A GHL call failed. `status` is the HTTP status, 0 for a network error."""

    service = "GHL"


class GHLTransient(GHLError):
    """Worth retrying later: network errors, timeouts, 5xx."""


class GHLRateLimited(GHLTransient):
    """429: wait `retry_after` seconds (capped). `asked` is the header as GHL sent it when
    it asked for longer than the cap, for /healthz to show; else None."""

    def __init__(
        self,
        status: int,
        message: str,
        retry_after: float | None = None,
        asked: str | None = None,
    ):
        super().__init__(status, message, retry_after)
        self.asked = asked


class GHLBudgetSpent(GHLTransient):
    """The location's daily budget is down to its reserve (bridge/clients/budget.py): no
    call was sent; the event waits `retry_after` seconds, not counted as an attempt."""


class GHLAuthError(GHLError):
    """401/403: the token is wrong or lacks a scope; writing must pause."""


class GHLRejected(GHLError):
    """Another 4xx: GHL will never accept this request as it is."""


@dataclass(frozen=True)
class Call:
    """One HTTP exchange with GHL, for the sync log. `request` is what was sent: the JSON
    body, or the query of a GET; never a header, so never the token."""

    method: str
    path: str
    status: int
    duration_ms: float
    error: str | None
    request: str | None = None


CallRecorder = Callable[[Call], None]


class GHLClient:
    """Thin, typed wrapper over the GHL endpoints the bridge uses."""

    def __init__(
        self,
        base_url: str,
        token: str,
        location_id: str,
        session: requests.Session | None = None,
        budget: Budget | None = None,
        recorder: CallRecorder | None = None,
        timeout: tuple[float, float] = TIMEOUT,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.location_id = location_id
        self._token = token
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Version": API_VERSION,
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        # Without one handed in, a budget of its own (unit tests, tools without a database).
        self.budget = budget or Budget(None, location_id)
        self.recorder = recorder

    # --- contacts -------------------------------------------------------------------------

    def upsert_contact(self, fields: dict[str, Any]) -> tuple[str, bool]:
        """POST /contacts/upsert; returns (contact id, created). Never sends `tags`."""
        if "tags" in fields:
            raise ValueError("tags replace all of a contact's tags on upsert; use add_tags")
        body = {"locationId": self.location_id, **fields}
        data = self._request("POST", "/contacts/upsert", json=body)
        contact = data.get("contact") or {}
        contact_id = contact.get("id")
        if not contact_id:
            raise GHLTransient(200, "upsert answer has no contact.id")
        return str(contact_id), bool(data.get("new"))

    def add_tags(self, contact_id: str, tags: list[str]) -> None:
        """POST /contacts/{id}/tags: adds tags, leaves the others alone."""
        self._request("POST", f"/contacts/{contact_id}/tags", json={"tags": tags})

    def bulk_add_tags(self, contact_ids: list[str], tags: list[str]) -> dict[str, str | None]:
        """POST /contacts/bulk/tags/update/add: the same tags on many contacts in one call.

        Returns, per contact id sent, None when GHL confirmed it, else GHL's message for it.
        GHL answers per contact; an id it did not answer for counts as not confirmed."""
        body = {"contacts": contact_ids, "tags": tags, "locationId": self.location_id}
        data = self._request("POST", "/contacts/bulk/tags/update/add", json=body)
        outcome: dict[str, str | None] = dict.fromkeys(contact_ids, "no answer for this contact")
        failed: set[str] = set()
        for answer in data.get("responses") or []:
            if not isinstance(answer, dict) or answer.get("contactId") not in outcome:
                continue
            contact_id = answer["contactId"]
            if answer.get("type") == "success" and contact_id not in failed:
                outcome[contact_id] = None
            else:
                # An id answered twice, once with an error, is not confirmed.
                failed.add(contact_id)
                outcome[contact_id] = str(answer.get("message") or "error")
        return outcome

    def remove_tags(self, contact_id: str, tags: list[str]) -> None:
        """DELETE /contacts/{id}/tags with a JSON body: removes only these tags."""
        self._request("DELETE", f"/contacts/{contact_id}/tags", json={"tags": tags})

    def update_contact(self, contact_id: str, fields: dict[str, Any]) -> None:
        """PUT /contacts/{id} (UpdateContactDto). Never sends `tags`: they would replace all."""
        if "tags" in fields:
            raise ValueError("tags replace all of a contact's tags on update; use add_tags")
        self._request("PUT", f"/contacts/{contact_id}", json=fields)

    # --- notes ----------------------------------------------------------------------------

    def list_notes(self, contact_id: str) -> list[dict[str, Any]]:
        """GET /contacts/{id}/notes: every note on the contact."""
        data = self._request("GET", f"/contacts/{contact_id}/notes")
        return [n for n in data.get("notes") or [] if isinstance(n, dict)]

    def create_note(self, contact_id: str, body: str) -> str:
        """POST /contacts/{id}/notes; returns the note id. Not idempotent on GHL's side."""
        data = self._request("POST", f"/contacts/{contact_id}/notes", json={"body": body})
        return str((data.get("note") or {}).get("id") or "")

    # --- workflows ------------------------------------------------------------------------

    def add_to_workflow(self, contact_id: str, workflow_id: str) -> None:
        """POST /contacts/{contactId}/workflow/{workflowId}, enrolling the contact now."""
        self._request("POST", f"/contacts/{contact_id}/workflow/{workflow_id}", json={})

    # --- opportunities --------------------------------------------------------------------

    def search_opportunities(self, contact_id: str, pipeline_id: str) -> list[dict[str, Any]]:
        """GET /opportunities/search: the contact's opportunities in one pipeline, any status."""
        data = self._request(
            "GET",
            "/opportunities/search",
            params={
                "location_id": self.location_id,
                "contact_id": contact_id,
                "pipeline_id": pipeline_id,
                "status": "all",
            },
        )
        return [o for o in data.get("opportunities") or [] if isinstance(o, dict)]

    def create_opportunity(self, fields: dict[str, Any]) -> str:
        """POST /opportunities/ (CreateDto); returns the id. Not idempotent on GHL's side."""
        data = self._request(
            "POST", "/opportunities/", json={"locationId": self.location_id, **fields}
        )
        opportunity_id = (data.get("opportunity") or {}).get("id")
        if not opportunity_id:
            raise GHLTransient(200, "create opportunity answer has no opportunity.id")
        return str(opportunity_id)

    def update_opportunity(self, opportunity_id: str, fields: dict[str, Any]) -> None:
        """PUT /opportunities/{id} (UpdateOpportunityDto)."""
        self._request("PUT", f"/opportunities/{opportunity_id}", json=fields)

    # --- location -------------------------------------------------------------------------

    def custom_fields(self) -> list[dict[str, Any]]:
        """GET /locations/{id}/customFields?model=contact."""
        data = self._request(
            "GET", f"/locations/{self.location_id}/customFields", params={"model": "contact"}
        )
        return list(data.get("customFields") or [])

    def get_location(self) -> dict[str, Any]:
        """GET /locations/{id}: a cheap check that the token works for the location."""
        return self._request("GET", f"/locations/{self.location_id}")

    def workflows(self) -> list[dict[str, Any]]:
        """GET /workflows/?locationId=: the location's workflows (id, name, status)."""
        data = self._request("GET", "/workflows/", params={"locationId": self.location_id})
        return list(data.get("workflows") or [])

    def pipelines(self) -> list[dict[str, Any]]:
        """GET /opportunities/pipelines?locationId=: pipelines with their stages."""
        data = self._request(
            "GET", "/opportunities/pipelines", params={"locationId": self.location_id}
        )
        return list(data.get("pipelines") or [])

    # --- transport ------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            ticket = self.budget.acquire()
        except BudgetSpent as exc:
            raise GHLBudgetSpent(0, exc.message, exc.retry_after) from None
        sent = _sent(kwargs, self._token) if self.recorder else None
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            self.budget.settle(ticket, None)
            error = GHLTransient(0, f"{type(exc).__name__}: {_short(str(exc), self._token)}")
            self._record(method, path, 0, started, error.message, sent)
            raise error from None
        error = _error_for(response, self._token)
        wait = None
        if isinstance(error, GHLRateLimited):
            wait = error.retry_after or RATE_WINDOW_SECONDS
        self.budget.settle(ticket, response.headers, wait)
        self._record(method, path, response.status_code, started, error and error.message, sent)
        if error:
            raise error
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _record(
        self,
        method: str,
        path: str,
        status: int,
        started: float,
        error: str | None,
        sent: str | None = None,
    ):
        if self.recorder:
            duration = (time.perf_counter() - started) * 1000
            self.recorder(Call(method, path, status, round(duration, 2), error, sent))


def _sent(kwargs: dict[str, Any], token: str) -> str | None:
    """The body (or a GET's query) as JSON, the token masked should a value hold it, cut to
    SENT_LIMIT characters after masking so no piece of the token survives the cut."""
    if "json" in kwargs:
        payload = kwargs["json"]
    elif kwargs.get("params"):
        payload = {"query": kwargs["params"]}
    else:
        return None
    text = json.dumps(payload, indent=1, ensure_ascii=False, sort_keys=True, default=str)
    if token:
        text = text.replace(token, MASK)
    if len(text) <= SENT_LIMIT:
        return text
    return text[: SENT_LIMIT - 1] + f"… (cut: {len(text)} characters in all)"


def _error_for(response: requests.Response, token: str = "") -> GHLError | None:
    status = response.status_code
    if status < 400:
        return None
    # The message goes to logs, /healthz and the dead-letter list. A gateway in front of GHL
    # may echo the request back, Authorization header and all: mask the token first.
    message = _short(_message(response), token)
    if status == 429:
        wait = read_retry_after(response)
        return GHLRateLimited(status, message, wait.seconds, wait.asked)
    if status in (401, 403):
        return GHLAuthError(status, message)
    if status >= 500 or status == 408:
        return GHLTransient(status, message)
    return GHLRejected(status, message)


def _message(response: requests.Response) -> str:
    """GHL's error message ({statusCode, message, error}; 422 message is a list)."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip() or response.reason or "no message"
    if isinstance(data, dict):
        message = data.get("message") or data.get("error") or data.get("msg")
        if isinstance(message, list):
            return "; ".join(str(m) for m in message)
        if message:
            return str(message)
    return str(data)


def _short(text: str, secret: str = "", limit: int = 500) -> str:
    """One line, `secret` masked before it is cut (so no piece of it survives), at most `limit`."""
    text = " ".join(text.split())
    if secret:
        text = text.replace(secret, MASK)
    return text if len(text) <= limit else text[: limit - 1] + "…"
