"""The one event shape: whoever found an event (webhook or poll) builds an Event, keyed
the same way, so the inbox stores it once."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_EMAIL_LENGTH = 320


@dataclass(frozen=True)
class Event:
    """An Instantly event on its way to GHL."""

    key: str
    event_type: str
    email: str
    payload: dict[str, Any]
    campaign_id: str = ""
    campaign_name: str = ""
    occurred_at: str = ""
    source: str = "webhook"
    # The delivery's own JSON text when it holds `payload` exactly: stored as sent, so the
    # webhook does not serialise again what it has just parsed.
    payload_json: str | None = field(default=None, compare=False, repr=False)


def normalise_email(value: Any) -> str:
    """Trim and lowercase an email; '' when it is not a plausible address."""
    if not isinstance(value, str):
        return ""
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_RE.match(email):
        return ""
    return email


def idempotency_key(
    event_type: str, email: str, campaign_id: str, timestamp: str, email_id: str
) -> str:
    """`reply:<email_id>` for replies that carry one (the id polling sees too),
    otherwise a hash of what identifies the delivery."""
    if email_id and event_type in ("reply_received", "auto_reply_received"):
        return f"reply:{email_id}"
    digest = hashlib.sha256("\x1f".join([event_type, email, campaign_id, timestamp]).encode())
    return f"{event_type}:{digest.hexdigest()[:32]}"
