"""Slowing password guessing: each try counted before its password is checked, one small row
per address, a limit across all addresses, the client's address through a trusted proxy,
and a clear 503 when the count cannot be written."""

from __future__ import annotations

import hmac
import logging
import sqlite3
import time
from types import SimpleNamespace

import pytest
import sqlite_utils

from bridge import create_app
from bridge.config import ConfigError, load_config
from bridge.store import db as store
from bridge.store import state
from bridge.web.admin import auth, throttle
from tests.support.threads import map_in_threads
from tests.web_helpers import ADMIN_PASSWORD

pytestmark = pytest.mark.admin

START = 10_000.0


@pytest.fixture
def clock(app):
    now = [START]
    app.config["BRIDGE_CLOCK"] = lambda: now[0]
    return now


def attempts(db) -> dict[str, int]:
    return dict(db.execute("SELECT address, attempts FROM login_attempts"))


def try_password(client, password: str, address: str | None = None, forwarded: str = ""):
    """A login POST without the CSRF dance (the tests here switch CSRF off)."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    environ = {"REMOTE_ADDR": address} if address else {}
    return client.post("/login", data={"password": password}, headers=headers, environ_base=environ)


@pytest.fixture
def no_csrf(app):
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def test_parallel_wrong_passwords_are_checked_only_as_often_as_the_limit_allows(
    no_csrf, clock, monkeypatch
):
    checked = []

    def slow_compare(given, expected):
        # Every try that got past the limit is inside its check at the same time.
        checked.append(given)
        time.sleep(0.3)
        return hmac.compare_digest(given, expected)

    monkeypatch.setattr(auth, "hmac", SimpleNamespace(compare_digest=slow_compare, new=hmac.new))
    answers = map_in_threads(
        lambda _: try_password(no_csrf.test_client(), "guess").status_code, range(12), 12
    )
    store.forget_cached()
    assert len(checked) == throttle.FREE_TRIES
    assert sorted(answers) == [401] * throttle.FREE_TRIES + [429] * (12 - throttle.FREE_TRIES)


def test_each_address_is_one_small_row_and_expired_rows_go(no_csrf, db, clock):
    client = no_csrf.test_client()
    for n in range(20):
        assert try_password(client, "guess", f"203.0.113.{n}").status_code == 401
    try_password(client, "guess", "203.0.113.0")
    rows = attempts(db)
    assert rows.pop(throttle.EVERYONE) == 21
    assert rows == {f"203.0.113.{n}": 2 if n == 0 else 1 for n in range(20)}
    assert state.get(db, "login_failures") is None
    clock[0] += throttle.FORGET_AFTER_SECONDS + 1
    assert try_password(client, "guess", "198.51.100.1").status_code == 401
    assert attempts(db) == {throttle.EVERYONE: 1, "198.51.100.1": 1}


def test_a_right_password_clears_only_its_own_address(no_csrf, db, clock):
    client = no_csrf.test_client()
    try_password(client, "guess", "203.0.113.1")
    try_password(client, "guess", "203.0.113.2")
    assert try_password(client, ADMIN_PASSWORD, "203.0.113.1").status_code == 302
    assert attempts(db) == {"203.0.113.2": 1, throttle.EVERYONE: 3}


def test_ipv6_addresses_of_one_64_share_a_count(no_csrf, clock):
    client = no_csrf.test_client()
    for n in range(throttle.FREE_TRIES):
        assert try_password(client, "guess", f"2001:db8:0:1::{n + 1:x}").status_code == 401
    assert try_password(client, ADMIN_PASSWORD, "2001:db8:0:1::ff").status_code == 429
    assert try_password(client, ADMIN_PASSWORD, "2001:db8:0:2::1").status_code == 302


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not an address", "not an address"),
        (None, "unknown"),
        ("x" * 500, "x" * throttle.MAX_KEY_LENGTH),
    ],
)
def test_client_key(remote, key):
    assert throttle.client_key(remote) == key


def test_a_limit_across_all_addresses_holds_many_and_lifts_after_its_window(no_csrf, clock):
    client = no_csrf.test_client()
    for n in range(throttle.GLOBAL_MAX_TRIES):
        assert try_password(client, "guess", f"10.0.{n // 200}.{n % 200}").status_code == 401
    refused = try_password(client, ADMIN_PASSWORD, "198.51.100.1")
    assert refused.status_code == 429
    assert "from all addresses" in refused.get_data(as_text=True)
    assert int(refused.headers["Retry-After"]) == throttle.GLOBAL_WINDOW_SECONDS
    clock[0] += throttle.GLOBAL_WINDOW_SECONDS
    assert try_password(client, ADMIN_PASSWORD, "198.51.100.1").status_code == 302


def test_one_address_alone_never_reaches_the_limit_across_addresses(no_csrf, clock):
    client = no_csrf.test_client()
    for _ in range(300):  # five minutes of tries, as fast as the per-address wait allows
        try_password(client, "guess", "203.0.113.66")
        clock[0] += 1.0
    assert try_password(client, ADMIN_PASSWORD, "198.51.100.1").status_code == 302


def trusted_app(env, proxies: str):
    config = load_config({**env, "BRIDGE_TRUSTED_PROXIES": proxies})
    app = create_app({"BRIDGE_CONFIG": config, "TESTING": True, "WTF_CSRF_ENABLED": False})
    app.config["BRIDGE_CLOCK"] = lambda: START
    return app


def test_behind_a_trusted_proxy_each_visitor_counts_by_its_own_address(env, db):
    client = trusted_app(env, "1").test_client()
    for _ in range(throttle.FREE_TRIES):
        try_password(client, "guess", "127.0.0.1", forwarded="203.0.113.9")
    assert try_password(client, "guess", "127.0.0.1", forwarded="203.0.113.9").status_code == 429
    admin = try_password(client, ADMIN_PASSWORD, "127.0.0.1", forwarded="198.51.100.7")
    assert admin.status_code == 302
    store.forget_cached()


def test_without_trusted_proxies_a_forwarded_address_is_not_believed(env, db):
    client = trusted_app(env, "0").test_client()
    for n in range(throttle.FREE_TRIES):
        try_password(client, "guess", "127.0.0.1", forwarded=f"203.0.113.{n}")
    refused = try_password(client, ADMIN_PASSWORD, "127.0.0.1", forwarded="198.51.100.7")
    assert refused.status_code == 429
    store.forget_cached()


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "100"])
def test_trusted_proxies_must_be_a_small_count(env, value):
    with pytest.raises(ConfigError, match="BRIDGE_TRUSTED_PROXIES"):
        load_config({**env, "BRIDGE_TRUSTED_PROXIES": value})


def test_m033_moves_to_a_table_and_drops_the_old_json_row(config):
    database = store.connect(config.database)
    store.load_migrations().apply(database, stop_before="m033_login_attempts")
    state.put(database, "login_failures", {"203.0.113.1": {"count": 4, "last": 1.0}})
    assert "m033_login_attempts" in store.migrate(database)
    assert state.get(database, "login_failures") is None
    assert database["login_attempts"].pks == ["address"]
    database.close()


def read_only(path: str) -> sqlite_utils.Database:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    return sqlite_utils.Database(conn)


def test_login_answers_503_when_the_database_is_read_only(no_csrf, config, monkeypatch, caplog):
    database = read_only(config.database)
    monkeypatch.setattr(store, "cached", lambda path: database)
    with caplog.at_level(logging.ERROR, logger="bridge.admin"):
        response = try_password(no_csrf.test_client(), "guess")
    database.close()
    assert response.status_code == 503
    assert "database cannot be written" in response.get_data(as_text=True)
    assert "readonly database" in caplog.text


def test_login_answers_503_when_the_disk_is_full(no_csrf, monkeypatch, caplog):
    def full(*args):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(throttle, "admit", full)
    with caplog.at_level(logging.ERROR, logger="bridge.admin"):
        response = try_password(no_csrf.test_client(), ADMIN_PASSWORD)
    page = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "database cannot be written" in page and "database or disk is full" in page
    assert "database or disk is full" in caplog.text
    assert ADMIN_PASSWORD not in caplog.text
