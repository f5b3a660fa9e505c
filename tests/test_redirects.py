"""Where the config page sends a browser after login or a replay: only to a path on this site,
whatever `next` holds (browsers drop tabs and newlines and read "\\" as "/")."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.events.webhook import from_webhook
from bridge.store import inbox
from bridge.web.admin.redirects import safe_next
from tests.helpers import reply_payload
from tests.web_helpers import csrf_token

pytestmark = pytest.mark.admin

# One "/" and then anything but another "/" or a backslash: a path on this site, never a host.
SAME_SITE_PATH = re.compile(r"^/(?![/\\])")
OFF_SITE = [
    "/\t/evil.example/phish",
    "/\n/evil.example",
    "/\r/evil.example",
    "/ /evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "//evil.example",
    "///evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    " /dead",
    "/dead\x00",
    "/dead\u2028",
    "",
]
# Characters that make a target ambiguous, mixed into short strings so hypothesis finds the
# tricky combinations, beside arbitrary text.
TRICKY = st.text(alphabet="/\\\t\n\r\x0b\x0c\x00\x7f \u00a0\u2028\u3000.:@%?#ex", max_size=8)
NEXT_VALUES = st.one_of(st.text(), TRICKY, TRICKY.map(lambda s: "/" + s))


@pytest.fixture
def dead_event(db):
    event_id = inbox.enqueue(db, from_webhook(reply_payload())).event_id
    inbox.dead(db, event_id, "GHL 422: bad")
    return event_id


def assert_same_site(location: str, default: str) -> None:
    assert location == default or SAME_SITE_PATH.match(location), location
    assert not any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in location), location


@pytest.mark.parametrize("target", OFF_SITE)
def test_an_off_site_or_odd_target_falls_back_to_the_default(target):
    assert safe_next(target, "/fallback") == "/fallback"


@pytest.mark.parametrize("target", ["/dead", "/events?status=dead&q=a%40b", "/events/3#x", "/"])
def test_a_path_on_this_site_is_kept(target):
    assert safe_next(target, "/fallback") == target


@pytest.mark.parametrize("target", ["/%09/evil.example/phish", "/%0a/x", "/%0d/x", "/%5cevil"])
def test_login_never_redirects_off_site_for_an_encoded_tab_or_newline(logged_in, target):
    response = logged_in.get(f"/login?next={target}")
    assert (response.status_code, response.location) == (302, "/")


def test_login_form_keeps_the_asked_page_and_drops_an_odd_one(client):
    token = csrf_token(client)
    response = client.post(
        "/login", data={"password": "wrong", "csrf_token": token, "next": "/\t/evil.example"}
    )
    assert 'name="next" value="/"' in response.get_data(as_text=True)


def test_replay_back_link_never_leads_off_site(logged_in, dead_event):
    token = csrf_token(logged_in, "/settings")
    response = logged_in.post(
        f"/events/{dead_event}/replay", data={"csrf_token": token, "next": "/\t/evil.example"}
    )
    assert (response.status_code, response.location) == (302, f"/events/{dead_event}")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(target=NEXT_VALUES)
def test_login_redirects_only_to_a_path_on_this_site_for_any_next(logged_in, target):
    response = logged_in.get("/login", query_string={"next": target})
    assert response.status_code == 302
    assert_same_site(response.location, "/")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(target=NEXT_VALUES)
def test_replay_redirects_only_to_a_path_on_this_site_for_any_next(
    logged_in, db, dead_event, target
):
    inbox.dead(db, dead_event, "GHL 422: bad")
    token = csrf_token(logged_in, "/settings")
    response = logged_in.post(
        f"/events/{dead_event}/replay", data={"csrf_token": token, "next": target}
    )
    assert response.status_code == 302
    assert_same_site(response.location, f"/events/{dead_event}")
