"""Whatever arrives at the webhook, the answer is never a 5xx and never a traceback."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.helpers import WEBHOOK_SECRET, reply_payload

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)
known_keys = st.sampled_from(
    [
        "event_type",
        "lead_email",
        "email",
        "timestamp",
        "campaign_id",
        "campaign_name",
        "email_id",
        "step",
        "variant",
        "firstName",
        "unibox_url",
    ]
)
event_like = st.dictionaries(known_keys | st.text(max_size=15), json_values, max_size=12)
mutated_reply = st.builds(
    lambda key, value: {**reply_payload(), key: value},
    known_keys,
    json_values,
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=latin-1",
        "multipart/form-data",
    ]
)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check(response):
    assert response.status_code < 500 or response.status_code == 503, response.get_data()
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    assert response.is_json, text
    assert WEBHOOK_SECRET not in text


@FUZZ
@given(body=st.one_of(event_like, mutated_reply, json_values), content_type=content_types)
def test_random_json_never_gets_a_5xx(client, body, content_type):
    data = json.dumps(body).encode()
    response = client.post(
        "/webhooks/instantly",
        data=data,
        content_type=content_type,
        headers={"X-Bridge-Secret": WEBHOOK_SECRET},
    )
    check(response)
    assert response.status_code in (200, 202, 400), response.json


@FUZZ
@given(raw=st.binary(max_size=2000))
def test_random_bytes_never_get_a_5xx(client, raw):
    response = client.post(
        "/webhooks/instantly", data=raw, headers={"X-Bridge-Secret": WEBHOOK_SECRET}
    )
    check(response)
    assert response.status_code in (200, 202, 400)


@FUZZ
@given(text=st.text(max_size=5000), constant=st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_huge_strings_and_non_json_numbers(client, text, constant):
    data = json.dumps({**reply_payload(), "reply_text": text * 20}).encode()
    check(
        client.post("/webhooks/instantly", data=data, headers={"X-Bridge-Secret": WEBHOOK_SECRET})
    )
    odd = f'{{"event_type": "reply_received", "lead_email": "a@b.co", "step": {constant}}}'
    response = client.post(
        "/webhooks/instantly", data=odd, headers={"X-Bridge-Secret": WEBHOOK_SECRET}
    )
    assert response.status_code == 400 and constant.lstrip("-") in response.json["error"]


# hypothesis' text() never contains lone UTF-16 surrogates (they are not Unicode), but JSON
# carries them as \udXXX escapes, and JavaScript writes them for a string cut mid-emoji.
surrogates = st.integers(min_value=0xD800, max_value=0xDFFF).map(chr)
surrogate_text = st.lists(st.characters() | surrogates, min_size=1, max_size=20).map("".join)
# Bytes that are never valid UTF-8 wherever they land: lone continuation and lead bytes,
# an encoded surrogate, an overlong slash, a code point past U+10FFFF.
invalid_utf8 = st.sampled_from(
    [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]
)
NUMBER = "__number__"


def post(client, data: bytes, content_type: str = "application/json"):
    return client.post(
        "/webhooks/instantly",
        data=data,
        content_type=content_type,
        headers={"X-Bridge-Secret": WEBHOOK_SECRET},
    )


@FUZZ
@given(key=known_keys | st.text(max_size=10), text=surrogate_text, in_key=st.booleans())
def test_lone_surrogates_in_any_key_or_value(client, key, text, in_key):
    body = {**reply_payload(), text: "x"} if in_key else {**reply_payload(), key: text}
    response = post(client, json.dumps(body).encode())  # ensure_ascii: \udXXX escapes
    check(response)
    assert response.status_code in (200, 202, 400), response.json


@FUZZ
@given(
    body=mutated_reply, at=st.integers(min_value=0), bad=invalid_utf8, content_type=content_types
)
def test_invalid_utf8_inside_a_json_body(client, body, at, bad, content_type):
    data = json.dumps(body, ensure_ascii=False).encode()
    at %= len(data) + 1
    response = post(client, data[:at] + bad + data[at:], content_type)
    check(response)
    assert response.status_code == 400 and "not valid UTF-8" in response.json["error"]


@FUZZ
@given(
    key=known_keys | st.text(max_size=10),
    constant=st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    shape=st.sampled_from(["{}", "[{}]", '{{"deep": [1, {}]}}']),
)
def test_non_json_numbers_at_any_key_and_depth(client, key, constant, shape):
    assume(NUMBER not in key)
    data = json.dumps({**reply_payload(), key: NUMBER}).replace(
        f'"{NUMBER}"', shape.format(constant)
    )
    response = post(client, data.encode())
    check(response)
    assert (
        response.status_code == 400
        and f"{constant.lstrip('-')} is not allowed" in response.json["error"]
    )


@FUZZ
@given(key=known_keys | st.text(max_size=10), digits=st.integers(min_value=4301, max_value=50_000))
def test_numbers_too_long_to_read(client, key, digits):
    assume(NUMBER not in key)
    data = json.dumps({**reply_payload(), key: NUMBER}).replace(f'"{NUMBER}"', "9" * digits)
    response = post(client, data.encode())
    check(response)
    assert response.status_code == 400, response.json


@FUZZ
@given(depth=st.integers(min_value=1, max_value=50_000))
def test_deep_nesting(client, depth):
    data = ('{"event_type": "reply_received", "x": ' + "[" * depth + "]" * depth + "}").encode()
    check(
        client.post("/webhooks/instantly", data=data, headers={"X-Bridge-Secret": WEBHOOK_SECRET})
    )


@FUZZ
@given(secret=st.text(max_size=64))
def test_any_secret_value_is_handled(client, secret):
    try:
        headers = {"X-Bridge-Secret": secret}
        response = client.post("/webhooks/instantly", json=reply_payload(), headers=headers)
    except ValueError:
        return  # werkzeug refuses header values with newlines before anything is sent
    check(response)
    if secret.strip() == WEBHOOK_SECRET:  # header values arrive trimmed
        assert response.status_code in (200, 202)
    else:
        assert response.status_code == 401


def _through_schema(data: dict):
    from bridge.events import webhook as events

    try:
        return events._SCHEMA.load({k: data[k] for k in events._DECLARED if k in data})
    except events.ValidationError:
        return "error"


def _through_load_webhook(data: dict):
    from bridge.events import webhook as events

    try:
        return events.load_webhook(data)
    except events.BadEvent:
        return "error"


event_types = st.none() | st.integers() | st.text(max_size=210) | st.sampled_from(["", " ", "x"])


@settings(max_examples=400, deadline=None)
@given(base=event_like, event_type=event_types | st.just("absent"))
def test_the_fast_path_loads_exactly_what_the_schema_loads(base, event_type):
    data = dict(base)
    data.pop("event_type", None)
    if event_type != "absent":
        data["event_type"] = event_type
    assert _through_load_webhook(data) == _through_schema(data)


def test_the_fast_path_is_on_for_the_shipped_schema_and_bounded_by_it():
    from bridge.events import webhook as events

    assert events._FAST_PATH == (1, 200)
    ok = {"event_type": "x" * 200, "lead_email": "a@b.c", "step": [1]}
    assert events.load_webhook(ok) == _through_schema(ok)
    assert _through_load_webhook({"event_type": "x" * 201}) == "error"
