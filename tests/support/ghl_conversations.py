"""GHL Conversations in the fake GHL: search, create, inbound email, the message list and an
email by id, per location, validated against `../shared/specs/ghl/conversations.json`.

`ghl_fake.FakeGHL` registers the endpoints (`ConversationEndpoints`) and gives each location a
`Conversations` store (`loc.conversations`), which tests read and break:

- `messages_for(contact_id)`: every inbound email recorded for the contact, oldest first.
- `conversation_for(contact_id)`: the contact's conversation, or None.
- `lack_scopes(*scopes)` / `grant_scopes()`: the location's token lacks (all, or the named)
  conversation scopes: those calls answer 401 "The token is not authorized for this scope.",
  as GHL does, while the contacts API keeps working.
- `lose_next_inbound(n, status)`: the next `n` inbound calls are recorded, then answered
  `status` (504 unless told): GHL wrote the message but the answer was lost.

How it follows GHL (see ../shared/specs/ghl/SOURCE.md and ../shared/notes/api-notes.md):

- Every operation takes `Version: 2021-04-15`; another value (the contacts API's 2021-07-28)
  is a spec violation, answered 422 and kept in `spec_errors` like any other.
- `conversationProviderId`, required by the spec, is optional for `type: "Email"` (GHL's
  provider docs: the default email provider needs none). The fake takes only Email inbounds
  and answers 501 to other types, which it does not implement.
- No deduplication: GHL keeps no index of `altId`, so a second call makes a second message.
- Threads as the spec describes them: an inbound email without `emailMessageId` starts a
  conversation message (TYPE_EMAIL) of its own; one naming an existing email's
  `emailMessageId` joins that email's thread. The answer carries the thread's `messageId` and
  the new email's `emailMessageId`. The message list shows one message per thread, with the
  `altId` of the email that started it and every email id in `meta.email.messageIds`; each
  email (with its own `altId`) is read by `GET /conversations/messages/email/{id}`.
- The message list is newest first, `limit` per page (20 unless told, at most 100), the next
  page asked for with the previous page's `lastMessageId`, as the spec says. (GHL's live docs
  and its users show the answer nested as `{"messages": {...}}`; the fake answers the shape of
  the stored spec, which the validation checks.)
- One conversation per contact: a second `POST /conversations/` for it answers 400.
"""

from __future__ import annotations

import copy
import functools
import http
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tests.support.specs import GHL_FILES, SPECS_DIR, OpenAPISpec

if TYPE_CHECKING:
    from tests.support.ghl_fake import FakeGHL, GHLLocation, _Request

CONVERSATIONS_VERSION = "2021-04-15"
SPEC_FILE = "ghl/conversations.json"
READ = "conversations.readonly"
WRITE = "conversations.write"
MESSAGE_READ = "conversations/message.readonly"
MESSAGE_WRITE = "conversations/message.write"
SCOPES = (READ, WRITE, MESSAGE_READ, MESSAGE_WRITE)
MISSING_SCOPE = "The token is not authorized for this scope."
DEFAULT_PAGE = 20
MAX_PAGE = 100

_Handled = tuple[int, dict[str, Any]]
# The one requirement of ProcessMessageBodyDto that GHL does not hold an Email inbound to.
_PROVIDER_REQUIRED = "body: 'conversationProviderId' is a required property"


def is_conversations_path(path: str) -> bool:
    """True for a path of the Conversations API (which wants Version 2021-04-15)."""
    segments = [s for s in path.split("?")[0].split("/") if s]
    return bool(segments) and segments[0] == "conversations"


class FakeGHLSpec(OpenAPISpec):
    """The GHL files the bridge uses plus conversations.json, read the way GHL applies them:
    an Email inbound is not refused for lacking `conversationProviderId` (SOURCE.md)."""

    def validate_request(
        self,
        method: str,
        url_or_path: str,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, list[str] | str] | None = None,
        json_body: Any = None,
    ) -> list[str]:
        errors = super().validate_request(method, url_or_path, headers, query, json_body)
        op = self.operation(method, url_or_path)
        if (
            op is not None
            and (op.method, op.template) == ("POST", "/conversations/messages/inbound")
            and isinstance(json_body, dict)
            and json_body.get("type") == "Email"
        ):
            errors = [error for error in errors if error != _PROVIDER_REQUIRED]
        return errors


@functools.lru_cache(maxsize=1)
def fake_ghl_spec() -> FakeGHLSpec:
    """What FakeGHL validates against: the contacts-side files and, where present, the
    Conversations API (each operation declares its own Version, so one spec serves both)."""
    files = [SPECS_DIR / name for name in GHL_FILES]
    if (SPECS_DIR / SPEC_FILE).is_file():
        files.append(SPECS_DIR / SPEC_FILE)
    return FakeGHLSpec(*files)


class Conversations:
    """One location's conversations, messages (threads) and emails, its conversation scopes
    and its lost-answer faults. Made anew by the location's reset()."""

    def __init__(self, loc: GHLLocation):
        self._loc = loc
        self._lock = loc._lock
        self.conversations: dict[str, dict[str, Any]] = {}  # by id
        self.threads: dict[str, dict[str, Any]] = {}  # conversation messages, by id
        self.emails: dict[str, dict[str, Any]] = {}  # by emailMessageId, in arrival order
        self._order: dict[str, list[str]] = {}  # conversation id -> thread ids, oldest first
        self.missing_scopes: set[str] = set()
        self._lost: deque[int] = deque()

    # --- faults ---------------------------------------------------------------------------

    def lack_scopes(self, *scopes: str) -> None:
        """The token lacks these conversation scopes (all four when none are named)."""
        unknown = set(scopes) - set(SCOPES)
        if unknown:
            raise ValueError(f"not a conversations scope: {', '.join(sorted(unknown))}")
        with self._lock:
            self.missing_scopes.update(scopes or SCOPES)

    def grant_scopes(self) -> None:
        """The token has every conversation scope again."""
        with self._lock:
            self.missing_scopes.clear()

    def lose_next_inbound(self, n: int = 1, status: int = 504) -> None:
        """Record the next `n` inbound emails, then answer `status` instead of GHL's answer."""
        with self._lock:
            self._lost.extend([status] * n)

    # --- queries for tests ----------------------------------------------------------------

    def conversation_for(self, contact_id: str) -> dict[str, Any] | None:
        """The contact's conversation, or None."""
        with self._lock:
            found = self._of_contact(contact_id)
            return copy.deepcopy(found) if found else None

    def messages_for(self, contact_id: str) -> list[dict[str, Any]]:
        """Every inbound email recorded for the contact, oldest first: id (its
        emailMessageId), messageId (its thread), conversationId, contactId, altId, subject,
        html, message, dateAdded, replyToMessageId (the email it threads under)."""
        with self._lock:
            return [
                copy.deepcopy(email)
                for email in self.emails.values()
                if email["contactId"] == contact_id
            ]

    def snapshot(self) -> dict[str, Any]:
        """Conversations and emails, JSON-ready."""
        with self._lock:
            return {
                "conversations": copy.deepcopy(list(self.conversations.values())),
                "emails": copy.deepcopy(list(self.emails.values())),
            }

    # --- used by the endpoints (under the fake's lock) ------------------------------------

    def _of_contact(self, contact_id: str) -> dict[str, Any] | None:
        return next((c for c in self.conversations.values() if c["contactId"] == contact_id), None)

    def _refused(self, scope: str) -> _Handled | None:
        if scope in self.missing_scopes:
            return 401, {"statusCode": 401, "message": MISSING_SCOPE}
        return None

    def _own(self, object_id: str) -> None:
        # Ownership is how FakeGHL tells a location's ids from another's.
        self._loc._data_ids.add(object_id)


class ConversationEndpoints:
    """The handlers FakeGHL routes to; each takes a FakeGHL `_Request`."""

    def __init__(self, fake: FakeGHL):
        self._fake = fake

    def routes(self) -> list[tuple[str, str, Callable[[_Request], _Handled]]]:
        """(method, template as the spec writes it, handler)."""
        return [
            ("GET", "/conversations/search", self.search),
            ("POST", "/conversations/", self.create),
            ("POST", "/conversations/messages/inbound", self.add_inbound),
            ("GET", "/conversations/{conversationId}/messages", self.list_messages),
            ("GET", "/conversations/messages/email/{id}", self.get_email),
        ]

    def search(self, req: _Request) -> _Handled:
        store = req.loc.conversations
        refused = store._refused(READ)
        if refused:
            return refused
        self._fake._check_location(req.loc, first_value(req.query, "locationId"))
        contact_id = first_value(req.query, "contactId")
        self._fake._foreign(req.loc, contact_id, "contact")
        found = [
            self._listed(req.loc, conversation)
            for conversation in reversed(store.conversations.values())
            if contact_id is None or conversation["contactId"] == contact_id
        ]
        limit = _limit(req.query)
        return 200, {"conversations": found[:limit], "total": len(found)}

    def create(self, req: _Request) -> _Handled:
        loc, store = req.loc, req.loc.conversations
        refused = store._refused(WRITE)
        if refused:
            return refused
        self._fake._check_location(loc, req.body.get("locationId"))
        contact = self._fake._contact(loc, req.body["contactId"], in_path=False)
        if store._of_contact(contact["id"]):
            return 400, error_body(400, "Conversation already exists")
        now = _timestamp()
        conversation = {
            "id": self._fake._new_id(),
            "contactId": contact["id"],
            "locationId": loc.location_id,
            "dateAdded": now,
            "dateUpdated": now,
            "lastMessageDate": now,
            "deleted": False,
            "type": "TYPE_PHONE" if contact.get("phone") else "TYPE_EMAIL",
            "unreadCount": 0,
            "lastMessageBody": "",
            # The spec requires a last message type even before there is a message; this is
            # the conversation's own channel.
            "lastMessageType": "TYPE_EMAIL",
        }
        store.conversations[conversation["id"]] = conversation
        store._order[conversation["id"]] = []
        store._own(conversation["id"])
        answer = {key: conversation[key] for key in _CREATED_FIELDS}
        return 201, {"success": True, "conversation": answer}

    def add_inbound(self, req: _Request) -> _Handled:
        loc, store, body = req.loc, req.loc.conversations, req.body
        refused = store._refused(MESSAGE_WRITE)
        if refused:
            return refused
        if body["type"] != "Email":
            message = f"FakeGHL takes inbound Email messages only, not {body['type']}"
            return 501, error_body(501, message)
        contact = self._fake._contact(loc, body["contactId"])
        conversation_id = body["conversationId"]
        self._fake._foreign(loc, conversation_id, "conversation")
        conversation = store.conversations.get(conversation_id)
        if conversation is None:
            return 400, error_body(400, "Conversation not found")
        if conversation["contactId"] != contact["id"]:
            return 400, error_body(400, "Conversation does not belong to the contact")
        date = _message_date(body.get("date"))
        if date is None:
            return 422, _unprocessable("date must be a valid ISO 8601 date string")
        replied_to = body.get("emailMessageId")
        if replied_to is not None:
            self._fake._foreign(loc, replied_to, "email message")
            parent = store.emails.get(replied_to)
            if parent is None or parent["conversationId"] != conversation_id:
                return 400, error_body(400, "Email message not found in this conversation")
            thread = store.threads[parent["messageId"]]
        else:
            thread = self._new_thread(store, conversation, body, date)
        email = {
            "id": self._fake._new_id(),
            "messageId": thread["id"],
            "conversationId": conversation_id,
            "contactId": contact["id"],
            "locationId": loc.location_id,
            "dateAdded": date,
            "direction": "inbound",
            "from": body.get("emailFrom") or contact.get("email") or "",
            "to": [body["emailTo"]] if body.get("emailTo") else [],
        }
        for optional in ("altId", "subject", "html", "message"):
            if optional in body:
                email[optional] = body[optional]
        if replied_to is not None:
            email["replyToMessageId"] = replied_to
        store.emails[email["id"]] = email
        store._own(email["id"])
        thread["meta"]["email"]["messageIds"].append(email["id"])
        conversation.update(
            lastMessageBody=body.get("message") or body.get("subject") or "",
            lastMessageType="TYPE_EMAIL",
            lastMessageDate=date,
            dateUpdated=_timestamp(),
            unreadCount=conversation["unreadCount"] + 1,
        )
        if store._lost:
            status = store._lost.popleft()
            return status, error_body(status)
        return 200, {
            "success": True,
            "conversationId": conversation_id,
            "messageId": thread["id"],
            "emailMessageId": email["id"],
            "contactId": contact["id"],
            "dateAdded": date,
            "message": "Inbound message added",
        }

    def list_messages(self, req: _Request) -> _Handled:
        store = req.loc.conversations
        refused = store._refused(MESSAGE_READ)
        if refused:
            return refused
        conversation_id = req.params["conversationId"]
        if conversation_id not in store.conversations:
            return 400, error_body(400, "Conversation not found")
        newest_first = [store.threads[t] for t in reversed(store._order[conversation_id])]
        wanted = first_value(req.query, "type")
        if wanted:
            types = {t.strip() for t in wanted.split(",")}
            newest_first = [t for t in newest_first if t["messageType"] in types]
        after = first_value(req.query, "lastMessageId")
        if after:
            ids = [t["id"] for t in newest_first]
            if after not in ids:
                return 400, error_body(400, "lastMessageId is not a message of this conversation")
            newest_first = newest_first[ids.index(after) + 1 :]
        limit = _limit(req.query)
        page = copy.deepcopy(newest_first[:limit])
        return 200, {
            "lastMessageId": page[-1]["id"] if page else "",
            "nextPage": len(newest_first) > limit,
            "messages": page,
        }

    def get_email(self, req: _Request) -> _Handled:
        store = req.loc.conversations
        refused = store._refused(MESSAGE_READ)
        if refused:
            return refused
        email = store.emails.get(req.params["id"])
        if email is None:
            return 400, error_body(400, "Email message not found")
        answer = {key: value for key, value in email.items() if key not in ("messageId", "html")}
        answer.update(
            threadId=email["messageId"],
            body=email.get("html") or email.get("message") or "",
            contentType="text/html" if email.get("html") else "text/plain",
            status="delivered",
            source="api",
        )
        answer.pop("message", None)
        return 200, answer

    # --- helpers --------------------------------------------------------------------------

    def _new_thread(
        self,
        store: Conversations,
        conversation: dict[str, Any],
        body: dict[str, Any],
        date: str,
    ) -> dict[str, Any]:
        thread = {
            "id": self._fake._new_id(),
            "type": 3,  # GHL's number for an email message
            "messageType": "TYPE_EMAIL",
            "locationId": conversation["locationId"],
            "contactId": conversation["contactId"],
            "conversationId": conversation["id"],
            "dateAdded": date,
            "body": body.get("message") or "",
            "direction": "inbound",
            "status": "delivered",
            "contentType": "text/html" if body.get("html") else "text/plain",
            "attachments": [],
            "source": "api",
            "meta": {"email": {"messageIds": []}},
        }
        if "altId" in body:
            thread["altId"] = body["altId"]  # GHL's docs list it; the stored spec does not
        store.threads[thread["id"]] = thread
        store._order[conversation["id"]].append(thread["id"])
        store._own(thread["id"])
        return thread

    def _listed(self, loc: GHLLocation, conversation: dict[str, Any]) -> dict[str, Any]:
        """A conversation as the search answers it (ConversationSchema), with the contact's
        name, email and phone."""
        contact = loc.contacts.get(conversation["contactId"]) or {}
        name = contact.get("name") or ""
        listed = {key: conversation[key] for key in _SEARCH_FIELDS}
        listed.update(
            fullName=name,
            contactName=name or contact.get("companyName") or "",
            email=contact.get("email") or "",
            phone=contact.get("phone") or "",
        )
        return listed


_CREATED_FIELDS = (
    "id",
    "dateUpdated",
    "dateAdded",
    "deleted",
    "contactId",
    "locationId",
    "lastMessageDate",
)
_SEARCH_FIELDS = (
    "id",
    "contactId",
    "locationId",
    "lastMessageBody",
    "lastMessageType",
    "type",
    "unreadCount",
    "dateAdded",
    "dateUpdated",
    "lastMessageDate",
)


def _limit(query: Mapping[str, list[str]]) -> int:
    # The spec types limit as a number; it has been checked to be one.
    raw = first_value(query, "limit")
    return DEFAULT_PAGE if raw is None else max(1, min(MAX_PAGE, int(float(raw))))


def _message_date(value: Any) -> str | None:
    """The inbound `date` as GHL stores it (ISO 8601, UTC, milliseconds); now when none is
    given, None when it is not a date."""
    if value is None:
        return _timestamp()
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _iso(parsed)


def first_value(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name) or []
    return values[0] if values else None


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    if message is None:
        try:
            message = http.HTTPStatus(status).phrase
        except ValueError:
            message = "Error"
    return {"statusCode": status, "message": message}


def _unprocessable(message: str) -> dict[str, Any]:
    return {"statusCode": 422, "message": [message], "error": "Unprocessable Entity"}


def _timestamp() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
