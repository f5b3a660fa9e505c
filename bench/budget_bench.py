"""Rows 8-10: GHL's budget per location (issue 17), measured on real processes.

- 8 `backlog`: 300 queued new contacts with the same tags, `instantly-ghl-bridge worker`
  against a fake GHL enforcing 100 requests / 10 s: contacts synced per second, against the
  floor of 2 calls per contact (5 contacts/s), and the 429s.
- 9 `restarts`: the same backlog while the worker is killed (SIGKILL) and started again 4
  times; before the 4th start, `instantly-ghl-bridge reconcile` runs with no worker beside it,
  finds new replies at a fake Instantly and syncs them itself, and the worker comes back while
  it still does: two writers on one location's budget. Counts the 429s.
- 10 `daily`: a fake GHL with a small daily budget and a day of seconds; the bridge keeps a
  small reserve and probes every few seconds. Counts dead events, reads `instantly-ghl-bridge
  status --json` while the location waits, and times the resumption once the day is back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import procs
from bench.payloads import email_id, lead_address, reply_body
from bench.stats import max_in_window
from bench.sync_bench import CEILING
from bridge import settings as settings_mod
from bridge.events.webhook import from_webhook
from bridge.settings import SettingsError
from bridge.store import db as store
from bridge.store import inbox
from tests.support.ghl_fake import FakeGHL, RecordedCall
from tests.support.ghl_server import FakeGHLServer
from tests.support.instantly_fake import API_KEY, FakeInstantly, populate
from tests.support.instantly_server import serving

FLOOR_CALLS_PER_CONTACT = 2  # an upsert and an add-tags, one contact at a time
FINAL = ("done", "dead", "ignored", "superseded")
# Replies a fake Instantly holds from long ago; reconcile reads them with --since this.
SINCE = "2000-01-01T00:00:00Z"


# --- row 8: a backlog ---------------------------------------------------------------------


def backlog(out: Path, events: int = 300, timeout: float = 240.0) -> dict[str, Any]:
    """Queue `events` new contacts with the same tags, run the worker until all are final."""
    workdir = _fresh(out / "backlog")
    fake = FakeGHL(validate=True, rate_limit=CEILING, clock=time.monotonic)
    with FakeGHLServer(fake) as server:
        env = procs.bridge_env(workdir, ghl_url=server.url)
        procs.migrate(env)
        db = store.connect(env["BRIDGE_DATABASE"])
        _enqueue(db, "backlog", events)
        with _worker(workdir, env):
            waited = _wait(lambda: _final(db) >= events, timeout)
        counts = inbox.counts(db)
        db.close()
    calls = _calls(fake)
    synced = _synced_contacts(fake, events, "backlog")
    ok = [c for c in calls if 200 <= c.status < 300]
    t0 = calls[0].at if calls else 0.0
    # A contact is synced once its tags are on it: the last accepted tags call ends the run.
    ended = max((c.at for c in ok if _is_tags_call(c)), default=t0)
    seconds = ended - t0
    per_second = synced / seconds if seconds > 0 else 0.0
    floor = CEILING[0] / CEILING[1] / FLOOR_CALLS_PER_CONTACT
    return {
        "events": events,
        "finished_in_time": waited,
        "counts": counts,
        "contacts_synced": synced,
        "seconds": seconds,
        "contacts_per_second": per_second,
        "floor_contacts_per_second": floor,
        "ratio": per_second / floor,
        "calls": len(calls),
        "accepted": len(ok),
        "calls_per_contact": len(ok) / synced if synced else None,
        "by_route": fake.counts(),
        "rate_limited": sum(1 for c in calls if c.status == 429),
        "max_in_any_10s": max_in_window([c.at for c in ok], CEILING[1]),
        "other_errors": sum(1 for c in calls if c.status >= 300 and c.status != 429),
        "spec_errors": fake.spec_errors[:3],
    }


# --- row 9: restarts, and a reconcile syncing beside the worker ---------------------------


def restarts(
    out: Path,
    events: int = 300,
    kills: int = 4,
    replies: int = 100,
    every: float = 6.0,
    timeout: float = 240.0,
) -> dict[str, Any]:
    """Kill the worker `kills` times, `every` seconds of its run apart, restarting it at
    once, except before the last start: then `reconcile` syncs `replies` new replies alone,
    and the worker starts while it still does."""
    workdir = _fresh(out / "restarts")
    fake = FakeGHL(validate=True, rate_limit=CEILING, clock=time.monotonic)
    instantly = FakeInstantly(api_key=API_KEY)
    populate(instantly, leads=replies, replies=replies)
    with FakeGHLServer(fake) as server, serving(instantly) as instantly_url:
        env = procs.bridge_env(
            workdir, ghl_url=server.url, INSTANTLY_API_KEY=API_KEY, INSTANTLY_BASE_URL=instantly_url
        )
        procs.migrate(env)
        db = store.connect(env["BRIDGE_DATABASE"])
        _enqueue(db, "restarts", events)
        starts: list[float] = []  # when each worker started (the fake's clock)
        killed: list[float] = []
        reconcile: dict[str, Any] = {}
        worker = _start_worker(workdir, env)
        starts.append(time.monotonic())
        try:
            if not _wait(lambda: fake.calls, 30.0):
                raise RuntimeError("the worker made no GHL call within 30 s; see worker.log")
            for _ in range(kills - 1):
                _wait(lambda: _final(db) >= events, every)
                _kill9(worker)
                killed.append(time.monotonic())
                worker = _start_worker(workdir, env)
                starts.append(time.monotonic())
            _wait(lambda: _final(db) >= events, every)
            _kill9(worker)
            killed.append(time.monotonic())
            # No worker runs: reconcile finds the replies and syncs them itself. Once it is
            # syncing, the worker comes back beside it.
            before = len(fake.calls)
            recon, recon_log = _start_reconcile(workdir, env)
            try:
                syncing = _wait(lambda: len(fake.calls) >= before + 20, 60.0)
                reconcile["syncing_when_worker_started"] = syncing and recon.poll() is None
                worker = _start_worker(workdir, env)
                starts.append(time.monotonic())
                reconcile["exit"] = _finish(recon, 180.0)
            finally:
                procs.stop(recon)
                recon_log.close()
            reconcile["output"] = (workdir / "reconcile.log").read_text()[-2000:]
            waited = _wait(lambda: _final(db) >= events + replies, timeout)
        finally:
            procs.stop(worker)
        counts = inbox.counts(db)
        polled = db.execute("SELECT COUNT(*) FROM events WHERE source = 'poll'").fetchone()[0]
        db.close()
    calls = _calls(fake)
    ok = [c.at for c in calls if 200 <= c.status < 300]
    limited = [c.at for c in calls if c.status == 429]
    return {
        "events": events,
        "replies": replies,
        "kills": len(killed),
        "finished_in_time": waited,
        "counts": counts,
        "polled_events": polled,
        "reconcile": reconcile,
        "calls": len(calls),
        "rate_limited": len(limited),
        # Where the 429s fell: seconds after the latest worker start before each one.
        "rate_limited_after_start": [
            round(at - max(s for s in starts if s <= at), 1)
            for at in limited
            if any(s <= at for s in starts)
        ],  # fmt: skip
        # And how full GHL's window was when it refused: the calls it had accepted in the
        # 10 s before each 429 (100: the bridge sent one past the limit).
        "accepted_before_429": [_count_before(ok, at, CEILING[1]) for at in limited],
        "max_in_any_10s": max_in_window(ok, CEILING[1]),
        "seconds": (calls[-1].at - calls[0].at) if calls else 0.0,
        "other_errors": sum(1 for c in calls if c.status >= 300 and c.status != 429),
        "spec_errors": fake.spec_errors[:3],
    }


# --- row 10: the daily budget -------------------------------------------------------------


def daily(
    out: Path,
    events: int = 120,
    daily_limit: int = 100,
    day_seconds: float = 40.0,
    reserve: int = 10,
    probe_seconds: float = 5.0,
) -> dict[str, Any]:
    """Queue more calls than a day allows, even at one call per contact; is anything dead,
    does `status` say why the events wait, and does the worker carry on by itself once the
    day is back (and the days after, as long as it takes)?"""
    workdir = _fresh(out / "daily")
    fake = FakeGHL(
        validate=True,
        rate_limit=CEILING,
        clock=time.monotonic,
        daily_limit=daily_limit,
        day_seconds=day_seconds,
    )
    with FakeGHLServer(fake) as server:
        env = procs.bridge_env(workdir, ghl_url=server.url)
        procs.migrate(env)
        db = store.connect(env["BRIDGE_DATABASE"])
        applied = _set_sync(db, ghl_daily_reserve=reserve, ghl_daily_probe_seconds=probe_seconds)
        _enqueue(db, "daily", events)
        reads: list[dict[str, Any]] = []
        with _worker(workdir, env):
            if not _wait(lambda: fake.calls, 30.0):
                raise RuntimeError("the worker made no GHL call within 30 s; see worker.log")
            t0 = fake.calls[0].at
            day_ends = t0 + day_seconds
            # While the day's budget is spent and events wait, read what status says.
            while time.monotonic() < day_ends - 2 and _final(db) < events:
                if _spent(fake, reserve):
                    reads.append(_status(env, time.monotonic() - t0))
                time.sleep(3.0)
            # Two calls per contact take three of these days; give them four.
            finished = _wait(lambda: _final(db) >= events, 4 * day_seconds + 30.0)
        counts = inbox.counts(db)
        db.close()
    calls = _calls(fake)
    ok = [c for c in calls if 200 <= c.status < 300]
    first_day = [c for c in ok if c.at < day_ends]
    after = [c.at for c in ok if c.at >= day_ends]
    said = [r for r in reads if r["held"]]
    return {
        "events": events,
        "daily_limit": daily_limit,
        "day_seconds": day_seconds,
        "reserve": reserve,
        "probe_seconds": probe_seconds,
        "settings_applied": applied,
        "finished_in_time": finished,
        "counts": counts,
        "dead": counts.get("dead", 0),
        "done": counts.get("done", 0),
        "calls": len(calls),
        "accepted_first_day": len(first_day),
        "left_first_day": daily_limit - len(first_day),
        "rate_limited": sum(1 for c in calls if c.status == 429),
        "status_reads": len(reads),
        "status_said_held": len(said),
        "status_message": (said or reads or [{}])[0].get("message"),
        "resumed_after_day_s": (after[0] - day_ends) if after else None,
        "all_done_after_day_s": (ok[-1].at - day_ends) if after and finished else None,
        "spec_errors": fake.spec_errors[:3],
    }


def _count_before(times: list[float], moment: float, window: float) -> int:
    return sum(1 for at in times if moment - window < at <= moment)


def _spent(fake: FakeGHL, reserve: int) -> bool:
    """The day's budget is down to what the bridge keeps back (or gone)."""
    return fake.default.snapshot()["daily_remaining"] <= reserve


def _status(env: dict[str, str], at: float) -> dict[str, Any]:
    """`status --json`, and whether it says the location waits for its daily budget: a
    location's budget report held, or a warning or problem naming the daily budget."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "status", "--json"],
        env=env,
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        facts = json.loads(done.stdout)
    except ValueError:
        return {"at": round(at, 1), "held": False, "message": done.stderr[-300:]}
    held, message = said_held(facts)
    return {"at": round(at, 1), "held": held, "message": message}


def said_held(facts: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether a health report says a location waits for its daily budget (a warning or
    problem naming it, or a location's budget report held), and the sentence it says it in
    (else every warning and problem, for the row's notes)."""
    sentences = [str(s) for s in _sentences(facts)]
    budget_said = [s for s in sentences if "daily budget" in s]
    held = any(
        (block.get("ghl_budget") or {}).get("held_since")
        for block in (facts.get("locations") or {}).values()
        if isinstance(block, dict)
    )
    if budget_said:
        return True, budget_said[0]
    return held, "; ".join(sentences)[:300] or None


def _sentences(facts: Any) -> Iterator[Any]:
    """Every warning and problem in a health report, the bridge's and each location's."""
    if isinstance(facts, dict):
        for key, value in facts.items():
            if key in ("warnings", "problems") and isinstance(value, list | dict):
                yield from value.values() if isinstance(value, dict) else value
            elif isinstance(value, dict | list):
                yield from _sentences(value)
    elif isinstance(facts, list):
        for item in facts:
            yield from _sentences(item)


def _set_sync(db, **values: Any) -> bool:
    """Store these sync settings; False when the bridge does not know them (the code before
    issue 17's budget), which the row then reports."""
    _, current = settings_mod.current(db)
    current["sync"].update(values)
    try:
        settings_mod.save(db, current)
    except SettingsError:
        return False
    stored = settings_mod.current(db)[1]["sync"]
    return all(stored.get(name) == value for name, value in values.items())


# --- shared -------------------------------------------------------------------------------


def _fresh(workdir: Path) -> Path:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return workdir


def _enqueue(db, run: str, events: int) -> None:
    """`events` replies from new leads, one campaign: each contact needs the same tags."""
    for n in range(events):
        inbox.enqueue(db, from_webhook(reply_body(email_id(run, n), lead_address(run, n))))


def _final(db) -> int:
    marks = ",".join("?" * len(FINAL))
    return db.execute(f"SELECT COUNT(*) FROM events WHERE status IN ({marks})", FINAL).fetchone()[0]


def _calls(fake: FakeGHL) -> list[RecordedCall]:
    with fake._lock:  # the server's threads append while we read
        return sorted(fake.calls, key=lambda c: c.at)


def _is_tags_call(call: RecordedCall) -> bool:
    return call.method == "POST" and (
        call.path.endswith("/tags") or call.path.startswith("/contacts/bulk/tags/")
    )


def _synced_contacts(fake: FakeGHL, events: int, run: str) -> int:
    """Leads of this run whose contact holds the campaign's tags at the fake."""
    wanted = {t.lower() for t in _expected_tags()}
    synced = 0
    for n in range(events):
        contact = fake.contact_by_email(lead_address(run, n))
        if contact and wanted <= set(contact.get("tags") or []):
            synced += 1
    return synced


def _expected_tags() -> list[str]:
    from bridge.sync.steps import normalise_tag

    campaign = reply_body("x", "x@example.test")["campaign_name"]
    return ["instantly-replied", normalise_tag(f"instantly-campaign-{campaign}")]


def _wait(check: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def _start_worker(workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    """The Procfile's worker; every start appends to one worker.log."""
    with open(workdir / "worker.log", "ab") as log:
        log.write(f"--- worker started at {time.strftime('%H:%M:%S')}\n".encode())
        log.flush()
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker"],
            env=env,
            cwd=procs.ROOT,
            stdout=log,
            stderr=log,
        )


@contextmanager
def _worker(workdir: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    proc = _start_worker(workdir, env)
    try:
        yield proc
    finally:
        procs.stop(proc)


def _kill9(proc: subprocess.Popen) -> None:
    """SIGKILL our worker (by its own pid) and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _start_reconcile(workdir: Path, env: dict[str, str]):
    log = open(workdir / "reconcile.log", "ab")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "reconcile", "--since", SINCE],
        env=env,
        cwd=procs.ROOT,
        stdout=log,
        stderr=log,
    )
    return proc, log


def _finish(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["backlog", "restarts", "daily"]
    runs = {"backlog": backlog, "restarts": restarts, "daily": daily}
    print(json.dumps({name: runs[name](procs.OUT) for name in chosen}, indent=2, default=str))
