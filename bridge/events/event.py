"""The one event shape: whoever found an event (webhook or poll) builds an Event, keyed
the same way, so the inbox stores it once."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_EMAIL_LENGTH = 320
# Characters an address holds only inside a quoted local part, which no lead's address
# uses; refusing them also keeps markup (`<img …>@example.com`) out of GHL.
NOT_IN_ADDRESS = frozenset('<>()[],;:"\\')
# An ASCII address with none of those, no control character and no space: the common
# case, checked without looking at each character's Unicode category.
_PLAIN_ASCII = re.compile(r'[^@\x00-\x20\x7f<>()\[\],;:"\\]+@[^@\x00-\x20\x7f<>()\[\],;:"\\]+')
# Format characters (Cf) that reorder text: they make an address display as another.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


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
    # The Instantly workspace it came from ('' when unknown): with the campaign, where it is
    # routed. From the URL the bridge registered per workspace, or the workspace polled.
    workspace_id: str = ""
    # The delivery's own JSON text when it holds `payload` exactly: stored as sent, so the
    # webhook does not serialise again what it has just parsed.
    payload_json: str | None = field(default=None, compare=False, repr=False)


class BadEmail(ValueError):
    """Not an address the bridge keys or sends; the message says what is wrong, written to
    follow the field's name ("lead_email contains …")."""


def checked_email(value: Any) -> str:
    """An email in the one form the bridge keys, looks up and sends to GHL: trimmed, NFC,
    lowercase. BadEmail when it holds an invisible, control or space character, one no
    address holds (`<>()[],;:"\\`), or is not `local@domain`.

    NFC first, so a precomposed `é` and `e` + combining accent are one address (one GHL
    contact); NFC again after lowercasing, which can leave a combining sequence behind.
    """
    if not isinstance(value, str):
        raise BadEmail(f"{str(value)[:80]!r} is not an email address")
    email = value.strip()
    if email.isascii():
        email = email.lower()
        if len(email) <= MAX_EMAIL_LENGTH and _PLAIN_ASCII.fullmatch(email):
            return email
    else:
        email = unicodedata.normalize("NFC", unicodedata.normalize("NFC", email).lower())
    _raise_if_bad(email)
    return email


def normalise_email(value: Any) -> str:
    """checked_email, or '' when the value is not an address the bridge accepts."""
    try:
        return checked_email(value)
    except BadEmail:
        return ""


def _raise_if_bad(email: str) -> None:
    """BadEmail saying what is wrong with a trimmed, normalised email, if anything is."""
    if len(email) > MAX_EMAIL_LENGTH:
        raise BadEmail(f"is longer than {MAX_EMAIL_LENGTH} characters")
    for char in email:
        what = _refused(char)
        if what:
            raise BadEmail(f"contains {what} U+{ord(char):04X}")
        if char in NOT_IN_ADDRESS:
            raise BadEmail(f"contains {char!r}, which an email address cannot hold")
    if not EMAIL_RE.match(email):
        raise BadEmail(f"{email[:80]!r} is not an email address")


def _refused(char: str) -> str | None:
    """What kind of character this is, when no address may hold it."""
    if char in BIDI_CONTROLS:
        return "a bidirectional control character"
    category = unicodedata.category(char)
    if category == "Cc":
        return "a control character"
    if category in ("Cf", "Zl", "Zp"):
        return "an invisible character"
    if category == "Zs" or char.isspace():
        return "a space character"
    if category in ("Cs", "Co", "Cn") or char == "\ufffd":
        return "a character that is not text"
    return None


def idempotency_key(
    event_type: str,
    email: str,
    campaign_id: str,
    timestamp: str,
    email_id: str,
    content: str = "",
) -> str:
    """`reply:<email_id>` for replies that carry one (the id polling sees too),
    otherwise a hash of what identifies the delivery.

    `content` is the delivery's canonical body (canonical_body) when it has no readable
    timestamp: without a time, type, email and campaign name the lead, not one event, and
    two bookings of one lead would be one.
    """
    if email_id and event_type in ("reply_received", "auto_reply_received"):
        return f"reply:{email_id}"
    parts = [event_type, email, campaign_id, timestamp, *([content] if content else [])]
    digest = hashlib.sha256("\x1f".join(parts).encode())
    return f"{event_type}:{digest.hexdigest()[:32]}"


def canonical_body(data: dict[str, Any]) -> str:
    """A delivery's body in one form whatever its key order and spacing, so a redelivery of
    the same body keys alike."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
