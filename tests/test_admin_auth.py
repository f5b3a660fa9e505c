"""The config page's door: login, sessions, CSRF, slowing down password guessing."""

from __future__ import annotations

import pytest

from bridge import create_app
from bridge.config import load_config
from bridge.events.webhook import from_webhook
from bridge.store import inbox
from bridge.web.admin import throttle
from tests.helpers import reply_payload
from tests.web_helpers import ADMIN_PASSWORD, CSRF_RE, csrf_token, login, post

pytestmark = pytest.mark.admin

PAGES = ["/", "/events", "/events/1", "/dead", "/settings", "/settings/export"]
FORMS = [
    "/events/1/replay",
    "/dead/replay",
    "/reconcile",
    "/doctor",
    "/instantly-webhooks",
    "/settings",
    "/settings/import",
    "/settings/refresh-lists",
]


@pytest.fixture
def event_id(db):
    return inbox.enqueue(db, from_webhook(reply_payload())).event_id


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_a_stranger_to_the_login(client, event_id, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.location.startswith("/login?next=")


@pytest.mark.parametrize("path", FORMS)
def test_every_form_refuses_a_stranger_even_with_a_csrf_token(client, db, event_id, path):
    response = client.post(path, data={"csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert response.location.startswith("/login")
    assert inbox.get(db, event_id)["status"] == "pending"


@pytest.mark.parametrize("path", FORMS + ["/logout"])
def test_every_form_refuses_a_post_without_csrf_token(client, event_id, path):
    login(client)
    response = client.post(path, data={"url": "https://x.example"})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)


def test_login_itself_needs_the_csrf_token(client):
    response = client.post("/login", data={"password": ADMIN_PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_right_password_opens_every_page(client, event_id):
    response = login(client)
    assert (response.status_code, response.location) == (302, "/")
    for path in PAGES:
        assert client.get(path).status_code == 200, path


def test_login_returns_to_the_page_asked_for_but_never_off_site(client):
    token = csrf_token(client)
    asked = client.post(
        "/login", data={"password": ADMIN_PASSWORD, "csrf_token": token, "next": "/dead"}
    )
    assert asked.location == "/dead"
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    token = csrf_token(client)
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = client.post(
            "/login", data={"password": ADMIN_PASSWORD, "csrf_token": token, "next": evil}
        )
        assert response.location == "/", evil
        client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
        token = csrf_token(client)


def test_wrong_password_is_refused_with_a_message(client):
    response = login(client, "not-it")
    assert response.status_code == 401
    assert "Wrong password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_login_starts_a_new_session(client):
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    login(client)
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.permanent


def test_session_cookie_is_httponly_and_samesite_lax(client):
    login(client)
    cookie = client.get_cookie("session")
    assert cookie.http_only
    assert cookie.same_site == "Lax"


def test_logout_ends_the_session(client):
    login(client)
    response = client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert response.location == "/login"
    assert client.get("/").status_code == 302


def test_a_copied_session_cookie_is_refused_after_logout(app, client):
    login(client)
    copy = app.test_client()
    copy.set_cookie("session", client.get_cookie("session").value)
    assert copy.get("/").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert copy.get("/").status_code == 302
    assert login(client).status_code == 302
    assert client.get("/").status_code == 200


def session_cookie_of_login(client, url: str, headers: dict | None = None) -> str:
    """The Set-Cookie header a login at `url` answers with (over https Flask-WTF also wants
    a Referer from the same site)."""
    headers = {"Referer": f"{url.replace('http:', 'https:')}/login", **(headers or {})}
    page = client.get("/login", base_url=url, headers=headers).get_data(as_text=True)
    token = CSRF_RE.search(page).group(1)
    response = client.post(
        "/login",
        base_url=url,
        headers=headers,
        data={"password": ADMIN_PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    return cookie


def test_session_cookie_is_secure_over_https_and_not_over_http(app):
    assert "Secure" in session_cookie_of_login(app.test_client(), "https://bridge.example.com")
    assert "Secure" not in session_cookie_of_login(app.test_client(), "http://bridge.example.com")


def test_session_cookie_is_secure_when_the_public_url_is_https(env, db):
    config = load_config({**env, "BRIDGE_PUBLIC_URL": "https://bridge.example.com"})
    client = create_app({"BRIDGE_CONFIG": config, "TESTING": True}).test_client()
    assert "Secure" in session_cookie_of_login(client, "http://localhost")


@pytest.mark.parametrize(("proxies", "secure"), [("1", True), ("0", False)])
def test_session_cookie_is_secure_when_a_trusted_proxy_says_https(env, db, proxies, secure):
    config = load_config({**env, "BRIDGE_TRUSTED_PROXIES": proxies})
    client = create_app({"BRIDGE_CONFIG": config, "TESTING": True}).test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"}
    cookie = session_cookie_of_login(client, "http://localhost", forwarded)
    assert ("Secure" in cookie) is secure


def test_changing_the_password_logs_everyone_out(env, db, client):
    login(client)
    assert client.get("/").status_code == 200
    changed = create_app(
        {
            "BRIDGE_CONFIG": load_config({**env, "BRIDGE_ADMIN_PASSWORD": "a-new-one"}),
            "TESTING": True,
        }
    )
    other = changed.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    assert other.get("/").status_code == 302


def test_without_an_admin_password_the_page_only_says_how_to_set_one(env, db):
    bare = {k: v for k, v in env.items() if k != "BRIDGE_ADMIN_PASSWORD"}
    app = create_app({"BRIDGE_CONFIG": load_config(bare), "TESTING": True})
    client = app.test_client()
    for path in ["/", "/login", "/settings", "/events"]:
        response = client.get(path)
        html = response.get_data(as_text=True)
        assert response.status_code == 503
        assert "BRIDGE_ADMIN_PASSWORD" in html
        assert "Dashboard" not in html and "Queue" not in html
    assert client.post("/login", data={"password": ""}).status_code in (400, 503)
    assert app.test_client().get("/healthz").status_code in (200, 503)
    assert app.test_client().get("/metrics").status_code == 200


def test_three_wrong_passwords_then_tries_are_slowed(app, client):
    now = [1000.0]
    app.config["BRIDGE_CLOCK"] = lambda: now[0]
    for _ in range(throttle.FREE_TRIES):
        assert login(client, "guess").status_code == 401
    blocked = login(client, ADMIN_PASSWORD)
    assert blocked.status_code == 429
    assert "Wait 2 seconds" in blocked.get_data(as_text=True)
    assert blocked.headers["Retry-After"] == "2"
    now[0] += throttle.FIRST_WAIT_SECONDS + 0.1
    assert login(client, ADMIN_PASSWORD).status_code == 302


def test_each_further_wrong_password_doubles_the_wait_up_to_a_minute():
    waits = [throttle.address_wait(count, 100.0, 100.0) for count in range(1, 12)]
    assert waits[:3] == [0.0, 0.0, 2.0]
    assert waits[3:6] == [4.0, 8.0, 16.0]
    assert waits[-1] == throttle.MAX_WAIT_SECONDS
    assert throttle.address_wait(0, 100.0, 100.0) == 0.0
    assert throttle.address_wait(11, 100.0, 100.0 + throttle.MAX_WAIT_SECONDS) == 0.0


def test_a_right_password_clears_the_count(app, client, db):
    app.config["BRIDGE_CLOCK"] = lambda: 5000.0
    login(client, "guess")
    login(client, "guess")
    assert login(client).status_code == 302
    assert (
        db.execute(
            "SELECT address FROM login_attempts WHERE address != ?", [throttle.EVERYONE]
        ).fetchall()
        == []
    )


def test_logged_in_forms_work_with_the_token(client, db, event_id):
    login(client)
    inbox.dead(db, event_id, "GHL 422: bad phone")
    response = post(client, f"/events/{event_id}/replay")
    assert response.status_code == 302
    assert inbox.get(db, event_id)["status"] == "pending"
