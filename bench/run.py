"""`make bench`: every benchmark in one run, the table printed and written to RESULTS.md.

    .venv/bin/python -m bench.run [--quick]
        [--only webhook,calls,sync,latency,reconcile,retention,locations,backlog,restarts,daily]

Each figure is compared with a baseline measured in this same run on this machine (or a
fixed floor or ceiling): absolute times on shared machines drift. Loopback and local fakes
only; every load is bounded in count and time. --quick shortens every run (a smoke test of
the harness; its figures are not the ones to publish).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    budget_bench,
    calls_bench,
    latency_bench,
    locations_bench,
    procs,
    reconcile_bench,
    report,
    retention_bench,
    sync_bench,
    webhook_bench,
)

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
COMMAND = "make bench"


def benches(quick: bool) -> dict[str, Any]:
    out = procs.OUT
    if quick:
        return {
            "webhook": lambda: webhook_bench.run(out, seconds=2, rounds=2, latency_seconds=3),
            "calls": lambda: calls_bench.run(out),
            "sync": lambda: sync_bench.run(out, seconds=20, events=300),
            "latency": lambda: latency_bench.run(out, seconds=8),
            "reconcile": lambda: reconcile_bench.run(out, sizes=(1_000, 5_000)),
            "retention": lambda: retention_bench.run(out, per_day=500),
            "locations": lambda: locations_bench.run(out, seconds=20, events=300),
            "backlog": lambda: budget_bench.backlog(out, events=100),
            "restarts": lambda: budget_bench.restarts(out, events=100, replies=40, every=3.0),
            "daily": lambda: budget_bench.daily(out, events=50, daily_limit=40, day_seconds=20),
        }
    return {
        "webhook": lambda: webhook_bench.run(out),
        "calls": lambda: calls_bench.run(out),
        "sync": lambda: sync_bench.run(out),
        "latency": lambda: latency_bench.run(out),
        "reconcile": lambda: reconcile_bench.run(out),
        "retention": lambda: retention_bench.run(out),
        "locations": lambda: locations_bench.run(out),
        "backlog": lambda: budget_bench.backlog(out),
        "restarts": lambda: budget_bench.restarts(out),
        "daily": lambda: budget_bench.daily(out),
    }


def machine() -> dict[str, Any]:
    mem_kb = 0
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024),
        "cpu": model,
        "python": platform.python_version(),
        "load_before": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--only", help="comma-separated: " + ",".join(benches(False)))
    args = parser.parse_args(argv)
    chosen = benches(args.quick)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    procs.OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    info = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), **machine()}
    results: dict[str, Any] = {}
    for name, bench in chosen.items():
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            results[name] = bench()
        except Exception as exc:  # one broken row must not lose the others
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["wall_seconds"] = round(time.monotonic() - t0, 1)
        if "skipped" in results[name]:
            print(results[name]["skipped"], file=sys.stderr)
    info["wall_seconds"] = round(time.monotonic() - started)
    info["load_after"] = os.getloadavg()[0]
    table = report.markdown(report.rows(results))
    command = COMMAND + (" (--quick)" if args.quick else "")
    text = render(info, table, command, results)
    print(table)
    print(f"\n{_machine_line(info)}; {info['wall_seconds']} s in all")
    (procs.OUT / "results.json").write_text(json.dumps({"machine": info, **results}, indent=2))
    if not args.only and not args.quick:
        RESULTS_MD.write_text(text)
        print(f"written to {RESULTS_MD.relative_to(procs.ROOT)}")
    return 0


def _machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info['date']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, {info['cpu']}, "
        f"Python {info['python']}; load average {info['load_before']:.1f} before, "
        f"{info['load_after']:.1f} after"
    )


def render(info: dict[str, Any], table: str, command: str, results: dict[str, Any]) -> str:
    walls = ", ".join(f"{k} {v.get('wall_seconds', '?')} s" for k, v in results.items())
    return f"""# Benchmark results

Written by `{command}` (`.venv/bin/python -m bench.run`): {_machine_line(info)}.
Wall time {info["wall_seconds"]} s ({walls}).

Every figure is set against a baseline measured in the same run on the same machine, or
against a fixed floor or ceiling. Loopback and local fakes only. The web server is gunicorn
with the Procfile's settings (2 processes x 8 threads); the worker is `instantly-ghl-bridge worker`.
How each row is measured: bench/README.md. What the webhook path cost and what changed:
bench/PROFILE.md.

{table}

Raw figures of this run: `bench/out/results.json` (not committed).
"""


if __name__ == "__main__":
    raise SystemExit(main())
