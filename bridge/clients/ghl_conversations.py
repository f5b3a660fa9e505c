"""GHL's Conversations API (`Version: 2021-04-15`, not the contacts API's 2021-07-28), spoken
through a GHLClient's transport, so the location's budget, the call recorder and the error
mapping apply to these calls as to every other.

Only declared fields are sent; answers are read for the fields named here, anything else in
them is ignored. GHL does not deduplicate inbound messages (by `altId` or otherwise): a call
whose answer was lost may still have written the message, which `list_messages` and
`get_email` let the caller look for before posting again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.clients.ghl import GHLAuthError, GHLClient, GHLTransient

API_VERSION = "2021-04-15"
# GHL's own page size for the message list.
PAGE_SIZE = 20
# What GHL answers (401) when the token lacks the scope an operation needs.
_MISSING_SCOPE = "not authorized for this scope"


class GHLScopeMissing(GHLAuthError):
    """401/403 for a scope the token lacks: the token works, this call's scope is not
    granted. `scope` is the one the operation needs."""

    def __init__(self, status: int, message: str, scope: str):
        super().__init__(status, f"{message} (this call needs the {scope} scope)")
        self.scope = scope


@dataclass(frozen=True)
class Conversation:
    """A contact's conversation, as search or create answers it."""

    id: str
    contact_id: str


@dataclass(frozen=True)
class InboundEmail:
    """What GHL answered to an inbound email: the conversation message (thread) it is in, and
    its own email message id, which a later reply passes to thread under it (None when GHL
    answered none)."""

    conversation_id: str
    message_id: str
    email_message_id: str | None


@dataclass(frozen=True)
class Message:
    """One message of a conversation's list. An email thread is one message: `alt_id` is the
    one it was created with, `email_message_ids` every email in it (`meta.email.messageIds`)."""

    id: str
    message_type: str
    direction: str
    date_added: str
    alt_id: str | None
    email_message_ids: tuple[str, ...]


@dataclass(frozen=True)
class MessageList:
    """The messages read, newest first; `complete` is False when reading stopped at the page
    bound with more pages left, so a missing altId is not proof of absence."""

    messages: list[Message]
    complete: bool


@dataclass(frozen=True)
class Email:
    """One email message (GET /conversations/messages/email/{id})."""

    id: str
    thread_id: str
    conversation_id: str
    alt_id: str | None
    subject: str | None
    date_added: str


class GHLConversations:
    """The Conversations calls the bridge makes, for the client's location."""

    def __init__(self, client: GHLClient):
        self.client = client

    def search_conversations(self, contact_id: str) -> list[Conversation]:
        """GET /conversations/search?locationId=&contactId=: the contact's conversations."""
        data = self._call(
            "conversations.readonly",
            "GET",
            "/conversations/search",
            params={"locationId": self.client.location_id, "contactId": contact_id},
        )
        found = []
        for item in data.get("conversations") or []:
            if isinstance(item, dict) and item.get("id"):
                found.append(Conversation(str(item["id"]), str(item.get("contactId") or "")))
        return found

    def any_conversation(self) -> str | None:
        """GET /conversations/search?locationId=&limit=1 (no contactId: any of the location's):
        one conversation's id, or None when it has none (doctor's probe of the read scope)."""
        data = self._call(
            "conversations.readonly",
            "GET",
            "/conversations/search",
            params={"locationId": self.client.location_id, "limit": 1},
        )
        for item in data.get("conversations") or []:
            if isinstance(item, dict) and item.get("id"):
                return str(item["id"])
        return None

    def create_conversation(self, contact_id: str) -> Conversation:
        """POST /conversations/ for the contact; GHL answers 400 when it has one already."""
        body = {"locationId": self.client.location_id, "contactId": contact_id}
        data = self._call("conversations.write", "POST", "/conversations/", json=body)
        conversation = data.get("conversation") or {}
        if not isinstance(conversation, dict) or not conversation.get("id"):
            raise GHLTransient(200, "create conversation answer has no conversation.id")
        return Conversation(str(conversation["id"]), str(conversation.get("contactId") or ""))

    def add_inbound_email(
        self,
        conversation_id: str,
        contact_id: str,
        *,
        subject: str,
        html: str,
        text: str,
        date: datetime,
        alt_id: str,
        email_message_id: str | None = None,
    ) -> InboundEmail:
        """POST /conversations/messages/inbound with type Email: records the email in the
        conversation as received at `date`; `email_message_id` (from an earlier answer)
        threads it under that email. Not idempotent: each call makes a message.

        No `conversationProviderId`: GHL needs none for Email on its default provider,
        although the spec lists it as required (../shared/specs/ghl/SOURCE.md)."""
        if date.tzinfo is None:
            raise ValueError("date must carry its time zone")
        body: dict[str, Any] = {
            "type": "Email",
            "conversationId": conversation_id,
            "contactId": contact_id,
            "subject": subject,
            "html": html,
            "message": text,
            "date": date.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "altId": alt_id,
        }
        if email_message_id:
            body["emailMessageId"] = email_message_id
        data = self._call(
            "conversations/message.write", "POST", "/conversations/messages/inbound", json=body
        )
        if not data.get("messageId"):
            # The message may well be written: the caller looks for its altId before
            # posting again, as after a lost answer.
            raise GHLTransient(200, "inbound message answer has no messageId")
        return InboundEmail(
            str(data.get("conversationId") or conversation_id),
            str(data["messageId"]),
            str(data["emailMessageId"]) if data.get("emailMessageId") else None,
        )

    def list_messages(
        self,
        conversation_id: str,
        *,
        message_type: str | None = None,
        max_pages: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> MessageList:
        """GET /conversations/{id}/messages, page after page (each asked for with the last
        page's `lastMessageId`) until GHL says there is no next page, or `max_pages` pages.
        `message_type` (e.g. "TYPE_EMAIL") narrows the list."""
        if max_pages is not None and max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        messages: list[Message] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if message_type:
                params["type"] = message_type
            if cursor:
                params["lastMessageId"] = cursor
            data = self._call(
                "conversations/message.readonly",
                "GET",
                f"/conversations/{conversation_id}/messages",
                params=params,
            )
            pages += 1
            page = _message_page(data)
            messages.extend(
                _message(item) for item in page.get("messages") or [] if _is_message(item)
            )
            if not page.get("nextPage"):
                return MessageList(messages, complete=True)
            following = str(page.get("lastMessageId") or "")
            if not following or following == cursor:
                # A next page GHL gives no way to reach: reading on would loop, stopping
                # would pass an incomplete list off as the whole one.
                raise GHLTransient(200, "message list says nextPage but gives no new lastMessageId")
            if max_pages is not None and pages >= max_pages:
                return MessageList(messages, complete=False)
            cursor = following

    def get_email(self, email_message_id: str) -> Email:
        """GET /conversations/messages/email/{id}: one email of a thread, with its altId."""
        data = self._call(
            "conversations/message.readonly",
            "GET",
            f"/conversations/messages/email/{email_message_id}",
        )
        if not data.get("id"):
            raise GHLTransient(200, "email answer has no id")
        return Email(
            id=str(data["id"]),
            thread_id=str(data.get("threadId") or ""),
            conversation_id=str(data.get("conversationId") or ""),
            alt_id=str(data["altId"]) if data.get("altId") else None,
            subject=str(data["subject"]) if data.get("subject") is not None else None,
            date_added=str(data.get("dateAdded") or ""),
        )

    def _call(self, scope: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return self.client._request(method, path, headers={"Version": API_VERSION}, **kwargs)
        except GHLAuthError as exc:
            if _MISSING_SCOPE in exc.message.lower():
                raise GHLScopeMissing(exc.status, exc.message, scope) from None
            raise


def _message_page(data: dict[str, Any]) -> dict[str, Any]:
    # The stored spec answers {lastMessageId, nextPage, messages: [...]}; GHL's live docs and
    # its users' code see the same object nested under "messages". Read either.
    inner = data.get("messages")
    return inner if isinstance(inner, dict) else data


def _is_message(item: Any) -> bool:
    return isinstance(item, dict) and bool(item.get("id"))


def _message(item: dict[str, Any]) -> Message:
    meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
    email = meta.get("email") if isinstance(meta.get("email"), dict) else {}
    # The spec's example nests it once more (meta.email.email.messageIds): read either.
    if isinstance(email.get("email"), dict):
        email = email["email"]
    ids = email.get("messageIds") if isinstance(email.get("messageIds"), list) else []
    return Message(
        id=str(item["id"]),
        message_type=str(item.get("messageType") or ""),
        direction=str(item.get("direction") or ""),
        date_added=str(item.get("dateAdded") or ""),
        alt_id=str(item["altId"]) if item.get("altId") else None,
        email_message_ids=tuple(str(i) for i in ids if i),
    )
