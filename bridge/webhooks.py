"""POST /webhooks/instantly: validate, store, answer. No GHL call happens here."""

from __future__ import annotations

import hmac
import logging
import sqlite3
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from bridge import db as store
from bridge import inbox
from bridge.events import BadEvent, from_webhook, parse_json, read_event_type
from bridge.settings import syncs_event

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("bridge.webhooks")
SECRET_HEADER = "X-Bridge-Secret"


def _answer(code: int, **body: Any):
    response = jsonify(body)
    response.status_code = code
    return response


@bp.post("/webhooks/instantly")
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

    try:
        data = parse_json(request.get_data(cache=False))
        event_type = read_event_type(data)
    except BadEvent as exc:
        log.warning("webhook rejected: %s", exc)
        return _answer(400, error=str(exc))

    try:
        db = store.cached(config.database)
        settings = current_app.extensions["bridge.settings"].get(db)
        if not syncs_event(settings, event_type):
            log.info("webhook ignored: event type %r is not synced", event_type[:80])
            return _answer(200, status="ignored", event_type=event_type)
        event = from_webhook(data)
        queued = inbox.enqueue(db, event)
    except BadEvent as exc:
        log.warning("webhook rejected: %s", exc)
        return _answer(400, error=str(exc))
    except sqlite3.Error as exc:
        # Not stored, so not acknowledged: Instantly will deliver it again.
        log.error("webhook not stored, answering 503: %s", exc)
        store.forget_cached()
        return _answer(503, error="the event could not be stored; retry later")

    if queued.created:
        log.info("webhook accepted: %s %s event %d", event.event_type, event.email, queued.event_id)
        return _answer(202, status="accepted", event_id=queued.event_id)
    log.info("webhook duplicate: %s event %d", event.key, queued.event_id)
    return _answer(200, status="duplicate", event_id=queued.event_id)
