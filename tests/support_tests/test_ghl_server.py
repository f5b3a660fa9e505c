"""FakeGHLServer: the fake over real HTTP, with its /_fake/ control endpoints."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import requests

from bridge.clients.ghl import GHLClient
from tests.support.clock import FakeClock
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer
from tests.support.threads import map_in_threads

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADERS = {"Authorization": "Bearer ghl-test-token", "Version": "2021-07-28"}


def test_round_trip_and_state() -> None:
    with FakeGHLServer() as server, requests.Session() as http:
        http.headers.update(HEADERS)
        answer = http.post(
            f"{server.url}/contacts/upsert",
            json={"locationId": "loc_test", "email": "a@example.com"},
        )
        assert answer.status_code == 200
        contact_id = answer.json()["contact"]["id"]
        tags = http.post(f"{server.url}/contacts/{contact_id}/tags", json={"tags": ["Replied"]})
        assert (tags.status_code, tags.json()) == (201, {"tags": ["replied"]})
        bogus = http.post(f"{server.url}/contacts/upsert", json={"locationId": "loc_test", "x": 1})
        assert bogus.status_code == 422

        state = http.get(f"{server.url}/_fake/state").json()
        assert [c["id"] for c in state["contacts"]] == [contact_id]
        assert state["counts"] == {
            "POST /contacts/upsert": 2,
            "POST /contacts/{contactId}/tags": 1,
        }
        assert state["spec_errors"] == ["POST /contacts/upsert: body: property x should not exist"]

        assert http.post(f"{server.url}/_fake/reset").json() == {"ok": True}
        state = http.get(f"{server.url}/_fake/state").json()
        assert (state["contacts"], state["counts"], state["spec_errors"]) == ([], {}, [])


def test_faults_through_the_control_endpoint() -> None:
    clock = FakeClock(50.0)
    with FakeGHLServer(FakeGHL(clock=clock)) as server, requests.Session() as http:
        http.headers.update(HEADERS)
        location = f"{server.url}/locations/loc_test"

        http.post(f"{server.url}/_fake/faults", json={"fail_next": 1, "status": 500})
        assert http.get(location).status_code == 500
        assert http.get(location).status_code == 200

        fault = {"status": 503, "seconds": 5, "retry_after": 2}
        assert http.post(f"{server.url}/_fake/faults", json=fault).status_code == 200
        outage = http.get(location)
        assert (outage.status_code, outage.headers["Retry-After"]) == (503, "2")
        clock.now += 5
        assert http.get(location).status_code == 200

        bad = http.post(f"{server.url}/_fake/faults", json={"status": 503})
        assert bad.status_code == 400


def test_a_request_cut_off_mid_body_is_not_acted_on() -> None:
    with FakeGHLServer() as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                b"POST /contacts/upsert HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer ghl-test-token\r\nVersion: 2021-07-28\r\n"
                b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                b'{"locationId": "loc_test", "email": "cut@example.com"'
            )
            sock.shutdown(socket.SHUT_WR)  # the client dies before the rest of the body
            assert sock.recv(1024) == b""  # the fake hangs up without an answer
        assert server.fake.calls == [] and server.fake.spec_errors == []
        assert server.fake.contacts == {}


def test_rate_limit_headers_over_http() -> None:
    with FakeGHLServer(FakeGHL(rate_limit=(2, 60.0))) as server, requests.Session() as http:
        http.headers.update(HEADERS)
        location = f"{server.url}/locations/loc_test"
        assert http.get(location).headers["X-RateLimit-Remaining"] == "1"
        assert http.get(location).headers["X-RateLimit-Remaining"] == "0"
        limited = http.get(location)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_bridge_client_against_the_server_from_many_threads() -> None:
    with FakeGHLServer() as server:
        field = requests.post(
            f"{server.url}/_fake/custom-fields",
            json={"field_key": "contact.icebreaker", "name": "Icebreaker"},
        ).json()["id"]
        client = GHLClient(server.url, "ghl-test-token", "loc_test")

        def sync(n: int) -> str:
            email = f"lead{n}@example.com"
            contact_id, _ = client.upsert_contact(
                {"email": email, "customFields": [{"id": field, "field_value": str(n)}]}
            )
            client.add_tags(contact_id, ["replied"])
            return contact_id

        ids = map_in_threads(sync, range(24), max_workers=8)
        client.session.close()

        assert len(set(ids)) == 24
        assert server.fake.spec_errors == []
        assert server.fake.counts() == {
            "POST /contacts/upsert": 24,
            "POST /contacts/{contactId}/tags": 24,
        }
        assert server.fake.contact_by_email("lead7@example.com")["customFields"] == [
            {"id": field, "value": "7"}
        ]


def test_runs_as_a_module_and_prints_how_to_point_the_bridge_at_it() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ghl_server", "--port", "0", "--rate-limit", "100/10"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(5)]
        url = next(word for word in lines[0].split() if word.startswith("http://"))
        assert url.startswith("http://127.0.0.1:")
        assert f"export GHL_BASE_URL={url}" in lines
        assert "export GHL_TOKEN=ghl-test-token" in lines
        assert "export GHL_LOCATION_ID=loc_test" in lines
        answer = requests.get(f"{url}/locations/loc_test", headers=HEADERS, timeout=5)
        assert answer.headers["X-RateLimit-Max"] == "100"
    finally:
        process.terminate()
        process.wait(timeout=5)
        process.stdout.close()
