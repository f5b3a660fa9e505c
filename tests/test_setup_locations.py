"""`webhook register` and `doctor` for an agency's bridge: every Instantly workspace with its
own key, every GHL location with its own token (issue 16)."""

from __future__ import annotations

import html

import pytest

from bridge import settings as settings_mod
from bridge.setup import doctor, subscriptions
from bridge.store import state
from tests.helpers import GHL_TOKEN, LOCATION_ID, WEBHOOK_SECRET
from tests.support.instantly_fake import FakeInstantly
from tests.support.instantly_responses import install
from tests.support.instantly_workspaces import InstantlyWorkspaces
from tests.web_helpers import (
    BRIDGE_URL,
    INSTANTLY_KEY,
    all_secrets,
    login,
    post,
    resolve_publicly,
)

pytestmark = pytest.mark.admin

KEY_A, KEY_B = "instantly-key-acme-51f0c2", "instantly-key-beta-9d3e77"
WS_A, WS_B = "0a1b2c3d-aaaa-4000-8000-00000000000a", "0a1b2c3d-bbbb-4000-8000-00000000000b"
LOC_B, TOKEN_B = "locBetaLaw0000000002", "ghl-token-beta-7a6b5c"
SECRET = {"X-Bridge-Secret": WEBHOOK_SECRET}


@pytest.fixture(autouse=True)
def public_dns(monkeypatch):
    resolve_publicly(monkeypatch)


@pytest.fixture
def env(env):
    """Each declared workspace's key, Beta Law's token, and no INSTANTLY_API_KEY: the
    bridge's workspaces are the declared ones (a test of the undeclared one sets it)."""
    agency = {k: v for k, v in env.items() if k != "INSTANTLY_API_KEY"}
    return {**agency, "INSTANTLY_KEY_A": KEY_A, "INSTANTLY_KEY_B": KEY_B, "GHL_TOKEN_B": TOKEN_B}


def change(db, **sections) -> None:
    """Replies alone (one webhook per workspace), and these settings sections."""
    _, current = settings_mod.current(db)
    current["interest"]["enabled"] = False
    current["events"]["lead_unsubscribed"]["enabled"] = False
    current.update(sections)
    settings_mod.save(db, current)


TWO_WORKSPACES = [
    {"id": WS_A, "name": "Acme outreach", "key_env": "INSTANTLY_KEY_A"},
    {"id": WS_B, "name": "Beta outreach", "key_env": "INSTANTLY_KEY_B"},
]


@pytest.fixture
def workspaces(mocked_http):
    """Two Instantly workspaces behind one address, each answering only its own key."""
    acme = FakeInstantly(KEY_A, organization=WS_A, id_tag="aaaa")
    beta = FakeInstantly(KEY_B, organization=WS_B, id_tag="bbbb")
    both = InstantlyWorkspaces({WS_A: acme, WS_B: beta})
    install(mocked_http, both)
    yield acme, beta
    both.assert_keys_known()
    for fake in (acme, beta):
        assert not fake.spec_errors, fake.spec_errors


def targets(fake: FakeInstantly) -> list[tuple[str, str, dict]]:
    return [(h["event_type"], h["target_hook_url"], h["headers"]) for h in fake.webhooks]


# --- webhook register ------------------------------------------------------------------------


def test_register_creates_each_workspaces_webhooks_with_its_key_and_url(runner, db, workspaces):
    acme, beta = workspaces
    change(db, instantly={"workspaces": TWO_WORKSPACES})
    result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 0, result.output
    assert targets(acme) == [("reply_received", f"{BRIDGE_URL}?workspace={WS_A}", SECRET)]
    assert targets(beta) == [("reply_received", f"{BRIDGE_URL}?workspace={WS_B}", SECRET)]
    for fake, key in ((acme, KEY_A), (beta, KEY_B)):
        assert {c.headers["authorization"] for c in fake.calls} == {f"Bearer {key}"}
    lines = result.output.splitlines()
    assert lines[:3] == [
        f"workspace Acme outreach ({WS_A}):",
        f"  webhooks delivering to {BRIDGE_URL}?workspace={WS_A}:",
        f"    created          reply_received (webhook {acme.webhooks[0]['id']})",
    ]
    assert f"workspace Beta outreach ({WS_B}):" in lines
    assert state.get(db, subscriptions.WEBHOOK_URL_STATE) == BRIDGE_URL
    for secret in (KEY_A, KEY_B, WEBHOOK_SECRET):
        assert secret not in result.output

    again = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert again.exit_code == 0, again.output
    assert again.output.count("unchanged        reply_received") == 2
    assert len(acme.webhooks) == len(beta.webhooks) == 1


def test_one_workspace_failing_exits_1_and_the_other_is_registered(runner, db, workspaces):
    acme, beta = workspaces
    change(db, instantly={"workspaces": TWO_WORKSPACES})
    refused = {"statusCode": 401, "error": "Unauthorized", "message": "Invalid API key"}
    beta.fail_next("GET", "/api/v2/webhooks", 401, refused)
    result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    beta_at = lines.index(f"workspace Beta outreach ({WS_B}):")
    assert lines[beta_at + 1].startswith("  failed: Instantly 401: the API key was refused")
    assert targets(acme) == [("reply_received", f"{BRIDGE_URL}?workspace={WS_A}", SECRET)]
    assert beta.webhooks == []


def test_a_workspace_without_its_key_fails_its_block(runner, db, workspaces, monkeypatch):
    monkeypatch.delenv("INSTANTLY_KEY_B")
    change(db, instantly={"workspaces": TWO_WORKSPACES})
    result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 1
    assert "  failed: workspace Beta outreach: INSTANTLY_KEY_B is not set" in result.output
    assert len(workspaces[0].webhooks) == 1


def test_the_undeclared_workspace_keeps_the_plain_url(runner, db, mocked_http, monkeypatch):
    monkeypatch.setenv("INSTANTLY_API_KEY", INSTANTLY_KEY)
    fake = FakeInstantly(INSTANTLY_KEY)
    install(mocked_http, fake)
    fake.add_webhook(BRIDGE_URL, "reply_received", headers=dict(SECRET))
    change(db)
    result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"webhooks delivering to {BRIDGE_URL}:",
        f"  unchanged        reply_received (webhook {fake.webhooks[0]['id']}): already "
        "delivers here with the secret",
    ]


def test_declaring_the_workspace_later_adds_a_webhook_naming_it(
    runner, db, mocked_http, monkeypatch
):
    """The webhook registered before the workspace was declared still delivers (the
    delivery's own `workspace` names it): it is left alone and the fix said."""
    monkeypatch.setenv("INSTANTLY_API_KEY", INSTANTLY_KEY)
    fake = FakeInstantly(INSTANTLY_KEY, organization=WS_A)
    install(mocked_http, fake)
    old = fake.add_webhook(BRIDGE_URL, "reply_received", headers=dict(SECRET))
    change(db, instantly={"workspaces": [{"id": WS_A, "name": "Acme outreach"}]})
    result = runner.invoke(["webhook", "register", "--url", BRIDGE_URL])
    assert result.exit_code == 0, result.output
    assert [h["target_hook_url"] for h in fake.webhooks] == [
        BRIDGE_URL,
        f"{BRIDGE_URL}?workspace={WS_A}",
    ]
    assert (
        f"    left alone       reply_received (webhook {old['id']}): delivers to {BRIDGE_URL}, "
        f"not to {BRIDGE_URL}?workspace={WS_A}: delete it in Instantly once the webhook to the "
        "new URL delivers"
    ) in result.output.splitlines()


@pytest.mark.parametrize(
    ("target", "url", "mine"),
    [
        (f"{BRIDGE_URL}?workspace={WS_A}", BRIDGE_URL, True),
        (f"{BRIDGE_URL}?workspace={WS_A}", f"{BRIDGE_URL}?workspace={WS_A}", True),
        (BRIDGE_URL, f"{BRIDGE_URL}?workspace={WS_A}", True),
        (f"{BRIDGE_URL}/?workspace={WS_A}", f"{BRIDGE_URL}?workspace={WS_A}", True),
        (f"{BRIDGE_URL}?workspace={WS_B}", f"{BRIDGE_URL}?workspace={WS_A}", False),
        (f"https://other.example/webhooks/instantly?workspace={WS_A}", BRIDGE_URL, False),
        (f"{BRIDGE_URL}?workspace={WS_A}", None, True),
    ],
)
def test_a_url_naming_the_workspace_is_ours(target, url, mine):
    assert subscriptions.ours({"target_hook_url": target}, url) is mine


def test_workspace_url_keeps_the_plain_url_for_the_undeclared_workspace():
    assert subscriptions.workspace_url(BRIDGE_URL, "") == BRIDGE_URL
    assert subscriptions.workspace_url(BRIDGE_URL, WS_A) == f"{BRIDGE_URL}?workspace={WS_A}"
    assert subscriptions.workspace_url(f"{BRIDGE_URL}?workspace=x&a=1", WS_B) == (
        f"{BRIDGE_URL}?a=1&workspace={WS_B}"
    )


def test_the_dashboard_button_registers_every_workspace(client, db, workspaces):
    acme, beta = workspaces
    change(db, instantly={"workspaces": TWO_WORKSPACES})
    login(client)
    response = post(client, "/instantly-webhooks", {"url": "https://bridge.example.com"})
    page = client.get(response.location).get_data(as_text=True)
    assert len(acme.webhooks) == len(beta.webhooks) == 1
    assert f"reply_received (webhook {acme.webhooks[0]['id']}) in Acme outreach ({WS_A})" in page
    assert f"reply_received (webhook {beta.webhooks[0]['id']}) in Beta outreach ({WS_B})" in page


def test_the_dashboard_button_names_the_workspace_instantly_refused(client, db, workspaces):
    acme, beta = workspaces
    change(db, instantly={"workspaces": TWO_WORKSPACES})
    refused = {"statusCode": 401, "error": "Unauthorized", "message": "Invalid API key"}
    beta.fail_next("GET", "/api/v2/webhooks", 401, refused)
    login(client)
    response = post(client, "/instantly-webhooks", {"url": "https://bridge.example.com"})
    assert response.status_code == 502
    page = response.get_data(as_text=True)
    assert (
        f"Registering the webhooks failed: Instantly 401: workspace Beta outreach ({WS_B}): "
        "the API key was refused (Invalid API key); check INSTANTLY_KEY_B"
    ) in html.unescape(page)
    assert len(acme.webhooks) == 1
    for secret in (KEY_A, KEY_B):
        assert secret not in page


# --- doctor --------------------------------------------------------------------------------


def two_locations(db, fake_ghl, token_env: str = "GHL_TOKEN_B") -> None:
    """GHL_LOCATION_ID's location and Beta Law, whose field map adds a field of its own;
    each location holds the custom fields of its own map."""
    fake_ghl.add_location(LOC_B, TOKEN_B, name="Beta Law")
    fake_ghl.default.add_custom_field("contact.icebreaker", "Icebreaker")
    fake_ghl.location(LOC_B).add_custom_field("contact.matter_type", "Matter type")
    _, current = settings_mod.current(db)
    shared = [*current["field_map"], {"instantly": "icebreaker", "ghl": "contact.icebreaker"}]
    own = [*current["field_map"], {"instantly": "matter", "ghl": "contact.matter_type"}]
    change(
        db,
        field_map=shared,
        locations=[
            {
                "id": LOC_B,
                "name": "Beta Law",
                "token_env": token_env,
                "workspaces": [WS_B],
                "overrides": {"field_map": own},
            }
        ],
        instantly={"workspaces": TWO_WORKSPACES},
    )
    state.put(db, subscriptions.WEBHOOK_URL_STATE, BRIDGE_URL)


def delivering(acme: FakeInstantly, beta: FakeInstantly) -> None:
    acme.add_webhook(f"{BRIDGE_URL}?workspace={WS_A}", "reply_received", headers=dict(SECRET))
    beta.add_webhook(f"{BRIDGE_URL}?workspace={WS_B}", "reply_received", headers=dict(SECRET))


def blocks(checks) -> dict[str, dict[str, bool | None]]:
    out: dict[str, dict[str, bool | None]] = {}
    for check in checks:
        out.setdefault(check.block, {})[check.name] = check.ok
    return out


def test_doctor_checks_each_location_with_its_token_and_its_field_map(
    config, db, fake_ghl, workspaces
):
    two_locations(db, fake_ghl)
    delivering(*workspaces)
    checks = doctor.run_checks(config)
    assert not doctor.failed(checks), doctor.format_text(checks)
    found = blocks(checks)
    assert list(found) == [
        "",
        f"Location GHL_LOCATION_ID ({LOCATION_ID})",
        f"Location Beta Law ({LOC_B})",
        f"Workspace Acme outreach ({WS_A})",
        f"Workspace Beta outreach ({WS_B})",
    ]
    fields = {c.block: c.detail for c in checks if c.name == "Field map custom fields"}
    assert "contact.icebreaker" in fields[f"Location GHL_LOCATION_ID ({LOCATION_ID})"]
    assert "contact.matter_type" in fields[f"Location Beta Law ({LOC_B})"]
    assert "contact.icebreaker" not in fields[f"Location Beta Law ({LOC_B})"]
    for location_id, token in ((LOCATION_ID, GHL_TOKEN), (LOC_B, TOKEN_B)):
        calls = fake_ghl.location(location_id).calls
        assert {c.path for c in calls} == {
            f"/locations/{location_id}",
            f"/locations/{location_id}/customFields",
        }
        assert {c.headers["Authorization"] for c in calls} == {f"Bearer {token}"}
    # The fake_ghl fixture fails the test on any call crossing locations.


def test_doctor_with_a_bad_location_exits_1_and_names_it(runner, db, fake_ghl, workspaces):
    two_locations(db, fake_ghl, token_env="GHL_TOKEN_GONE")
    delivering(*workspaces)
    result = runner.invoke(["doctor"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    at = lines.index(f"Location Beta Law ({LOC_B}):")
    assert lines[at + 1] == (
        "  ✗ GHL token and location: location Beta Law: GHL_TOKEN_GONE is not set in the"
        " bridge's environment"
    )
    assert lines[at + 2].startswith("      fix: set GHL_TOKEN_GONE")
    assert lines[at + 3] == "  – GHL scopes: not checked: fix the GHL token and location first"
    assert lines[-1] == f"1 of 17 checks failed (in Location Beta Law ({LOC_B}))"
    assert fake_ghl.location(LOC_B).calls == []
    for secret in (*all_secrets(), KEY_A, KEY_B, TOKEN_B):
        assert secret not in result.output


def test_doctor_a_refused_token_fails_only_its_location(config, db, fake_ghl, workspaces):
    two_locations(db, fake_ghl)
    delivering(*workspaces)
    fake_ghl.location(LOC_B).fail_next(1, 401, body={"statusCode": 401, "message": "Invalid JWT"})
    checks = doctor.run_checks(config)
    bad = [(c.block, c.name) for c in checks if c.ok is False]
    assert bad == [(f"Location Beta Law ({LOC_B})", "GHL token and location")]
    check = next(c for c in checks if c.ok is False)
    assert "401" in check.detail and "GHL_TOKEN_B" in check.fix


def test_doctor_a_workspace_missing_its_webhooks_fails_its_block(config, db, fake_ghl, workspaces):
    acme, beta = workspaces
    two_locations(db, fake_ghl)
    acme.add_webhook(f"{BRIDGE_URL}?workspace={WS_A}", "reply_received", headers=dict(SECRET))
    # Beta's webhook names another workspace: its deliveries would be Acme's.
    beta.add_webhook(f"{BRIDGE_URL}?workspace={WS_A}", "reply_received", headers=dict(SECRET))
    checks = doctor.run_checks(config)
    bad = [c for c in checks if c.ok is False]
    assert [(c.block, c.name) for c in bad] == [
        (f"Workspace Beta outreach ({WS_B})", "Instantly webhooks")
    ]
    assert bad[0].detail == (f"no webhook to {BRIDGE_URL}?workspace={WS_B} for: reply_received")
    assert bad[0].fix == f"run `instantly-ghl-bridge webhook register --url {BRIDGE_URL}`"
    assert {c.headers["authorization"] for c in beta.calls} == {f"Bearer {KEY_B}"}
