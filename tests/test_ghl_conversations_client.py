"""The Conversations client: Version 2021-04-15 on its calls only, GHLClient's transport (budget,
recorder, errors), threads, paging, and the answers GHL gives beside the spec's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import responses

from bridge.clients.budget import Budget
from bridge.clients.ghl import (
    Call,
    GHLAuthError,
    GHLBudgetSpent,
    GHLClient,
    GHLRejected,
    GHLTransient,
)
from bridge.clients.ghl_conversations import (
    Conversation,
    GHLConversations,
    GHLScopeMissing,
    InboundEmail,
    Message,
)
from tests.support.ghl_conversations import MESSAGE_WRITE, MISSING_SCOPE
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_responses import GHL_BASE_URL

REPLIED_AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def client_for(fake: FakeGHL, **options) -> tuple[GHLClient, GHLConversations]:
    client = GHLClient(GHL_BASE_URL, fake.token, fake.location_id, **options)
    return client, GHLConversations(client)


def reply(conversations: GHLConversations, conversation: Conversation, **fields) -> InboundEmail:
    values = {
        "subject": "Re: Quick question",
        "html": "<p>Yes, call me.</p>",
        "text": "Yes, call me.",
        "date": REPLIED_AT,
        "alt_id": "email-1",
        **fields,
    }
    return conversations.add_inbound_email(conversation.id, conversation.contact_id, **values)


def test_first_reply_finds_no_conversation_creates_one_and_posts_the_email(fake_ghl) -> None:
    client, conversations = client_for(fake_ghl)
    contact_id, _ = client.upsert_contact({"email": "ann@example.com"})

    assert conversations.search_conversations(contact_id) == []
    conversation = conversations.create_conversation(contact_id)
    posted = reply(conversations, conversation)

    assert conversation.contact_id == contact_id
    assert conversations.search_conversations(contact_id) == [conversation]
    assert posted.conversation_id == conversation.id
    assert posted.message_id and posted.email_message_id
    (recorded,) = fake_ghl.default.conversations.messages_for(contact_id)
    assert recorded["id"] == posted.email_message_id
    assert {k: recorded[k] for k in ("subject", "html", "message", "dateAdded", "altId")} == {
        "subject": "Re: Quick question",
        "html": "<p>Yes, call me.</p>",
        "message": "Yes, call me.",
        "dateAdded": "2026-12-01T09:30:00.000Z",
        "altId": "email-1",
    }
    assert fake_ghl.counts() == {
        "POST /contacts/upsert": 1,
        "GET /conversations/search": 2,
        "POST /conversations/": 1,
        "POST /conversations/messages/inbound": 1,
    }
    versions = [(c.path.split("/")[1], c.headers["Version"]) for c in fake_ghl.calls]
    assert versions == [
        ("contacts", "2021-07-28"),
        ("conversations", "2021-04-15"),
        ("conversations", "2021-04-15"),
        ("conversations", "2021-04-15"),
        ("conversations", "2021-04-15"),
    ]
    inbound_body = fake_ghl.calls_to("POST", "/conversations/messages/inbound")[0].json
    assert "conversationProviderId" not in inbound_body
    # The fake_ghl fixture fails the test on any request the spec rejects.


def test_a_later_reply_of_the_thread_joins_it_and_the_contacts_version_is_untouched(
    fake_ghl,
) -> None:
    client, conversations = client_for(fake_ghl)
    contact_id, _ = client.upsert_contact({"email": "ann@example.com"})
    conversation = conversations.create_conversation(contact_id)
    first = reply(conversations, conversation)

    second = reply(
        conversations,
        conversation,
        alt_id="email-2",
        date=datetime(2026, 12, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        email_message_id=first.email_message_id,
    )
    client.add_tags(contact_id, ["replied"])

    assert second.message_id == first.message_id
    assert second.email_message_id != first.email_message_id
    recorded = fake_ghl.default.conversations.messages_for(contact_id)
    assert [m["dateAdded"] for m in recorded] == [
        "2026-12-01T09:30:00.000Z",
        "2026-12-01T10:00:00.000Z",  # sent in UTC
    ]
    assert recorded[1]["replyToMessageId"] == first.email_message_id
    email = conversations.get_email(second.email_message_id)
    assert (email.alt_id, email.thread_id, email.conversation_id) == (
        "email-2",
        first.message_id,
        conversation.id,
    )
    (tags_call,) = fake_ghl.calls_to("POST", "/contacts/{id}/tags")
    assert tags_call.headers["Version"] == "2021-07-28"


def test_list_messages_reads_every_page_or_stops_at_the_bound(fake_ghl) -> None:
    client, conversations = client_for(fake_ghl)
    contact_id, _ = client.upsert_contact({"email": "ann@example.com"})
    conversation = conversations.create_conversation(contact_id)
    posted = [reply(conversations, conversation, alt_id=f"email-{n}") for n in range(5)]
    path = "/conversations/{conversationId}/messages"

    everything = conversations.list_messages(conversation.id, page_size=2)
    assert everything.complete is True
    assert [m.alt_id for m in everything.messages] == [f"email-{n}" for n in (4, 3, 2, 1, 0)]
    assert everything.messages[0] == Message(
        id=posted[4].message_id,
        message_type="TYPE_EMAIL",
        direction="inbound",
        date_added="2026-12-01T09:30:00.000Z",
        alt_id="email-4",
        email_message_ids=(posted[4].email_message_id,),
    )
    assert len(fake_ghl.calls_to("GET", path)) == 3

    bounded = conversations.list_messages(
        conversation.id, page_size=2, max_pages=2, message_type="TYPE_EMAIL"
    )
    assert bounded.complete is False
    assert len(bounded.messages) == 4
    listed = fake_ghl.calls_to("GET", path)
    assert len(listed) == 5
    sent = [c.query for c in listed[3:]]
    assert sent == [
        {"limit": ["2"], "type": ["TYPE_EMAIL"]},
        {"limit": ["2"], "type": ["TYPE_EMAIL"], "lastMessageId": [posted[3].message_id]},
    ]
    with pytest.raises(ValueError, match="max_pages"):
        conversations.list_messages(conversation.id, max_pages=0)


def test_a_lost_answer_raises_transient_and_the_list_shows_the_message(fake_ghl) -> None:
    client, conversations = client_for(fake_ghl)
    contact_id, _ = client.upsert_contact({"email": "ann@example.com"})
    conversation = conversations.create_conversation(contact_id)
    fake_ghl.default.conversations.lose_next_inbound()

    with pytest.raises(GHLTransient) as lost:
        reply(conversations, conversation, alt_id="email-7")

    assert lost.value.status == 504
    listed = conversations.list_messages(conversation.id, message_type="TYPE_EMAIL")
    assert [m.alt_id for m in listed.messages] == ["email-7"]
    assert len(fake_ghl.default.conversations.messages_for(contact_id)) == 1


def test_a_missing_scope_is_an_auth_error_with_ghls_message_and_the_scope(fake_ghl) -> None:
    client, conversations = client_for(fake_ghl)
    contact_id, _ = client.upsert_contact({"email": "ann@example.com"})
    conversation = conversations.create_conversation(contact_id)
    fake_ghl.default.conversations.lack_scopes(MESSAGE_WRITE)

    with pytest.raises(GHLScopeMissing) as refused:
        reply(conversations, conversation)

    assert isinstance(refused.value, GHLAuthError)
    assert refused.value.status == 401
    assert refused.value.scope == "conversations/message.write"
    assert refused.value.message == (
        f"{MISSING_SCOPE} (this call needs the conversations/message.write scope)"
    )
    client.add_tags(contact_id, ["replied"])  # the contacts API still answers
    assert conversations.search_conversations(contact_id) == [conversation]
    assert fake_ghl.default.conversations.messages_for(contact_id) == []


def test_a_refused_token_stays_a_plain_auth_error(fake_ghl) -> None:
    conversations = GHLConversations(GHLClient(GHL_BASE_URL, "wrong", fake_ghl.location_id))
    with pytest.raises(GHLAuthError) as refused:
        conversations.search_conversations("c1")
    assert not isinstance(refused.value, GHLScopeMissing)
    assert refused.value.message == "Invalid token: access token is invalid"


def test_a_second_conversation_for_the_contact_is_rejected(fake_ghl) -> None:
    client, conversations = client_for(fake_ghl)
    contact_id, _ = client.upsert_contact({"email": "ann@example.com"})
    conversations.create_conversation(contact_id)
    with pytest.raises(GHLRejected) as rejected:
        conversations.create_conversation(contact_id)
    assert (rejected.value.status, rejected.value.message) == (400, "Conversation already exists")


def test_calls_are_recorded_without_the_token_and_spend_the_budget(fake_ghl) -> None:
    recorded: list[Call] = []
    client, conversations = client_for(fake_ghl, recorder=recorded.append)
    contact_id, _ = client.upsert_contact({"email": "ann@example.com"})
    conversation = conversations.create_conversation(contact_id)
    reply(conversations, conversation)

    assert [(c.method, c.path, c.status) for c in recorded] == [
        ("POST", "/contacts/upsert", 200),
        ("POST", "/conversations/", 201),
        ("POST", "/conversations/messages/inbound", 200),
    ]
    sent = json.loads(recorded[2].request)
    assert (sent["altId"], sent["type"], sent["date"]) == (
        "email-1",
        "Email",
        "2026-12-01T09:30:00.000Z",
    )
    assert all(fake_ghl.token not in (c.request or "") for c in recorded)

    budget = Budget(None, fake_ghl.location_id, for_sync=True)
    budget.reserve = 1000
    daily = {"X-RateLimit-Limit-Daily": "200000", "X-RateLimit-Daily-Remaining": "10"}
    budget.settle(budget.acquire(), daily)
    held = GHLConversations(
        GHLClient(GHL_BASE_URL, fake_ghl.token, fake_ghl.location_id, budget=budget)
    )
    calls_before = len(fake_ghl.calls)
    with pytest.raises(GHLBudgetSpent):
        held.search_conversations(contact_id)
    assert len(fake_ghl.calls) == calls_before


def test_a_date_without_a_time_zone_is_refused_before_any_call(fake_ghl) -> None:
    _, conversations = client_for(fake_ghl)
    with pytest.raises(ValueError, match="time zone"):
        reply(conversations, Conversation("conv", "contact"), date=datetime(2026, 12, 1, 9, 30))
    assert fake_ghl.calls == []


# --- answers GHL gives beside the stored spec (responses, not the fake) -----------------------


MESSAGES_URL = f"{GHL_BASE_URL}/conversations/conv1/messages"


@responses.activate
def test_list_messages_reads_the_nested_answer_ghl_sends_and_ignores_unknown_fields() -> None:
    # GHL's live docs and its users' code: {"messages": {"lastMessageId", "nextPage",
    # "messages": [...]}}, and meta.email nested once more as in the spec's example.
    first = {
        "messages": {
            "lastMessageId": "m2",
            "nextPage": True,
            "messages": [
                {
                    "id": "m1",
                    "altId": "email-9",
                    "type": 3,
                    "messageType": "TYPE_EMAIL",
                    "direction": "inbound",
                    "dateAdded": "2026-12-01T09:30:00.000Z",
                    "meta": {"email": {"email": {"messageIds": ["e1", "e2"]}}},
                    "somethingNew": {"x": 1},
                },
                {"id": "m2", "messageType": "TYPE_SMS", "direction": "outbound"},
                "not a message",
            ],
        },
        "traceId": "t1",
    }
    last = {"messages": {"lastMessageId": "m3", "nextPage": False, "messages": [{"id": "m3"}]}}
    responses.get(MESSAGES_URL, json=first)
    responses.get(MESSAGES_URL, json=last)
    conversations = GHLConversations(GHLClient(GHL_BASE_URL, "tok", "loc_test"))

    listed = conversations.list_messages("conv1")

    assert listed.complete is True
    assert [m.id for m in listed.messages] == ["m1", "m2", "m3"]
    assert listed.messages[0].alt_id == "email-9"
    assert listed.messages[0].email_message_ids == ("e1", "e2")
    assert listed.messages[1].alt_id is None and listed.messages[1].email_message_ids == ()
    assert responses.calls[1].request.url.endswith("lastMessageId=m2")
    assert all(c.request.headers["Version"] == "2021-04-15" for c in responses.calls)


@responses.activate
def test_a_next_page_without_a_new_cursor_is_an_error_not_a_loop() -> None:
    stuck = {"lastMessageId": "m1", "nextPage": True, "messages": [{"id": "m1"}]}
    responses.get(MESSAGES_URL, json=stuck)
    conversations = GHLConversations(GHLClient(GHL_BASE_URL, "tok", "loc_test"))

    with pytest.raises(GHLTransient, match="no new lastMessageId"):
        conversations.list_messages("conv1")

    assert len(responses.calls) == 2


@responses.activate
def test_answers_without_the_ids_the_bridge_needs_are_transient() -> None:
    base = f"{GHL_BASE_URL}/conversations"
    responses.post(f"{base}/", json={"success": True}, status=201)
    responses.post(f"{base}/messages/inbound", json={"success": True, "message": "ok"})
    conversations = GHLConversations(GHLClient(GHL_BASE_URL, "tok", "loc_test"))

    with pytest.raises(GHLTransient, match="no conversation.id"):
        conversations.create_conversation("c1")
    with pytest.raises(GHLTransient, match="no messageId"):
        reply(conversations, Conversation("conv1", "c1"))
