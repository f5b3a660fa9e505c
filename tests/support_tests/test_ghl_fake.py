"""FakeGHL behaves like GoHighLevel where the bridge depends on it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge.clients.ghl import GHLClient, GHLRejected
from tests.support import ghl_fake
from tests.support.clock import FakeClock
from tests.support.ghl_fake import FakeGHL
from tests.support.specs import SPECS_DIR, ghl_spec, specs_available

REPO_ROOT = Path(__file__).resolve().parents[2]
GHL = "https://services.leadconnectorhq.com"


def call(
    fake: FakeGHL,
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    sent = {"Authorization": f"Bearer {fake.token}", "Version": "2021-07-28", **(headers or {})}
    raw = b"" if body is None else json.dumps(body).encode()
    return fake.handle(method, path, query or {}, sent, raw)


def upsert(fake: FakeGHL, **fields: Any) -> dict[str, Any]:
    status, _, answer = call(
        fake, "POST", "/contacts/upsert", {"locationId": fake.location_id, **fields}
    )
    assert status == 200, answer
    return answer


# --- contacts ---------------------------------------------------------------------------------


def test_upsert_creates_then_updates_the_same_contact() -> None:
    fake = FakeGHL()
    first = upsert(fake, email="Ann@Example.com", firstName="Ann")
    second = upsert(fake, email="ann@example.com", lastName="Lee", companyName="Acme")

    assert first["new"] is True
    assert second["new"] is False
    contact_id = first["contact"]["id"]
    assert len(contact_id) == 20 and contact_id.isalnum()
    assert second["contact"]["id"] == contact_id
    assert second["contact"]["name"] == "Ann Lee"
    assert second["contact"]["companyName"] == "Acme"
    assert fake.contact_by_email("ANN@example.com")["id"] == contact_id
    assert fake.upserts_for("ann@example.com") == 2
    assert len(fake.contacts) == 1


def test_tags_on_upsert_replace_all_tags() -> None:
    fake = FakeGHL()
    contact_id = upsert(fake, email="a@example.com")["contact"]["id"]
    call(fake, "POST", f"/contacts/{contact_id}/tags", {"tags": ["replied", "vip"]})

    answer = upsert(fake, email="a@example.com", tags=["Interested"])

    assert answer["contact"]["tags"] == ["interested"]  # "replied" and "vip" are gone


def test_add_and_remove_tags_touch_only_the_named_tags() -> None:
    fake = FakeGHL()
    contact_id = upsert(fake, email="a@example.com")["contact"]["id"]

    status, _, added = call(fake, "POST", f"/contacts/{contact_id}/tags", {"tags": ["B", "a"]})
    assert (status, added) == (201, {"tags": ["b", "a"]})
    status, _, added = call(fake, "POST", f"/contacts/{contact_id}/tags", {"tags": ["a", "C "]})
    assert (status, added) == (201, {"tags": ["b", "a", "c"]})

    status, _, left = call(fake, "DELETE", f"/contacts/{contact_id}/tags", {"tags": ["A"]})
    assert (status, left) == (200, {"tags": ["b", "c"]})
    assert call(fake, "GET", f"/contacts/{contact_id}")[2]["contact"]["tags"] == ["b", "c"]


def test_unknown_contact_answers_400() -> None:
    fake = FakeGHL()
    status, _, answer = call(fake, "POST", "/contacts/nope/tags", {"tags": ["a"]})
    assert (status, answer) == (400, {"statusCode": 400, "message": "Contact not found"})


def test_update_contact_sets_dnd() -> None:
    fake = FakeGHL()
    contact_id = upsert(fake, email="a@example.com")["contact"]["id"]
    body = {"dnd": True, "dndSettings": {"Email": {"status": "active", "message": "unsub"}}}
    status, _, answer = call(fake, "PUT", f"/contacts/{contact_id}", body)
    assert status == 200 and answer["succeded"] is True
    assert answer["contact"]["dnd"] is True
    assert answer["contact"]["dndSettings"]["Email"]["status"] == "active"


def test_custom_fields_are_listed_and_written_by_id() -> None:
    fake = FakeGHL()
    icebreaker = fake.add_custom_field("contact.icebreaker", "Icebreaker")
    fake.add_custom_field("deal_size", "Deal size", "NUMERICAL", model="opportunity")

    status, _, listed = call(
        fake, "GET", "/locations/loc_test/customFields", query={"model": ["contact"]}
    )
    assert status == 200
    assert [(f["id"], f["fieldKey"]) for f in listed["customFields"]] == [
        (icebreaker, "contact.icebreaker")
    ]
    fields = [{"id": icebreaker, "field_value": "Loved your post"}, {"id": "x", "field_value": 1}]
    contact = upsert(fake, email="a@example.com", customFields=fields)["contact"]
    # Unknown ids are dropped silently, as GHL does; answers carry {id, value} only.
    assert contact["customFields"] == [{"id": icebreaker, "value": "Loved your post"}]


def test_notes_are_stored_and_listed() -> None:
    fake = FakeGHL()
    contact_id = upsert(fake, email="a@example.com")["contact"]["id"]
    status, _, created = call(fake, "POST", f"/contacts/{contact_id}/notes", {"body": "Replied"})
    assert status == 201
    assert created["note"]["body"] == "Replied"
    assert created["note"]["contactId"] == contact_id
    status, _, listed = call(fake, "GET", f"/contacts/{contact_id}/notes")
    assert (status, listed) == (200, {"notes": [created["note"]]})


def test_workflow_enrollment_needs_a_known_workflow() -> None:
    fake = FakeGHL()
    workflow_id = fake.add_workflow("Hot lead follow-up")
    contact_id = upsert(fake, email="a@example.com")["contact"]["id"]

    path = f"/contacts/{contact_id}/workflow/{workflow_id}"
    assert call(fake, "POST", path, {})[::2] == (200, {"succeded": True})
    assert fake.workflow_enrollments == [(contact_id, workflow_id)]
    status, _, answer = call(fake, "POST", f"/contacts/{contact_id}/workflow/nope", {})
    assert (status, answer["message"]) == (400, "Workflow not found")
    _, _, listed = call(fake, "GET", "/workflows/", query={"locationId": ["loc_test"]})
    assert [w["id"] for w in listed["workflows"]] == [workflow_id]


def test_opportunities_create_update_and_refuse_duplicates() -> None:
    fake = FakeGHL()
    pipeline = fake.add_pipeline("Instantly", ["Replied", "Interested", "Booked"])
    replied, interested = (stage["id"] for stage in pipeline["stages"][:2])
    contact_id = upsert(fake, email="a@example.com")["contact"]["id"]
    body = {
        "pipelineId": pipeline["id"],
        "locationId": "loc_test",
        "name": "a@example.com",
        "status": "open",
        "contactId": contact_id,
        "pipelineStageId": replied,
    }

    status, _, created = call(fake, "POST", "/opportunities/", body)
    assert status == 201 and created["opportunity"]["pipelineStageId"] == replied
    assert call(fake, "POST", "/opportunities/", body)[::2] == (
        400,
        {"statusCode": 400, "message": "Can not create duplicate opportunity for the contact."},
    )
    opportunity_id = created["opportunity"]["id"]
    status, _, updated = call(
        fake, "PUT", f"/opportunities/{opportunity_id}", {"pipelineStageId": interested}
    )
    assert status == 200 and updated["opportunity"]["pipelineStageId"] == interested
    _, _, listed = call(fake, "GET", "/opportunities/pipelines", query={"locationId": ["loc_test"]})
    assert listed["pipelines"][0]["stages"][1] == {
        "id": interested,
        "name": "Interested",
        "position": 1,
    }


def test_another_location_is_forbidden() -> None:
    fake = FakeGHL()
    status, _, answer = call(fake, "POST", "/contacts/upsert", {"locationId": "other"})
    assert status == 403
    assert call(fake, "GET", "/locations/other")[0] == 403


# --- validation and auth ----------------------------------------------------------------------


def test_undeclared_property_answers_422_and_is_recorded() -> None:
    fake = FakeGHL()
    body = {"locationId": "loc_test", "email": "a@b.c", "bogus": 1}
    status, _, answer = call(fake, "POST", "/contacts/upsert", body)
    assert status == 422
    assert answer["error"] == "Unprocessable Entity"
    assert answer["message"] == ["body: property bogus should not exist"]
    assert fake.spec_errors == ["POST /contacts/upsert: body: property bogus should not exist"]
    assert fake.contacts == {}


def test_undeclared_property_answers_422_without_the_spec_files(monkeypatch) -> None:
    monkeypatch.setattr(ghl_fake, "specs_available", lambda: False)
    fake = FakeGHL()
    status, _, answer = call(fake, "POST", "/contacts/upsert", {"locationId": "loc_test", "x": 1})
    assert (status, answer["message"]) == (422, ["body: property x should not exist"])
    status, _, _ = call(fake, "GET", "/locations/loc_test", headers={"Version": "2021-04-15"})
    assert status == 422
    assert len(fake.spec_errors) == 2


def test_validation_can_be_switched_off() -> None:
    fake = FakeGHL(validate=False)
    upsert(fake, email="a@b.c", bogus=1)
    assert fake.spec_errors == []


def test_wrong_or_missing_token_answers_401() -> None:
    fake = FakeGHL()
    expected = {
        "statusCode": 401,
        "message": "Invalid token: access token is invalid",
        "error": "Unauthorized",
    }
    status, _, answer = call(
        fake, "GET", "/locations/loc_test", headers={"Authorization": "Bearer x"}
    )
    assert (status, answer) == (401, expected)
    status, _, _ = fake.handle("GET", "/locations/loc_test", {}, {"Version": "2021-07-28"}, b"")
    assert status == 401
    assert [c.status for c in fake.calls] == [401, 401]  # rejected calls are recorded too


def test_unknown_route_answers_404_and_counts_as_a_spec_error() -> None:
    fake = FakeGHL()
    status, _, answer = call(fake, "GET", "/contacts/abc/labels")
    assert (status, answer["message"]) == (404, "Cannot GET /contacts/abc/labels")
    if specs_available():
        assert fake.spec_errors == [
            "GET /contacts/abc/labels: GET /contacts/abc/labels: no such path in spec"
        ]


# --- faults and rate limits -------------------------------------------------------------------


def test_fail_next_then_recover() -> None:
    fake = FakeGHL()
    fake.fail_next(2, 502, headers={"X-Why": "test"})
    first = call(fake, "GET", "/locations/loc_test")
    second = call(fake, "GET", "/locations/loc_test")
    third = call(fake, "GET", "/locations/loc_test")
    assert first == (502, {"X-Why": "test"}, {"statusCode": 502, "message": "Bad Gateway"})
    assert second[0] == 502
    assert third[0] == 200


def test_fail_for_answers_with_retry_after_until_the_clock_passes() -> None:
    clock = FakeClock(1000.0)
    fake = FakeGHL(clock=clock)
    fake.fail_for(5.0, 503, retry_after=2)

    status, headers, answer = call(fake, "GET", "/locations/loc_test")
    assert (status, headers["Retry-After"], answer["statusCode"]) == (503, "2", 503)
    clock.now += 4.9
    assert call(fake, "GET", "/locations/loc_test")[0] == 503
    clock.now += 0.1
    assert call(fake, "GET", "/locations/loc_test")[0] == 200


def test_rate_limit_answers_429_after_100_requests_in_10_seconds() -> None:
    clock = FakeClock(1000.0)
    fake = FakeGHL(rate_limit=(100, 10.0), clock=clock)
    remaining = []
    for i in range(100):
        clock.now = 1000.0 + i * 0.05  # 100 requests over 5 s
        status, headers, _ = call(fake, "GET", "/locations/loc_test")
        assert status == 200
        remaining.append(int(headers["X-RateLimit-Remaining"]))
    assert remaining[0] == 99 and remaining[-1] == 0
    assert headers["X-RateLimit-Max"] == "100"
    assert headers["X-RateLimit-Interval-Milliseconds"] == "10000"
    assert headers["X-RateLimit-Daily-Remaining"] == "199900"

    clock.now = 1005.0
    status, headers, answer = call(fake, "GET", "/locations/loc_test")
    assert status == 429
    assert headers["Retry-After"] == "5"  # the first request leaves the window at +10 s
    assert headers["X-RateLimit-Remaining"] == "0"
    assert answer["statusCode"] == 429

    clock.now = 1010.0
    assert call(fake, "GET", "/locations/loc_test")[0] == 200
    assert call(fake, "GET", "/locations/loc_test")[0] == 429  # the second one leaves at +10.05


# --- helpers ----------------------------------------------------------------------------------


def test_calls_to_matches_templates_and_reset_forgets() -> None:
    fake = FakeGHL()
    fake.add_custom_field("icebreaker", "Icebreaker")
    contact_id = upsert(fake, email="a@example.com")["contact"]["id"]
    call(fake, "POST", f"/contacts/{contact_id}/tags", {"tags": ["a"]})
    call(fake, "DELETE", f"/contacts/{contact_id}/tags", {"tags": ["a"]})

    [added] = fake.calls_to("POST", "/contacts/{id}/tags")
    assert (added.path, added.json, added.status) == (
        f"/contacts/{contact_id}/tags",
        {"tags": ["a"]},
        201,
    )
    assert len(fake.calls_to("delete", "/contacts/{contactId}/tags")) == 1
    assert fake.counts() == {
        "POST /contacts/upsert": 1,
        "POST /contacts/{contactId}/tags": 1,
        "DELETE /contacts/{contactId}/tags": 1,
    }

    fake.reset()
    assert (fake.calls, fake.contacts, fake.contact_by_email("a@example.com")) == ([], {}, None)
    assert len(fake.custom_fields) == 1  # configuration survives


def test_answers_follow_the_response_schemas() -> None:
    if not specs_available():
        pytest.skip(f"../shared/specs not found: {SPECS_DIR} (set BRIDGE_SPECS_DIR)")
    fake = FakeGHL()
    field = fake.add_custom_field("icebreaker", "Icebreaker")
    workflow = fake.add_workflow("Follow-up")
    pipeline = fake.add_pipeline("Instantly", ["Replied"])
    contact = upsert(
        fake,
        email="a@example.com",
        firstName="A",
        customFields=[{"id": field, "field_value": "hi"}],
    )
    cid = contact["contact"]["id"]
    opportunity = {
        "pipelineId": pipeline["id"],
        "locationId": "loc_test",
        "name": "A",
        "status": "open",
        "contactId": cid,
    }
    loc = {"locationId": ["loc_test"]}
    for method, path, body, query in [
        ("POST", f"/contacts/{cid}/tags", {"tags": ["a"]}, None),
        ("DELETE", f"/contacts/{cid}/tags", {"tags": ["a"]}, None),
        ("GET", f"/contacts/{cid}", None, None),
        ("PUT", f"/contacts/{cid}", {"dnd": True}, None),
        ("POST", f"/contacts/{cid}/notes", {"body": "hi"}, None),
        ("GET", f"/contacts/{cid}/notes", None, None),
        ("POST", f"/contacts/{cid}/workflow/{workflow}", {}, None),
        ("POST", "/opportunities/", opportunity, None),
        ("GET", "/opportunities/pipelines", None, loc),
        ("GET", "/workflows/", None, loc),
        ("GET", "/locations/loc_test", None, None),
        ("GET", "/locations/loc_test/customFields", None, {"model": ["contact"]}),
        ("GET", "/contacts/unknown", None, None),
        ("GET", "/locations/loc_test", None, {"bogus": ["1"]}),
    ]:
        status, _, answer = call(fake, method, path, body, query)
        assert ghl_spec().validate_response(method, path, status, answer) == [], (method, path)
    assert ghl_spec().validate_response("POST", "/contacts/upsert", 200, contact) == []
    _, _, unauthorized = call(fake, "GET", "/locations/loc_test", headers={"Authorization": "x"})
    assert ghl_spec().validate_response("GET", "/locations/loc_test", 401, unauthorized) == []


# --- through requests and the bridge's own client ---------------------------------------------


def test_bridge_client_requests_pass_the_spec(fake_ghl: FakeGHL) -> None:
    field = fake_ghl.add_custom_field("icebreaker", "Icebreaker")
    client = GHLClient(GHL, fake_ghl.token, fake_ghl.location_id)

    contact_id, created = client.upsert_contact(
        {"email": "a@example.com", "customFields": [{"id": field, "field_value": "hi"}]}
    )
    client.add_tags(contact_id, ["Replied"])
    client.remove_tags(contact_id, ["replied"])

    assert created is True
    assert client.custom_fields()[0]["id"] == field
    assert client.get_location()["location"]["id"] == "loc_test"
    assert fake_ghl.contact_by_email("a@example.com")["customFields"] == [
        {"id": field, "value": "hi"}
    ]
    assert len(fake_ghl.calls_to("DELETE", "/contacts/{id}/tags")) == 1
    # fake_ghl's teardown fails the test if any of these broke the spec.


def test_bridge_client_sees_422_as_rejected(fake_ghl: FakeGHL) -> None:
    client = GHLClient(GHL, fake_ghl.token, fake_ghl.location_id)
    with pytest.raises(GHLRejected, match="property nickname should not exist"):
        client.upsert_contact({"email": "a@example.com", "nickname": "A"})
    assert fake_ghl.spec_errors  # the fixture would fail this test; clear to show we saw it
    fake_ghl.spec_errors.clear()


def test_requests_reach_the_fake_with_query_and_body(fake_ghl: FakeGHL) -> None:
    headers = {"Authorization": "Bearer ghl-test-token", "Version": "2021-07-28"}
    response = requests.get(
        f"{GHL}/locations/loc_test/customFields", params={"model": "contact"}, headers=headers
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert fake_ghl.calls[-1].query == {"model": ["contact"]}


def test_fixture_fails_a_test_whose_requests_break_the_spec(tmp_path: Path) -> None:
    if not specs_available():
        pytest.skip(f"../shared/specs not found: {SPECS_DIR} (set BRIDGE_SPECS_DIR)")
    (tmp_path / "conftest.py").write_text(
        "from tests.support.fixtures import fake_ghl, mocked_http  # noqa\n"
    )
    (tmp_path / "test_bad.py").write_text(
        textwrap.dedent(
            """
            import requests

            def test_sends_a_bogus_field(fake_ghl):
                requests.post(
                    "https://services.leadconnectorhq.com/contacts/upsert",
                    json={"locationId": "loc_test", "bogus": 1},
                    headers={"Authorization": "Bearer ghl-test-token", "Version": "2021-07-28"},
                )
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "BRIDGE_SPECS_DIR": str(SPECS_DIR), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 error" in result.stdout
    assert "POST /contacts/upsert: body: property bogus should not exist" in result.stdout
