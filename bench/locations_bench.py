"""Row 7: sync throughput with three locations. The worker (`instantly-ghl-bridge worker`,
as the Procfile runs it) drains a queue of new contacts for three GHL locations, routed by
campaign, against a fake GHL that enforces 100 requests / 10 s on each location; how close
does it get to three times that ceiling, and how often does it meet a 429?

The same measure as row 3 (bench/sync_bench.py), with the calls counted per location."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import procs
from bench.payloads import email_id, lead_address, reply_body
from bench.stats import count_in, max_in_window
from bench.sync_bench import CEILING, _wait_for, _wait_until
from bridge import settings as settings_mod
from bridge.events.webhook import from_webhook
from bridge.store import db as store
from bridge.store import inbox
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer

# (location id, token, the env var holding it, the campaign routed there). The first is
# GHL_TOKEN + GHL_LOCATION_ID's location, which takes what no route claims.
LOCATIONS = (
    (procs.LOCATION_ID, procs.GHL_TOKEN, "", "Trust Attorneys Q4"),
    ("BenchLocationB000002", "bench-token-location-b", "GHL_TOKEN_BENCH_B", "Dental Recall"),
    ("BenchLocationC000003", "bench-token-location-c", "GHL_TOKEN_BENCH_C", "Estate Planning"),
)


def run(out: Path, seconds: float = 60.0, events: int = 1000) -> dict[str, Any]:
    """Queue `events` new contacts (about 1 call each: their shared tags go in bulk calls,
    so 1000 outlast 60 s at the ceiling) per location, run the worker, count the
    calls every location accepted for `seconds` from the first call."""
    workdir = out / "locations"
    shutil.rmtree(workdir, ignore_errors=True)
    fake = FakeGHL(procs.LOCATION_ID, procs.GHL_TOKEN, validate=True, rate_limit=CEILING)
    for location_id, token, _, _ in LOCATIONS[1:]:
        fake.add_location(location_id, token, rate_limit=CEILING)
    with FakeGHLServer(fake) as server:
        tokens = {env: token for _, token, env, _ in LOCATIONS[1:]}
        env = procs.bridge_env(workdir, ghl_url=server.url, **tokens)
        procs.migrate(env)
        db = store.connect(env["BRIDGE_DATABASE"])
        settings_mod.save(db, with_locations(settings_mod.current(db)[1]))
        for n in range(events):
            for i, (_, _, _, campaign) in enumerate(LOCATIONS):
                body = reply_body(email_id(f"loc{i}", n), lead_address(f"l{i}", n), campaign)
                inbox.enqueue(db, from_webhook(body))
        with procs.worker(workdir, env):
            if not _wait_for(lambda: fake.calls, 30.0):
                raise RuntimeError("the worker made no GHL call within 30 s; see worker.log")
            t0 = fake.calls[0].at
            _wait_until(t0 + seconds + 0.5)
        done = db.execute("SELECT COUNT(*) FROM events WHERE status = 'done'").fetchone()[0]
        db.close()
    calls = [(c.location or "", c.at, c.status) for c in fake.calls]
    return {
        **summarise(calls, [loc[0] for loc in LOCATIONS], t0, seconds),
        "events_done": done,
        "events_queued": events * len(LOCATIONS),
        "cross_location_calls": [str(v) for v in fake.violations[:3]],
        "spec_errors": fake.spec_errors[:3],
    }


def with_locations(settings: dict) -> dict:
    """The stored settings plus the two declared locations, each claiming its campaign (the
    first location's campaign is claimed by no route: it goes to the default location)."""
    declared = []
    for location_id, _, env, campaign in LOCATIONS[1:]:
        routed = reply_body("x", "x@example.test", campaign)["campaign_id"]
        declared.append({"id": location_id, "token_env": env, "campaigns": [routed]})
    return {**settings, "locations": declared}


def summarise(
    calls: Iterable[tuple[str, float, int]], locations: list[str], t0: float, seconds: float
) -> dict[str, Any]:
    """The row's figures from (location, time, status) of every call the fake answered."""
    window = [(loc, at, status) for loc, at, status in calls if t0 <= at < t0 + seconds]
    windows = seconds / CEILING[1]
    ceiling = CEILING[0] * len(locations)
    ok = [at for _, at, status in window if 200 <= status < 300]
    limited = sum(1 for _, _, status in window if status == 429)
    per_location = {}
    for location in locations:
        mine = [(at, status) for loc, at, status in window if loc == location]
        accepted = [at for at, status in mine if 200 <= status < 300]
        per_location[location] = {
            "accepted": len(accepted),
            "per_10s": len(accepted) / windows,
            "rate_limited": sum(1 for _, status in mine if status == 429),
            "max_in_any_10s": max_in_window(accepted, CEILING[1]),
            "per_10s_windows": [
                count_in(accepted, t0 + i * CEILING[1], CEILING[1]) for i in range(int(windows))
            ],
        }
    return {
        "seconds": seconds,
        "locations": len(locations),
        "ceiling_per_location_10s": CEILING[0],
        "ceiling_per_10s": ceiling,
        "accepted": len(ok),
        "per_10s": len(ok) / windows,
        "ratio": len(ok) / windows / ceiling,
        "answers": len(window),
        "rate_limited": limited,
        "rate_limited_share": limited / len(window) if window else 0.0,
        "other_errors": sum(1 for _, _, status in window if status >= 300 and status != 429),
        "per_location": per_location,
    }


if __name__ == "__main__":
    print(json.dumps(run(procs.OUT), indent=2))
