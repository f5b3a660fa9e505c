"""The reply-message action (issue 18): each reply as one inbound email in the contact's GHL
conversation, threaded by Instantly thread, whatever is delivered twice, lost or crashed in
between; a token without the conversation scopes fails only this action, visibly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import settings as settings_mod
from bridge.clients.ghl import GHLClient
from bridge.clients.ghl_conversations import API_VERSION, GHLConversations
from bridge.events.polled import reply_event
from bridge.events.webhook import from_webhook
from bridge.store import contacts, conversations, ghl_writes, inbox, state
from bridge.sync import reply_message
from bridge.sync.preview import plan_events
from tests.helpers import (
    GHL_TOKEN,
    LOCATION_ID,
    deliver,
    reply_payload,
    retry_due,
    routes,
)
from tests.interest_helpers import EMAIL, change_settings, interest_payload
from tests.support.ghl_conversations import MESSAGE_WRITE
from tests.support.ghl_responses import GHL_BASE_URL
from tests.sync.test_preview import planned_and_made

UNIBOX = "https://app.instantly.ai/app/unibox?thread_search=thread:abc"
LINK_LINE = f"Answer from the Instantly mailbox the lead wrote to: {UNIBOX}"
UPSERT_AND_TAGS = ["POST /contacts/upsert", "POST /contacts/{contactId}/tags"]
SEARCH = "GET /conversations/search"
CREATE = "POST /conversations/"
INBOUND = "POST /conversations/messages/inbound"
LIST = "GET /conversations/{conversationId}/messages"
GET_EMAIL = "GET /conversations/messages/email/{id}"


@pytest.fixture
def action_on(db):
    change_settings(db, "actions.reply_message", enabled=True)


def conversation_calls(fake):
    return [route for route in routes(fake) if "/conversations" in route]


def emails_of(fake):
    contact_id = fake.contact_by_email(EMAIL)["id"]
    return fake.default.conversations.messages_for(contact_id)


def second_reply(**overrides):
    """The lead's next reply in the same Instantly thread."""
    values = {
        "timestamp": "2025-11-25T08:00:00.000Z",
        "email_id": "019ab465-0036-7b51-9914-000000000002",
        "reply_subject": "RE: Re: Your thoughts?",
        "reply_text": "Or Thursday works too.",
        "reply_text_snippet": "Or Thursday works too.",
        **overrides,
    }
    return reply_payload(**values)


def status_of(db, answer):
    return inbox.get(db, answer.json["event_id"])["status"]


# --- the first reply and the thread ------------------------------------------------------


def test_the_first_reply_of_a_new_contact_opens_its_conversation_with_one_email(
    client, db, worker, fake_ghl, action_on
):
    answer = deliver(client, worker, reply_payload())

    # GHL made the contact on this upsert, so it has no conversation to search for.
    assert routes(fake_ghl) == [*UPSERT_AND_TAGS, CREATE, INBOUND]
    assert status_of(db, answer) == "done"
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    conversation = fake_ghl.default.conversations.conversation_for(contact_id)
    (email,) = emails_of(fake_ghl)
    assert email["conversationId"] == conversation["id"]
    assert email["subject"] == "Re: Your thoughts?"
    assert email["message"] == f"Sure, how about 11/26 9am ET?\n\nJordan\n\n{LINK_LINE}"
    assert email["html"] == (
        "<p>Sure, how about 11/26 9am ET?</p><p>Jordan</p>"
        "<p>Answer from the Instantly mailbox the lead wrote to: "
        f'<a href="{UNIBOX}">{UNIBOX}</a></p>'
    )
    assert email["dateAdded"] == "2025-11-24T05:45:10.314Z"  # when the lead replied
    assert email["altId"] == "019ab465-0036-7b51-9914-3353686e7dc1"
    assert all(
        call.headers.get("Version") == API_VERSION
        for call in fake_ghl.calls
        if "/conversations" in call.path
    )
    assert conversations.conversation_id(db, LOCATION_ID, EMAIL) == conversation["id"]


def test_a_later_reply_of_the_thread_joins_its_ghl_email_thread(
    client, db, worker, fake_ghl, action_on
):
    deliver(client, worker, reply_payload())
    fake_ghl.calls.clear()

    deliver(client, worker, second_reply())

    # The conversation is remembered, the contact and its tags are already in step.
    assert routes(fake_ghl) == [INBOUND]
    first, later = emails_of(fake_ghl)
    assert later["messageId"] == first["messageId"], "one GHL thread"
    assert later["replyToMessageId"] == first["id"]
    assert later["subject"] == "RE: Re: Your thoughts?"


def test_replies_of_another_thread_start_a_thread_of_their_own(
    client, db, worker, fake_ghl, action_on
):
    deliver(client, worker, reply_payload())
    other_thread = "https://app.instantly.ai/app/unibox?thread_search=thread:xyz"
    deliver(client, worker, second_reply(unibox_url=other_thread))

    first, other = emails_of(fake_ghl)
    assert other["messageId"] != first["messageId"]
    assert "replyToMessageId" not in other
    assert first["conversationId"] == other["conversationId"]


def test_a_conversation_made_in_ghl_meanwhile_is_found_again(
    client, db, worker, fake_ghl, action_on, monkeypatch
):
    # The search answers before the conversation exists; by the create, it does (a rep wrote).
    real_search = reply_message.GHLConversations.search_conversations
    searched = []

    def search_then_someone_creates(api, contact_id):
        found = real_search(api, contact_id)
        if not searched:
            real_create = reply_message.GHLConversations.create_conversation
            real_create(api, contact_id)
        searched.append(found)
        return found

    monkeypatch.setattr(
        reply_message.GHLConversations, "search_conversations", search_then_someone_creates
    )
    already_in_ghl(fake_ghl, conversation=False)
    deliver(client, worker, reply_payload())

    assert routes(fake_ghl) == [*UPSERT_AND_TAGS, SEARCH, CREATE, CREATE, SEARCH, INBOUND]
    assert len(emails_of(fake_ghl)) == 1


def already_in_ghl(fake, conversation: bool = True) -> str | None:
    """The lead is a contact in GHL before the bridge writes it, with a conversation (a rep
    wrote to the lead) unless told otherwise: that conversation's id."""
    ghl = GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID)
    contact_id, _ = ghl.upsert_contact({"email": EMAIL})
    made = GHLConversations(ghl).create_conversation(contact_id).id if conversation else None
    fake.calls.clear()
    return made


def test_a_contact_whose_conversation_ghl_already_has_costs_a_search_and_the_email(
    client, db, worker, fake_ghl, action_on
):
    made = already_in_ghl(fake_ghl)

    deliver(client, worker, reply_payload())
    assert routes(fake_ghl) == [*UPSERT_AND_TAGS, SEARCH, INBOUND]
    assert [email["conversationId"] for email in emails_of(fake_ghl)] == [made]


def test_a_conversation_made_since_the_bridge_made_the_contact_is_found_on_create(
    client, db, worker, fake_ghl
):
    deliver(client, worker, reply_payload())  # the action off: contact and tags only
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    ghl = GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID)
    made = GHLConversations(ghl).create_conversation(contact_id)  # a rep wrote to the lead
    fake_ghl.calls.clear()

    change_settings(db, "actions.reply_message", enabled=True)
    deliver(client, worker, second_reply())
    # The map says GHL made the contact with no conversation: the create finds one since.
    assert routes(fake_ghl) == [CREATE, SEARCH, INBOUND]
    assert [email["conversationId"] for email in emails_of(fake_ghl)] == [made.id]


# --- exactly once --------------------------------------------------------------------------


def test_a_duplicate_delivery_makes_no_call(client, db, worker, fake_ghl, action_on):
    deliver(client, worker, reply_payload())
    fake_ghl.calls.clear()

    deliver(client, worker, reply_payload())

    assert fake_ghl.calls == []
    assert len(emails_of(fake_ghl)) == 1


def test_a_replay_of_the_done_event_posts_nothing_again(client, db, worker, fake_ghl, action_on):
    answer = deliver(client, worker, reply_payload())
    fake_ghl.calls.clear()

    inbox.replay(db, [answer.json["event_id"]])
    worker.run(drain=True)

    assert conversation_calls(fake_ghl) == []
    assert len(emails_of(fake_ghl)) == 1


def test_a_lost_answer_is_found_by_its_alt_id_on_the_retry(client, db, worker, fake_ghl, action_on):
    fake_ghl.default.conversations.lose_next_inbound(1, 504)
    answer = deliver(client, worker, reply_payload())
    assert status_of(db, answer) == "pending"
    assert len(emails_of(fake_ghl)) == 1, "GHL wrote it; the bridge does not know"
    fake_ghl.calls.clear()

    retry_due(db, worker)

    assert routes(fake_ghl) == [LIST]
    (email,) = emails_of(fake_ghl)
    assert status_of(db, answer) == "done"
    write = ghl_writes.get(db, LOCATION_ID, f"reply_message:{from_webhook(reply_payload()).key}")
    assert write.done and write.ghl_id == email["messageId"]
    assert write.detail == {
        "conversation_id": email["conversationId"],
        "email_message_id": email["id"],
        "thread": "thread:abc",
    }


def test_a_lost_answer_inside_a_thread_is_found_among_its_emails(
    client, db, worker, fake_ghl, action_on
):
    deliver(client, worker, reply_payload())
    fake_ghl.default.conversations.lose_next_inbound(1, 504)
    answer = deliver(client, worker, second_reply())
    assert len(emails_of(fake_ghl)) == 2
    fake_ghl.calls.clear()

    retry_due(db, worker)

    # The thread's first email is the bridge's own: only the unknown one is read.
    assert conversation_calls(fake_ghl) == [LIST, GET_EMAIL]
    assert len(emails_of(fake_ghl)) == 2
    assert status_of(db, answer) == "done"
    fake_ghl.calls.clear()
    deliver(client, worker, second_reply(email_id="third", reply_text="Friday then."))
    first, second, third = emails_of(fake_ghl)
    assert third["replyToMessageId"] == second["id"]
    assert third["messageId"] == first["messageId"]


def test_a_call_that_never_reached_ghl_is_posted_once_on_the_retry(
    client, db, worker, fake_ghl, action_on
):
    real_add = reply_message.GHLConversations.add_inbound_email

    def gateway_error_once(api, *args, **kwargs):
        reply_message.GHLConversations.add_inbound_email = real_add
        fake_ghl.fail_next(1, 503)
        return real_add(api, *args, **kwargs)

    reply_message.GHLConversations.add_inbound_email = gateway_error_once
    try:
        deliver(client, worker, reply_payload())
    finally:
        reply_message.GHLConversations.add_inbound_email = real_add
    assert emails_of(fake_ghl) == []
    fake_ghl.calls.clear()

    retry_due(db, worker)

    assert conversation_calls(fake_ghl) == [LIST, INBOUND]
    assert len(emails_of(fake_ghl)) == 1


def crash_once_after_ghl_answers(monkeypatch) -> None:
    """The next write GHL confirms is not recorded: as a worker killed between GHL's
    answer and its record, the event is retried with its intent still open."""
    real_done = ghl_writes.done

    def crash(*args, **kwargs):
        monkeypatch.setattr(reply_message.ghl_writes, "done", real_done)
        raise RuntimeError("killed after GHL answered")

    monkeypatch.setattr(reply_message.ghl_writes, "done", crash)


def test_a_crash_between_the_call_and_its_record_leaves_one_message(
    client, db, worker, fake_ghl, action_on, monkeypatch
):
    crash_once_after_ghl_answers(monkeypatch)
    answer = deliver(client, worker, reply_payload())
    assert status_of(db, answer) == "pending"
    assert len(emails_of(fake_ghl)) == 1
    fake_ghl.calls.clear()

    retry_due(db, worker)

    assert conversation_calls(fake_ghl) == [LIST]
    assert len(emails_of(fake_ghl)) == 1
    assert status_of(db, answer) == "done"


def test_a_crash_after_a_reply_joined_its_thread_leaves_one_message(
    client, db, worker, fake_ghl, action_on, monkeypatch
):
    deliver(client, worker, reply_payload())
    crash_once_after_ghl_answers(monkeypatch)
    answer = deliver(client, worker, second_reply())
    assert len(emails_of(fake_ghl)) == 2
    fake_ghl.calls.clear()

    retry_due(db, worker)

    assert conversation_calls(fake_ghl) == [LIST, GET_EMAIL]
    assert len(emails_of(fake_ghl)) == 2
    assert status_of(db, answer) == "done"


def test_an_uncertain_attempt_beyond_the_pages_read_is_posted_with_a_warning(
    client, db, worker, fake_ghl, action_on, monkeypatch, caplog
):
    monkeypatch.setattr(reply_message, "LOOK_PAGES", 1)
    for n in range(21):  # more threads than one page holds
        deliver(client, worker, second_reply(email_id=f"old-{n}", reply_subject=f"Topic {n}",
                                             unibox_url=""))  # fmt: skip
    fake_ghl.default.conversations.lose_next_inbound(1, 504)
    deliver(client, worker, second_reply(email_id="new", unibox_url="", reply_subject="New"))
    db.execute("UPDATE events SET next_attempt_at = 0")
    # Older than every other thread: the one page read does not reach it.
    contact_id = fake_ghl.contact_by_email(EMAIL)["id"]
    store = fake_ghl.default.conversations
    conversation_id = store.conversation_for(contact_id)["id"]
    order = store._order[conversation_id]
    order.insert(0, order.pop())
    fake_ghl.calls.clear()

    worker.run(drain=True)

    assert conversation_calls(fake_ghl) == [LIST, INBOUND]
    assert len(emails_of(fake_ghl)) == 23, "the price of an incomplete look: a second copy"
    assert "not found in the newest 1 pages" in caplog.text


def test_reconciliation_of_the_same_reply_makes_no_conversation_call(
    client, db, worker, fake_ghl, action_on
):
    answer = deliver(client, worker, reply_payload())
    # Retention has forgotten the webhook's event; polling finds the reply again.
    db.execute("DELETE FROM events WHERE id = ?", [answer.json["event_id"]])
    polled = reply_event(
        {
            "id": reply_payload()["email_id"],
            "lead": EMAIL,
            "campaign_id": reply_payload()["campaign_id"],
            "timestamp_created": reply_payload()["timestamp"],
            "subject": "Re: Your thoughts?",
            "body": {"text": "Sure, how about 11/26 9am ET?\n\nJordan"},
            "organization_id": reply_payload()["workspace"],
            "eaccount": "sender@agency.example",
        },
        "reply_received",
        None,
        "Trust Attorneys Q4",
    )
    assert polled.key == from_webhook(reply_payload()).key
    fake_ghl.calls.clear()

    inbox.enqueue(db, polled)
    worker.run(drain=True)

    assert conversation_calls(fake_ghl) == []
    assert len(emails_of(fake_ghl)) == 1


# --- scopes, switches -------------------------------------------------------------------


def test_a_token_without_the_scope_kills_only_this_event_after_contact_and_tags(
    client, db, worker, fake_ghl, action_on
):
    fake_ghl.default.conversations.lack_scopes(MESSAGE_WRITE)
    answer = deliver(client, worker, reply_payload())

    row = inbox.get(db, answer.json["event_id"])
    assert row["status"] == "dead"
    assert row["last_error"] == (
        "GHL conversations: the token lacks the conversations/message.write scope:"
        " add it to the Private Integration, then replay"
    )
    contact = fake_ghl.contact_by_email(EMAIL)
    assert "instantly-replied" in contact["tags"]
    assert emails_of(fake_ghl) == []
    assert state.get(db, state.scoped(state.GHL_PAUSE, LOCATION_ID)) is None
    # The location's other events still sync.
    interested = interest_payload("lead_interested", "2025-11-24T07:00:00.000Z")
    assert status_of(db, deliver(client, worker, interested)) == "done"
    assert "instantly-interested" in fake_ghl.contact_by_email(EMAIL)["tags"]

    # Fixed and replayed: only the conversation calls are left to make.
    fake_ghl.default.conversations.grant_scopes()
    fake_ghl.calls.clear()
    inbox.replay(db, [answer.json["event_id"]])
    worker.run(drain=True)
    assert conversation_calls(fake_ghl) == [INBOUND]
    assert status_of(db, answer) == "done"
    assert len(emails_of(fake_ghl)) == 1


def test_no_conversation_call_while_the_action_is_off(client, db, worker, fake_ghl):
    deliver(client, worker, reply_payload())
    assert routes(fake_ghl) == UPSERT_AND_TAGS
    assert fake_ghl.contact_by_email(EMAIL) is not None
    assert emails_of(fake_ghl) == []


def test_auto_replies_go_in_only_when_the_action_takes_them(
    client, db, worker, fake_ghl, action_on
):
    change_settings(db, "events.auto_reply_received", enabled=True)
    auto = reply_payload(event_type="auto_reply_received", email_id="ooo-1",
                         reply_text="I am out of office until Monday.")  # fmt: skip
    deliver(client, worker, auto)
    assert conversation_calls(fake_ghl) == []

    change_settings(db, "actions.reply_message", auto_replies=True)
    deliver(client, worker, reply_payload(event_type="auto_reply_received", email_id="ooo-2",
                                          reply_text="Back on Tuesday."))  # fmt: skip
    (email,) = emails_of(fake_ghl)
    assert email["altId"] == "ooo-2"


def test_a_dry_run_lists_the_conversation_calls_the_worker_then_makes(
    config, db, fake_ghl, action_on
):
    bodies = [reply_payload(), second_reply()]
    events = [from_webhook(body) for body in bodies]
    _, settings = settings_mod.current(db)

    plans = plan_events(db, events, settings, LOCATION_ID)

    first, later = (plan.changes for plan in plans)
    assert first[0].startswith("upsert contact") and first[1].startswith("add tags")
    assert first[2:] == [
        "create the contact's GHL conversation",
        "add the reply to the contact's GHL conversation",
    ]
    assert later == ["add the reply to the contact's GHL conversation"]
    _, planned, made = planned_and_made(db, config, fake_ghl, bodies)
    assert [[c for c in calls if "/conversations" in c] for calls in planned] == [
        [CREATE, INBOUND],
        [INBOUND],
    ]
    assert [[c for c in calls if "/conversations" in c] for calls in made] == [
        [CREATE, INBOUND],
        [INBOUND],
    ]


# --- the thread key ------------------------------------------------------------------------


def test_the_thread_key_takes_the_unibox_link_then_the_thread_id_then_the_subject():
    # A custom variable named thread_id never outweighs the link Instantly made.
    assert reply_message.thread_key({"thread_id": "t-1", "unibox_url": UNIBOX}) == "thread:abc"
    assert reply_message.thread_key({"thread_id": "t-1"}) == "thread:t-1"
    assert reply_message.thread_key({"unibox_url": UNIBOX}) == "thread:abc"
    encoded = "https://app.instantly.ai/app/unibox?x=1&thread_search=thread%3Aabc"
    assert reply_message.thread_key({"unibox_url": encoded}) == "thread:abc"
    subject_only = {"reply_subject": "AW: Re[2]: SV: Fwd: Your  Thoughts?"}
    assert reply_message.thread_key(subject_only) == "subject:your thoughts?"


@given(st.text(), st.one_of(st.none(), st.text(), st.integers()))
def test_the_thread_key_never_raises_and_reply_prefixes_share_it(subject, unibox):
    payload = {"reply_subject": subject, "unibox_url": unibox}
    key = reply_message.thread_key(payload)
    assert isinstance(key, str) and key
    if key.startswith("subject:"):
        replied = reply_message.thread_key({**payload, "reply_subject": f"Re: {subject}"})
        assert replied == key
        forwarded = reply_message.thread_key({**payload, "reply_subject": f"FWD:RE: {subject}"})
        assert forwarded == key


@given(st.text())
def test_the_unibox_link_is_kept_only_for_instantly_and_never_raises(url):
    link = reply_message.unibox_link({"unibox_url": url})
    assert link is None or link.lower().startswith(("http://", "https://"))
    _, markup = reply_message.message_bodies({"reply_text": "Hi", "unibox_url": url})
    assert "<script" not in markup.lower()


def test_a_link_elsewhere_is_left_out():
    for url in ("javascript:alert(1)", "https://evil.example/app.instantly.ai", "ftp://app.instantly.ai/x"):  # fmt: skip
        text, markup = reply_message.message_bodies({"reply_text": "Hi", "unibox_url": url})
        assert (text, markup) == ("Hi", "<p>Hi</p>")


def test_a_new_contact_id_for_the_email_forgets_the_old_contacts_conversation(db):
    contacts.record_upsert(db, LOCATION_ID, EMAIL, "contact-1", {"firstName": "Ada"})
    conversations.remember_conversation(db, LOCATION_ID, EMAIL, "conv-1")
    contacts.record_upsert(db, LOCATION_ID, EMAIL, "contact-1", {"lastName": "L"})
    assert conversations.conversation_id(db, LOCATION_ID, EMAIL) == "conv-1"
    # GHL answered the upsert with another contact (the first was merged away, say).
    contacts.record_upsert(db, LOCATION_ID, EMAIL, "contact-2", {"firstName": "Ada"})
    assert conversations.conversation_id(db, LOCATION_ID, EMAIL) is None
