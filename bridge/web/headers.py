"""Security headers on every answer of the app: pages, redirects, JSON, the webhook, /healthz
and /metrics alike, errors included."""

from __future__ import annotations

from flask import Flask, Response

HEADERS = {
    # No other site may frame the page and trick a click on its forms: the old header, and
    # the CSP directive that supersedes it in current browsers.
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    # A body is taken as its Content-Type says, never sniffed into HTML or script.
    "X-Content-Type-Options": "nosniff",
    # A link off the page does not hand its path (an event id, a search for an email) to
    # the other site in the Referer.
    "Referrer-Policy": "same-origin",
}


def init_app(app: Flask) -> None:
    app.after_request(_add_headers)


def _add_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response
