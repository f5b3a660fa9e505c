"""POST /webhooks/instantly: validate, store, answer. No GHL call happens here."""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
from typing import Any

from flask import Blueprint, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from bridge.config import Config
from bridge.events import types as event_types
from bridge.events.webhook import (
    SECRET_HEADER,
    WEBHOOK_PATH,
    BadEvent,
    from_webhook,
    load_webhook,
    parse_delivery,
    url_workspace,
)
from bridge.store import db as store
from bridge.store import group_commit, probe
from bridge.web.errors import MAX_BODY_BYTES

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("bridge.webhooks")


# What jsonify writes (compact, sorted), made once: json.dumps with options builds an encoder
# on every call.
_encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def _answer(code: int, **body: Any):
    text = _encode(body) + "\n"
    return current_app.response_class(text, status=code, content_type="application/json")


@bp.post(WEBHOOK_PATH)
def receive_instantly():
    config = current_app.config["BRIDGE_CONFIG"]
    if not config.webhook_secret:
        log.warning("webhook refused: BRIDGE_WEBHOOK_SECRET is not set")
        return _answer(
            503, error="webhook secret not configured: set BRIDGE_WEBHOOK_SECRET on the bridge"
        )
    given = request.headers.get(SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), config.webhook_secret.encode()):
        what = "missing" if not given else "wrong"
        log.warning("webhook refused: %s %s header", what, SECRET_HEADER)
        return _answer(401, error=f"{what} {SECRET_HEADER} header")

    body = _read_body()
    # Announced before it is parsed, so a write about to start can wait for it (group_commit).
    with group_commit.for_database(config.database).arrival() as arrival:
        return _store(config, body, arrival)


def _read_body() -> bytes:
    """The request body, refused with a 413 past MAX_BODY_BYTES however it is sent.

    A body without a Content-Length (chunked) is only capped by werkzeug: it stops
    reading at the limit, silently, and the cut body would be parsed. Reading one byte
    more than the limit tells a whole body from a cut one.
    """
    request.max_content_length = MAX_BODY_BYTES + 1
    body = request.get_data(cache=False)
    if len(body) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    return body


def _store(config: Config, body: bytes, arrival: group_commit.Arrival):
    try:
        workspace = url_workspace(request.args.get("workspace"))
        data, text = parse_delivery(body)
        loaded = load_webhook(data)
        event_type = loaded["event_type"].strip()
    except BadEvent as exc:
        log.warning("webhook rejected: %s", exc)
        return _answer(400, error=str(exc))

    cache = current_app.extensions["bridge.settings"]
    try:
        # Decide on the settings this process last read, so a request reads none of its
        # own; the store is asked when they say no (a stale "no" must not turn an event
        # away), and the write checks a "yes" against the settings in force at commit.
        settings = cache.cached()
        if settings is None or not _syncs(settings, event_type):
            settings = cache.get(store.cached(config.database))
            if not _syncs(settings, event_type):
                return _ignored(event_type)
        try:
            event = from_webhook(data, loaded=loaded, text=text, workspace=workspace)
        except BadEvent:
            if not _syncs(cache.get(store.cached(config.database)), event_type):
                return _ignored(event_type)  # switched off meanwhile: ignored, as before
            raise
        queued = arrival.enqueue(event, accept=lambda current: _syncs(current, event_type))
        if queued is None:
            return _ignored(event_type)
    except BadEvent as exc:
        log.warning("webhook rejected: %s", exc)
        return _answer(400, error=str(exc))
    except (sqlite3.Error, OSError) as exc:
        # Not stored, or not on disk, so not acknowledged: Instantly will deliver it again.
        # OSError: the writers' lock file cannot be opened, or the fsync after the commit
        # failed (a full or gone disk).
        log.error("webhook not stored, answering 503: %s", exc)
        store.forget_cached()
        probe.forget(config.database)
        return _answer(503, error="the event could not be stored; retry later")

    # Debug, not info: gunicorn's access log already has a line per delivery and the
    # worker logs each event it syncs. Refusals and rejections above stay warnings.
    if queued.created:
        log.debug(
            "webhook accepted: %s %s event %d", event.event_type, event.email, queued.event_id
        )
        return _answer(202, status="accepted", event_id=queued.event_id)
    log.debug("webhook duplicate: %s event %d", event.key, queued.event_id)
    return _answer(200, status="duplicate", event_id=queued.event_id)


def _ignored(event_type: str):
    log.info("webhook ignored: event type %r is not synced", event_type[:80])
    return _answer(200, status="ignored", event_type=event_type)


def _syncs(settings: dict, event_type: str) -> bool:
    # The worker asks the same question, so both decide alike.
    return event_types.is_synced(settings, event_type)
