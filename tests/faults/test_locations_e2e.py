"""Agencies end to end (issue 16): one bridge serving three GHL locations and two Instantly
workspaces, as real processes (gunicorn with the Procfile's command, `instantly-ghl-bridge
worker`, the CLI) against the fake GHL holding the three locations and a fake Instantly per
workspace, configured with `instantly-ghl-bridge settings import FILE`.

The routes: Acme claims a campaign (which lives in Beta's workspace: a campaign route wins),
Beta claims a workspace, and what neither claims goes to GHL_LOCATION_ID's location (House)
until `routing.default_location = "none"` holds it instead. Beta overrides its reply tags and
field map, Acme adds a custom field to its field map.

The fairness figure is a ratio measured in the test itself: Acme's and House's
webhook-to-contact p50 while Beta's GHL answers 503 (each after a second), against the same
run with no outage.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bench.stats import percentile
from bridge import settings as settings_mod
from bridge.sync.steps import normalise_tag
from tests.faults.harness import LOCATION_ID, Stack
from tests.faults.leaks import assert_no_secret_shown, everything_shown, find_leaks
from tests.faults.procs import wait_until
from tests.helpers import reply_payload
from tests.support.ghl_fake import Answer, FakeGHL
from tests.support.instantly_fake import FakeInstantly
from tests.support.instantly_server import serving
from tests.support.instantly_workspaces import InstantlyWorkspaces

pytestmark = pytest.mark.slow

HOUSE = LOCATION_ID  # GHL_TOKEN + GHL_LOCATION_ID's location: the default one
ACME = "AcmeDental0000000001"
BETA = "BetaLegal00000000002"
TOKENS = {  # token_env -> (location, token)
    "GHL_TOKEN_ACME": (ACME, "pit-acme-5b0e7d2c-91f4-4a8e-b3c6-7f2e9d1a4c08"),
    "GHL_TOKEN_BETA": (BETA, "pit-beta-c47a1e93-2d6b-4f05-8e1a-3b9c6d7f2e15"),
}
WS_ONE = "3c1f0b7e-5d2a-4e8b-9a61-0f4c2d7e8a11"  # INSTANTLY_API_KEY's workspace
WS_TWO = "9b2d4f60-1e7c-4a3b-8d95-6e0a1c3f5b22"
WS_TWO_KEY = ("INSTANTLY_KEY_TWO", "inst-key-two-Qw7Er4Ty1Ui8Op5As2Df")
# Campaign id -> (name, workspace). Acme's campaign is in Beta's workspace on purpose.
CMP_ACME = "a1c0ffee-0001-4a6e-9d15-000000000001"
CMP_BETA = "b2c0ffee-0002-4a6e-9d15-000000000002"
CMP_HOUSE = "c3c0ffee-0003-4a6e-9d15-000000000003"
CMP_STRAY = "d4c0ffee-0004-4a6e-9d15-000000000004"
CAMPAIGNS = {
    CMP_ACME: ("Acme Spring Recall", WS_TWO),
    CMP_BETA: ("Beta Estate Plans", WS_TWO),
    CMP_HOUSE: ("House Warm Leads", WS_ONE),
    CMP_STRAY: ("Stray Pilot", WS_ONE),
}
BASE_TAGS = ["instantly-replied", "instantly-campaign-{campaign_name}"]
BETA_TAGS = ["beta-replied", "beta-{campaign_name}"]
ICEBREAKER = "contact.icebreaker"
STANDARD = ("firstName", "lastName", "companyName", "phone", "website")
BETA_FIELDS = ("firstName", "lastName", "website")

PER_ROUTE = 25  # new contacts per location in each timed run
RATE = 4.0  # deliveries a second on average, open loop
SLOW_503_SECONDS = 1.0  # how long each of Beta's 503s takes to come back
LATENCY_RATIO = 1.5  # the others' p50 during Beta's outage, at most this times the calm run's


@dataclass(frozen=True)
class Delivery:
    """One reply delivery: what is posted, and where the bridge must put it."""

    body: dict[str, Any]
    workspace: str  # its workspace: the ?workspace= of the URL it is posted to
    location: str
    in_url: bool = True  # False: posted to the bare URL, the payload's `workspace` counts

    @property
    def email(self) -> str:
        return self.body["email"]

    @property
    def key(self) -> str:
        return f"reply:{self.body['email_id']}"

    @property
    def tags(self) -> set[str]:
        templates = BETA_TAGS if self.location == BETA else BASE_TAGS
        name = self.body["campaign_name"]
        return {normalise_tag(t.replace("{campaign_name}", name)) for t in templates}


def delivery(
    run: str, n: int, campaign: str, location: str, email: str | None = None, **extra: Any
) -> Delivery:
    name, workspace = CAMPAIGNS[campaign]
    email = email or f"lead{n:03d}.{run}.{location[:4].lower()}@example.com"
    body = reply_payload(
        email_id=f"{run}-{location[:4].lower()}-{n:04d}",
        lead_email=email,
        email=email,
        workspace=workspace,
        campaign_id=campaign,
        campaign=campaign,  # the lead's own campaign key: the real campaign
        campaign_name=name,
        firstName=f"First{n}",
        lastName=run.title(),
        companyName=f"Company {n} {run}",
        phone=f"+1555010{n:04d}",
        website=f"https://lead{n}.{run}.example",
        personalization=f"Saw your {run} post number {n}.",
        timestamp=f"2026-01-05T11:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
    )
    body.update(extra)  # a trap's shadowing lead fields; the URL's workspace stays
    return Delivery(body, workspace, location)


def timed_run(run: str) -> list[Delivery]:
    """PER_ROUTE new contacts per route, interleaved: Acme, Beta, House, Acme, ..."""
    out = []
    for n in range(PER_ROUTE):
        out.append(delivery(run, n, CMP_ACME, ACME))
        out.append(delivery(run, n, CMP_BETA, BETA))
        out.append(delivery(run, n, CMP_HOUSE, HOUSE))
    return out


def routing_traps() -> list[Delivery]:
    """One lead in two clients (two contacts), a campaign_id a custom variable shadowed
    (the real campaign is `campaign`), a payload `workspace` the URL's contradicts, one
    posted without a workspace in its URL, and one for the default location. Sent first,
    they also start every location's lane before the timed runs."""
    shared = "shared.lead@example.com"
    bare = delivery("trap", 5, CMP_BETA, BETA)
    return [
        delivery("trap", 1, CMP_ACME, ACME, email=shared),
        delivery("trap", 2, CMP_BETA, BETA, email=shared),
        delivery("trap", 3, CMP_ACME, ACME, campaign_id="lead-custom-campaign-7"),
        # Posted to Beta's workspace URL; a lead field called `workspace` says workspace one.
        delivery("trap", 4, CMP_BETA, BETA, workspace=WS_ONE),
        Delivery(bare.body, bare.workspace, BETA, in_url=False),
        delivery("trap", 6, CMP_HOUSE, HOUSE),
    ]


def agency_settings(stack: Stack, default: str = "", stray_to_acme: bool = False) -> dict:
    """The stored settings with the three locations, two workspaces and their routes."""
    _, current = settings_mod.current(stack.db())
    settings = copy.deepcopy(current)
    settings["sync"].update(max_attempts=100, backoff_base_seconds=0.2, backoff_max_seconds=2.0)
    base_map = settings["field_map"]
    assert [row["ghl"] for row in base_map] == list(STANDARD), base_map
    settings["locations"] = [
        {"id": HOUSE, "name": "House Accounts"},
        {
            "id": ACME,
            "name": "Acme Dental",
            "token_env": "GHL_TOKEN_ACME",
            "campaigns": [CMP_ACME, *([CMP_STRAY] if stray_to_acme else [])],
            "overrides": {
                "field_map": [*base_map, {"instantly": "personalization", "ghl": ICEBREAKER}]
            },
        },
        {
            "id": BETA,
            "name": "Beta Legal",
            "token_env": "GHL_TOKEN_BETA",
            "workspaces": [WS_TWO],
            "overrides": {
                "events": {"reply_received": {"tags": BETA_TAGS}},
                "field_map": [row for row in base_map if row["ghl"] in BETA_FIELDS],
            },
        },
    ]
    settings["instantly"] = {
        "workspaces": [
            {"id": WS_ONE, "name": "Agency outreach"},
            {"id": WS_TWO, "name": "Beta outreach", "key_env": WS_TWO_KEY[0]},
        ]
    }
    settings["routing"] = {"default_location": default}
    return settings


def import_settings(stack: Stack, settings: dict, name: str) -> None:
    path = stack.workdir / f"{name}.toml"
    path.write_text(settings_mod.to_toml(settings))
    done = stack.cli("settings", "import", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def post(stack: Stack, item: Delivery) -> dict[str, Any]:
    params = {"workspace": item.workspace} if item.in_url else {}
    answer = stack.post_event(item.body, params=params)
    assert answer.status_code in (200, 202), (answer.status_code, answer.text)
    return answer.json()


def post_open_loop(
    stack: Stack, items: list[Delivery], answers: dict[str, dict[str, Any]], seed: int
) -> dict[str, float]:
    """Post at RATE a second on average, on a schedule fixed in advance; when each left, by
    event key. Each answer goes into `answers`. The gaps are jittered: evenly spaced
    deliveries could keep step with the worker's polls and give one run a luckier phase."""
    rng = random.Random(seed)
    sent: dict[str, float] = {}
    due = time.monotonic()
    for item in items:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due += rng.uniform(0.5, 1.5) / RATE
        sent[item.key] = time.monotonic()
        answers[item.key] = post(stack, item)
        assert answers[item.key]["status"] == "accepted", (item.key, answers[item.key])
    return sent


@contextlib.contextmanager
def slow_failures(fake: FakeGHL, token: str, seconds: float) -> Iterator[None]:
    """Answer this token's 5xx only after `seconds`, as a gateway waiting on a dead upstream
    does: a worker that waited on one location's answers in the others' way would show in
    their latency, where instant 503s would hide it."""
    answer = fake.handle

    def slowly(method: str, path: str, query: Any, headers: Any, body: bytes) -> Answer:
        status, out_headers, out = answer(method, path, query, headers, body)
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if status >= 500 and auth == f"Bearer {token}":
            time.sleep(seconds)  # in the fake server's thread for this request only
        return status, out_headers, out

    fake.handle = slowly  # type: ignore[method-assign]
    try:
        yield
    finally:
        del fake.handle  # the class's method again


def written_at(stack: Stack, item: Delivery) -> float | None:
    """When the item's location accepted its contact's tags (the call completing it: its
    own, or a bulk one naming it when events came due together)."""
    loc = stack.fake.location(item.location)
    contact = loc.contact_by_email(item.email)
    if contact is None:
        return None
    path = f"/contacts/{contact['id']}/tags"
    own = [c for c in loc.calls_to("POST", "/contacts/{id}/tags") if c.path == path]
    bulk = [
        c
        for c in loc.calls_to("POST", "/contacts/bulk/tags/update/add")
        if contact["id"] in (c.json or {}).get("contacts", [])
    ]
    ok = [c.at for c in own + bulk if 200 <= c.status < 300]
    return min(ok) if ok else None


def latencies(
    stack: Stack, items: list[Delivery], sent: dict[str, float], timeout: float
) -> dict[str, list[float]]:
    """Per location, each item's webhook-to-contact time, once all of them are written."""

    def all_written() -> dict[str, float] | None:
        stack.assert_running()
        found = {item.key: written_at(stack, item) for item in items}
        return found if all(at is not None for at in found.values()) else None

    try:
        found = wait_until(all_written, timeout, f"{len(items)} contacts to be written", 0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; not written: {misplaced(stack, items)}") from None
    out: dict[str, list[float]] = {}
    for item in items:
        out.setdefault(item.location, []).append(found[item.key] - sent[item.key])
    return out


def misplaced(stack: Stack, items: list[Delivery]) -> list[str]:
    """For a failure message: each unwritten item's event and where its lead ended up."""
    rows = event_rows(stack)
    out = []
    for item in items:
        if written_at(stack, item) is not None:
            continue
        row = rows.get(item.key, {})
        found_in = [
            loc.location_id for loc in stack.fake.locations if loc.contact_by_email(item.email)
        ]
        out.append(
            f"{item.key} for {item.location}: event {row.get('status')} routed to "
            f"{row.get('location_id')} (workspace {row.get('workspace_id')!r}), lead in {found_in}"
        )
    return out[:10]


def p50(values: list[float]) -> float:
    return percentile(values, 50)


def event_rows(stack: Stack) -> dict[str, dict[str, Any]]:
    rows = stack.db().query("SELECT id, key, status, location_id, workspace_id FROM events")
    return {row["key"]: row for row in rows}


def assert_placed(stack: Stack, items: list[Delivery], acme_field: str) -> None:
    """Every item's contact is in its location only, with that location's tags and fields."""
    fake = stack.fake
    by_email: dict[tuple[str, str], list[Delivery]] = {}
    for item in items:
        by_email.setdefault((item.location, item.email), []).append(item)
    everywhere = {loc.location_id for loc in fake.locations}
    for (location, email), sent in by_email.items():
        contact = fake.location(location).contact_by_email(email)
        assert contact is not None, f"{email} is not in {location}"
        assert contact["locationId"] == location
        expected = set().union(*(item.tags for item in sent))
        assert set(contact["tags"]) == expected, (location, email, contact["tags"], expected)
        body = sent[-1].body
        mapped = BETA_FIELDS if location == BETA else STANDARD
        for name in STANDARD:
            if name in mapped:
                assert contact.get(name) == body[name], (location, email, name, contact)
            else:
                assert name not in contact, f"{location} does not map {name}: {contact}"
        custom = [{"id": acme_field, "value": body["personalization"]}] if location == ACME else []
        assert contact["customFields"] == custom, (location, email, contact["customFields"])
        # Nobody else got this lead, unless it was also sent to them.
        others = {i.location for i in items if i.email == email}
        for other in everywhere - others:
            assert fake.location(other).contact_by_email(email) is None, (email, other)


def test_three_locations_two_workspaces_routed_isolated_and_fair(stack):
    fake = stack.fake
    acme = fake.add_location(ACME, TOKENS["GHL_TOKEN_ACME"][1], name="Acme Dental")
    beta = fake.add_location(BETA, TOKENS["GHL_TOKEN_BETA"][1], name="Beta Legal")
    acme_field = acme.add_custom_field(ICEBREAKER, "Icebreaker")
    workspaces = InstantlyWorkspaces(
        {
            WS_ONE: FakeInstantly(api_key=stack.secrets.instantly_api_key),
            WS_TWO: FakeInstantly(api_key=WS_TWO_KEY[1]),
        }
    )
    with serving(workspaces) as instantly_url:
        stack.extra_env.update(
            {name: token for name, (_, token) in TOKENS.items()},
            INSTANTLY_KEY_TWO=WS_TWO_KEY[1],
            INSTANTLY_BASE_URL=instantly_url,
        )
        stack.configure()
        import_settings(stack, agency_settings(stack), "agency")
        stack.start_web()
        stack.start_worker()
        run_scenario(stack, acme_field)
        workspaces.assert_keys_known()

    fake.assert_no_cross_location_calls()
    assert not fake.spec_errors, fake.spec_errors[:5]
    for loc in (fake.default, acme, beta):
        refused = [c for c in loc.calls if c.status in (401, 403)]
        assert not refused, (loc.location_id, [(c.method, c.path) for c in refused][:5])
    assert_no_secret_shown(stack)
    tokens = {env: token for env, (_, token) in TOKENS.items()}
    leaks = find_leaks({**tokens, WS_TWO_KEY[0]: WS_TWO_KEY[1]}, everything_shown(stack))
    assert not leaks, "tokens or keys shown:\n" + "\n".join(leaks)


def run_scenario(stack: Stack, acme_field: str) -> None:
    fake = stack.fake
    beta = fake.location(BETA)

    # 1. Routing's corner cases, then a calm run: all three locations take their events.
    answers: dict[str, dict[str, Any]] = {}
    traps = routing_traps()
    for item in traps:
        answers[item.key] = post(stack, item)
        assert answers[item.key]["status"] == "accepted", (item.key, answers[item.key])
    stack.wait_all_final(len(traps), timeout=60)
    calm = timed_run("calm")
    calm_sent = post_open_loop(stack, calm, answers, seed=1)
    calm_times = latencies(stack, calm, calm_sent, timeout=60)
    stack.wait_all_final(len(calm) + len(traps), timeout=60)

    # 2. Beta's GHL is down (503 until the test ends it); Acme and House keep syncing.
    beta_before = len(beta.calls)
    beta.fail_for(600, 503)
    storm = timed_run("storm")
    with slow_failures(fake, beta.token, SLOW_503_SECONDS):
        storm_sent = post_open_loop(stack, storm, answers, seed=2)
        others = [item for item in storm if item.location != BETA]
        storm_times = latencies(stack, others, storm_sent, timeout=60)
        held_by_outage = [item for item in storm if item.location == BETA]
        rows = event_rows(stack)
        assert all(rows[item.key]["status"] != "done" for item in held_by_outage)
        assert {c.status for c in beta.calls[beta_before:]} == {503}
        beta.fail_for(0, 503)  # Beta is back: its backlog drains
    stack.wait_all_final(len(calm) + len(traps) + len(storm), timeout=90)

    calm_p50 = p50(calm_times[ACME] + calm_times[HOUSE])
    storm_p50 = p50(storm_times[ACME] + storm_times[HOUSE])
    print(
        f"webhook-to-contact p50, Acme and House: {calm_p50:.3f} s calm, {storm_p50:.3f} s "
        f"during Beta's outage (ratio {storm_p50 / calm_p50:.2f}); per location calm "
        + ", ".join(f"{loc} {p50(v):.3f} s" for loc, v in calm_times.items())
        + "; during the outage "
        + ", ".join(f"{loc} {p50(v):.3f} s" for loc, v in storm_times.items())
        + f"; Beta answered {sum(1 for c in beta.calls if c.status == 503)} calls 503, "
        f"each after {SLOW_503_SECONDS} s"
    )
    assert storm_p50 <= LATENCY_RATIO * calm_p50, (calm_p50, storm_p50)

    routed = [*traps, *calm, *storm]
    rows = event_rows(stack)
    for item in routed:
        row = rows[item.key]
        assert (row["status"], row["location_id"], row["workspace_id"]) == (
            "done",
            item.location,
            item.workspace,
        ), (item.key, row)
    assert_placed(stack, routed, acme_field)

    # 3. With no default location, an event no route claims is held, not guessed.
    import_settings(stack, agency_settings(stack, default="none"), "no-default")
    stray = delivery("stray", 1, CMP_STRAY, ACME)
    answers[stray.key] = post(stack, stray)
    assert answers[stray.key]["status"] == "accepted", answers[stray.key]
    wait_until(
        lambda: event_rows(stack)[stray.key]["status"] == "unrouted", 30, "the stray to be held"
    )
    row = event_rows(stack)[stray.key]
    assert (row["location_id"], row["workspace_id"]) == (None, WS_ONE), row
    time.sleep(1.0)  # two of the worker's idle polls: a held event must stay held
    assert event_rows(stack)[stray.key]["status"] == "unrouted"
    upserted = [
        c
        for c in fake.calls_to("POST", "/contacts/upsert")
        if (c.json or {}).get("email") == stray.email
    ]
    assert not upserted, f"a held event was sent to GHL: {upserted}"

    # A route for its campaign, then `replay --unrouted` syncs it there.
    import_settings(stack, agency_settings(stack, default="none", stray_to_acme=True), "stray")
    replay = stack.cli("replay", "--unrouted")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert replay.stdout.startswith("queued 1 held event again"), replay.stdout
    stack.wait_all_final(len(routed) + 1, timeout=30)
    row = event_rows(stack)[stray.key]
    assert (row["status"], row["location_id"]) == ("done", ACME), row
    assert_placed(stack, [*routed, stray], acme_field)

    # 4. A redelivery of anything already synced is a duplicate and costs no GHL call.
    again = [calm[0], calm[1], calm[2], traps[0], traps[4], stray]
    calls_before = len(fake.calls)
    for item in again:
        answer = post(stack, item)
        assert (answer["status"], answer["event_id"]) == (
            "duplicate",
            answers[item.key]["event_id"],
        ), (item.key, answer)
    time.sleep(2.0)  # four of the worker's idle polls: a redelivery it acted on would show
    assert len(fake.calls) == calls_before, fake.calls[calls_before:]
    assert stack.counts()["done"] == len(routed) + 1
