"""doctor's "GHL conversations" check, on when the reply_message action is: the read scopes
probed against the fake GHL, the write scopes from the events dead-lettered for lacking one,
per location."""

from __future__ import annotations

import pytest

from bridge import settings as settings_mod
from bridge.clients.ghl import GHLClient
from bridge.clients.ghl_conversations import GHLConversations
from bridge.events.webhook import from_webhook
from bridge.setup import doctor
from bridge.store import inbox
from bridge.sync.worker import Worker
from tests.helpers import GHL_TOKEN, LOCATION_ID, reply_payload
from tests.support.ghl_conversations import (
    CONVERSATIONS_VERSION,
    MESSAGE_READ,
    MESSAGE_WRITE,
    READ,
)
from tests.support.ghl_responses import GHL_BASE_URL
from tests.support.instantly_fake import FakeInstantly
from tests.support.instantly_responses import install
from tests.web_helpers import INSTANTLY_KEY

pytestmark = pytest.mark.admin

LOC_B, TOKEN_B = "locBetaLaw0000000002", "ghl-token-beta-7a6b5c"
NAME = "GHL conversations"
LACKS_WRITE = (
    "GHL conversations: the token lacks the conversations/message.write scope: add it to the"
    " Private Integration, then replay"
)


@pytest.fixture
def env(env):
    return {**env, "GHL_TOKEN_B": TOKEN_B}


@pytest.fixture(autouse=True)
def instantly(mocked_http):
    """Instantly answers the workspace checks; these tests look at the GHL blocks."""
    install(mocked_http, FakeInstantly(INSTANTLY_KEY))


def action(db, enabled: bool = True, locations: list | None = None) -> None:
    _, current = settings_mod.current(db)
    current["actions"]["reply_message"]["enabled"] = enabled
    if locations is not None:
        current["locations"] = locations
    settings_mod.save(db, current)


def conversation_of_a_contact(fake_location) -> str:
    """A conversation in the location, made as the action makes one."""
    client = GHLClient(GHL_BASE_URL, fake_location.token, fake_location.location_id)
    contact_id, _ = client.upsert_contact({"email": "ann@example.com"})
    return GHLConversations(client).create_conversation(contact_id).id


def dead_letter(db, location_id: str, error: str, email_id: str) -> int:
    event_id = inbox.enqueue(db, from_webhook(reply_payload(email_id=email_id))).event_id
    db.execute("UPDATE events SET location_id = ? WHERE id = ?", [location_id, event_id])
    inbox.dead(db, event_id, error)
    return event_id


def check(checks, block: str = "") -> doctor.Check:
    (found,) = [c for c in checks if c.name == NAME and c.block == block]
    return found


def conversation_calls(fake_location) -> list:
    return [c for c in fake_location.calls if c.path.startswith("/conversations")]


def test_the_check_is_absent_while_the_action_is_off(config, db, fake_ghl):
    action(db, enabled=False)
    checks = doctor.run_checks(config)
    assert NAME not in [c.name for c in checks]
    assert conversation_calls(fake_ghl.default) == []


def test_a_location_without_conversations_probes_the_search_only(config, db, fake_ghl):
    action(db)
    found = check(doctor.run_checks(config))

    assert found.ok is True, found.detail
    assert found.detail == (
        "readable: conversations.readonly (conversations/message.readonly not probed: the"
        " location has no conversation); conversations.write and conversations/message.write"
        " show on the first reply (none refused yet)"
    )
    (search,) = conversation_calls(fake_ghl.default)
    assert (search.method, search.path) == ("GET", "/conversations/search")
    assert search.query == {"locationId": [LOCATION_ID], "limit": ["1"]}  # no contactId
    assert search.headers["Version"] == CONVERSATIONS_VERSION


def test_a_conversation_found_probes_its_message_list_with_one_message(config, db, fake_ghl):
    action(db)
    conversation_id = conversation_of_a_contact(fake_ghl.default)
    before = len(conversation_calls(fake_ghl.default))

    found = check(doctor.run_checks(config))

    assert found.ok is True, found.detail
    assert found.detail.startswith(
        "readable: conversations.readonly, conversations/message.readonly;"
    )
    probes = conversation_calls(fake_ghl.default)[before:]
    paths = [(c.method, c.path, c.query.get("limit")) for c in probes]
    assert paths == [
        ("GET", "/conversations/search", ["1"]),
        ("GET", f"/conversations/{conversation_id}/messages", ["1"]),
    ]


@pytest.mark.parametrize(
    ("lacking", "readable"),
    [(READ, ""), (MESSAGE_READ, "readable: conversations.readonly; ")],
)
def test_a_missing_read_scope_fails_naming_it_with_the_fix(config, db, fake_ghl, lacking, readable):
    action(db)
    conversation_of_a_contact(fake_ghl.default)
    fake_ghl.default.conversations.lack_scopes(lacking)

    checks = doctor.run_checks(config)
    found = check(checks)

    assert found.ok is False
    assert found.detail.startswith(f"{readable}failing: {lacking} (401: ")
    assert f"needs the {lacking} scope" in found.detail
    assert found.fix.startswith("edit the Private Integration in GHL")
    assert f"add the {lacking} scope" in found.fix and "instantly-ghl-bridge replay" in found.fix
    # The contacts API still answers: the location's other checks pass.
    assert {c.name: c.ok for c in checks if c.name.startswith("GHL")} == {
        "GHL token and location": True,
        "GHL scopes": True,
        NAME: False,
        "GHL writes": True,
    }


def test_a_reply_dead_lettered_for_a_write_scope_fails_with_the_replay_fix(config, db, fake_ghl):
    action(db)
    dead_letter(db, LOCATION_ID, "GHL answered 500: try later", "other-cause")
    event_id = dead_letter(db, LOCATION_ID, LACKS_WRITE, "lacks-write")

    found = check(doctor.run_checks(config))

    assert found.ok is False
    assert f"event {event_id} dead-lettered at " in found.detail
    assert found.detail.endswith(LACKS_WRITE)
    assert "add the scope it names" in found.fix and "instantly-ghl-bridge replay" in found.fix


def test_a_replayed_reply_no_longer_fails_the_check(config, db, fake_ghl):
    action(db)
    event_id = dead_letter(db, LOCATION_ID, LACKS_WRITE, "lacks-write")
    inbox.replay(db, [event_id])
    assert check(doctor.run_checks(config)).ok is True


def test_each_location_is_checked_with_its_token_and_its_own_dead_letters(config, db, fake_ghl):
    fake_ghl.add_location(LOC_B, TOKEN_B, name="Beta Law")
    beta = {"id": LOC_B, "name": "Beta Law", "token_env": "GHL_TOKEN_B"}
    action(db, locations=[beta])
    fake_ghl.location(LOC_B).conversations.lack_scopes(READ)
    event_id = dead_letter(db, LOC_B, LACKS_WRITE, "beta-reply")

    checks = doctor.run_checks(config)
    own = check(checks, f"Location GHL_LOCATION_ID ({LOCATION_ID})")
    other = check(checks, f"Location Beta Law ({LOC_B})")

    assert own.ok is True, own.detail
    assert other.ok is False and other.detail.startswith(f"failing: {READ} (401: ")
    assert f"event {event_id}" not in own.detail
    for location_id, token in ((LOCATION_ID, GHL_TOKEN), (LOC_B, TOKEN_B)):
        (search,) = conversation_calls(fake_ghl.location(location_id))
        assert search.query["locationId"] == [location_id]
        assert search.headers["Authorization"] == f"Bearer {token}"
    # The fake_ghl fixture fails the test on any call crossing locations.


def test_a_location_overriding_the_action_off_is_not_probed(config, db, fake_ghl):
    fake_ghl.add_location(LOC_B, TOKEN_B, name="Beta Law")
    beta = {
        "id": LOC_B,
        "name": "Beta Law",
        "token_env": "GHL_TOKEN_B",
        "overrides": {"actions": {"reply_message": {"enabled": False}}},
    }
    action(db, locations=[beta])

    checks = doctor.run_checks(config)

    assert [c.block for c in checks if c.name == NAME] == [
        f"Location GHL_LOCATION_ID ({LOCATION_ID})"
    ]
    assert conversation_calls(fake_ghl.location(LOC_B)) == []


def test_settings_without_the_action_read_as_off():
    # A database saved before the action existed: its settings have no reply_message.
    assert doctor._reply_message_on({"actions": {"reply_note": {"enabled": True}}}) is False
    assert doctor._reply_message_on({}) is False
    assert doctor._reply_message_on(None) is False


def test_a_reply_the_worker_dead_lettered_for_the_write_scope_shows_until_replayed(
    config, db, fake_ghl
):
    action(db)
    fake_ghl.default.conversations.lack_scopes(MESSAGE_WRITE)
    event_id = inbox.enqueue(db, from_webhook(reply_payload())).event_id
    worker = Worker(config, db=db)
    worker.run(drain=True)
    assert inbox.get(db, event_id)["status"] == "dead"

    found = check(doctor.run_checks(config))
    assert found.ok is False
    assert f"event {event_id} dead-lettered at " in found.detail
    assert "the token lacks the conversations/message.write scope" in found.detail

    # The scope added and the reply replayed: the check passes, one email in the conversation.
    fake_ghl.default.conversations.grant_scopes()
    inbox.replay(db)
    worker.run(drain=True)
    assert check(doctor.run_checks(config)).ok is True
    contact_id = fake_ghl.contact_by_email(reply_payload()["lead_email"])["id"]
    assert len(fake_ghl.default.conversations.messages_for(contact_id)) == 1
