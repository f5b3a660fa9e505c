"""The GHL budget (bridge/clients/budget.py): one per location, shared through the database
by every process, steered by GHL's X-RateLimit-* headers, with a daily reserve and hold."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.clients import budget as budget_mod
from bridge.clients.budget import (
    DEFAULT_LIMIT,
    EDGE_SECONDS,
    IN_FLIGHT_SECONDS,
    Budget,
    BudgetSpent,
)
from bridge.clients.ghl import GHLBudgetSpent, GHLClient
from bridge.store import db as store
from tests.helpers import GHL_TOKEN, LOCATION_ID
from tests.support.clock import FakeClock
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_responses import GHL_BASE_URL, installed

T0 = 1_800_000_000.0  # a wall-clock time: reports print it as a date


def headers(remaining: int, daily: int = 150_000, limit: int = 100) -> dict[str, str]:
    return {
        "X-RateLimit-Max": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Interval-Milliseconds": "10000",
        "X-RateLimit-Limit-Daily": "200000",
        "X-RateLimit-Daily-Remaining": str(daily),
    }


def call(budget: Budget, answer: dict[str, str] | None = None, took: float = 0.0) -> None:
    """One call: a ticket, `took` seconds in flight, then its answer."""
    ticket = budget.acquire()
    if took:
        budget.clock.now += took
    budget.settle(ticket, answer)


@pytest.fixture
def migrated(tmp_path):
    db = store.connect(tmp_path / "bridge.sqlite3")
    store.migrate(db)
    yield db
    db.close()


def test_without_a_report_it_keeps_the_old_margin_then_waits_for_the_oldest_answer():
    clock = FakeClock(T0)
    budget = Budget(None, "loc", clock=clock, sleep=clock.sleep)
    for _ in range(DEFAULT_LIMIT):
        call(budget, took=0.01)
    assert clock.slept == []
    first_answer = T0 + 0.01
    assert budget.delay() == pytest.approx(first_answer + 10.0 + EDGE_SECONDS - clock.now)
    call(budget)
    assert clock.now == pytest.approx(first_answer + 10.0 + EDGE_SECONDS)


def test_with_ghls_figures_it_goes_to_the_ceiling_it_reports():
    clock = FakeClock(T0)
    budget = Budget(None, "loc", clock=clock, sleep=clock.sleep)
    for n in range(100):
        call(budget, headers(remaining=99 - n))
    assert clock.slept == [], "100 calls in the window: GHL's own Max, no 5% margin"
    assert budget.delay() > 9.9
    assert budget_mod_report(budget).in_window == 100


def budget_mod_report(budget: Budget) -> budget_mod.Report:
    row = budget._conn.execute(f"{budget_mod.SELECT} WHERE location_id = ?", ["loc"]).fetchone()
    return budget_mod._report("loc", budget_mod._state(row), budget.clock())


def test_a_call_is_counted_from_its_answer_so_a_slow_answer_never_ends_the_window_early():
    clock = FakeClock(T0)
    budget = Budget(None, "loc", clock=clock, sleep=clock.sleep)
    call(budget, headers(remaining=1, limit=2), took=3.0)  # GHL saw it somewhere in these 3 s
    call(budget, headers(remaining=0, limit=2))
    # The window ends 10 s after the first answer, not 10 s after it was sent.
    assert budget.delay() == pytest.approx(T0 + 3.0 + 10.0 + EDGE_SECONDS - clock.now)


def test_ghls_count_above_ours_is_counted_and_zero_remaining_fills_the_window():
    clock = FakeClock(T0)
    budget = Budget(None, "loc", clock=clock, sleep=clock.sleep)
    call(budget, headers(remaining=60))  # GHL counted 40: 39 calls we did not make
    assert budget_mod_report(budget).in_window == 40
    call(budget, headers(remaining=59))  # one more than ours at the edge: not another spender
    assert budget_mod_report(budget).in_window == 41
    call(budget, headers(remaining=0))
    assert budget_mod_report(budget).in_window == 100
    assert budget.delay() == pytest.approx(10.0 + EDGE_SECONDS)


def test_a_429s_wait_holds_every_budget_of_the_location_on_one_database(migrated):
    clock = FakeClock(T0)
    worker = Budget(migrated, LOCATION_ID, for_sync=True, clock=clock, sleep=clock.sleep)
    reconcile = Budget(migrated, LOCATION_ID, clock=clock, sleep=clock.sleep)
    other = Budget(migrated, "another", clock=clock, sleep=clock.sleep)
    ticket = worker.acquire()
    worker.settle(ticket, headers(remaining=0), retry_after=7.0)
    assert reconcile.delay() == pytest.approx(10.0 + EDGE_SECONDS)
    assert other.delay() == 0.0, "another location's budget is its own"
    worker.settle(worker.acquire(), None, retry_after=1e9)
    assert reconcile.delay() <= 15 * 60 + 1, "an absurd Retry-After is capped"


def test_a_restarted_process_knows_what_the_last_one_spent(migrated, tmp_path):
    database = tmp_path / "bridge.sqlite3"
    script = (
        "import sys, time\n"
        "from bridge.store import db as store\n"
        "from bridge.clients.budget import Budget\n"
        "b = Budget(store.connect(sys.argv[1]), 'loc_test', for_sync=True)\n"
        "for n in range(100):\n"
        "    b.settle(b.acquire(), {'X-RateLimit-Max': '100',"
        " 'X-RateLimit-Remaining': str(99 - n)})\n"
    )
    subprocess.run([sys.executable, "-c", script, str(database)], check=True, timeout=60)
    restarted = Budget(migrated, LOCATION_ID, for_sync=True)
    assert restarted.delay() > 9.0, "its window is full: a new process must not spend it again"


def test_a_call_lost_with_its_process_frees_its_place_in_time():
    clock = FakeClock(T0)
    budget = Budget(None, "loc", clock=clock, sleep=clock.sleep)
    for _ in range(DEFAULT_LIMIT):
        budget.acquire()  # never answered: the process died
    assert budget.delay() == pytest.approx(IN_FLIGHT_SECONDS + 10.0)
    clock.now += IN_FLIGHT_SECONDS + 10.0
    assert budget.delay() == 0.0


def test_a_clock_set_back_does_not_stall_the_budget():
    clock = FakeClock(T0)
    budget = Budget(None, "loc", clock=clock, sleep=clock.sleep)
    for n in range(100):
        call(budget, headers(remaining=99 - n))
    clock.now -= 3600
    assert budget.delay() <= 10.0 + EDGE_SECONDS


def test_a_damaged_row_costs_a_window_not_a_crash(migrated):
    budget = Budget(migrated, LOCATION_ID)
    call(budget, headers(remaining=10))
    migrated.execute("UPDATE ghl_budget SET calls = 'not json'")
    assert budget.delay() == 0.0
    call(budget, headers(remaining=10))


def test_the_daily_reserve_holds_syncing_and_one_probe_finds_the_day_back(migrated):
    clock = FakeClock(T0)
    sync = Budget(migrated, LOCATION_ID, for_sync=True, clock=clock, sleep=clock.sleep)
    sync.reserve, sync.probe_seconds, sync.label = 1000, 300.0, "Acme Dental"
    page = Budget(migrated, LOCATION_ID, clock=clock, sleep=clock.sleep)
    call(sync, headers(remaining=50, daily=1001))
    with pytest.raises(BudgetSpent) as spent:
        call(sync, headers(remaining=49, daily=1000))
        sync.acquire()
    assert spent.value.retry_after == pytest.approx(300.0)
    assert "Acme Dental" in spent.value.message and "1,000 kept in reserve" in spent.value.message
    report = budget_mod.report(migrated, LOCATION_ID, clock=clock)
    assert report.held and report.daily_remaining == 1000 and report.reserve == 1000
    assert "none is dead-lettered" in report.message("Acme Dental")
    assert sync.delay() == pytest.approx(300.0), "the lane sleeps until the probe"
    call(page, headers(remaining=48, daily=999))  # the reserve is for lookups like this one
    clock.now += 300.0
    call(sync, headers(remaining=99, daily=998))  # the probe: still spent
    with pytest.raises(BudgetSpent):
        sync.acquire()
    clock.now += 300.0
    call(sync, headers(remaining=99, daily=200_000))  # the probe: a new day
    assert not budget_mod.report(migrated, LOCATION_ID, clock=clock).held
    call(sync, headers(remaining=98, daily=199_999))


def test_a_lower_reserve_lifts_the_hold_at_once(migrated):
    clock = FakeClock(T0)
    sync = Budget(migrated, LOCATION_ID, for_sync=True, clock=clock, sleep=clock.sleep)
    sync.reserve = 1000
    call(sync, headers(remaining=50, daily=900))
    with pytest.raises(BudgetSpent):
        sync.acquire()
    sync.reserve = 100
    call(sync, headers(remaining=49, daily=899))
    assert not budget_mod.report(migrated, LOCATION_ID, clock=clock).held


def test_reports_list_every_location_and_nothing_before_a_call(migrated):
    assert budget_mod.report(migrated, LOCATION_ID) is None
    call(Budget(migrated, LOCATION_ID), headers(remaining=97, daily=123_456))
    call(Budget(migrated, "another"), None)
    reports = budget_mod.reports(migrated)
    assert set(reports) == {LOCATION_ID, "another"}
    mine = reports[LOCATION_ID]
    assert (mine.daily_remaining, mine.daily_limit, mine.limit) == (123_456, 200_000, 100)
    assert mine.in_window == 3 and not mine.held and mine.message() is None
    assert reports["another"].daily_remaining is None


def test_an_unmigrated_database_gets_a_private_budget(tmp_path):
    db = store.connect(tmp_path / "fresh.sqlite3")
    call(Budget(db, LOCATION_ID), headers(remaining=99))
    assert not db["ghl_budget"].exists()


VALUES = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=30),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(list(headers(0))),
        VALUES,
    ),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_any_header_values_keep_the_budget_sane(answer, retry_after):
    clock = FakeClock(T0)
    budget = Budget(None, "loc", for_sync=True, clock=clock, sleep=clock.sleep)
    budget.settle(budget.acquire(), answer, retry_after)
    wait = budget.delay()
    assert 0.0 <= wait <= 15 * 60 + 1
    report = budget_mod_report(budget)
    assert 1 <= report.limit <= 100_000 and 1.0 <= report.window_seconds <= 60.0
    assert report.in_window <= report.limit + 1


def test_the_client_spends_the_shared_budget_and_waits_when_ghl_says_zero(migrated):
    fake = FakeGHL(validate=True, rate_limit=(3, 10.0))
    clock = FakeClock(T0)
    budget = Budget(migrated, LOCATION_ID, for_sync=True, clock=clock, sleep=clock.sleep)
    with installed(fake):
        client = GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID, budget=budget)
        for n in range(3):
            client.upsert_contact({"email": f"lead{n}@example.com"})
        assert budget.delay() == pytest.approx(10.0 + EDGE_SECONDS)
        assert [c.status for c in fake.calls] == [200, 200, 200]
        fake.reset()  # GHL's window passed (its clock is not ours)
        client.upsert_contact({"email": "lead3@example.com"})
        assert [c.status for c in fake.calls] == [200], "no 429"
    assert sum(clock.slept) == pytest.approx(10.0 + EDGE_SECONDS)
    assert fake.spec_errors == []


def test_a_held_lane_client_sends_nothing_and_says_why(migrated):
    fake = FakeGHL(validate=True)
    budget = Budget(migrated, LOCATION_ID, for_sync=True)
    budget.reserve = 1000
    budget.settle(budget.acquire(), headers(remaining=99, daily=10))
    with installed(fake):
        client = GHLClient(GHL_BASE_URL, GHL_TOKEN, LOCATION_ID, budget=budget)
        with pytest.raises(GHLBudgetSpent) as raised:
            client.upsert_contact({"email": "lead@example.com"})
    assert fake.calls == []
    assert raised.value.retry_after > 0 and "daily budget" in raised.value.message
    stored = json.loads(migrated.execute("SELECT calls FROM ghl_budget").fetchone()[0])
    assert len(stored) == 1, "the refused call took no place in the window"
