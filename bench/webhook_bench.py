"""Row 1: webhook acknowledgement throughput and latency, against a bare route on the
same app and server (gunicorn with the Procfile's settings, 2 workers x 8 threads)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import loadgen, procs
from bench.payloads import (
    BARE_PATH,
    SECRET,
    WEBHOOK_PATH,
    email_id,
    encode,
    lead_address,
    reply_body,
    template,
)
from bench.stats import percentile, summary

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post.lua"


def wrk(
    server: procs.Server, path: str, mode: str, seconds: float, connections: int, workdir: Path
) -> dict:
    """One closed-loop wrk run (2 threads): its JSON summary, requests per second, and the
    server's CPU time per request."""
    template_file = workdir / "template.json"
    template_file.write_text(template())
    env = {
        **os.environ,
        "BENCH_TEMPLATE": str(template_file),
        "BENCH_MODE": mode,
        "BENCH_RUN": f"{mode}-{time.monotonic_ns()}",
        "BENCH_SECRET": SECRET,
    }
    url = server.url + path
    command = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "-s", str(WRK_SCRIPT), url]
    cpu_before = server.cpu_seconds()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    cpu = server.cpu_seconds() - cpu_before
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    data = json.loads(line)
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    data["server_cpu_us_per_request"] = cpu / max(1, data["requests"]) * 1e6
    data["errors"] = sum(
        data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")
    )
    return data


def open_loop(port: int, path: str, run: str, rate: float, seconds: float, connections: int):
    """Fixed-rate sending of new events (each a new email_id and lead)."""
    bodies = [
        encode(reply_body(email_id(run, i), lead_address(run, i)))
        for i in range(int(rate * seconds))
    ]
    headers = {"Content-Type": "application/json", "X-Bridge-Secret": SECRET}
    result = loadgen.run(port, path, bodies.__getitem__, headers, rate, seconds, connections)
    stats = summary(result.latencies_ms())
    return {
        "offered_rps": rate,
        "achieved_rps": result.achieved_rate,
        "statuses": result.statuses(),
        "errors": len(result.errors) + result.unsent,
        "first_errors": result.errors[:3],
        **{f"{k}_ms" if k != "n" else k: v for k, v in stats.items()},
    }


def _warm_up(url: str) -> None:
    """A few requests to each route so both start with loaded code and open connections."""
    for i in range(40):
        for path in (BARE_PATH, WEBHOOK_PATH):
            body = encode(reply_body(email_id("warm", i), lead_address("warm", i)))
            request = urllib.request.Request(
                url + path,
                data=body,
                headers={"Content-Type": "application/json", "X-Bridge-Secret": SECRET},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                answer.read()


def run(
    out: Path,
    seconds: float = 3.0,
    rounds: int = 8,
    connections: int = 16,
    rate: float = 200.0,
    latency_seconds: float = 15.0,
) -> dict[str, Any]:
    have_wrk = shutil.which("wrk") is not None
    workdir = out / "webhook"
    shutil.rmtree(workdir, ignore_errors=True)
    port = procs.free_port()
    env = procs.bridge_env(workdir, port=port)
    procs.migrate(env)
    results: dict[str, Any] = {"connections": connections, "seconds": seconds, "rounds": []}
    with procs.web(workdir, env, port, app=procs.BENCH_APP) as server:
        _warm_up(server.url)
        # Alternate the two routes so drift on a shared machine hits both alike.
        for _ in range(rounds if have_wrk else 0):
            bare = wrk(server, BARE_PATH, "unique", seconds, connections, workdir)
            hook = wrk(server, WEBHOOK_PATH, "unique", seconds, connections, workdir)
            results["rounds"].append({"bare": bare, "webhook": hook})
        if have_wrk:
            results["duplicates"] = wrk(server, WEBHOOK_PATH, "same", seconds, connections, workdir)
        else:
            results["wrk_missing"] = "wrk is not installed (Debian: apt-get install wrk)"
        time.sleep(1)
        results["bare_open"] = open_loop(port, BARE_PATH, "ob", rate, latency_seconds, connections)
        results["webhook_open"] = open_loop(
            port, WEBHOOK_PATH, "ow", rate, latency_seconds, connections
        )
    results["stored_events"] = _count_events(env["BRIDGE_DATABASE"])
    if not have_wrk:
        return results
    # Each round's ratio compares two runs seconds apart; the median resists a noisy round.
    # Short rounds, many of them: on a shared machine another tenant's burst lasts seconds
    # and takes a round or two with it, not the median of eight.
    results["bare_rps"] = median(x["bare"]["rps"] for x in results["rounds"])
    results["webhook_rps"] = median(x["webhook"]["rps"] for x in results["rounds"])
    ratios = [x["webhook"]["rps"] / x["bare"]["rps"] for x in results["rounds"]]
    results["ratio"] = median(ratios)
    results["ratio_quartiles"] = (percentile(ratios, 25), percentile(ratios, 75))
    return results


def median(values) -> float:
    return percentile(list(values), 50)


def _count_events(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


if __name__ == "__main__":
    print(json.dumps(run(procs.OUT), indent=2, default=str))
