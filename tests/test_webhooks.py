"""POST /webhooks/instantly: what Instantly and everyone else gets back."""

from __future__ import annotations

import io
import json

import pytest

from bridge import create_app
from bridge.config import load_config
from bridge.web.errors import MAX_BODY_BYTES
from tests.helpers import WEBHOOK_SECRET, post_webhook, reply_payload, sample_params


def stored(db):
    return list(db.query("SELECT * FROM events ORDER BY id"))


def test_new_reply_is_stored_before_the_answer(client, db):
    response = post_webhook(client, reply_payload())
    assert response.status_code == 202
    assert response.json["status"] == "accepted"
    rows = stored(db)
    assert [r["id"] for r in rows] == [response.json["event_id"]]
    row = rows[0]
    assert row["status"] == "pending"
    assert row["key"] == "reply:019ab465-0036-7b51-9914-3353686e7dc1"
    assert row["email"] == "jordan.lead@example.com"
    assert row["source"] == "webhook"
    assert json.loads(row["payload"])["firstName"] == "Jordan"


def test_the_delivery_is_stored_as_sent_and_reads_back_as_the_same_object(client, db):
    body = {**reply_payload(), "firstName": "Zoë", "note": "naïve ☕", "n": [1.5, 10**30]}
    text = json.dumps(body, indent=3, ensure_ascii=False)
    assert post_webhook(client, text.encode()).status_code == 202
    payload = stored(db)[0]["payload"]
    assert payload == text  # not serialised a second time
    assert json.loads(payload) == body


def test_same_delivery_three_times_is_stored_once(client, db):
    answers = [post_webhook(client, reply_payload()) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 200, 200]
    assert [a.json["status"] for a in answers] == ["accepted", "duplicate", "duplicate"]
    assert {a.json["event_id"] for a in answers} == {answers[0].json["event_id"]}
    assert len(stored(db)) == 1


def test_reply_without_email_id_is_keyed_by_its_content(client, db):
    body = reply_payload()
    del body["email_id"]
    first = post_webhook(client, body)
    again = post_webhook(client, body)
    later = post_webhook(client, {**body, "timestamp": "2025-11-25T08:00:00.000Z"})
    assert (first.status_code, again.status_code, later.status_code) == (202, 200, 202)
    keys = [r["key"] for r in stored(db)]
    assert len(keys) == 2 and all(k.startswith("reply_received:") for k in keys)


@pytest.mark.parametrize("header", ["X-Bridge-Secret", "x-bridge-secret", "X-BRIDGE-SECRET"])
def test_secret_header_name_is_case_insensitive(client, db, header):
    response = post_webhook(client, reply_payload(), secret=None, headers={header: WEBHOOK_SECRET})
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "missing X-Bridge-Secret header"),
        ("wrong", "wrong X-Bridge-Secret header"),
        (WEBHOOK_SECRET.upper(), "wrong X-Bridge-Secret header"),
        ("", "missing X-Bridge-Secret header"),
    ],
)
def test_missing_or_wrong_secret_is_refused_and_nothing_stored(client, db, secret, message):
    response = post_webhook(client, reply_payload(), secret=secret)
    assert response.status_code == 401
    assert response.json == {"error": message}
    assert WEBHOOK_SECRET not in response.get_data(as_text=True)
    assert stored(db) == []


def test_secret_is_compared_in_constant_time(client, monkeypatch):
    import hmac

    from bridge.web import webhooks

    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    post_webhook(client, reply_payload(), secret="guess")
    assert seen == [(b"guess", WEBHOOK_SECRET.encode())]


def test_endpoint_refuses_to_run_open_without_a_secret(env, db):
    env = {**env, "BRIDGE_WEBHOOK_SECRET": ""}
    app = create_app({"BRIDGE_CONFIG": load_config(env), "TESTING": True})
    response = post_webhook(app.test_client(), reply_payload(), secret="anything")
    assert response.status_code == 503
    assert "BRIDGE_WEBHOOK_SECRET" in response.json["error"]
    assert stored(db) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "malformed JSON"),
        (b"", "body is empty"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"text"', "expected a JSON object, got str"),
        (b'{"event_type": "reply_received", "x": NaN}', "NaN is not allowed"),
        (b'{"event_type": Infinity}', "Infinity is not allowed"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"{}", "event_type is missing"),
        (b'{"event_type": null}', "event_type is null"),
        (b'{"event_type": 7}', "event_type must be a string"),
        (b'{"event_type": ""}', "event_type must be 1 to 200 characters"),
        (b'{"event_type": "reply_received", "campaign_id": "c"}', "lead_email is missing"),
        (
            b'{"event_type": "reply_received", "lead_email": "not-an-email"}',
            "is not an email address",
        ),
        (b'{"event_type": "reply_received", "lead_email": ["a@b.co"]}', "is not an email address"),
    ],
)
def test_bad_input_gets_400_saying_what_is_wrong(client, db, body, message):
    response = post_webhook(client, body)
    assert response.status_code == 400
    assert message in response.json["error"]
    assert stored(db) == []


def test_deeply_nested_json_is_a_400_not_a_crash(client, db):
    response = post_webhook(client, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400
    assert "nested too deeply" in response.json["error"]


@pytest.mark.parametrize(
    "field",
    ["reply_text_snippet", "campaign_name", "campaign_id", "timestamp", "email_id", "firstName"],
)
def test_a_lone_surrogate_is_stored_as_a_replacement_character(client, db, field):
    # What JSON.stringify writes for a text cut inside an emoji; it is not Unicode.
    body = json.dumps(reply_payload(**{field: "Sounds good \ud83d"}))
    assert "\\ud83d" in body
    response = post_webhook(client, body.encode())
    assert response.status_code == 202, response.json
    assert json.loads(stored(db)[0]["payload"])[field] == "Sounds good \ufffd"


def test_surrogate_pairs_and_escaped_backslashes_are_kept_and_keys_mended(client, db):
    body = b'{"event_type": "reply_received", "lead_email": "a@b.co", "email_id": "e1",'
    body += b' "reply_text": "ok \\ud83d\\ude00", "note": "C:\\\\ud800", "\\udc00k": 1}'
    response = post_webhook(client, body)
    assert response.status_code == 202, response.json
    payload = json.loads(stored(db)[0]["payload"])
    assert payload["reply_text"] == "ok \U0001f600"
    assert payload["note"] == "C:\\ud800"
    assert payload["\ufffdk"] == 1


def test_oversized_body_gets_413(client, db):
    body = json.dumps(reply_payload(reply_text="x" * (1024 * 1024)))
    response = post_webhook(client, body.encode())
    assert response.status_code == 413
    assert "larger than" in response.json["error"]
    assert stored(db) == []


def post_chunked(client, body: bytes):
    """POST a body with no Content-Length, as a chunked delivery reaches the app: the
    server decodes the chunks and says it ends the stream (wsgi.input_terminated)."""
    return client.post(
        "/webhooks/instantly",
        input_stream=io.BytesIO(body),
        headers={
            "X-Bridge-Secret": WEBHOOK_SECRET,
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize(
    "body",
    [
        # Cut at the limit, this one still parsed and was accepted.
        json.dumps(reply_payload()).encode() + b" " * MAX_BODY_BYTES,
        json.dumps(reply_payload(reply_text="x" * MAX_BODY_BYTES)).encode(),
    ],
    ids=["padded", "long-reply"],
)
def test_chunked_body_over_the_limit_gets_the_same_413(client, db, body):
    with_length = post_webhook(client, body)
    chunked = post_chunked(client, body)
    assert (chunked.status_code, chunked.json) == (413, with_length.json)
    assert with_length.status_code == 413
    assert stored(db) == []


def test_chunked_body_of_exactly_the_limit_is_read_whole(client, db):
    text = json.dumps(reply_payload()).encode()
    response = post_chunked(client, text + b" " * (MAX_BODY_BYTES - len(text)))
    assert response.status_code == 202, response.json
    assert len(stored(db)[0]["payload"]) == MAX_BODY_BYTES


@pytest.mark.parametrize(
    "event_type", ["email_opened", "email_sent", "link_clicked", "campaign_completed"]
)
def test_event_types_not_synced_are_acknowledged_and_ignored(client, db, event_type):
    response = post_webhook(client, {"event_type": event_type, "timestamp": "2025-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert response.json["status"] == "ignored"
    assert stored(db) == []


def test_reply_sync_disabled_in_settings_is_ignored(client, db):
    from bridge import settings as settings_mod

    _, current = settings_mod.current(db)
    current["events"]["reply_received"]["enabled"] = False
    settings_mod.save(db, current)
    response = post_webhook(client, reply_payload())
    assert (response.status_code, response.json["status"]) == (200, "ignored")
    assert stored(db) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"step": "1", "variant": "A"},
        {"step": None, "variant": None},
        {"unibox_url": None},
        {"email_id": None},
        {"favorite_restaurant": "Chipotle", "nested": {"a": [1, 2]}},
        {"timestamp": "not a time"},
        {"campaign_name": None, "campaign_id": None},
    ],
)
def test_real_world_variations_are_accepted(client, db, overrides):
    response = post_webhook(client, reply_payload(**overrides))
    assert response.status_code == 202, response.json


@pytest.mark.parametrize(("name", "body"), sample_params())
def test_captured_payloads_get_a_clear_answer(client, db, name, body):
    response = post_webhook(client, body)
    if body["event_type"] == "reply_received":
        assert response.status_code == 202, (name, response.json)
    else:
        assert response.status_code in (200, 202), (name, response.json)


def test_database_that_cannot_be_written_answers_503(client, db, config):
    post_webhook(client, reply_payload())  # open the cached connection
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    response = post_webhook(client, reply_payload(email_id="another-reply"))
    assert response.status_code == 503
    assert response.json == {"error": "the event could not be stored; retry later"}
    db.execute("DROP TRIGGER refuse")
    assert post_webhook(client, reply_payload(email_id="another-reply")).status_code == 202
