"""FakeGHL's Conversations endpoints behave like GHL's where the reply action depends on them:
spec-checked with Version 2021-04-15, no deduplication, threads, paging, scopes, lost answers
and locations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import ghl_fake
from tests.support.ghl_conversations import (
    MESSAGE_READ,
    MESSAGE_WRITE,
    MISSING_SCOPE,
    SCOPES,
    fake_ghl_spec,
)
from tests.support.ghl_fake import NO_ACCESS, FakeGHL, GHLLocation
from tests.support.specs import SPECS_DIR, specs_available

CONVERSATIONS = "2021-04-15"
CONTACTS = "2021-07-28"
needs_specs = pytest.mark.skipif(
    not specs_available(), reason=f"../shared/specs not found: {SPECS_DIR}"
)


def call(
    fake: FakeGHL,
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, list[str]] | None = None,
    version: str = CONVERSATIONS,
    loc: GHLLocation | None = None,
) -> tuple[int, dict[str, Any]]:
    token = (loc or fake.default).token
    headers = {"Authorization": f"Bearer {token}", "Version": version}
    raw = b"" if body is None else json.dumps(body).encode()
    status, _, answer = fake.handle(method, path, query or {}, headers, raw)
    return status, answer


def contact(fake: FakeGHL, email: str = "ann@example.com", loc: GHLLocation | None = None) -> str:
    loc = loc or fake.default
    body = {"locationId": loc.location_id, "email": email, "firstName": "Ann", "lastName": "Lee"}
    status, answer = call(fake, "POST", "/contacts/upsert", body, version=CONTACTS, loc=loc)
    assert status == 200, answer
    return answer["contact"]["id"]


def conversation(fake: FakeGHL, contact_id: str, loc: GHLLocation | None = None) -> str:
    loc = loc or fake.default
    body = {"locationId": loc.location_id, "contactId": contact_id}
    status, answer = call(fake, "POST", "/conversations/", body, loc=loc)
    assert status == 201, answer
    return answer["conversation"]["id"]


def inbound(fake: FakeGHL, contact_id: str, conversation_id: str, **fields: Any) -> dict[str, Any]:
    body = {
        "type": "Email",
        "contactId": contact_id,
        "conversationId": conversation_id,
        "subject": "Re: Quick question",
        "html": "<p>Yes, call me.</p>",
        "message": "Yes, call me.",
        "date": "2026-12-01T09:30:00.000Z",
        "altId": "email-1",
        **fields,
    }
    status, answer = call(fake, "POST", "/conversations/messages/inbound", body)
    assert status == 200, answer
    return answer


def messages(fake: FakeGHL, conversation_id: str, **query: str) -> tuple[int, dict[str, Any]]:
    return call(
        fake,
        "GET",
        f"/conversations/{conversation_id}/messages",
        query={k: [v] for k, v in query.items()},
    )


# --- conversations ----------------------------------------------------------------------------


def test_search_finds_the_conversation_create_made_and_create_refuses_a_second() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    query = {"locationId": ["loc_test"], "contactId": [cid]}
    assert call(fake, "GET", "/conversations/search", query=query) == (
        200,
        {"conversations": [], "total": 0},
    )

    conversation_id = conversation(fake, cid)
    status, found = call(fake, "GET", "/conversations/search", query=query)

    assert status == 200 and found["total"] == 1
    listed = found["conversations"][0]
    assert (listed["id"], listed["contactId"], listed["locationId"]) == (
        conversation_id,
        cid,
        "loc_test",
    )
    assert (listed["fullName"], listed["email"]) == ("Ann Lee", "ann@example.com")
    assert fake.default.conversations.conversation_for(cid)["id"] == conversation_id
    body = {"locationId": "loc_test", "contactId": cid}
    assert call(fake, "POST", "/conversations/", body) == (
        400,
        {"statusCode": 400, "message": "Conversation already exists"},
    )
    assert fake.counts() == {
        "POST /contacts/upsert": 1,
        "GET /conversations/search": 2,
        "POST /conversations/": 2,
    }


def test_create_for_an_unknown_contact_answers_400() -> None:
    fake = FakeGHL()
    status, answer = call(
        fake, "POST", "/conversations/", {"locationId": "loc_test", "contactId": "nobody"}
    )
    assert (status, answer) == (400, {"statusCode": 400, "message": "Contact not found"})
    assert fake.default.conversations.conversations == {}


# --- inbound emails ---------------------------------------------------------------------------


def test_inbound_email_is_recorded_with_its_content_and_date() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)

    answer = inbound(fake, cid, conversation_id)

    assert answer["success"] is True
    assert answer["conversationId"] == conversation_id
    assert answer["dateAdded"] == "2026-12-01T09:30:00.000Z"
    (recorded,) = fake.default.conversations.messages_for(cid)
    assert recorded["id"] == answer["emailMessageId"]
    assert recorded["messageId"] == answer["messageId"]
    assert {k: recorded[k] for k in ("subject", "html", "message", "dateAdded", "altId")} == {
        "subject": "Re: Quick question",
        "html": "<p>Yes, call me.</p>",
        "message": "Yes, call me.",
        "dateAdded": "2026-12-01T09:30:00.000Z",
        "altId": "email-1",
    }
    assert recorded["from"] == "ann@example.com"
    found = fake.default.conversations.conversation_for(cid)
    assert (found["lastMessageBody"], found["unreadCount"]) == ("Yes, call me.", 1)


def test_a_second_call_with_the_same_alt_id_makes_a_second_message() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)

    first = inbound(fake, cid, conversation_id, altId="email-1")
    second = inbound(fake, cid, conversation_id, altId="email-1")

    assert first["messageId"] != second["messageId"]
    assert first["emailMessageId"] != second["emailMessageId"]
    assert [m["altId"] for m in fake.default.conversations.messages_for(cid)] == [
        "email-1",
        "email-1",
    ]
    status, listed = messages(fake, conversation_id)
    assert status == 200 and len(listed["messages"]) == 2


def test_a_reply_naming_an_email_message_id_joins_that_thread() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)
    first = inbound(fake, cid, conversation_id, altId="email-1")

    reply = inbound(
        fake,
        cid,
        conversation_id,
        altId="email-2",
        emailMessageId=first["emailMessageId"],
        date="2026-12-01T11:00:00Z",
    )

    assert reply["messageId"] == first["messageId"]
    assert reply["emailMessageId"] != first["emailMessageId"]
    status, listed = messages(fake, conversation_id)
    (thread,) = listed["messages"]
    assert status == 200 and thread["id"] == first["messageId"]
    assert thread["altId"] == "email-1"  # the email that started the thread
    assert thread["meta"]["email"]["messageIds"] == [
        first["emailMessageId"],
        reply["emailMessageId"],
    ]
    status, email = call(fake, "GET", f"/conversations/messages/email/{reply['emailMessageId']}")
    assert status == 200
    assert (email["altId"], email["threadId"], email["replyToMessageId"]) == (
        "email-2",
        first["messageId"],
        first["emailMessageId"],
    )
    assert email["dateAdded"] == "2026-12-01T11:00:00.000Z"
    assert email["body"] == "<p>Yes, call me.</p>"


def test_an_unknown_email_message_id_or_conversation_answers_400() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)
    other_cid = contact(fake, "bob@example.com")
    other_conversation = conversation(fake, other_cid)
    elsewhere = inbound(fake, other_cid, other_conversation)
    base = {"type": "Email", "contactId": cid, "conversationId": conversation_id}
    path = "/conversations/messages/inbound"

    assert call(fake, "POST", path, {**base, "emailMessageId": "nope"})[0] == 400
    assert call(fake, "POST", path, {**base, "emailMessageId": elsewhere["emailMessageId"]}) == (
        400,
        {"statusCode": 400, "message": "Email message not found in this conversation"},
    )
    assert call(fake, "POST", path, {**base, "conversationId": "nope"}) == (
        400,
        {"statusCode": 400, "message": "Conversation not found"},
    )
    assert call(fake, "POST", path, {**base, "conversationId": other_conversation}) == (
        400,
        {"statusCode": 400, "message": "Conversation does not belong to the contact"},
    )
    assert call(fake, "POST", path, {**base, "date": "yesterday"}) == (
        422,
        {
            "statusCode": 422,
            "message": ["date must be a valid ISO 8601 date string"],
            "error": "Unprocessable Entity",
        },
    )
    assert fake.default.conversations.messages_for(cid) == []


@needs_specs
def test_an_email_needs_no_conversation_provider_id_but_other_types_do() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)
    inbound(fake, cid, conversation_id)
    assert fake.spec_errors == []

    sms = {"type": "SMS", "contactId": cid, "conversationId": conversation_id, "message": "hi"}
    status, answer = call(fake, "POST", "/conversations/messages/inbound", sms)
    assert status == 422
    assert answer["message"] == ["body: 'conversationProviderId' is a required property"]
    with_provider = {**sms, "conversationProviderId": "provider-1"}
    status, answer = call(fake, "POST", "/conversations/messages/inbound", with_provider)
    assert (status, answer["message"]) == (
        501,
        "FakeGHL takes inbound Email messages only, not SMS",
    )


@needs_specs
def test_undeclared_properties_are_refused_like_everywhere_else() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)
    body = {"type": "Email", "contactId": cid, "conversationId": conversation_id, "locationId": "x"}

    status, answer = call(fake, "POST", "/conversations/messages/inbound", body)

    assert (status, answer["message"]) == (422, ["body: property locationId should not exist"])
    assert fake.default.conversations.messages_for(cid) == []


# --- Version ----------------------------------------------------------------------------------


@needs_specs
def test_the_contacts_version_is_refused_on_conversations_and_the_other_way_round() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    query = {"locationId": ["loc_test"], "contactId": [cid]}

    status, answer = call(fake, "GET", "/conversations/search", query=query, version=CONTACTS)
    assert (status, answer) == (
        422,
        {
            "statusCode": 422,
            "message": ["header Version: '2021-07-28' is not one of ['2021-04-15']"],
            "error": "Unprocessable Entity",
        },
    )
    status, _ = call(fake, "GET", f"/contacts/{cid}", version=CONVERSATIONS)
    assert status == 422
    assert fake.spec_errors == [
        "GET /conversations/search: header Version: '2021-07-28' is not one of ['2021-04-15']",
        f"GET /contacts/{cid}: header Version: '2021-04-15' is not one of ['2021-07-28']",
    ]


def test_without_the_spec_files_each_api_still_wants_its_own_version(monkeypatch) -> None:
    monkeypatch.setattr(ghl_fake, "specs_available", lambda: False)
    fake = FakeGHL()
    cid = contact(fake)
    query = {"locationId": ["loc_test"], "contactId": [cid]}

    assert call(fake, "GET", "/conversations/search", query=query)[0] == 200
    status, answer = call(fake, "GET", "/conversations/search", query=query, version=CONTACTS)

    assert (status, answer["message"]) == (
        422,
        ["header Version must be 2021-04-15, got '2021-07-28'"],
    )
    assert len(fake.spec_errors) == 1


# --- the message list -------------------------------------------------------------------------


def test_the_message_list_pages_newest_first_by_last_message_id() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)
    sent = [inbound(fake, cid, conversation_id, altId=f"email-{i}")["messageId"] for i in range(5)]

    pages, cursor = [], None
    while True:
        query = {"limit": "2", "type": "TYPE_EMAIL"}
        if cursor:
            query["lastMessageId"] = cursor
        status, page = messages(fake, conversation_id, **query)
        assert status == 200
        pages.append([m["id"] for m in page["messages"]])
        if not page["nextPage"]:
            break
        cursor = page["lastMessageId"]
        assert cursor == page["messages"][-1]["id"]

    newest_first = sent[::-1]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert fake.counts()["GET /conversations/{conversationId}/messages"] == 3
    assert messages(fake, conversation_id, type="TYPE_SMS")[1]["messages"] == []
    assert messages(fake, conversation_id)[1]["nextPage"] is False  # 20 a page by default


def test_the_message_list_of_an_unknown_conversation_or_cursor_answers_400() -> None:
    fake = FakeGHL()
    conversation_id = conversation(fake, contact(fake))
    assert messages(fake, "nope")[0] == 400
    assert messages(fake, conversation_id, lastMessageId="nope") == (
        400,
        {"statusCode": 400, "message": "lastMessageId is not a message of this conversation"},
    )


# --- faults -----------------------------------------------------------------------------------


def test_a_token_without_the_conversation_scopes_is_answered_401_on_those_calls_only() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)
    email = inbound(fake, cid, conversation_id)["emailMessageId"]
    fake.default.conversations.lack_scopes()
    refused = (401, {"statusCode": 401, "message": MISSING_SCOPE})
    inbound_body = {"type": "Email", "contactId": cid, "conversationId": conversation_id}

    assert call(fake, "GET", "/conversations/search", query={"locationId": ["loc_test"]}) == refused
    assert call(fake, "POST", "/conversations/", {"locationId": "loc_test", "contactId": cid}) == (
        refused
    )
    assert call(fake, "POST", "/conversations/messages/inbound", inbound_body) == refused
    assert messages(fake, conversation_id) == refused
    assert call(fake, "GET", f"/conversations/messages/email/{email}") == refused
    assert call(fake, "GET", f"/contacts/{cid}", version=CONTACTS)[0] == 200
    assert len(fake.default.conversations.messages_for(cid)) == 1

    fake.default.conversations.grant_scopes()
    fake.default.conversations.lack_scopes(MESSAGE_WRITE)
    assert messages(fake, conversation_id)[0] == 200
    assert call(fake, "POST", "/conversations/messages/inbound", inbound_body) == refused
    assert fake.default.conversations.missing_scopes == {MESSAGE_WRITE}
    with pytest.raises(ValueError, match="contacts.write"):
        fake.default.conversations.lack_scopes("contacts.write")
    assert set(SCOPES) >= {MESSAGE_READ, MESSAGE_WRITE}


def test_a_lost_answer_still_records_the_message() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)
    body = {
        "type": "Email",
        "contactId": cid,
        "conversationId": conversation_id,
        "altId": "email-1",
    }
    fake.default.conversations.lose_next_inbound()

    status, answer = call(fake, "POST", "/conversations/messages/inbound", body)

    assert (status, answer) == (504, {"statusCode": 504, "message": "Gateway Timeout"})
    (recorded,) = fake.default.conversations.messages_for(cid)
    assert recorded["altId"] == "email-1"
    _, listed = messages(fake, conversation_id)
    assert [m["altId"] for m in listed["messages"]] == ["email-1"]
    assert call(fake, "POST", "/conversations/messages/inbound", body)[0] == 200  # one only
    assert len(fake.default.conversations.messages_for(cid)) == 2


# --- locations --------------------------------------------------------------------------------


def test_another_locations_contact_or_conversation_is_a_cross_location_call() -> None:
    fake = FakeGHL()
    acme = fake.default
    bolt = fake.add_location("loc_bolt", "tok-bolt")
    acme_contact = contact(fake)
    acme_conversation = conversation(fake, acme_contact)
    bolt_contact = contact(fake, loc=bolt)
    bolt_conversation = conversation(fake, bolt_contact, loc=bolt)
    assert fake.violations == []

    into_acme = {"type": "Email", "contactId": acme_contact, "conversationId": acme_conversation}
    assert call(fake, "POST", "/conversations/messages/inbound", into_acme, loc=bolt) == (
        403,
        {"statusCode": 403, "message": NO_ACCESS},
    )
    assert messages_as(fake, bolt, acme_conversation)[0] == 403
    create = {"locationId": "loc_bolt", "contactId": acme_contact}
    assert call(fake, "POST", "/conversations/", create, loc=bolt)[0] == 400
    mixed = {"type": "Email", "contactId": bolt_contact, "conversationId": acme_conversation}
    assert call(fake, "POST", "/conversations/messages/inbound", mixed, loc=bolt)[0] == 400
    search = {"locationId": ["loc_test"], "contactId": [bolt_contact]}
    assert call(fake, "GET", "/conversations/search", query=search, loc=bolt)[0] == 403
    search = {"locationId": ["loc_bolt"], "contactId": [acme_contact]}
    assert call(fake, "GET", "/conversations/search", query=search, loc=bolt) == (
        200,
        {"conversations": [], "total": 0},
    )

    assert [v.reason for v in fake.violations] == [
        "addressed another location",
        "addressed another location",
        f"sent contact {acme_contact} of another location",
        f"sent conversation {acme_conversation} of another location",
        "addressed another location",
        f"sent contact {acme_contact} of another location",
    ]
    assert acme.conversations.messages_for(acme_contact) == []
    assert bolt.conversations.messages_for(bolt_contact) == []
    assert bolt_conversation in bolt.conversations.conversations
    with pytest.raises(AssertionError, match="cross-location"):
        fake.assert_no_cross_location_calls()


def messages_as(fake: FakeGHL, loc: GHLLocation, conversation_id: str) -> tuple[int, Any]:
    return call(fake, "GET", f"/conversations/{conversation_id}/messages", loc=loc)


def test_reset_forgets_conversations_and_snapshot_shows_them() -> None:
    fake = FakeGHL()
    cid = contact(fake)
    conversation_id = conversation(fake, cid)
    inbound(fake, cid, conversation_id)
    fake.default.conversations.lack_scopes()

    shown = fake.snapshot()["conversations"]
    assert [c["id"] for c in shown["conversations"]] == [conversation_id]
    assert [e["altId"] for e in shown["emails"]] == ["email-1"]
    assert fake.snapshot()["locations"]["loc_test"]["conversations"] == shown

    fake.reset()
    assert fake.default.conversations.snapshot() == {"conversations": [], "emails": []}
    assert fake.default.conversations.missing_scopes == set()


# --- answers against the spec -----------------------------------------------------------------


@needs_specs
def test_answers_follow_the_response_schemas() -> None:
    fake = FakeGHL()
    spec = fake_ghl_spec()
    cid = contact(fake)
    body = {"locationId": "loc_test", "contactId": cid}
    status, created = call(fake, "POST", "/conversations/", body)
    assert spec.validate_response("POST", "/conversations/", status, created) == []
    conversation_id = created["conversation"]["id"]
    answer = inbound(fake, cid, conversation_id)
    assert spec.validate_response("POST", "/conversations/messages/inbound", 200, answer) == []
    email_path = f"/conversations/messages/email/{answer['emailMessageId']}"
    for method, path, query in [
        ("GET", "/conversations/search", {"locationId": ["loc_test"], "contactId": [cid]}),
        ("GET", f"/conversations/{conversation_id}/messages", {"limit": ["5"]}),
        ("GET", email_path, {}),
        ("GET", "/conversations/nope/messages", {}),
    ]:
        status, answer = call(fake, method, path, query=query)
        assert spec.validate_response(method, path, status, answer) == [], (method, path)
    fake.default.conversations.lack_scopes()
    status, answer = call(fake, "GET", "/conversations/search", query={"locationId": ["loc_test"]})
    assert spec.validate_response("GET", "/conversations/search", status, answer) == []
    assert fake.spec_errors == []
