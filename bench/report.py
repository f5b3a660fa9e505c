"""Turn the benchmarks' results into the table `make bench` prints and bench/RESULTS.md."""

from __future__ import annotations

import math
from typing import Any

from bench.stats import percentile

HEADER = ("What", "Baseline (same run)", "Measured", "Ratio", "Target", "Met")
SYNC_RATIO_TARGET = 0.97
# Contacts synced per second under a backlog, as a multiple of the floor of one contact at a
# time (2 calls each at 100 / 10 s): batched tags make it about 1 call per contact.
BACKLOG_RATIO_TARGET = 1.8
CEILING_TEXT = "100 req / 10 s"


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    out += _webhook(results.get("webhook", {}))
    out += _calls(results.get("calls", {}))
    out += _sync(results.get("sync", {}))
    out += _latency(results.get("latency", {}))
    out += _reconcile(results.get("reconcile", {}))
    out += _retention(results.get("retention", {}))
    out += _locations(results.get("locations", {}))
    out += _backlog(results.get("backlog", {}))
    out += _restarts(results.get("restarts", {}))
    out += _daily(results.get("daily", {}))
    return out


def markdown(table: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def _n(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _skipped(what: str, data: dict[str, Any]) -> list[tuple[str, ...]]:
    return [(what, "—", data.get("skipped") or data.get("error", "not run"), "—", "—", "—")]


def _webhook(w: dict[str, Any]) -> list[tuple[str, ...]]:
    if "webhook_open" not in w:
        return _skipped("1 · Webhook ack", w)
    bare_o, hook_o = w["bare_open"], w["webhook_open"]
    p99_ok = hook_o["p99_ms"] <= 25 and hook_o["errors"] == 0
    conns = w["connections"]
    latency = (
        f"1 · Webhook ack latency at {_n(hook_o['offered_rps'])} req/s offered, {conns} "
        "connections (open loop, from scheduled send)",
        f"bare p50 {_n(bare_o['p50_ms'], 1)} / p99 {_n(bare_o['p99_ms'], 1)} ms",
        f"p50 {_n(hook_o['p50_ms'], 1)} / p99 {_n(hook_o['p99_ms'], 1)} ms"
        + (f", {hook_o['errors']} errors" if hook_o["errors"] else ""),
        f"p99 {_n(hook_o['p99_ms'] / bare_o['p99_ms'], 1)}× bare",
        "p99 ≤ 25 ms",
        _met(p99_ok),
    )
    if not w["rounds"]:
        return [*_skipped("1 · Webhook ack throughput", {"skipped": w["wrk_missing"]}), latency]
    cpu_bare = _median([r["bare"]["server_cpu_us_per_request"] for r in w["rounds"]])
    cpu_hook = _median([r["webhook"]["server_cpu_us_per_request"] for r in w["rounds"]])
    return [
        (
            f"1 · Webhook ack throughput, new events, {conns} connections (wrk, median of "
            f"{len(w['rounds'])} alternating rounds)",
            f"bare route {_n(w['bare_rps'])} req/s",
            f"{_n(w['webhook_rps'])} req/s",
            _n(w["ratio"], 2) + _quartiles(w),
            "≥ 0.50",
            _met(w["ratio"] >= 0.5),
        ),
        latency,
        (
            "1 · (context) webhook server CPU per request, new events",
            f"bare {_n(cpu_bare)} µs",
            f"{_n(cpu_hook)} µs",
            _n(cpu_bare / cpu_hook, 2),
            "—",
            "—",
        ),
        (
            "1 · (context) webhook throughput, duplicate deliveries",
            f"bare route {_n(w['bare_rps'])} req/s",
            f"{_n(w['duplicates']['rps'])} req/s",
            _n(w["duplicates"]["rps"] / w["bare_rps"], 2),
            "—",
            "—",
        ),
    ]


def _quartiles(w: dict[str, Any]) -> str:
    """The middle half of the rounds' ratios: how far a noisy machine moved them."""
    if "ratio_quartiles" not in w:
        return ""
    low, high = w["ratio_quartiles"]
    return f" (rounds {_n(low, 2)}–{_n(high, 2)})"


def _calls(c: dict[str, Any]) -> list[tuple[str, ...]]:
    if "rows" not in c:
        return _skipped("2 · GHL calls per event", c)
    out = []
    for row in c["rows"]:
        measured = row["answer"] if row["calls"] is None else str(row["calls"])
        ok = None if row["calls"] is None else row["calls"] == row["floor"]
        note = f" ({row['note']})" if row["note"] and row["calls"] is not None else ""
        out.append(
            (
                f"2 · GHL calls per event: {row['case']}{note}",
                f"floor {row['floor']}",
                measured,
                "—" if row["calls"] is None else f"{row['calls']} / {row['floor']}",
                "= floor",
                _met(ok),
            )
        )
    if c.get("spec_errors"):
        out.append(("2 · GHL spec errors", "0", str(len(c["spec_errors"])), "—", "0", _met(False)))
    return out


def _sync(s: dict[str, Any]) -> list[tuple[str, ...]]:
    if "ratio" not in s:
        return _skipped("3 · Sync throughput", s)
    # One budget per location, steered by GHL's own count, goes close to the ceiling
    # without meeting a 429 (issue 17); a fixed 5% margin made 0.95.
    ok = s["ratio"] >= SYNC_RATIO_TARGET and s["rate_limited"] == 0
    return [
        (
            f"3 · Sync throughput over {_n(s['seconds'])} s, fake GHL enforcing "
            f"{s['ceiling_per_10s']} req / 10 s",
            f"ceiling {s['ceiling_per_10s']} req / 10 s",
            f"{_n(s['per_10s'], 1)} req / 10 s; {s['rate_limited']} of {s['answers']} "
            f"answers 429 ({_n(100 * s['rate_limited_share'], 1)}%)",
            _n(s["ratio"], 2),
            f"≥ {SYNC_RATIO_TARGET:.2f}, 0 answers 429",
            _met(ok),
        )
    ]


def _backlog(b: dict[str, Any]) -> list[tuple[str, ...]]:
    """Row 8: a backlog of new contacts with the same tags."""
    what = (
        f"8 · Backlog of {_n(b.get('events', 300))} new contacts (same tags), contacts "
        "synced per second"
    )
    if "ratio" not in b:
        return _skipped(what, b)
    counts = b["counts"]
    complete = b["contacts_synced"] == b["events"] and not counts.get("dead")
    ok = b["ratio"] >= BACKLOG_RATIO_TARGET and b["rate_limited"] == 0 and complete
    per_contact = b["calls_per_contact"]
    return [
        (
            what + f", fake GHL enforcing {CEILING_TEXT}",
            f"floor of 2 calls per contact: {_n(b['floor_contacts_per_second'], 1)} contacts/s",
            f"{_n(b['contacts_per_second'], 1)} contacts/s ({b['contacts_synced']} of "
            f"{b['events']} in {_n(b['seconds'], 1)} s, {b['accepted']} calls, "
            f"{_n(per_contact, 2) if per_contact else 'n/a'} per contact); {b['rate_limited']} "
            f"of {b['calls']} answers 429",
            f"{_n(b['ratio'], 2)}× floor",
            f"≥ {BACKLOG_RATIO_TARGET}× floor, 0 answers 429",
            _met(ok),
        )
    ]


def _restarts(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """Row 9: the worker killed and restarted during a backlog, a reconcile syncing beside it."""
    what = (
        f"9 · Worker killed (SIGKILL) and restarted {r.get('kills', 4)} times during a backlog "
        f"of {_n(r.get('events', 300))}; `reconcile` syncing {_n(r.get('replies', 100))} new "
        "replies beside it (started with no worker, the worker back while it syncs)"
    )
    if "rate_limited" not in r:
        return _skipped(what, r)
    counts = r["counts"]
    expected = r["events"] + r["replies"]
    done = counts.get("done", 0)
    beside = r["reconcile"].get("syncing_when_worker_started")
    ok = r["rate_limited"] == 0 and done == expected and bool(beside)
    return [
        (
            what + f", fake GHL enforcing {CEILING_TEXT}",
            "—",
            f"{r['rate_limited']} of {r['calls']} answers 429; busiest 10 s "
            f"{r['max_in_any_10s']} accepted; {done} of {expected} events done, "
            f"{counts.get('dead', 0)} dead"
            + ("" if beside else "; reconcile was not syncing when the worker came back"),
            "—",
            "0 answers 429",
            _met(ok),
        )
    ]


def _daily(d: dict[str, Any]) -> list[tuple[str, ...]]:
    """Row 10: the daily budget spent at the fake GHL, and the day coming back."""
    what = "10 · Daily budget exhausted at the fake GHL"
    if "dead" not in d:
        return _skipped(what, d)
    resumed = d["resumed_after_day_s"]
    ok = (
        d["dead"] == 0
        and d["done"] == d["events"]
        and d["status_said_held"] > 0
        and resumed is not None
        and d["settings_applied"]
    )
    said = (
        f"status said so in {d['status_said_held']} of {d['status_reads']} reads while held"
        if d["status_said_held"]
        else f"status did not say so ({d['status_reads']} reads while spent)"
    )
    return [
        (
            f"{what} ({_n(d['daily_limit'])} calls a day, a {_n(d['day_seconds'])} s day; reserve "
            f"{d['reserve']}, a check every {_n(d['probe_seconds'])} s; {d['events']} new "
            "contacts)",
            "—",
            f"{d['done']} of {d['events']} done, {d['dead']} dead; {d['accepted_first_day']} "
            f"calls the first day; {said}; "
            + (
                f"resumed {_n(resumed, 1)} s after the day came back, all done "
                f"{_n(d['all_done_after_day_s'], 1)} s after"
                if resumed is not None and d["all_done_after_day_s"] is not None
                else "did not resume"
            )
            + f"; {d['rate_limited']} answer{'' if d['rate_limited'] == 1 else 's'} 429"
            + ("" if d["settings_applied"] else "; no ghl_daily_* settings in this bridge"),
            "—",
            "events wait, none dead, resumes by itself",
            _met(ok),
        )
    ]


def _locations(s: dict[str, Any]) -> list[tuple[str, ...]]:
    """Row 7: row 3's measure with three locations, each with its own 100 / 10 s budget."""
    if "ratio" not in s:
        return _skipped("7 · Sync throughput, 3 locations", s)
    each, count = s["ceiling_per_location_10s"], s["locations"]
    # Shown beside the total: a location starved while the others took their ceilings
    # would hide inside a good sum.
    slowest = min(loc["per_10s"] for loc in s["per_location"].values())
    ok = s["ratio"] >= 0.9 and s["rate_limited_share"] <= 0.01 and not s["cross_location_calls"]
    return [
        (
            f"7 · Sync throughput over {_n(s['seconds'])} s, {count} locations, fake GHL "
            f"enforcing {each} req / 10 s on each",
            f"ceiling {count} × {each} = {s['ceiling_per_10s']} req / 10 s",
            f"{_n(s['per_10s'], 1)} req / 10 s (slowest location {_n(slowest, 1)}); "
            f"{s['rate_limited']} of {s['answers']} answers 429 "
            f"({_n(100 * s['rate_limited_share'], 1)}%)",
            _n(s["ratio"], 2),
            "≥ 0.90, ≤ 1% 429, 0 cross-location",
            _met(ok),
        )
    ]


def _latency(lat: dict[str, Any]) -> list[tuple[str, ...]]:
    if "p50_s" not in lat:
        return _skipped("4 · Webhook → contact written", lat)
    complete = lat["written"] == lat["sent"] and lat["send_errors"] == 0
    return [
        (
            f"4 · Webhook received → contact written at the fake GHL "
            f"({_n(lat['offered_rps'])} new contacts/s for {_n(lat['seconds'])} s)",
            "—",
            f"p50 {_n(lat['p50_s'], 2)} s / p99 {_n(lat['p99_s'], 2)} s "
            f"({lat['written']} of {lat['sent']} written)",
            "—",
            "p50 ≤ 2 s, p99 reported",
            _met(lat["p50_s"] <= 2 and complete),
        )
    ]


def _reconcile(r: dict[str, Any]) -> list[tuple[str, ...]]:
    if "shares" not in r:
        return _skipped("5 · No-change reconciliation", r)
    out = []
    for share, run in r["shares"].items():
        who = "every lead holds" if float(share) >= 1 else f"{float(share):.0%} of leads hold"
        for size in run["sizes"].values():
            ok = size["ghl_calls"] == 0 and size["over_floor"] <= 5 and not size["errors"]
            out.append(
                (
                    f"5 · No-change reconciliation of {_n(size['leads'])} leads ({who} a status)",
                    f"floor 0 GHL, {_n(size['instantly_floor'])} Instantly calls",
                    f"{size['ghl_calls']} GHL, {_n(size['instantly_calls'])} Instantly calls, "
                    f"peak RSS {_n(size['peak_rss_kb'] / 1024, 1)} MiB",
                    f"{size['over_floor']:+d} calls",
                    "0 GHL, ≤ +5 calls",
                    _met(ok),
                )
            )
        small, large = (_n(n) for n in (run["small"], run["large"]))
        out.append(
            (
                f"5 · Peak RSS of the reconciling process, {large} vs {small} leads ({who} a "
                "status)",
                f"peak RSS at {small}",
                f"peak RSS at {large}",
                _n(run["rss_ratio"], 2),
                "≤ 1.2",
                _met(run["rss_ratio"] <= 1.2),
            )
        )
    return out


# The pages may cost this much more on a year's store than on an empty one: they read
# running totals and indexes, never the whole history, and the dashboard renders its
# latest events, which an empty store has none of.
PAGE_RATIO_CEILING = 3.0


def _retention(r: dict[str, Any]) -> list[tuple[str, ...]]:
    if "steady_mib" not in r:
        return _skipped("6 · A year at 5,000 events/day", r)
    days, per_day = r["days"], r["per_day"]
    rules = r["retention"]
    held = r["lock_ms"]
    out = [
        (
            f"6 · Database size after {days} days at {_n(per_day)} events/day, default "
            f"retention (payloads {rules['payload_days']} d, events {rules['event_days']} d, "
            f"calls {rules['call_log_days']} d, runs {rules['run_days']} d)",
            f"no retention: {_n(r['no_retention_mib'] / 1024, 1)} GiB (growth of the first "
            f"{rules['payload_days']} days, for a year)",
            f"{_n(r['steady_mib'])} MiB at steady state (last days "
            f"{_n(r['steady_range_mib'][0])}–{_n(r['steady_range_mib'][1])} MiB), file "
            f"{_n(r['steady_file_mib'])} MiB",
            _n(r["steady_mib"] / r["no_retention_mib"], 2),
            "flat at steady state",
            _met(r["steady_range_mib"][1] <= r["steady_range_mib"][0] * 1.02),
        ),
        (
            "6 · Writers' lock held by one prune batch, over the whole run (a webhook "
            "arriving meanwhile waits that long)",
            f"budget {_n(held['budget'], 0)} ms",
            f"p50 {_n(held['p50'], 1)} / p99 {_n(held['p99'], 1)} / max {_n(held['max'], 1)} ms "
            f"over {_n(held['batches'])} batches",
            _n(held["p99"] / held["budget"], 1) + "× budget (p99)",
            "p99 ≤ 25 ms",
            _met(held["p99"] <= 25),
        ),
    ]
    for route, label in (("dashboard", "dashboard (logged in)"), ("healthz", "/healthz"),
                         ("metrics", "/metrics")):  # fmt: skip
        year, empty = r["timings_ms"]["year"][route], r["timings_ms"]["empty"][route]
        ratio = r["ratios"][route]
        out.append(
            (
                f"6 · {label} at that size (median of 15, test client)",
                f"empty database {_n(empty, 1)} ms",
                f"{_n(year, 1)} ms",
                _n(ratio, 2),
                f"≤ {PAGE_RATIO_CEILING:.0f}×",
                _met(ratio <= PAGE_RATIO_CEILING),
            )
        )
    return out


def _median(values: list[float]) -> float:
    return percentile(values, 50)
