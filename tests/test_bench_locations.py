"""The three-location sync row's arithmetic (bench/locations_bench.py, bench/report.py): the
figures it makes from the fake GHL's calls, the settings it routes with, and its table row."""

from __future__ import annotations

import pytest

from bench import locations_bench, report
from bench.payloads import reply_body
from bridge import settings as settings_mod

A, B, C = (loc[0] for loc in locations_bench.LOCATIONS)


def calls_at_the_ceiling(seconds: int) -> list[tuple[str, float, int]]:
    """Each location accepting 10 calls a second, every call inside the window."""
    return [
        (loc, t0 + i / 10, 200) for loc in (A, B, C) for t0 in range(seconds) for i in range(10)
    ]


def test_three_locations_at_their_ceilings_are_a_ratio_of_one():
    figures = locations_bench.summarise(calls_at_the_ceiling(60), [A, B, C], 0.0, 60.0)

    assert figures["ceiling_per_10s"] == 300
    assert figures["accepted"] == 1800 and figures["per_10s"] == 300
    assert figures["ratio"] == 1.0 and figures["rate_limited_share"] == 0.0
    assert figures["per_location"][B]["per_10s"] == 100
    assert figures["per_location"][C]["per_10s_windows"] == [100] * 6
    assert figures["per_location"][A]["accepted"] == 600


def test_calls_outside_the_window_and_refusals_are_counted_apart():
    calls = [
        (A, -0.5, 200),  # before the first counted call
        (A, 1.0, 200),
        (B, 2.0, 429),
        (C, 3.0, 503),
        (C, 4.0, 201),
        (B, 10.0, 200),  # just past a 10 s window
    ]
    figures = locations_bench.summarise(calls, [A, B, C], 0.0, 10.0)

    assert figures["answers"] == 4 and figures["accepted"] == 2
    assert figures["rate_limited"] == 1 and figures["rate_limited_share"] == 0.25
    assert figures["other_errors"] == 1
    assert figures["ratio"] == pytest.approx(2 / 300)
    assert figures["per_location"][B] == {
        "accepted": 0,
        "per_10s": 0.0,
        "rate_limited": 1,
        "max_in_any_10s": 0,
        "per_10s_windows": [0],
    }


def test_the_settings_route_two_campaigns_and_leave_the_first_to_the_default():
    settings = locations_bench.with_locations(settings_mod.load_defaults())
    valid = settings_mod.validate_settings(settings)

    routed = {loc["id"]: loc["campaigns"] for loc in valid["locations"]}
    campaign = {loc[0]: reply_body("x", "x@example.test", loc[3])["campaign_id"] for loc in
                locations_bench.LOCATIONS}  # fmt: skip
    assert routed == {B: [campaign[B]], C: [campaign[C]]}
    assert campaign[A] not in routed[B] + routed[C]
    assert valid["routing"]["default_location"] == ""


def test_the_row_gives_the_ratio_to_three_ceilings_and_the_slowest_location():
    figures = locations_bench.summarise(calls_at_the_ceiling(60), [A, B, C], 0.0, 60.0)
    figures["cross_location_calls"] = []

    (row,) = report._locations(figures)

    assert len(row) == len(report.HEADER)
    assert "3 locations" in row[0] and "100 req / 10 s on each" in row[0]
    assert row[1] == "ceiling 3 × 100 = 300 req / 10 s"
    assert row[2].startswith("300.0 req / 10 s (slowest location 100.0)")
    assert (row[3], row[5]) == ("1.00", "yes")


def test_a_cross_location_call_fails_the_row_whatever_the_throughput():
    figures = locations_bench.summarise(calls_at_the_ceiling(60), [A, B, C], 0.0, 60.0)
    figures["cross_location_calls"] = ["POST /contacts/upsert with loc_test's token: ..."]

    (row,) = report._locations(figures)

    assert row[5] == "**no**"


def test_a_failed_run_is_one_row_saying_why():
    (row,) = report._locations({"error": "RuntimeError: the worker made no GHL call"})
    assert row[2] == "RuntimeError: the worker made no GHL call"
