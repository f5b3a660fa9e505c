"""FakeGHL with several locations: each answers only its own token, a token used for another
location is answered 403 and recorded, and outages and budgets stay within one location."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge.clients.ghl import GHLAuthError, GHLClient, GHLTransient
from tests.support.clock import FakeClock
from tests.support.ghl_fake import DAY_SECONDS, NO_ACCESS, FakeGHL, GHLLocation
from tests.support.ghl_responses import GHL_BASE_URL, installed
from tests.support.ghl_server import FakeGHLServer

REPO_ROOT = Path(__file__).resolve().parents[2]
RATE_HEADERS = (
    "X-RateLimit-Max",
    "X-RateLimit-Remaining",
    "X-RateLimit-Interval-Milliseconds",
    "X-RateLimit-Limit-Daily",
    "X-RateLimit-Daily-Remaining",
)


def agency(clock: FakeClock | None = None, **options: Any) -> tuple[FakeGHL, list[GHLLocation]]:
    """A fake with three locations: the default one (Acme) and two more."""
    fake = FakeGHL(
        "loc_acme", "tok-acme", name="Acme Dental", clock=clock or FakeClock(1000.0), **options
    )
    return fake, [
        fake.default,
        fake.add_location("loc_bolt", "tok-bolt", name="Bolt Gyms"),
        fake.add_location("loc_cove", "tok-cove", name="Cove Spa"),
    ]


def call(
    fake: FakeGHL,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, list[str]] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}", "Version": "2021-07-28"}
    raw = b"" if body is None else json.dumps(body).encode()
    return fake.handle(method, path, query or {}, headers, raw)


def upsert(fake: FakeGHL, loc: GHLLocation, **fields: Any) -> dict[str, Any]:
    body = {"locationId": loc.location_id, **fields}
    status, _, answer = call(fake, loc.token, "POST", "/contacts/upsert", body)
    assert status == 200, answer
    return answer["contact"]


# --- each location answers its own token ------------------------------------------------------


def test_each_location_keeps_its_own_contacts_and_configuration() -> None:
    fake, (acme, bolt, cove) = agency()
    acme_field = acme.add_custom_field("icebreaker", "Icebreaker")
    bolt_field = bolt.add_custom_field("icebreaker", "Icebreaker")
    bolt.add_workflow("Bolt follow-up")
    cove.add_pipeline("Cove sales", ["Replied"])

    in_acme = upsert(fake, acme, email="ann@example.com", tags=["acme-replied"])
    in_bolt = upsert(fake, bolt, email="ann@example.com", tags=["bolt-replied"])

    # The same email in two clients is two contacts, each with its own tags.
    assert in_acme["id"] != in_bolt["id"]
    assert in_acme["locationId"] == "loc_acme" and in_bolt["locationId"] == "loc_bolt"
    assert acme.contact_by_email("ann@example.com")["tags"] == ["acme-replied"]
    assert bolt.contact_by_email("ann@example.com")["tags"] == ["bolt-replied"]
    assert cove.contacts == {}
    assert fake.contacts is acme.contacts  # the single-location attributes are the default's

    fields = call(fake, "tok-bolt", "GET", "/locations/loc_bolt/customFields")[2]
    assert [f["id"] for f in fields["customFields"]] == [bolt_field] != [acme_field]
    workflows = call(fake, "tok-acme", "GET", "/workflows/", query={"locationId": ["loc_acme"]})
    assert workflows[:1] == (200,) and workflows[2]["workflows"] == []
    pipelines = call(
        fake, "tok-cove", "GET", "/opportunities/pipelines", query={"locationId": ["loc_cove"]}
    )[2]["pipelines"]
    assert [p["name"] for p in pipelines] == ["Cove sales"]
    location = call(fake, "tok-cove", "GET", "/locations/loc_cove")[2]["location"]
    assert (location["id"], location["name"]) == ("loc_cove", "Cove Spa")

    assert [c.location for c in fake.calls] == [
        "loc_acme",
        "loc_bolt",
        "loc_bolt",
        "loc_acme",
        "loc_cove",
        "loc_cove",
    ]
    assert bolt.counts() == {
        "POST /contacts/upsert": 1,
        "GET /locations/{locationId}/customFields": 1,
    }
    assert fake.violations == []
    fake.assert_no_cross_location_calls()


def test_calls_by_contact_id_go_to_the_contacts_location() -> None:
    fake, (acme, bolt, _) = agency()
    contact_id = upsert(fake, bolt, email="bo@example.com")["id"]

    assert (
        call(fake, "tok-bolt", "POST", f"/contacts/{contact_id}/tags", {"tags": ["Hot"]})[0] == 201
    )
    assert call(fake, "tok-bolt", "PUT", f"/contacts/{contact_id}", {"dnd": True})[0] == 200
    assert call(fake, "tok-bolt", "POST", f"/contacts/{contact_id}/notes", {"body": "hi"})[0] == 201

    assert bolt.contacts[contact_id]["tags"] == ["hot"]
    assert bolt.contacts[contact_id]["dnd"] is True
    assert [n["body"] for n in bolt.notes[contact_id]] == ["hi"]
    assert len(bolt.calls) == 4 and acme.calls == []
    fake.assert_no_cross_location_calls()


def test_a_token_no_location_has_is_401_in_every_location() -> None:
    fake, _ = agency()
    status, headers, answer = call(fake, "tok-nobody", "GET", "/locations/loc_bolt")
    assert (status, headers, answer["statusCode"]) == (401, {}, 401)
    assert fake.violations == []  # a bad token is the auth pause's business, not a crossing


# --- crossing locations ----------------------------------------------------------------------


def test_a_token_used_for_another_location_is_403_and_recorded() -> None:
    fake, (acme, bolt, _) = agency()

    status, headers, answer = call(
        fake, "tok-acme", "POST", "/contacts/upsert", {"locationId": "loc_bolt", "email": "x@y.z"}
    )

    assert status == 403
    assert answer == {"statusCode": 403, "message": NO_ACCESS}
    assert answer["message"].startswith("The token does not have access to this location")
    assert acme.contacts == {} and bolt.contacts == {}
    [violation] = fake.violations
    assert (violation.token_location, violation.location) == ("loc_acme", "loc_bolt")
    assert (violation.method, violation.path) == ("POST", "/contacts/upsert")
    with pytest.raises(AssertionError, match="POST /contacts/upsert with loc_acme's token"):
        fake.assert_no_cross_location_calls()


@pytest.mark.parametrize(
    ("method", "path", "body", "query"),
    [
        ("GET", "/locations/loc_bolt", None, None),
        ("GET", "/locations/loc_bolt/customFields", None, {"model": ["contact"]}),
        ("GET", "/workflows/", None, {"locationId": ["loc_bolt"]}),
        ("GET", "/opportunities/pipelines", None, {"locationId": ["loc_bolt"]}),
        ("GET", "/opportunities/search", None, {"location_id": ["loc_bolt"]}),
        (
            "POST",
            "/opportunities/",
            {"locationId": "loc_bolt", "pipelineId": "p", "name": "A", "status": "open"},
            None,
        ),
        (
            "POST",
            "/contacts/bulk/tags/update/add",
            {"contacts": [], "tags": ["a"], "locationId": "loc_bolt"},
            None,
        ),
    ],
)
def test_every_endpoint_that_names_a_location_checks_the_token(
    method: str, path: str, body: Any, query: dict[str, list[str]] | None
) -> None:
    fake, _ = agency()
    status, _, answer = call(fake, "tok-cove", method, path, body, query)
    assert (status, answer["message"]) == (403, NO_ACCESS)
    assert [(v.token_location, v.location) for v in fake.violations] == [("loc_cove", "loc_bolt")]


def test_another_locations_contact_id_is_403_and_recorded() -> None:
    fake, (acme, bolt, _) = agency()
    contact_id = upsert(fake, bolt, email="bo@example.com")["id"]
    bolt.delete_contact(contact_id)  # still bolt's id: deleting it does not make it acme's

    for method, path, body in [
        ("PUT", f"/contacts/{contact_id}", {"dnd": True}),
        ("POST", f"/contacts/{contact_id}/tags", {"tags": ["a"]}),
        ("GET", f"/contacts/{contact_id}/notes", None),
    ]:
        assert call(fake, "tok-acme", method, path, body)[0] == 403, path

    assert [(v.token_location, v.location) for v in fake.violations] == [
        ("loc_acme", "loc_bolt")
    ] * 3
    # Recorded under the location whose token was sent, whose client made the mistake.
    assert [c.status for c in acme.calls] == [403] * 3 and len(bolt.calls) == 1


def test_another_locations_opportunity_id_is_403_and_recorded() -> None:
    fake, (_, bolt, _) = agency()
    pipeline = bolt.add_pipeline("Sales", ["Replied", "Won"])
    contact_id = upsert(fake, bolt, email="bo@example.com")["id"]
    body = {
        "locationId": "loc_bolt",
        "pipelineId": pipeline["id"],
        "name": "Bo",
        "status": "open",
        "contactId": contact_id,
    }
    status, _, created = call(fake, "tok-bolt", "POST", "/opportunities/", body)
    assert status == 201
    path = f"/opportunities/{created['opportunity']['id']}"

    assert call(fake, "tok-cove", "PUT", path, {"status": "won"})[0] == 403
    assert call(fake, "tok-bolt", "PUT", path, {"status": "won"})[0] == 200
    assert [(v.method, v.token_location, v.location) for v in fake.violations] == [
        ("PUT", "loc_cove", "loc_bolt")
    ]


def test_an_unknown_location_id_is_403_and_recorded() -> None:
    fake, _ = agency()
    status, _, _ = call(fake, "tok-acme", "GET", "/locations/loc_gone")
    assert status == 403
    [violation] = fake.violations
    assert (violation.location, violation.reason) == ("loc_gone", "named location 'loc_gone'")


def test_ids_of_another_location_inside_a_request_are_recorded() -> None:
    fake, (acme, bolt, _) = agency()
    bolt_field = bolt.add_custom_field("icebreaker", "Icebreaker")
    bolt_workflow = bolt.add_workflow("Follow-up")
    bolt_pipeline = bolt.add_pipeline("Sales", ["Replied"])
    bolt_contact = upsert(fake, bolt, email="bo@example.com")["id"]
    acme_contact = upsert(
        fake, acme, email="an@example.com", customFields=[{"id": bolt_field, "field_value": "hi"}]
    )
    opportunity = {
        "locationId": "loc_acme",
        "pipelineId": bolt_pipeline["id"],
        "name": "An",
        "status": "open",
        "contactId": acme_contact["id"],
    }

    # GHL ignores a field id it does not know; the fake does too, and records it.
    assert acme_contact["customFields"] == []
    workflow = call(
        fake, "tok-acme", "POST", f"/contacts/{acme_contact['id']}/workflow/{bolt_workflow}", {}
    )
    assert workflow[:1] == (400,) and workflow[2]["message"] == "Workflow not found"
    assert call(fake, "tok-acme", "POST", "/opportunities/", opportunity)[0] == 400
    bulk = call(
        fake,
        "tok-acme",
        "POST",
        "/contacts/bulk/tags/update/add",
        {"contacts": [acme_contact["id"], bolt_contact], "tags": ["Hot"], "locationId": "loc_acme"},
    )[2]
    assert (bulk["succeded"], bulk["errorCount"]) == (False, 1)
    assert bulk["responses"][1] == {
        "contactId": bolt_contact,
        "message": "contact does not belong to location",
        "type": "error",
    }
    assert bolt.contacts[bolt_contact]["tags"] == []

    assert [v.reason for v in fake.violations] == [
        f"sent custom field {bolt_field} of another location",
        f"sent workflow {bolt_workflow} of another location",
        f"sent pipeline {bolt_pipeline['id']} of another location",
        f"sent contact {bolt_contact} of another location",
    ]
    assert {(v.token_location, v.location) for v in fake.violations} == {("loc_acme", "loc_bolt")}


def test_bulk_tags_add_and_remove_within_a_location() -> None:
    fake, (acme, _, _) = agency()
    ids = [upsert(fake, acme, email=f"{n}@example.com", tags=["old"])["id"] for n in "ab"]
    acme.delete_contact(ids[1])
    body = {"contacts": [*ids, "nope"], "tags": ["New"], "locationId": "loc_acme"}

    status, _, added = call(fake, "tok-acme", "POST", "/contacts/bulk/tags/update/add", body)
    assert status == 201
    assert [(r["type"], r["message"]) for r in added["responses"]] == [
        ("success", "Tags updated"),
        ("error", "contact is deleted"),
        ("error", "contact not found"),
    ]
    assert added["responses"][0]["tagsAdded"] == ["new"]
    assert acme.contacts[ids[0]]["tags"] == ["old", "new"]

    body = {"contacts": [ids[0]], "tags": ["old"], "locationId": "loc_acme"}
    removed = call(fake, "tok-acme", "POST", "/contacts/bulk/tags/update/remove", body)[2]
    assert removed["responses"][0]["tagsRemoved"] == ["old"]
    assert acme.contacts[ids[0]]["tags"] == ["new"]
    fake.assert_no_cross_location_calls()


# --- outages and budgets stay within a location ---------------------------------------------


def test_one_locations_outage_leaves_the_others_answering() -> None:
    clock = FakeClock(1000.0)
    fake, (acme, bolt, cove) = agency(clock)
    bolt.fail_for(30.0, 503, retry_after=5)
    cove.fail_next(1, 502)

    assert call(fake, "tok-bolt", "GET", "/locations/loc_bolt")[:2] == (503, {"Retry-After": "5"})
    assert call(fake, "tok-acme", "GET", "/locations/loc_acme")[0] == 200
    assert call(fake, "tok-cove", "GET", "/locations/loc_cove")[0] == 502
    assert call(fake, "tok-cove", "GET", "/locations/loc_cove")[0] == 200
    clock.now += 29.9
    assert call(fake, "tok-bolt", "GET", "/locations/loc_bolt")[0] == 503
    clock.now += 0.1
    assert call(fake, "tok-bolt", "GET", "/locations/loc_bolt")[0] == 200
    assert [c.status for c in bolt.calls] == [503, 503, 200]


def test_the_default_locations_faults_are_the_single_location_ones() -> None:
    fake, (acme, bolt, _) = agency()
    fake.fail_next(1, 500)
    assert call(fake, "tok-bolt", "GET", "/locations/loc_bolt")[0] == 200
    assert call(fake, "tok-acme", "GET", "/locations/loc_acme")[0] == 500


def test_each_location_has_its_own_burst_window() -> None:
    clock = FakeClock(1000.0)
    fake, (acme, bolt, _) = agency(clock, rate_limit=(3, 10.0))
    answers = [call(fake, "tok-acme", "GET", "/locations/loc_acme") for _ in range(4)]

    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    assert [h["X-RateLimit-Remaining"] for _, h, _ in answers] == ["2", "1", "0", "0"]
    assert answers[3][1]["Retry-After"] == "10"
    status, headers, _ = call(fake, "tok-bolt", "GET", "/locations/loc_bolt")
    assert (status, headers["X-RateLimit-Remaining"], headers["X-RateLimit-Max"]) == (200, "2", "3")
    assert bolt.rate_limit == (3, 10.0)  # added locations take the default's limits
    clock.now += 10.0
    assert call(fake, "tok-acme", "GET", "/locations/loc_acme")[0] == 200


def test_every_answer_carries_its_locations_rate_headers() -> None:
    fake, (acme, bolt, _) = agency()
    call(fake, "tok-acme", "GET", "/locations/loc_acme")
    call(fake, "tok-acme", "GET", "/contacts/unknown")  # a 400 carries them too

    status, headers, _ = call(fake, "tok-bolt", "GET", "/locations/loc_bolt")
    assert status == 200
    # No burst limit was set: GHL's 100 / 10 s is reported, not enforced.
    assert {name: headers[name] for name in RATE_HEADERS} == {
        "X-RateLimit-Max": "100",
        "X-RateLimit-Remaining": "99",
        "X-RateLimit-Interval-Milliseconds": "10000",
        "X-RateLimit-Limit-Daily": "200000",
        "X-RateLimit-Daily-Remaining": "199999",
    }
    assert acme.rate_headers()["X-RateLimit-Daily-Remaining"] == "199998"
    assert set(RATE_HEADERS) <= set(call(fake, "tok-acme", "GET", "/contacts/unknown")[1])


def test_a_spent_daily_budget_is_429_until_the_day_is_over() -> None:
    clock = FakeClock(1000.0)
    fake, (acme, bolt, _) = agency(clock, daily_limit=3)
    bolt.daily_limit = 5
    for _ in range(3):
        clock.now += 60
        assert call(fake, "tok-acme", "GET", "/locations/loc_acme")[0] == 200

    status, headers, answer = call(fake, "tok-acme", "GET", "/locations/loc_acme")
    assert (status, answer["statusCode"]) == (429, 429)
    assert headers["X-RateLimit-Daily-Remaining"] == "0"
    assert headers["X-RateLimit-Limit-Daily"] == "3"
    assert headers["Retry-After"] == str(round(DAY_SECONDS - 120))  # the day began 2 min ago
    status, headers, _ = call(fake, "tok-bolt", "GET", "/locations/loc_bolt")
    assert (status, headers["X-RateLimit-Daily-Remaining"]) == (200, "4")

    clock.now += DAY_SECONDS
    assert call(fake, "tok-acme", "GET", "/locations/loc_acme")[0] == 200


def test_a_short_day_spends_and_comes_back_within_seconds() -> None:
    clock = FakeClock(1000.0)
    fake = FakeGHL("loc_acme", "tok-acme", clock=clock, daily_limit=2, day_seconds=30)
    bolt = fake.add_location("loc_bolt", "tok-bolt")  # the default location's day
    cove = fake.add_location("loc_cove", "tok-cove", daily_limit=1, day_seconds=5)
    assert (bolt.daily_limit, bolt.day_seconds, cove.day_seconds) == (2, 30, 5)
    assert [call(fake, "tok-acme", "GET", "/locations/loc_acme")[0] for _ in range(2)] == [200] * 2
    clock.now += 10
    status, headers, _ = call(fake, "tok-acme", "GET", "/locations/loc_acme")
    assert (status, headers["Retry-After"], headers["X-RateLimit-Daily-Remaining"]) == (
        429,
        "20",  # the day began 10 s ago and lasts 30
        "0",
    )
    assert call(fake, "tok-cove", "GET", "/locations/loc_cove")[0] == 200
    clock.now += 5  # cove's 5 s day is over; acme's is not
    assert call(fake, "tok-cove", "GET", "/locations/loc_cove")[0] == 200
    assert call(fake, "tok-acme", "GET", "/locations/loc_acme")[0] == 429
    assert fake.default.snapshot()["daily_remaining"] == 0

    clock.now += 15  # 30 s since acme's first request: a new day, its budget whole again
    assert fake.default.snapshot()["daily_remaining"] == 2
    status, headers, _ = call(fake, "tok-acme", "GET", "/locations/loc_acme")
    assert (status, headers["X-RateLimit-Daily-Remaining"]) == (200, "1")
    # The new day began with that request: its end is 30 s from now, not from the first day.
    call(fake, "tok-acme", "GET", "/locations/loc_acme")
    clock.now += 29
    assert call(fake, "tok-acme", "GET", "/locations/loc_acme")[1]["Retry-After"] == "1"


def test_a_day_must_last_some_time() -> None:
    with pytest.raises(ValueError, match="day_seconds must be above 0"):
        FakeGHL(day_seconds=0)
    fake = FakeGHL()
    with pytest.raises(ValueError, match="day_seconds must be above 0"):
        fake.add_location("loc_b", "tok-b", day_seconds=float("nan"))
    assert fake.default.day_seconds == DAY_SECONDS


# --- through the bridge's client and over HTTP ----------------------------------------------


def test_one_client_per_location_through_responses_crosses_nothing() -> None:
    fake, locations = agency(validate=True)
    with installed(fake):
        for loc in locations:
            client = GHLClient(GHL_BASE_URL, loc.token, loc.location_id)
            contact_id, created = client.upsert_contact({"email": "ann@example.com"})
            client.add_tags(contact_id, [f"{loc.location_id}-replied"])
            assert created is True
            assert client.get_location()["location"]["id"] == loc.location_id
    # installed() has checked the spec and crossings on leaving.
    assert [loc.contact_by_email("ann@example.com")["tags"] for loc in locations] == [
        ["loc_acme-replied"],
        ["loc_bolt-replied"],
        ["loc_cove-replied"],
    ]


def test_a_client_with_the_wrong_token_fails_the_test_on_leaving() -> None:
    fake, _ = agency()
    leaving = pytest.raises(AssertionError, match="cross-location GHL calls")
    with leaving, installed(fake):
        client = GHLClient(GHL_BASE_URL, "tok-acme", "loc_cove")
        with pytest.raises(GHLAuthError, match="does not have access"):
            client.upsert_contact({"email": "ann@example.com"})


def test_over_http_locations_are_set_up_broken_and_read_by_id() -> None:
    fake = FakeGHL("loc_acme", "tok-acme")
    with FakeGHLServer(fake) as server, requests.Session() as http:
        added = http.post(
            f"{server.url}/_fake/locations",
            json={"location_id": "loc_bolt", "token": "tok-bolt", "name": "Bolt"},
        )
        assert added.json() == {"location_id": "loc_bolt", "name": "Bolt"}
        field = http.post(
            f"{server.url}/_fake/custom-fields",
            json={"location": "loc_bolt", "field_key": "icebreaker", "name": "Icebreaker"},
        ).json()["id"]
        assert http.post(
            f"{server.url}/_fake/faults",
            json={"location": "loc_bolt", "status": 503, "seconds": 60},
        ).json() == {"ok": True}
        unknown = http.post(
            f"{server.url}/_fake/faults", json={"location": "x", "status": 503, "seconds": 1}
        )
        assert unknown.status_code == 400 and "no location x" in unknown.json()["error"]

        acme = GHLClient(server.url, "tok-acme", "loc_acme")
        bolt = GHLClient(server.url, "tok-bolt", "loc_bolt")
        assert acme.upsert_contact({"email": "ann@example.com"})[1] is True
        with pytest.raises(GHLTransient):
            bolt.custom_fields()
        fake.location("loc_bolt").fail_for(0, 503)  # the outage is over
        assert [f["id"] for f in bolt.custom_fields()] == [field]

        state = http.get(f"{server.url}/_fake/state", params={"location": "loc_bolt"}).json()
        assert (state["location_id"], state["calls"], state["contacts"]) == ("loc_bolt", 2, [])
        everything = http.get(f"{server.url}/_fake/state").json()
        assert sorted(everything["locations"]) == ["loc_acme", "loc_bolt"]
        assert everything["violations"] == []


def test_the_server_fails_the_test_on_leaving_after_a_crossing() -> None:
    fake = FakeGHL("loc_acme", "tok-acme")
    fake.add_location("loc_bolt", "tok-bolt")
    leaving = pytest.raises(AssertionError, match="GET /locations/loc_bolt with loc_acme's token")
    with leaving, FakeGHLServer(fake) as server:
        headers = {"Authorization": "Bearer tok-acme", "Version": "2021-07-28"}
        answer = requests.get(f"{server.url}/locations/loc_bolt", headers=headers, timeout=5)
        assert answer.status_code == 403
    assert fake.location("loc_bolt").calls == []  # the 403 never reached bolt


def test_a_single_location_fake_is_unchanged() -> None:
    fake = FakeGHL()
    assert [loc.location_id for loc in fake.locations] == ["loc_test"]
    assert (fake.location_id, fake.token, fake.default.name) == (
        "loc_test",
        "ghl-test-token",
        "Test Location",
    )
    with pytest.raises(ValueError, match="already"):
        fake.add_location("loc_other", "ghl-test-token")
    with pytest.raises(ValueError, match="already"):
        fake.add_location("loc_test", "another-token")


def test_over_http_an_added_location_may_have_its_own_limits() -> None:
    fake = FakeGHL("loc_acme", "tok-acme", rate_limit=(100, 10.0))
    with FakeGHLServer(fake) as server, requests.Session() as http:
        body = {"location_id": "loc_bolt", "token": "tok-bolt", "rate_limit": None}
        assert http.post(f"{server.url}/_fake/locations", json=body).status_code == 200
        body = {
            "location_id": "loc_cove",
            "token": "tok-cove",
            "rate_limit": [2, 5],
            "daily_limit": 9,
        }
        assert http.post(f"{server.url}/_fake/locations", json=body).status_code == 200
        again = http.post(f"{server.url}/_fake/locations", json=body)
        assert again.status_code == 400 and "already exists" in again.json()["error"]
        assert http.post(f"{server.url}/_fake/locations", json={"token": "t"}).status_code == 400
    assert fake.location("loc_bolt").rate_limit is None
    assert fake.location("loc_bolt").daily_limit == 200_000
    cove = fake.location("loc_cove")
    assert (cove.rate_limit, cove.daily_limit) == ((2, 5.0), 9)


def test_over_http_an_added_location_may_have_its_own_day() -> None:
    fake = FakeGHL("loc_acme", "tok-acme", day_seconds=40)
    with FakeGHLServer(fake) as server, requests.Session() as http:
        body = {"location_id": "loc_bolt", "token": "tok-bolt", "day_seconds": 2.5}
        assert http.post(f"{server.url}/_fake/locations", json=body).status_code == 200
        body = {"location_id": "loc_cove", "token": "tok-cove"}
        assert http.post(f"{server.url}/_fake/locations", json=body).status_code == 200
        body = {"location_id": "loc_dune", "token": "tok-dune", "day_seconds": -1}
        refused = http.post(f"{server.url}/_fake/locations", json=body)
        assert refused.status_code == 400 and "day_seconds" in refused.json()["error"]
    assert fake.location("loc_bolt").day_seconds == 2.5
    assert fake.location("loc_cove").day_seconds == 40
    assert [loc.location_id for loc in fake.locations] == ["loc_acme", "loc_bolt", "loc_cove"]


def test_the_module_serves_a_short_day_from_the_command_line() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.ghl_server",
            "--port",
            "0",
            "--daily-limit",
            "1",
            "--day-seconds",
            "1",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = next(w for w in process.stdout.readline().split() if w.startswith("http://"))
        headers = {"Authorization": "Bearer ghl-test-token", "Version": "2021-07-28"}
        with requests.Session() as http:
            first = http.get(f"{url}/locations/loc_test", headers=headers, timeout=5)
            spent = http.get(f"{url}/locations/loc_test", headers=headers, timeout=5)
            assert (first.status_code, spent.status_code) == (200, 429)
            assert spent.headers["Retry-After"] == "1"
            time.sleep(float(spent.headers["Retry-After"]) + 0.1)
            back = http.get(f"{url}/locations/loc_test", headers=headers, timeout=5)
            assert (back.status_code, back.headers["X-RateLimit-Daily-Remaining"]) == (200, "0")
    finally:
        process.terminate()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def test_the_command_line_refuses_a_day_of_no_length() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.ghl_server", "--port", "0", "--day-seconds", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "give seconds above 0, not 0" in done.stderr


def test_the_module_serves_extra_locations_from_the_command_line() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.ghl_server",
            "--port",
            "0",
            "--daily-limit",
            "50",
            "--location",
            "loc_bolt:tok-bolt:Bolt Gyms",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = next(w for w in process.stdout.readline().split() if w.startswith("http://"))
        headers = {"Authorization": "Bearer tok-bolt", "Version": "2021-07-28"}
        answer = requests.get(f"{url}/locations/loc_bolt", headers=headers, timeout=5)
        assert answer.json()["location"]["name"] == "Bolt Gyms"
        assert answer.headers["X-RateLimit-Daily-Remaining"] == "49"
        crossed = requests.get(f"{url}/locations/loc_test", headers=headers, timeout=5)
        assert crossed.status_code == 403
        state = requests.get(f"{url}/_fake/state", timeout=5).json()
        assert state["violations"] == [
            "GET /locations/loc_test with loc_bolt's token: addressed another location (loc_test)"
        ]
    finally:
        process.terminate()
        process.wait(timeout=5)
        process.stdout.close()


def test_the_fake_ghl_fixture_takes_more_locations(fake_ghl: FakeGHL) -> None:
    bolt = fake_ghl.add_location("loc_bolt", "tok-bolt")
    client = GHLClient(GHL_BASE_URL, bolt.token, bolt.location_id)
    contact_id, _ = client.upsert_contact({"email": "bo@example.com"})
    client.create_note(contact_id, "Replied")
    assert [n["body"] for n in bolt.notes[contact_id]] == ["Replied"]
    assert fake_ghl.contacts == {}
    # The fixture checks on teardown that no call crossed locations.
