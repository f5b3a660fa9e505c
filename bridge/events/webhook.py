"""A webhook delivery as Instantly sends it: decoded, validated, made an Event.

The body is kept as it came (unknown fields are accepted and ignored); only the fields
the bridge reads are checked, and every refusal is a BadEvent whose message the webhook
answers with a 400.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from bridge.clock import parse_time
from bridge.events.event import (
    BadEmail,
    Event,
    canonical_body,
    checked_email,
    idempotency_key,
)
from bridge.events.times import occurred_at

# Where Instantly delivers to the bridge, and the header carrying BRIDGE_WEBHOOK_SECRET:
# the web layer serves them, and webhook registration tells Instantly to use them.
WEBHOOK_PATH = "/webhooks/instantly"
SECRET_HEADER = "X-Bridge-Secret"
EVENT_TYPE_MAX_LENGTH = 200


class BadEvent(ValueError):
    """The payload cannot become an event; the message says why (for a 400)."""


class WebhookSchema(Schema):
    """What a delivery must hold; everything else is kept as it came (INCLUDE)."""

    class Meta:
        unknown = INCLUDE

    event_type = fields.String(
        required=True,
        validate=validate.Length(
            min=1,
            max=EVENT_TYPE_MAX_LENGTH,
            error=f"event_type must be 1 to {EVENT_TYPE_MAX_LENGTH} characters",
        ),
        error_messages={
            "required": "event_type is missing",
            "null": "event_type is null",
            "invalid": "event_type must be a string",
        },
    )
    timestamp = fields.Raw(load_default=None, allow_none=True)
    lead_email = fields.Raw(load_default=None, allow_none=True)
    email = fields.Raw(load_default=None, allow_none=True)
    campaign_id = fields.Raw(load_default=None, allow_none=True)
    campaign_name = fields.Raw(load_default=None, allow_none=True)
    email_id = fields.Raw(load_default=None, allow_none=True)


_SCHEMA = WebhookSchema()
# Only these are validated; the rest of a delivery is kept as it came (Event.payload).
_DECLARED = tuple(_SCHEMA.fields)


# The schema's success case, answered without it (load_webhook): event_type a string of
# this length; every other declared field is Raw, taken as it comes, None when absent.
_FAST_PATH = (1, EVENT_TYPE_MAX_LENGTH)


def parse_delivery(body: bytes) -> tuple[dict[str, Any], str | None]:
    """Decode a delivery body (strict JSON, an object at the top), and the body's text when
    it decodes to exactly that object (None when lone surrogates had to be mended, so only
    the mended object is safe to keep)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEvent(f"body is not valid UTF-8 (byte {exc.start})") from None
    if not text or text.isspace():  # not strip(): that copies the whole body
        raise BadEvent("body is empty; expected a JSON object")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except BadEvent:
        raise
    except RecursionError:
        raise BadEvent("JSON is nested too deeply") from None
    except ValueError as exc:
        raise BadEvent(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadEvent(f"expected a JSON object, got {type(data).__name__}")
    if _SURROGATE_ESCAPE.search(text):
        _mend_lone_surrogates(data)
        return data, None
    return data, text


# JSON may escape a lone UTF-16 surrogate ("\ud83d" without its pair): JavaScript's
# JSON.stringify writes one when a text is cut inside an emoji, as a reply snippet can be.
# It is not Unicode, so SQLite, hashing and GHL would all refuse the string; json.loads has
# already joined proper pairs, so any surrogate left is a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _mend_lone_surrogates(data: dict[str, Any]) -> None:
    """Replace lone surrogates with U+FFFD in every key and string, in place.

    Iterative, so a deeply nested delivery cannot exhaust the stack; each node is visited
    once, so the loop is bounded by the size of the body.
    """
    pending: list[dict[str, Any] | list[Any]] = [data]
    while pending:
        node = pending.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, value in items:
            if isinstance(value, str):
                value = _LONE_SURROGATE.sub("\ufffd", value)
            elif isinstance(value, dict | list):
                pending.append(value)
            if isinstance(node, dict):
                node[_LONE_SURROGATE.sub("\ufffd", key)] = value
            else:
                node[key] = value


def _reject_constant(name: str) -> float:
    raise BadEvent(f"malformed JSON: {name} is not allowed")


def load_webhook(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a delivery's declared fields (WebhookSchema); BadEvent saying what is wrong.

    Only the declared keys are loaded: that checks exactly what loading the whole delivery
    would (unknown keys are INCLUDEd unchecked) at a fraction of the cost. A delivery whose
    event_type is a string within bounds passes the schema whatever else it holds, so
    that case, the common one, is answered without marshmallow's machinery. Every other
    case, and so every error message, comes from the schema; tests check the two agree.
    """
    event_type = data.get("event_type")
    if isinstance(event_type, str) and _FAST_PATH[0] <= len(event_type) <= _FAST_PATH[1]:
        return {name: data.get(name) for name in _DECLARED}
    try:
        return _SCHEMA.load({name: data[name] for name in _DECLARED if name in data})
    except ValidationError as exc:
        raise BadEvent(_first_message(exc.messages)) from None


# A workspace id in the webhook's URL: Instantly's are UUIDs; anything else is refused.
_WORKSPACE_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def url_workspace(value: str | None) -> str:
    """The `?workspace=` the bridge registers each declared workspace's webhooks with
    ('' without one); BadEvent for a value no workspace id has."""
    if value is None:
        return ""
    if not _WORKSPACE_ID.fullmatch(value):
        raise BadEvent(
            "the workspace query parameter must be an Instantly workspace id (letters, digits,"
            " - and _, at most 100), as `instantly-ghl-bridge webhook register` sets it"
        )
    return value


def from_webhook(
    data: dict[str, Any],
    received_at: datetime | None = None,
    loaded: dict[str, Any] | None = None,
    text: str | None = None,
    workspace: str = "",
) -> Event:
    """Build an Event from a webhook body; BadEvent when it lacks what syncing needs.

    `loaded` is load_webhook(data) when the caller has it already (the webhook does), so
    a delivery is validated once; `text` is the body as parse_delivery gave it.
    `workspace` is the one in the URL the delivery came to: the bridge registered it, so it
    wins over the body's `workspace`, which a lead's custom variable can shadow (api-notes).
    """
    if loaded is None:
        loaded = load_webhook(data)
    event_type = loaded["event_type"].strip()
    email = _lead_email(loaded, event_type)
    timestamp = _text(loaded.get("timestamp"))
    claimed = parse_time(timestamp)
    # A lead's custom variable named campaign_id arrives in campaign_id; the lead's own
    # `campaign` still names the real campaign (api-notes), so it wins when present.
    campaign_id = _text(data.get("campaign")) or _text(loaded.get("campaign_id"))
    email_id = _text(loaded.get("email_id"))
    # Without a readable time, only the body tells two deliveries of one lead apart.
    content = "" if claimed else canonical_body(data)
    return Event(
        key=idempotency_key(event_type, email, campaign_id, timestamp, email_id, content),
        event_type=event_type,
        email=email,
        payload=data,
        campaign_id=campaign_id,
        campaign_name=_text(loaded.get("campaign_name")),
        occurred_at=occurred_at(claimed, received_at),
        source="webhook",
        workspace_id=workspace or _text(data.get("workspace"))[:100],
        payload_json=text,
    )


def _lead_email(loaded: dict[str, Any], event_type: str) -> str:
    """The lead's address: lead_email, else the lead's own email field; BadEvent naming
    the field and what is wrong with it when neither is an address."""
    refused: str | None = None
    for name in ("lead_email", "email"):
        raw = loaded.get(name)
        if raw is None or raw == "":
            continue
        try:
            return checked_email(raw)
        except BadEmail as exc:
            refused = refused or f"{name} {exc}"
    raise BadEvent(refused or f"lead_email is missing; a {event_type} event needs the lead's email")


def _text(value: Any) -> str:
    """A scalar as text ('' for None, lists, dicts, NaN)."""
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return str(value).strip()


def _first_message(messages: Any) -> str:
    if isinstance(messages, dict):
        for key, value in messages.items():
            inner = _first_message(value)
            return inner if key in inner else f"{key}: {inner}"
    if isinstance(messages, list) and messages:
        return _first_message(messages[0])
    return str(messages)
