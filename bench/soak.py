"""Soak test: the whole bridge under a steady stream of replies and random faults, for minutes.

    .venv/bin/python -m bench.soak --minutes 10 --rate 4

Runs gunicorn (the Procfile's command on 127.0.0.1), `instantly-ghl-bridge worker` and the fake GHL
(100 requests / 10 s per location, spec-checked), delivers replies at a steady rate with a
share of redeliveries, and meanwhile injects random faults: GHL 503 windows, 429s with
Retry-After, 500 bursts, and `kill -9` of the worker followed by a restart. Then it waits for
the queue to settle, replays what is dead once, and prints what was sent, accepted, synced
and dead, the duplicates found in GHL and the events lost. Exits 1 if either is not 0.
Not part of CI: `make test` runs the short fault tests in tests/faults instead.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.faults.harness import Stack
from tests.faults.procs import Proc, wait_until
from tests.faults.scenario import Reply, ghl_figures, replies

LEASE_SECONDS = "10"
# Instantly retries a delivery that failed; so does the soak, a few times, a while later.
REDELIVERY_TRIES = 5
REDELIVERY_WAIT = 10.0
SETTLE_SECONDS = 600.0


@dataclass
class Tally:
    """What the deliveries got back, per reply key."""

    answers: Counter[int] = field(default_factory=Counter)
    acknowledged: set[str] = field(default_factory=set)  # a 2xx at least once
    refused: set[str] = field(default_factory=set)  # no 2xx after every try
    redeliveries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sender:
    """Delivers replies at a steady rate; some deliveries repeat an earlier reply."""

    def __init__(self, stack: Stack, args: argparse.Namespace, rng: random.Random):
        self.stack = stack
        self.rate = args.rate
        self.redelivery_share = args.duplicates
        self.rng = rng
        self.pool = replies(
            int(args.minutes * 60 * args.rate) + 10, emails=args.leads, seed=args.seed, prefix="s"
        )
        self.sent: list[Reply] = []
        self.tally = Tally()

    def run(self, stop_at: float) -> None:
        """One delivery every 1/rate seconds until stop_at (bounded by the reply pool)."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="deliver") as pool:
            for k in range(len(self.pool) * 2):
                due = started + k / self.rate
                if due >= stop_at:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                pool.submit(self._deliver, self._next())

    def _next(self) -> Reply:
        if self.sent and self.rng.random() < self.redelivery_share:
            self.tally.redeliveries += 1
            recent = self.sent[-20:] if self.rng.random() < 0.5 else self.sent
            return self.rng.choice(recent)  # a recent one may still be in flight
        reply = self.pool[len(self.sent)]
        self.sent.append(reply)
        return reply

    def _deliver(self, reply: Reply) -> None:
        key = f"reply:{reply.email_id}"
        for attempt in range(REDELIVERY_TRIES):
            try:
                status = self.stack.post_event(reply.body).status_code
            except requests.RequestException:
                status = 0
            with self.tally.lock:
                self.tally.answers[status] += 1
                if 200 <= status < 300:
                    self.tally.acknowledged.add(key)
                    self.tally.refused.discard(key)
                    return
                self.tally.refused.add(key)
            if attempt + 1 < REDELIVERY_TRIES:
                time.sleep(REDELIVERY_WAIT)


class Faults:
    """Random faults at random intervals; keeps the web app and one worker running."""

    def __init__(self, stack: Stack, rng: random.Random, web_workers: int):
        self.stack = stack
        self.rng = rng
        self.worker: Proc = stack.start_worker(BRIDGE_LEASE_SECONDS=LEASE_SECONDS)
        self.log: list[tuple[float, str]] = []  # (seconds into the run, what happened)
        self.started = time.monotonic()
        self.kills = 0
        self.unexpected_exits: Counter[str] = Counter()
        self.web_workers = web_workers
        self.outage_seconds = 0.0

    def run(self, stop_at: float) -> None:
        for _ in range(10_000):
            pause = self.rng.uniform(15.0, 45.0)
            if time.monotonic() + pause >= stop_at:
                break
            self._watch(pause)
            self._inject(time.monotonic() - self.started)

    def _watch(self, seconds: float) -> None:
        """Sleep, restarting the web app or the worker if it ended without the soak ending it
        (as a process manager would): a crash, or a signal from outside. Counted and shown."""
        end = time.monotonic() + seconds
        for _ in range(int(seconds / 0.5) + 1):
            web = self.stack.web
            if web is not None and not web.alive() and not web.ended_by_test:
                self._note_exit(web)
                self.stack.start_web(workers=self.web_workers, threads=4)
            if not self.worker.alive() and not self.worker.ended_by_test:
                self._note_exit(self.worker)
                self.worker = self.stack.start_worker(BRIDGE_LEASE_SECONDS=LEASE_SECONDS)
            if time.monotonic() >= end:
                return
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def _note_exit(self, proc: Proc) -> None:
        self.unexpected_exits[proc.name] += 1
        note = f"{proc.name} {proc.pid} ended without the soak (exit {proc.popen.returncode})"
        self.log.append((time.monotonic() - self.started, note + "; started again"))

    def _inject(self, at: float) -> None:
        fake = self.stack.fake
        kind = self.rng.choice(["503", "429", "500", "kill", "kill"])
        if kind == "503":
            seconds = self.rng.uniform(5.0, 30.0)
            self.outage_seconds += seconds
            fake.fail_for(seconds, 503)
            note = f"GHL answers 503 for {seconds:.0f} s"
        elif kind == "429":
            wait = self.rng.randint(1, 10)
            fake.fail_next(
                1,
                429,
                headers={"Retry-After": str(wait)},
                body={"statusCode": 429, "message": "Too many requests"},
            )
            note = f"next GHL call answers 429, Retry-After: {wait}"
        elif kind == "500":
            fake.fail_next(3, 500)
            note = "next 3 GHL calls answer 500"
        else:
            self.worker.kill9()
            self.kills += 1
            down = self.rng.uniform(0.5, 5.0)
            time.sleep(down)
            self.worker = self.stack.start_worker(BRIDGE_LEASE_SECONDS=LEASE_SECONDS)
            note = f"worker killed with SIGKILL, restarted after {down:.1f} s"
        self.log.append((at, note))


def settle(stack: Stack, faults: Faults, timeout: float) -> None:
    """Wait until nothing is pending or processing (a live worker guaranteed)."""

    def quiet() -> bool:
        if not faults.worker.alive():
            faults.worker = stack.start_worker(BRIDGE_LEASE_SECONDS=LEASE_SECONDS)
        counts = stack.counts()
        return counts["pending"] + counts["processing"] == 0

    wait_until(quiet, timeout, "the queue to settle", interval=1.0)


def report(stack: Stack, sender: Sender, faults: Faults, replayed: int, args) -> int:
    """Print the figures; returns the exit status (1 when anything was doubled or lost)."""
    db = stack.db()
    rows = {key: status for key, status in db.execute("SELECT key, status FROM events")}
    counts = Counter(rows.values())
    acknowledged = sender.tally.acknowledged
    unstored = [k for k in acknowledged if k not in rows]
    stuck = [k for k in acknowledged if rows.get(k) not in (None, "done", "dead")]

    expected: dict[str, set[str]] = {}
    for reply in sender.sent:
        if f"reply:{reply.email_id}" in acknowledged:
            expected.setdefault(reply.email, set()).update(reply.tags)
    figures = ghl_figures(stack, expected)
    doubled_contacts = sum(n - 1 for n in figures.contacts_per_email.values() if n > 1)
    missing_in_ghl = []
    for reply in sender.sent:
        if rows.get(f"reply:{reply.email_id}") != "done":
            continue
        contact = stack.fake.contact_by_email(reply.email)
        if contact is None or not reply.tags <= set(contact["tags"]):
            missing_in_ghl.append(reply.email_id)
    doubled_notes = 0
    for notes in stack.fake.notes.values():
        bodies = [n["body"] for n in notes]
        doubled_notes += len(bodies) - len(set(bodies))
    extra_upserts = sum(figures.upserts_per_email.values()) - len(expected)
    resent_tags = figures.resent_tag_calls
    duplicates = doubled_contacts + doubled_notes
    lost = len(unstored) + len(stuck) + len(missing_in_ghl)

    print(f"\nsoak: {args.minutes:g} min at {args.rate:g} deliveries/s, seed {args.seed}")
    print(f"workdir: {stack.workdir}")
    for at, note in faults.log:
        print(f"  fault at {at:6.1f} s: {note}")
    print(
        f"faults: {len(faults.log)} ({faults.kills} worker kills, "
        f"{faults.outage_seconds:.0f} s of GHL 503); processes ended not by the soak: "
        f"{dict(faults.unexpected_exits) or 'none'}"
    )
    answers = {("no answer" if k == 0 else k): n for k, n in sender.tally.answers.items()}
    print(f"deliveries: {sum(sender.tally.answers.values())} answers {answers}")
    print(f"events sent:        {len(sender.sent)} (+{sender.tally.redeliveries} redeliveries)")
    print(
        f"accepted:           {len(acknowledged)} (never acknowledged: {len(sender.tally.refused)})"
    )
    print(f"synced:             {counts['done']}")
    print(f"dead:               {counts['dead']} (after replaying {replayed} dead events once)")
    print(f"duplicates in GHL:  {duplicates} ({doubled_contacts} contacts, {doubled_notes} notes)")
    print(
        f"lost:               {lost} ({len(unstored)} acknowledged but not stored, "
        f"{len(stuck)} never finished, {len(missing_in_ghl)} done but not in GHL)"
    )
    print(
        f"GHL: {figures.calls} calls {dict(sorted(figures.statuses.items()))}; "
        f"{len(expected)} contacts; repeated calls after kills: {extra_upserts} upserts, "
        f"{resent_tags} tag adds (at most one per kill: {faults.kills}); "
        f"spec errors {len(stack.fake.spec_errors)}"
    )
    return 1 if duplicates or lost or stack.fake.spec_errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=4.0, help="deliveries per second")
    parser.add_argument(
        "--duplicates", type=float, default=0.25, help="share of deliveries that repeat one"
    )
    parser.add_argument("--leads", type=int, default=1500, help="distinct lead emails")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="default: a new temporary folder")
    args = parser.parse_args(argv)
    if not (args.minutes > 0 and args.rate > 0 and 0 <= args.duplicates < 1):
        parser.error("--minutes and --rate must be positive, --duplicates in [0, 1)")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bridge-soak-"))
    stack = Stack(workdir)
    rng = random.Random(args.seed)
    try:
        # Retries quick enough that a 30 s outage ends in sync, not in the dead-letter list.
        stack.configure(max_attempts=8, backoff_base_seconds=2.0, backoff_max_seconds=30.0)
        stack.start_web(workers=args.web_workers, threads=4)
        sender = Sender(stack, args, random.Random(args.seed + 1))
        faults = Faults(stack, rng, args.web_workers)
        stop_at = faults.started + args.minutes * 60
        print(f"soak running for {args.minutes:g} min; logs in {workdir}", flush=True)
        chaos = threading.Thread(target=faults.run, args=(stop_at,), daemon=True)
        chaos.start()
        sender.run(stop_at)
        chaos.join(timeout=120)
        stack.fake.fail_for(0, 503)  # end any outage still running
        settle(stack, faults, SETTLE_SECONDS)
        replayed = 0
        if stack.counts()["dead"]:
            replayed = int(stack.cli("replay").stdout.split()[1])
            settle(stack, faults, SETTLE_SECONDS)
        return report(stack, sender, faults, replayed, args)
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
