"""Count the calls (and peak memory) of a first and a no-change reconciliation over HTTP.

    python -m tests.support.measure_reconcile --leads 1000 [--interested-every 50]
        [--replies 20] [--interest]

The fake Instantly runs as its own process (so its memory is not counted), the fake GHL in
a thread. `--interest` leaves interest statuses synced (the default); without it they are off
and only replies are polled.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from bridge import settings as settings_mod
from bridge.clients.instantly import InstantlyClient
from bridge.config import load_config
from bridge.reconcile.reconciler import Options
from bridge.reconcile.runs import run_recorded
from bridge.store import db as store
from bridge.sync.worker import Worker
from tests.support.ghl_server import FakeGHLServer
from tests.support.instantly_fake import API_KEY

LOCATION_ID = "loc_test"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--campaigns", type=int, default=1)
    parser.add_argument("--interested-every", type=int, default=0)
    parser.add_argument("--replies", type=int, default=0)
    parser.add_argument("--interest", action="store_true")
    args = parser.parse_args(argv)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.instantly_server",
            "--leads",
            str(args.leads),
            "--campaigns",
            str(args.campaigns),
            "--interested-every",
            str(args.interested_every),
            "--replies",
            str(args.replies),
            "--no-validate",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ghl = FakeGHLServer()
    try:
        instantly_url = server.stdout.readline().split()[-1]
        with tempfile.TemporaryDirectory() as tmp:
            results = _measure(args, instantly_url, ghl, Path(tmp))
    finally:
        ghl.stop()
        server.terminate()
        server.communicate(timeout=30)
    print(json.dumps(results, indent=2))


def _measure(args: argparse.Namespace, instantly_url: str, ghl: FakeGHLServer, tmp: Path) -> dict:
    config = load_config(
        {
            "BRIDGE_DATABASE": str(tmp / "bridge.sqlite3"),
            "BRIDGE_INSTANCE_PATH": str(tmp),
            "BRIDGE_SECRET_KEY": "measure",
            "INSTANTLY_API_KEY": API_KEY,
            "INSTANTLY_BASE_URL": instantly_url,
            "GHL_TOKEN": "ghl-test-token",
            "GHL_LOCATION_ID": LOCATION_ID,
            "GHL_BASE_URL": ghl.start(),
        }
    )
    db = store.connect(config.database)
    store.migrate(db)
    settings = copy.deepcopy(settings_mod.current(db)[1])
    settings["interest"]["enabled"] = args.interest
    out = {"leads": args.leads, "interest_synced": args.interest}
    for name in ("first_run", "no_change_run"):
        ghl_before = len(ghl.fake.calls)
        client = InstantlyClient(config.instantly_base_url, config.instantly_api_key)
        tracemalloc.start()
        summary = run_recorded(db, client, settings, Options(), "cli")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        Worker(config, db=db).run(drain=True)
        if args.interest:
            _apply_statuses(db)
        out[name] = {
            "status": summary.status,
            "errors": summary.errors,
            **{k: summary.totals()[k] for k in ("calls", "pages", "read", "found", "new")},
            "instantly_calls_replies": summary.replies.calls,
            "instantly_calls_statuses": summary.statuses.calls,
            "ghl_calls": len(ghl.fake.calls) - ghl_before,
            "peak_memory_kib": round(peak / 1024),
        }
    db.close()
    return out


def _apply_statuses(db) -> None:
    """What the interest issue's worker records once it has applied a status."""
    from bridge.store import contacts

    for row in list(
        db.query("SELECT email, occurred_at FROM events WHERE event_type = ?", ["lead_interested"])
    ):
        if contacts.get(db, LOCATION_ID, row["email"]) is None:
            contacts.record_upsert(db, LOCATION_ID, row["email"], f"contact-{row['email']}", {})
        db.execute(
            "UPDATE contacts SET interest_status = 'interested', interest_at = ? WHERE email = ?",
            [row["occurred_at"], row["email"]],
        )


if __name__ == "__main__":
    main()
