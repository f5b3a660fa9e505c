"""The retention row's arithmetic (bench/retention_bench.py, bench/report.py): the table
rows it makes from a result, and the outcomes it gives a day's events."""

from __future__ import annotations

from collections import Counter

from bench import report, retention_bench

RESULT = {
    "days": 365,
    "per_day": 5000,
    "retention": {"payload_days": 30, "event_days": 90, "call_log_days": 30, "run_days": 90},
    "steady_mib": 1139.0,
    "steady_file_mib": 1139.0,
    "steady_range_mib": [1138.3, 1139.0],
    "no_retention_mib": 8542.0,
    "lock_ms": {"batches": 100, "p50": 4.2, "p99": 15.5, "max": 262.0, "budget": 5.0},
    "timings_ms": {
        "year": {"dashboard": 5.0, "healthz": 1.2, "metrics": 1.8},
        "empty": {"dashboard": 2.0, "healthz": 1.0, "metrics": 1.6},
    },
    "ratios": {"dashboard": 2.5, "healthz": 1.2, "metrics": 1.125},
}


def test_the_retention_rows_say_size_lock_and_page_ratios():
    rows = report._retention(RESULT)
    assert len(rows) == 5 and all(len(row) == len(report.HEADER) for row in rows)
    size, lock, dashboard, healthz, metrics = rows
    assert "1,139 MiB at steady state" in size[2] and "8.3 GiB" in size[1]
    assert size[3] == "0.13" and size[5] == "yes"
    assert "p99 15.5" in lock[2] and lock[5] == "yes"
    assert (dashboard[3], dashboard[5]) == ("2.50", "yes")
    assert (healthz[3], metrics[3]) == ("1.20", "1.12")


def test_a_failed_retention_run_is_one_row_saying_why():
    (row,) = report._retention({"error": "OSError: no space left"})
    assert row[2] == "OSError: no space left"


def test_a_days_outcomes_are_in_the_stated_shares():
    outcomes = Counter(retention_bench._status(n) for n in range(5000))
    assert outcomes == {"dead": 5, "ignored": 150, "superseded": 50, "done": 4795}
