"""Row 3: sync throughput. The worker (`instantly-ghl-bridge worker`, as the Procfile runs
it) drains a queue of new contacts against a fake GHL that enforces GHL's 100 requests / 10 s per
location; how close does it get to that ceiling, and how often does it meet a 429?"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.payloads import email_id, lead_address, reply_body
from bench.stats import count_in, max_in_window
from bridge.events.webhook import from_webhook
from bridge.store import db as store
from bridge.store import inbox
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer

CEILING = (100, 10.0)  # GHL's documented burst limit per location


def run(out: Path, seconds: float = 60.0, events: int = 1000) -> dict[str, Any]:
    """Queue `events` new contacts, run the worker, count for `seconds`. Their shared tags go
    in bulk calls, about 1 call per contact, so 1000 outlast 60 s at the ceiling."""
    workdir = out / "sync"
    shutil.rmtree(workdir, ignore_errors=True)
    fake = FakeGHL(validate=True, rate_limit=CEILING, clock=time.monotonic)
    with FakeGHLServer(fake) as server:
        env = procs.bridge_env(workdir, ghl_url=server.url)
        procs.migrate(env)
        db = store.connect(env["BRIDGE_DATABASE"])
        for n in range(events):
            inbox.enqueue(db, from_webhook(reply_body(email_id("sync", n), lead_address("s", n))))
        with procs.worker(workdir, env):
            first = _wait_for(lambda: fake.calls, 30.0)
            if not first:
                raise RuntimeError("the worker made no GHL call within 30 s; see worker.log")
            t0 = fake.calls[0].at
            _wait_until(t0 + seconds + 0.5)
        done = db.execute("SELECT COUNT(*) FROM events WHERE status = 'done'").fetchone()[0]
        db.close()
    calls = [c for c in fake.calls if t0 <= c.at < t0 + seconds]
    ok = [c.at for c in calls if 200 <= c.status < 300]
    limited = sum(1 for c in calls if c.status == 429)
    windows = seconds / CEILING[1]
    per_window = [count_in(ok, t0 + i * CEILING[1], CEILING[1]) for i in range(int(windows))]
    return {
        "seconds": seconds,
        "ceiling_per_10s": CEILING[0],
        "accepted": len(ok),
        "per_10s": len(ok) / windows,
        "ratio": len(ok) / windows / CEILING[0],
        "answers": len(calls),
        "rate_limited": limited,
        "rate_limited_share": limited / len(calls) if calls else 0.0,
        "max_in_any_10s": max_in_window(ok, CEILING[1]),
        "per_10s_windows": per_window,
        "events_done": done,
        "other_errors": sum(1 for c in calls if c.status >= 300 and c.status != 429),
        "spec_errors": fake.spec_errors[:3],
    }


def _wait_for(check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _wait_until(moment: float) -> None:
    while time.monotonic() < moment:
        time.sleep(min(0.5, max(0.0, moment - time.monotonic())))


if __name__ == "__main__":
    print(json.dumps(run(procs.OUT), indent=2))
