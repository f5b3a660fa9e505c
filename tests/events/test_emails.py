"""Lead emails: one form per address (NFC, lowercase), and a 400 that says which character
an address may not hold, for webhooks and polling alike."""

from __future__ import annotations

import json
import logging
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.events import polled
from bridge.events.event import BadEmail, checked_email, normalise_email
from bridge.events.webhook import from_webhook
from bridge.store import contacts
from bridge.store import db as store
from bridge.sync.worker import Worker
from tests.helpers import post_webhook, reply_payload

PRECOMPOSED = "jos\u00e9@example.com"
COMBINING = "jose\u0301@example.com"


def test_precomposed_and_combining_accents_are_one_address():
    assert unicodedata.normalize("NFD", PRECOMPOSED) == COMBINING
    assert normalise_email(COMBINING) == normalise_email(PRECOMPOSED) == PRECOMPOSED
    assert normalise_email("JOSE\u0301@Example.COM") == PRECOMPOSED
    one = from_webhook(reply_payload(lead_email=PRECOMPOSED, email_id=None))
    two = from_webhook(reply_payload(lead_email=COMBINING, email_id=None))
    assert (one.email, one.key) == (two.email, two.key)


def test_both_forms_by_webhook_make_one_ghl_contact(client, config, db, fake_ghl):
    for n, address in enumerate([PRECOMPOSED, COMBINING]):
        body = reply_payload(lead_email=address, email=address, email_id=f"reply-{n}")
        assert post_webhook(client, body).status_code == 202
    Worker(config, db=db).run(drain=True)
    assert fake_ghl.upserts_for(PRECOMPOSED) == 1  # the second reply finds it in the map
    assert len(fake_ghl.contacts) == 1
    assert {row["email"] for row in db.query("SELECT email FROM events")} == {PRECOMPOSED}


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("jo\u200bse@example.com", "lead_email contains an invisible character U+200B"),
        ("\ufeffjose@example.com", "lead_email contains an invisible character U+FEFF"),
        ("jose\u00ad@example.com", "lead_email contains an invisible character U+00AD"),
        ("jose@exa\u2028mple.com", "lead_email contains an invisible character U+2028"),
        ("moc.elpmaxe@\u202eesoj", "lead_email contains a bidirectional control character U+202E"),
        ("jose\u2066@example.com", "lead_email contains a bidirectional control character U+2066"),
        ("jose\x00@example.com", "lead_email contains a control character U+0000"),
        ("jose\n@example.com", "lead_email contains a control character U+000A"),
        ("jo se@example.com", "lead_email contains a space character U+0020"),
        ("jo\u00a0se@example.com", "lead_email contains a space character U+00A0"),
        ("jose@example\ue000.com", "lead_email contains a character that is not text U+E000"),
        ("jos\ufffd@example.com", "lead_email contains a character that is not text U+FFFD"),
        ("<img src=x onerror=alert(1)>@example.com", "lead_email contains '<', which an email"),
        ('"jose"@example.com', "lead_email contains '\"', which an email"),
        ("jose@example.com,ada@example.com", "lead_email contains ',', which an email"),
        ("jos\u00e9@@example.com", "lead_email 'jos\u00e9@@example.com' is not an email address"),
        ("a" * 310 + "\u00e9@example.com", "lead_email is longer than 320 characters"),
    ],
)
def test_an_address_no_lead_can_have_is_a_400_saying_what_is_wrong(client, db, address, message):
    response = post_webhook(client, reply_payload(lead_email=address, email=address))
    assert response.status_code == 400
    assert response.json["error"].startswith(message), response.json
    assert list(db.query("SELECT id FROM events")) == []


def test_the_field_named_is_the_one_that_was_refused(client, db):
    body = reply_payload(email="jo\u200bse@example.com")
    del body["lead_email"]
    response = post_webhook(client, body)
    assert response.json == {"error": "email contains an invisible character U+200B"}


def test_a_polled_lead_with_such_an_address_is_skipped_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="bridge.reconcile"):
        assert polled.lead_email({"id": "lead-7", "email": "jo\u200bse@example.com"}) == ""
        event = polled.interest_event(
            {"id": "lead-7", "email": "jo\u200bse@example.com"}, "lead_interested", "Q1", ""
        )
    assert event is None
    assert "polled lead lead-7 skipped: its email contains an invisible character U+200B" in (
        caplog.text
    )
    assert polled.lead_email({"id": "lead-8", "email": COMBINING}) == PRECOMPOSED


# Where m042 leaves a contact map row written before it, until GHL_LOCATION_ID adopts it.
UNADOPTED = ""


def test_m034_rewrites_stored_emails_in_nfc_so_an_old_row_still_matches(config):
    database = store.connect(config.database)
    store.load_migrations().apply(database, stop_before="m034_emails_in_nfc")
    # Rows as that schema had them (the contact map had no location until m042).
    for email, contact_id in [
        (COMBINING, "c-old"),
        ("plain@example.com", "c-plain"),
        # Both forms already have a row (two GHL contacts): the NFC one is left to events.
        ("rene\u0301@example.com", "c-rene-decomposed"),
        ("ren\u00e9@example.com", "c-rene"),
    ]:
        database["contacts"].insert({"email": email, "contact_id": contact_id, "tags": "[]"})
    database["events"].insert(
        {"key": "k1", "source": "webhook", "event_type": "reply_received", "email": COMBINING}
        | {"payload": json.dumps({}), "status": "pending", "attempts": 0}
    )
    assert "m034_emails_in_nfc" in store.migrate(database)
    assert contacts.get(database, UNADOPTED, PRECOMPOSED).contact_id == "c-old"
    assert contacts.get(database, UNADOPTED, COMBINING) is None
    assert contacts.get(database, UNADOPTED, "plain@example.com").contact_id == "c-plain"
    assert contacts.get(database, UNADOPTED, "ren\u00e9@example.com").contact_id == "c-rene"
    assert database.execute("SELECT email FROM events").fetchone()[0] == PRECOMPOSED
    database.close()


# --- properties -------------------------------------------------------------------------

REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}
addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
)
anything = st.text(max_size=40) | addresses


@given(anything)
def test_normalising_twice_changes_nothing(value):
    once = normalise_email(value)
    assert normalise_email(once) == once


@given(anything)
def test_a_normalised_address_holds_no_invisible_control_or_space_character(value):
    email = normalise_email(value)
    assert not any(unicodedata.category(c) in REFUSED_CATEGORIES for c in email)
    assert not any(c.isspace() for c in email)
    assert email == "" or email.count("@") == 1


@given(anything)
def test_canonically_equal_inputs_are_one_address(value):
    forms = {unicodedata.normalize(form, value) for form in ("NFC", "NFD")}
    assert len({normalise_email(form) for form in forms | {value}}) == 1


@given(anything)
def test_an_address_is_either_accepted_or_refused_with_a_reason(value):
    try:
        email = checked_email(value)
    except BadEmail as exc:
        assert str(exc) and normalise_email(value) == ""
    else:
        assert email == normalise_email(value) != ""
