"""One line a person can read for a stored error: "GHL unreachable: connection refused",
"GHL 422: locationId must be a string". The raw text stays on the event's page.

The errors come from the clients (bridge/clients/errors.py formats them as
"<service> <status or 'network error'>: <message>", a network error's message being
"<requests exception>: <urllib3's text>"), from the worker ("gave up after 5 attempts: ..."),
from the reconciler and from health's problems ("last reconciliation failed: ...").
"""

from __future__ import annotations

import re

__all__ = ["LIMIT", "summarise", "summarise_call"]

LIMIT = 120

# Where a service's error starts inside a longer line; what comes before it is a lead-in.
_SERVICE_ERROR = re.compile(r"\b(GHL|Instantly) (\d{3}|network error): ")
_GAVE_UP = re.compile(r"^gave up after (\d+) attempts: ", re.IGNORECASE)
_HOST = re.compile(r"host='([^']+)'")
_TIMEOUT = re.compile(r"(read|connect) timeout=([\d.]+)")
_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
# The longest lead-in kept before a service error ("last reconciliation failed: ").
_LEAD_IN = 60
# A word this long (a token, an id list, a URL) is cut inside the line, so the words after
# it, often the fix ("check GHL_TOKEN"), still fit.
_LONG_WORD = re.compile(r"[^\s()\[\]{}:;,'\"]{41,}")
_WORD_KEPT = 30

# A network error's cause, in the words urllib3 and the OS use, and what a person calls it.
_NETWORK_CAUSES = (
    ("proxyerror", "the proxy refused the connection"),
    ("certificate verify failed", "TLS certificate not trusted"),
    ("sslerror", "TLS handshake failed"),
    ("connection refused", "connection refused"),
    ("connection reset", "connection reset"),
    ("remotedisconnected", "closed the connection without answering"),
    ("remote end closed connection", "closed the connection without answering"),
    ("network is unreachable", "network is unreachable"),
    ("no route to host", "no route to host"),
    ("too many redirects", "too many redirects"),
)
_NAME_NOT_RESOLVED = (
    "nameresolutionerror",
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "getaddrinfo failed",
    "failed to resolve",
)
_STATUS_WORDS = {
    401: "token rejected",
    403: "not allowed: the token lacks a scope",
    429: "rate limited",
}
# Instantly's client already words its 401 and 403 for a person ("check INSTANTLY_API_KEY").
_INSTANTLY_STATUS_WORDS = {429: "rate limited"}


def summarise(text: str | None, limit: int = LIMIT) -> str:
    """The first line of an error, in words, at most `limit` characters; "" for none."""
    line = " ".join((text or "").split())
    if not line:
        return ""
    tries = ""
    gave_up = _GAVE_UP.match(line)
    if gave_up:
        tries = f" (gave up after {gave_up.group(1)} tries)"
        line = line[gave_up.end() :]
    found = _SERVICE_ERROR.search(line)
    if found and found.start() <= _LEAD_IN:
        lead = line[: found.start()]
        service, status, message = found.group(1), found.group(2), line[found.end() :]
        line = lead + _service_error(service, status, message)
    line = _LONG_WORD.sub(lambda word: word.group(0)[:_WORD_KEPT] + "…", line)
    return _cut(line, limit - len(tries)) + tries


def summarise_call(status: int | None, error: str | None, limit: int = LIMIT) -> str:
    """A GHL call's error (stored without the "GHL <status>:" its exception carries)."""
    if not error:
        return ""
    return summarise(f"GHL {status or 'network error'}: {error}", limit)


def _service_error(service: str, status: str, message: str) -> str:
    if status == "network error":
        return _network_error(service, message)
    code = int(status)
    words = (_INSTANTLY_STATUS_WORDS if service == "Instantly" else _STATUS_WORDS).get(code)
    message = _plain(message)
    if words:
        return f"{service} {code}: {words}" + (f" ({message})" if message else "")
    return f"{service} {code}: {message or 'no message'}"


def _network_error(service: str, message: str) -> str:
    """Name the cause urllib3 buried in its text (or the bare exception's name)."""
    lowered = message.lower()
    timeout = _TIMEOUT.search(message)
    if timeout or "timed out" in lowered or "timeout" in lowered.split(":")[0]:
        after = f" after {float(timeout.group(2)):g} s" if timeout else ""
        connecting = " connecting" if timeout and timeout.group(1) == "connect" else ""
        return f"{service} timed out{connecting}{after}"
    if any(words in lowered for words in _NAME_NOT_RESOLVED):
        host = _HOST.search(message)
        return f"{service} unreachable: cannot resolve {host.group(1) if host else 'its name'}"
    for words, cause in _NETWORK_CAUSES:
        if words in lowered:
            return f"{service} unreachable: {cause}"
    name = message.split(":", 1)[0].strip()
    return f"{service} unreachable: {name or 'network error'}"


def _plain(message: str) -> str:
    """An HTML error page (a gateway's 502) as its title, or as its text."""
    if "<" not in message:
        return message.strip()
    title = _TITLE.search(message)
    return " ".join(_TAG.sub(" ", title.group(1) if title else message).split())


def _cut(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
