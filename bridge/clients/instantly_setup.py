"""The few Instantly API v2 calls that setting up needs: webhooks, campaigns, lead lists.

Everything here reads, except webhook subscriptions: creating, updating and resuming
the bridge's own webhooks is the only write the bridge ever makes to Instantly.
"""

from __future__ import annotations

from typing import Any

import requests

# The reconciler's client's error and browser User-Agent (Cloudflare), so that one
# `except InstantlyError` catches a failure from either client.
from bridge.clients.instantly import PAGE_LIMIT, USER_AGENT, InstantlyError

__all__ = ["InstantlyError", "InstantlySetupClient"]

TIMEOUT = (5.0, 15.0)
# A cursor that never ends must not loop for ever: 50 pages is 5,000 items.
MAX_PAGES = 50


class InstantlySetupClient:
    """Bearer-authenticated calls to Instantly, with the browser User-Agent on each."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = TIMEOUT,
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )

    # --- reads ----------------------------------------------------------------------------

    def check_key(self) -> int:
        """GET /api/v2/campaigns?limit=1: proves the key works; returns campaigns seen (0-1).

        Campaigns (scope campaigns:read) rather than the workspace: the bridge needs
        that scope anyway, for reconciliation and the settings page.
        """
        data = self._request("GET", "/api/v2/campaigns", params={"limit": 1})
        return len(_items(data))

    def campaigns(self) -> list[dict[str, Any]]:
        """Every campaign: GET /api/v2/campaigns, paginated."""
        return self._all("/api/v2/campaigns")

    def lead_lists(self) -> list[dict[str, Any]]:
        """Every lead list: GET /api/v2/lead-lists, paginated."""
        return self._all("/api/v2/lead-lists")

    def webhooks(self) -> list[dict[str, Any]]:
        """Every webhook of the workspace: GET /api/v2/webhooks, paginated."""
        return self._all("/api/v2/webhooks")

    # --- the bridge's only writes: its own webhook subscriptions ---------------------------

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
        return self._request("POST", "/api/v2/webhooks", json=body)

    def update_webhook_headers(self, webhook_id: str, headers: dict[str, str]) -> dict[str, Any]:
        """PATCH /api/v2/webhooks/{id}: replace the headers sent with each delivery."""
        return self._request("PATCH", f"/api/v2/webhooks/{webhook_id}", json={"headers": headers})

    def resume_webhook(self, webhook_id: str) -> dict[str, Any]:
        """POST /api/v2/webhooks/{id}/resume: re-enable one Instantly switched off.

        The operation declares no body, so none is sent: an empty body with a JSON
        content type is itself a 400 on servers that parse JSON strictly.
        """
        return self._request("POST", f"/api/v2/webhooks/{webhook_id}/resume")

    # --- transport ------------------------------------------------------------------------

    def _all(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"limit": PAGE_LIMIT}
            if cursor:
                params["starting_after"] = cursor
            data = self._request("GET", path, params=params)
            page = _items(data)
            # A last page can still carry a cursor: an empty page is the end.
            if not page:
                break
            items.extend(page)
            cursor = data.get("next_starting_after")
            if not cursor:
                break
        return items

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise self._error(0, f"{type(exc).__name__}: {_short(str(exc))}") from None
        if response.status_code >= 400:
            raise self._error(response.status_code, _explain(response))
        try:
            data = response.json()
        except ValueError:
            raise self._error(
                response.status_code, f"answer is not JSON: {_short(response.text)}"
            ) from None
        if not isinstance(data, dict):
            raise self._error(response.status_code, "answer is not a JSON object")
        return data

    def _error(self, status: int, message: str) -> InstantlyError:
        # Shown on the settings page and by doctor: never with the key, whatever a
        # server or library echoes back (the reconciler's client does the same).
        if self._api_key:
            message = message.replace(self._api_key, "[redacted]")
        return InstantlyError(status, message)


def _items(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = data.get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _explain(response: requests.Response) -> str:
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = None
    message = ""
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("error") or "")
    message = _short(message or response.text or response.reason or "no message")
    if status == 401:
        return f"the API key was refused ({message})"
    if status == 403:
        # Never read a 403 as "nothing there": it is a missing scope or Cloudflare.
        return (
            f"forbidden: the key lacks a scope this call needs, or Cloudflare refused it "
            f"({message})"
        )
    if status == 402:
        return f"the workspace has no active paid plan ({message})"
    return message


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
