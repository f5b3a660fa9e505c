"""`instantly-ghl-bridge webhook register`: the bridge's only write to Instantly, its own webhooks."""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest
import responses

from bridge import create_app
from bridge import settings as settings_mod
from bridge.clients.instantly import InstantlyClient, InstantlyError
from bridge.config import ConfigError, load_config
from bridge.setup import subscriptions
from bridge.store import state
from tests.helpers import WEBHOOK_SECRET
from tests.web_helpers import (
    BRIDGE_URL,
    INSTANTLY,
    INSTANTLY_KEY,
    check_against_specs,
    csrf_token,
    instantly_webhook,
    login,
    post,
)

pytestmark = pytest.mark.admin

HOOKS = f"{INSTANTLY}/api/v2/webhooks"
PUBLIC_IP = "93.184.215.14"
# What the names below resolve to in these tests: no test asks a real DNS server.
DNS = {
    "bridge.example.com": [PUBLIC_IP],
    "metadata.internal": ["169.254.169.254"],
    "intranet.example.com": ["10.1.2.3"],
    "two-faced.example.com": [PUBLIC_IP, "127.0.0.1"],
}


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    """socket.getaddrinfo from the DNS table; address literals resolve to themselves."""

    def getaddrinfo(host, port, *args, **kwargs):
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            addresses = DNS.get(host) or [_inet_aton_form(host)]
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _inet_aton_form(host: str) -> str:
    """What the resolver makes of 2852039166 or 0xa9.254.169.254: an IPv4 address."""
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


@pytest.fixture
def instantly():
    return InstantlyClient.for_setup(INSTANTLY, INSTANTLY_KEY)


def created(request):
    body = json.loads(request.body)
    return instantly_webhook("new-1", body["event_type"], body["target_hook_url"], body["headers"])


def answer_as_instantly(rsps: responses.RequestsMock, existing: list | None = None) -> None:
    """Instantly's webhooks API: these webhooks exist, and a POST creates one."""
    rsps.get(HOOKS, json={"items": existing or []})
    rsps.add_callback(responses.POST, HOOKS, callback=lambda r: (200, {}, json.dumps(created(r))))


def writes(rsps):
    return [c.request for c in rsps.calls if c.request.method != "GET"]


def test_creates_a_webhook_for_each_enabled_event_type(instantly):
    with responses.RequestsMock() as rsps:
        answer_as_instantly(rsps)
        actions = subscriptions.register(instantly, BRIDGE_URL, WEBHOOK_SECRET, ["reply_received"])
        sent = json.loads(writes(rsps)[0].body)
    assert [a.what for a in actions] == ["created"]
    assert actions[0].webhook_id == "new-1"
    assert sent == {
        "target_hook_url": BRIDGE_URL,
        "event_type": "reply_received",
        "name": "instantly-ghl-bridge reply_received",
        "headers": {"X-Bridge-Secret": WEBHOOK_SECRET},
    }


def test_register_requests_match_the_instantly_spec(instantly):
    with responses.RequestsMock() as rsps:
        rsps.get(
            HOOKS,
            json={
                "items": [
                    instantly_webhook(
                        "w1", "reply_received", headers={"Authorization": "Basic x"}, status=-1
                    ),
                ]
            },
        )
        rsps.patch(
            f"{HOOKS}/w1",
            json=instantly_webhook(
                "w1", "reply_received", headers={"X-Bridge-Secret": WEBHOOK_SECRET}, status=-1
            ),
        )
        rsps.post(
            f"{HOOKS}/w1/resume",
            json=instantly_webhook(
                "w1", "reply_received", headers={"X-Bridge-Secret": WEBHOOK_SECRET}
            ),
        )
        rsps.add_callback(
            responses.POST, HOOKS, callback=lambda r: (200, {}, json.dumps(created(r)))
        )
        subscriptions.register(
            instantly, BRIDGE_URL, WEBHOOK_SECRET, ["reply_received", "link_clicked"], resume=True
        )
        calls = list(rsps.calls)
    assert [(c.request.method, c.request.url.split("?")[0]) for c in calls] == [
        ("GET", HOOKS),
        ("PATCH", f"{HOOKS}/w1"),
        ("POST", f"{HOOKS}/w1/resume"),
        ("POST", HOOKS),
    ]
    assert calls[2].request.body is None  # resume declares no body
    assert json.loads(calls[3].request.body)["event_type"] == "email_link_clicked"
    check_against_specs(calls)


def test_an_existing_webhook_gets_the_secret_and_keeps_its_other_headers(instantly):
    hook = instantly_webhook(
        "w1", "reply_received", headers={"Authorization": "Basic x", "x-bridge-secret": "old"}
    )
    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, json={"items": [hook]})
        rsps.patch(f"{HOOKS}/w1", json=hook)
        actions = subscriptions.register(instantly, BRIDGE_URL, WEBHOOK_SECRET, ["reply_received"])
        body = json.loads(writes(rsps)[0].body)
    assert [a.what for a in actions] == ["updated"]
    assert body == {"headers": {"Authorization": "Basic x", "X-Bridge-Secret": WEBHOOK_SECRET}}


def test_a_correct_webhook_is_left_unchanged(instantly):
    hook = instantly_webhook("w1", "reply_received", headers={"X-Bridge-Secret": WEBHOOK_SECRET})
    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, json={"items": [hook]})
        actions = subscriptions.register(
            instantly, BRIDGE_URL + "/", WEBHOOK_SECRET, ["reply_received"]
        )
        assert writes(rsps) == []
    assert [(a.what, a.webhook_id) for a in actions] == [("unchanged", "w1")]


def test_a_disabled_webhook_is_resumed_only_when_asked(instantly):
    hook = instantly_webhook(
        "w1", "reply_received", headers={"X-Bridge-Secret": WEBHOOK_SECRET}, status=-1
    )
    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, json={"items": [hook]})
        actions = subscriptions.register(instantly, BRIDGE_URL, WEBHOOK_SECRET, ["reply_received"])
        assert writes(rsps) == []
    assert actions[0].what == "disabled" and "--resume" in actions[0].detail
    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, json={"items": [hook]})
        rsps.post(f"{HOOKS}/w1/resume", json={**hook, "status": 1})
        actions = subscriptions.register(
            instantly, BRIDGE_URL, WEBHOOK_SECRET, ["reply_received"], resume=True
        )
    assert actions[0].what == "resumed"


def test_webhooks_elsewhere_or_for_other_events_are_never_touched(instantly):
    hooks = [
        instantly_webhook("other-url", "reply_received", url="https://zapier.example/hook"),
        instantly_webhook("old-event", "email_opened", headers={"X-Bridge-Secret": WEBHOOK_SECRET}),
    ]
    with responses.RequestsMock() as rsps:
        answer_as_instantly(rsps, hooks)
        actions = subscriptions.register(instantly, BRIDGE_URL, WEBHOOK_SECRET, ["reply_received"])
        assert [(r.method, r.url) for r in writes(rsps)] == [("POST", HOOKS)]
    assert [(a.what, a.event_type) for a in actions] == [
        ("created", "reply_received"),
        ("left alone", "email_opened"),
    ]


def test_events_without_a_webhook_are_reported_not_subscribed(instantly):
    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, json={"items": []})
        actions = subscriptions.register(
            instantly, BRIDGE_URL, WEBHOOK_SECRET, ["lead_lost", "auto_reply_received"]
        )
    assert [a.what for a in actions] == ["not subscribable", "not subscribable"]


def test_listing_follows_the_cursor_and_stops_on_an_empty_page(instantly):
    with responses.RequestsMock() as rsps:
        rsps.get(
            HOOKS,
            json={"items": [instantly_webhook("a", "email_sent")], "next_starting_after": "a"},
        )
        rsps.get(HOOKS, json={"items": [], "next_starting_after": "b"})
        hooks = instantly.webhooks()
        assert [c.request.params.get("starting_after") for c in rsps.calls] == [None, "a"]
    assert [h["id"] for h in hooks] == ["a"]


def test_a_403_is_an_error_never_an_empty_list(instantly):
    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, body="error code: 1010", status=403)
        with pytest.raises(InstantlyError) as raised:
            instantly.webhooks()
    assert "forbidden" in str(raised.value)


def test_an_error_never_carries_the_key_and_is_the_reconcilers_error_too(instantly):
    from bridge.clients import instantly as reconciler_client

    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, json={"message": f"bad key {INSTANTLY_KEY}"}, status=401)
        with pytest.raises(reconciler_client.InstantlyError) as raised:
            instantly.webhooks()
    assert INSTANTLY_KEY not in str(raised.value) and "[redacted]" in str(raised.value)
    assert instantly.session.headers["User-Agent"] == reconciler_client.USER_AGENT


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("https://bridge.example.com", BRIDGE_URL),
        ("https://bridge.example.com/", BRIDGE_URL),
        ("https://bridge.example.com/webhooks/instantly/", BRIDGE_URL),
        ("http://127.0.0.1:8000/webhooks/instantly", "http://127.0.0.1:8000/webhooks/instantly"),
    ],
)
def test_webhook_url_accepts_what_people_paste(raw, url):
    assert subscriptions.webhook_url(raw) == url


@pytest.mark.parametrize(
    "raw", ["bridge.example.com", "ftp://x/webhooks/instantly", "https://x/hooks"]
)
def test_webhook_url_refuses_anything_else(raw):
    with pytest.raises(ValueError):
        subscriptions.webhook_url(raw)


# --- the command and the dashboard button ---------------------------------------------------


@pytest.fixture
def replies_only(db):
    """Sync replies alone: the command's output below is about one webhook."""
    _, current = settings_mod.current(db)
    current["interest"]["enabled"] = False
    current["events"]["lead_unsubscribed"]["enabled"] = False
    settings_mod.save(db, current)


def test_cli_prints_what_it_did_and_remembers_the_url(runner, db, replies_only):
    with responses.RequestsMock() as rsps:
        answer_as_instantly(rsps)
        result = runner.invoke(["webhook", "register", "--url", "https://bridge.example.com"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"webhooks delivering to {BRIDGE_URL}:",
        "  created          reply_received (webhook new-1)",
    ]
    assert WEBHOOK_SECRET not in result.output
    assert state.get(db, subscriptions.WEBHOOK_URL_STATE) == BRIDGE_URL


def test_cli_disabled_without_resume_exits_non_zero(runner, db, replies_only):
    hook = instantly_webhook(
        "w1", "reply_received", headers={"X-Bridge-Secret": WEBHOOK_SECRET}, status=-1
    )
    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, json={"items": [hook]})
        result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 1
    assert "run again with --resume" in result.output


def test_cli_with_nothing_enabled_creates_nothing(runner, db, replies_only):
    _, current = settings_mod.current(db)
    current["events"]["reply_received"]["enabled"] = False
    settings_mod.save(db, current)
    with responses.RequestsMock() as rsps:
        rsps.get(HOOKS, json={"items": []})
        result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 0
    assert "none needed" in result.output


def test_cli_with_the_default_settings_subscribes_interest_and_unsubscribes(runner, db):
    with responses.RequestsMock() as rsps:
        answer_as_instantly(rsps)
        result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
        subscribed = sorted(json.loads(r.body)["event_type"] for r in writes(rsps))
    assert result.exit_code == 0, result.output
    assert subscribed == [
        "lead_closed",
        "lead_interested",
        "lead_meeting_booked",
        "lead_meeting_completed",
        "lead_neutral",
        "lead_no_show",
        "lead_not_interested",
        "lead_out_of_office",
        "lead_unsubscribed",
        "lead_wrong_person",
        "reply_received",
    ]
    assert "not subscribable lead_lost" in result.output


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("INSTANTLY_API_KEY", "INSTANTLY_API_KEY is not set"),
        ("BRIDGE_WEBHOOK_SECRET", "BRIDGE_WEBHOOK_SECRET is not set"),
    ],
)
def test_cli_refuses_without_key_or_secret(runner, db, monkeypatch, drop, message):
    monkeypatch.delenv(drop)
    with responses.RequestsMock():
        result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 1
    assert message in result.output


def test_cli_instantly_error_is_a_message_not_a_traceback(runner, db):
    with responses.RequestsMock() as rsps:
        rsps.get(
            HOOKS,
            json={"statusCode": 401, "error": "Unauthorized", "message": "Invalid API key"},
            status=401,
        )
        result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 1
    assert "Error: Instantly 401: the API key was refused (Invalid API key)" in result.output


def test_dashboard_button_registers_and_shows_each_action(client, db, replies_only):
    login(client)
    with responses.RequestsMock() as rsps:
        answer_as_instantly(rsps)
        response = post(client, "/instantly-webhooks", {"url": "https://bridge.example.com"})
    page = client.get(response.location).get_data(as_text=True)
    assert "Webhook created          reply_received (webhook new-1)" in page
    assert state.get(db, subscriptions.WEBHOOK_URL_STATE) == BRIDGE_URL
    bad = post(client, "/instantly-webhooks", {"url": "not a url"})
    assert bad.status_code == 400
    assert "is not an http(s) URL" in bad.get_data(as_text=True)


# --- where the webhook may point ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://169.254.169.254/webhooks/instantly", "169.254.169.254 is a link-local address"),
        (
            "https://metadata.internal/webhooks/instantly",
            "metadata.internal resolves to 169.254.169.254, which is a link-local address",
        ),
        ("https://127.0.0.1:8000/webhooks/instantly", "127.0.0.1 is a loopback address"),
        ("https://[::1]/webhooks/instantly", "::1 is a loopback address"),
        ("https://[::ffff:10.0.0.1]/webhooks/instantly", "is a private address"),
        ("https://intranet.example.com/webhooks/instantly", "10.1.2.3, which is a private"),
        ("https://two-faced.example.com/webhooks/instantly", "127.0.0.1, which is a loopback"),
        ("https://0.0.0.0/webhooks/instantly", "is a unspecified address"),
        ("https://224.0.0.1/webhooks/instantly", "is a multicast address"),
        ("https://240.0.0.1/webhooks/instantly", "is a reserved address"),
        ("https://100.64.0.1/webhooks/instantly", "is a non-public address"),
        ("https://2852039166/webhooks/instantly", "169.254.169.254, which is a link-local"),
    ],
)
def test_a_url_on_an_address_that_is_not_public_is_refused(url, message):
    with pytest.raises(subscriptions.UnsafeWebhookURL, match=message.replace("[", r"\[")):
        subscriptions.check_public(url)


def test_a_name_that_does_not_resolve_is_refused():
    with pytest.raises(subscriptions.UnsafeWebhookURL, match="cannot resolve nowhere.example"):
        subscriptions.check_public("https://nowhere.example/webhooks/instantly")


def test_a_public_address_passes():
    subscriptions.check_public(BRIDGE_URL)
    subscriptions.check_public(f"https://{PUBLIC_IP}/webhooks/instantly")


def test_dashboard_form_refuses_a_metadata_address_and_calls_nobody(client, db):
    login(client)
    token = csrf_token(client, "/")
    with responses.RequestsMock() as rsps:
        response = client.post(
            "/instantly-webhooks", data={"csrf_token": token, "url": "http://169.254.169.254"}
        )
        assert len(rsps.calls) == 0
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "169.254.169.254 is a link-local address" in page
    assert "BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL=1" in page
    assert state.get(db, subscriptions.WEBHOOK_URL_STATE) is None


def app_with(env: dict, **extra: str):
    return create_app({"BRIDGE_CONFIG": load_config({**env, **extra}), "TESTING": True})


def test_dashboard_form_accepts_a_private_address_when_the_operator_allows_it(
    env, db, replies_only
):
    client = app_with(env, BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL="1").test_client()
    login(client)
    with responses.RequestsMock() as rsps:
        answer_as_instantly(rsps)
        response = post(client, "/instantly-webhooks", {"url": "https://intranet.example.com"})
    assert response.status_code == 302
    assert state.get(db, subscriptions.WEBHOOK_URL_STATE) == (
        "https://intranet.example.com/webhooks/instantly"
    )


def visiting_as(client, host: str):
    """The client, every request of it (login too) sent with this Host header."""
    client.environ_base["HTTP_HOST"] = host
    login(client)
    return client


def test_dashboard_offers_bridge_public_url_never_the_host_header(env, db):
    client = app_with(env, BRIDGE_PUBLIC_URL="https://bridge.example.com/").test_client()
    page = visiting_as(client, "evil.example").get("/").get_data(as_text=True)
    assert f'value="{BRIDGE_URL}"' in page
    assert "evil.example" not in page
    assert 'id="public-url-missing"' not in page
    assert 'id="webhook-url-http"' not in page


def test_dashboard_without_bridge_public_url_says_how_to_set_it(client, db):
    page = visiting_as(client, "evil.example").get("/").get_data(as_text=True)
    assert "evil.example" not in page
    assert 'id="public-url-missing"' in page
    assert "BRIDGE_PUBLIC_URL=https://bridge.example.com" in page
    assert 'name="url" value=""' in page


def test_dashboard_warns_when_the_url_is_plain_http(env, db):
    client = app_with(env, BRIDGE_PUBLIC_URL="http://bridge.example.com").test_client()
    login(client)
    page = client.get("/").get_data(as_text=True)
    assert 'id="webhook-url-http"' in page
    assert "unencrypted" in page


@pytest.mark.parametrize(
    "value",
    [
        "bridge.example.com",
        "ftp://bridge.example.com",
        "https://bridge.example.com/?token=1",
        "https://bridge.example.com/#top",
        "https://user:pass@bridge.example.com",
        "https://bridge.example.com:99999",
    ],
)
def test_bridge_public_url_must_be_a_plain_http_url(env, value):
    with pytest.raises(ConfigError, match="BRIDGE_PUBLIC_URL"):
        load_config({**env, "BRIDGE_PUBLIC_URL": value})


def test_cli_registers_at_bridge_public_url_by_default(runner, db, replies_only, monkeypatch):
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "https://bridge.example.com")
    with responses.RequestsMock() as rsps:
        answer_as_instantly(rsps)
        result = runner.invoke(["webhook", "register"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"webhooks delivering to {BRIDGE_URL}:"


def test_cli_without_url_or_bridge_public_url_says_what_to_give(runner, db):
    result = runner.invoke(["webhook", "register"])
    assert result.exit_code == 2
    assert "give --url https://<your bridge>/webhooks/instantly, or set BRIDGE_PUBLIC_URL" in (
        result.output
    )


def test_cli_refuses_a_private_url_unless_allow_private(runner, db, replies_only):
    with responses.RequestsMock() as rsps:
        refused = runner.invoke(["webhook", "register", "--url", "https://intranet.example.com"])
        assert len(rsps.calls) == 0
    assert refused.exit_code == 2
    assert "10.1.2.3, which is a private address" in refused.output
    assert "--allow-private" in refused.output
    with responses.RequestsMock() as rsps:
        answer_as_instantly(rsps)
        allowed = runner.invoke(
            ["webhook", "register", "--url", "https://intranet.example.com", "--allow-private"]
        )
    assert allowed.exit_code == 0, allowed.output
    assert "created          reply_received" in allowed.output
