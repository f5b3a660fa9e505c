"""Row 5: no-change reconciliation of 10,000 and 100,000 leads from a fake Instantly.

Every lead that holds an interest status already has it in the contact map, so the floor
is 0 GHL calls and one Instantly call per 100 leads read. Run with every lead holding a
status (all must be read and compared) and with a fifth of them (the reconciler may then
read only those, through Instantly's status filters, and beat the floor). Peak RSS of
the reconciling process at 100k is compared with its peak at 10k (memory must not grow
with the leads). Runs only where bridge.reconcile exists; elsewhere it says so.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import procs
from bench.fake_instantly import CHANGED_AT, email_of, status_code

STATUS_NAMES = {1: "interested", 2: "meeting_booked", 3: "meeting_completed", 4: "closed",
                0: "out_of_office", -1: "not_interested", -2: "wrong_person", -3: "lost",
                -4: "no_show"}  # fmt: skip


def run(
    out: Path, sizes: tuple[int, ...] = (10_000, 100_000), shares: tuple[float, ...] = (1.0, 0.2)
) -> dict:
    """Each size at each share of leads holding a status: 1.0 is the heaviest no-change
    run (every lead read and compared), 0.2 a more usual workspace."""
    return {"shares": {str(share): one_share(out, sizes, share) for share in shares}}


def one_share(out: Path, sizes: tuple[int, ...], share: float) -> dict[str, Any]:
    results = {str(n): one_size(out, n, share) for n in sizes}
    small, large = (results[str(n)] for n in (min(sizes), max(sizes)))
    return {
        "sizes": results,
        "small": min(sizes),
        "large": max(sizes),
        "rss_ratio": large["peak_rss_kb"] / small["peak_rss_kb"],
        "status_share": share,
    }


def one_size(out: Path, leads: int, share: float) -> dict[str, Any]:
    workdir = out / f"reconcile-{leads}"
    shutil.rmtree(workdir, ignore_errors=True)
    env = procs.bridge_env(workdir)
    procs.migrate(env)
    seeded = seed_contact_map(env["BRIDGE_DATABASE"], leads, share)
    port = procs.free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_instantly", "--port", str(port),
         "--leads", str(leads), "--status-share", str(share)],
        cwd=procs.ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        procs._wait_for_port(port, fake, timeout=15)
        done = subprocess.run(
            [sys.executable, "-m", "bench.reconcile_run", env["BRIDGE_DATABASE"],
             f"http://127.0.0.1:{port}"],
            cwd=procs.ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fake/calls", timeout=5) as answer:
            calls = json.load(answer)
    finally:
        procs.stop(fake)
    ghl_calls, events = drain_to_fake_ghl(workdir, env)
    floor = math.ceil(leads / 100)
    return {
        "leads": leads,
        "contacts_seeded": seeded,
        "instantly_calls": sum(calls.values()),
        "instantly_calls_by_route": calls,
        "instantly_floor": floor,
        "over_floor": sum(calls.values()) - floor,
        "events_enqueued": events,
        "ghl_calls": ghl_calls,
        "peak_rss_kb": result["peak_rss_kb"],
        "seconds": result["seconds"],
        "passes": {p: result.get(p, {}) for p in ("replies", "statuses")},
        "errors": result.get("errors", []),
    }


def seed_contact_map(database: str, leads: int, share: float) -> int:
    """Every lead holding a status is a contact that already has it (no change to make)."""
    import sqlite3

    rows = [
        (procs.LOCATION_ID, email_of(i), f"ghl{i}", "{}", "[]", STATUS_NAMES[code], CHANGED_AT)
        for i in range(leads)
        if (code := status_code(i, share)) is not None
    ]
    with sqlite3.connect(database) as conn:
        conn.executemany(
            "INSERT INTO contacts (location_id, email, contact_id, fields, tags,"
            " interest_status, interest_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row, CHANGED_AT) for row in rows],
        )
    return len(rows)


def drain_to_fake_ghl(workdir: Path, env: dict[str, str]) -> tuple[int, int]:
    """Sync whatever the run enqueued against a fake GHL: (GHL calls, events enqueued)."""
    from bridge.config import load_config
    from bridge.store import db as store
    from bridge.sync.worker import Worker
    from tests.support.ghl_fake import FakeGHL
    from tests.support.ghl_server import FakeGHLServer

    fake = FakeGHL(validate=True)
    with FakeGHLServer(fake) as server:
        config = load_config(procs.bridge_env(workdir, ghl_url=server.url))
        db = store.connect(config.database)
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        deadline = time.monotonic() + 60
        worker = Worker(config, db=db)
        while time.monotonic() < deadline and worker.run(drain=True):
            pass
        db.close()
    return len(fake.calls), events


if __name__ == "__main__":
    print(json.dumps(run(procs.OUT), indent=2))
