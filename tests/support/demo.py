"""`make demo`: the whole bridge working in one command, with no account anywhere.

    python -m tests.support.demo [--port 8180] [--exit-after-setup]

Starts the fake GHL and the fake Instantly (tests/support) on loopback, then the real bridge
(`instantly-ghl-bridge run`: web and worker) on a fresh database in a temporary folder,
pointed at them. It registers the bridge's webhooks and runs `doctor`, sends a handful of
webhooks built from deliveries Instantly really sent (a reply, an interest change, an
unsubscribe, and one the fake GHL refuses, which is dead-lettered), waits until they are
synced, says what happened to each, and prints the page's address and password. Ctrl-C (or
SIGTERM) stops everything and removes the folder; the user's .env and database are never
read or touched.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bridge import settings as settings_mod
from bridge.config import ENV_FILE_VAR
from bridge.store import db as store
from bridge.store import inbox
from tests.support.env_names import PREFIXES, bridge_env_names
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer
from tests.support.instantly_fake import FakeInstantly, stamp
from tests.support.instantly_server import serving
from tests.support.specs import SPECS_DIR

HOST = "127.0.0.1"
DEFAULT_PORT = 8180
LOCATION_ID = "loc_demo"
SAMPLES = SPECS_DIR / "instantly" / "webhook-samples"
REFUSED = "blocked.lead@example.com"
REFUSAL = "email is on this location's blocklist (the demo's fake GHL refuses this address)"
FINAL = (inbox.DONE, inbox.IGNORED, inbox.SUPERSEDED, inbox.DEAD)
SETTLE_SECONDS = 60.0
START_SECONDS = 90.0
STOP_SECONDS = 20.0
READY_LINE = "Ctrl-C stops the demo"

# Used when ../shared/specs (the captured deliveries) is not beside the repository: a reply
# in the shape of reply_received.middleware-instantly-attio.2025-11-24.json.
BUILT_IN_REPLY: dict[str, Any] = {
    "timestamp": "2025-11-24T05:45:10.314Z",
    "event_type": "reply_received",
    "workspace": "086e295d-72ec-481b-8e54-260d8708afbf",
    "campaign_id": "f1631d04-7c81-4444-84bb-73a3a0c3a44b",
    "campaign_name": "Reachout to Trust Attorney",
    "unibox_url": "https://app.instantly.ai/app/unibox?thread_search=thread:f1-demo",
    "email_account": "sender@agency.example",
    "lead_email": "jordan.lead@example.com",
    "email": "jordan.lead@example.com",
    "firstName": "Jordan",
    "lastName": "Lead",
    "step": 1,
    "variant": 1,
    "email_id": "019ab465-0036-7b51-9914-3353686e7dc1",
    "is_first": True,
    "reply_subject": "Re: Your thoughts?",
    "reply_text": "Sure, how about 11/26 9am ET?\n\nJordan",
    "reply_text_snippet": "Sure, how about 11/26 9am ET?",
}
REPLY_FIELDS = ("reply_text", "reply_html", "reply_text_snippet", "reply_subject", "email_id")


@dataclass
class Sent:
    """One demo webhook: what it shows, what was posted, the event the bridge stored."""

    what: str
    body: dict[str, Any]
    event_id: int = 0


def demo_events(now: datetime) -> list[Sent]:
    """The four deliveries, from the captured samples when present, a second apart."""
    reply = _sample("reply_received.middleware-instantly-attio.2025-11-24.json", BUILT_IN_REPLY)
    interested = _sample(
        "lead_interested.GovClerk.2025-06.json",
        {
            **BUILT_IN_REPLY,
            "event_type": "lead_interested",
            "lead_email": "sam.keen@example.com",
            "email": "sam.keen@example.com",
            "firstName": "Sam",
            "lastName": "Keen",
        },
    )
    # No unsubscribe was captured: Instantly sends the lead's fields without the reply's.
    unsubscribed = {
        k: v
        for k, v in _sample("reply_received.equity-connect.2025-10-15.json", BUILT_IN_REPLY).items()
        if k not in REPLY_FIELDS
    }
    unsubscribed.update(event_type="lead_unsubscribed", email_account=reply["email_account"])
    if unsubscribed["lead_email"] == reply["lead_email"]:
        unsubscribed.update(lead_email="alex.lead@example.com", email="alex.lead@example.com")
    refused = {**copy.deepcopy(reply), "lead_email": REFUSED, "email": REFUSED}
    refused.update(email_id="019ab465-0036-7b51-9914-0000000de4d1", firstName="Blocked")
    sent = [
        Sent("a reply", reply),
        Sent("an interest change", interested),
        Sent("an unsubscribe", unsubscribed),
        Sent("a reply GHL refuses", refused),
    ]
    for i, item in enumerate(sent):
        item.body["timestamp"] = stamp(now - timedelta(seconds=len(sent) - i))
    return sent


def _sample(name: str, fallback: dict[str, Any]) -> dict[str, Any]:
    path = SAMPLES / name
    if not path.is_file():
        return copy.deepcopy(fallback)
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["body"] if "headers" in data and "body" in data else data


class Demo:
    """The fakes, the bridge's processes and the temporary folder they share."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.workdir = workdir
        self.password = "demo-" + secrets.token_urlsafe(9)
        self.webhook_secret = secrets.token_urlsafe(24)
        self.ghl = FakeGHL(location_id=LOCATION_ID, token="pit-demo-" + secrets.token_hex(8))
        self.ghl.refuse_email(REFUSED, REFUSAL)
        self.instantly = FakeInstantly(api_key="demo-" + secrets.token_urlsafe(16))
        self.instantly.add_campaign("Reachout to Trust Attorney")
        self.log_path = workdir / "bridge.log"
        self.bridge: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def database(self) -> Path:
        return self.workdir / "instance" / "bridge.sqlite3"

    def env(self, ghl_url: str, instantly_url: str) -> dict[str, str]:
        """The bridge's environment: the fakes, fresh secrets, nothing of the user's."""
        owned = bridge_env_names()
        base = {
            k: v for k, v in os.environ.items() if k not in owned and not k.startswith(PREFIXES)
        }
        return {
            **base,
            "PYTHONUNBUFFERED": "1",
            # A path that does not exist: no .env is read, wherever the demo is started.
            ENV_FILE_VAR: str(self.workdir / "no.env"),
            "BRIDGE_INSTANCE_PATH": str(self.workdir / "instance"),
            "BRIDGE_DATABASE": str(self.database),
            "BRIDGE_WEBHOOK_SECRET": self.webhook_secret,
            "BRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
            "BRIDGE_ADMIN_PASSWORD": self.password,
            "BRIDGE_PUBLIC_URL": self.url,
            "BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL": "1",
            "GHL_BASE_URL": ghl_url,
            "GHL_TOKEN": self.ghl.token,
            "GHL_LOCATION_ID": LOCATION_ID,
            "INSTANTLY_BASE_URL": instantly_url,
            "INSTANTLY_API_KEY": self.instantly.api_key,
            "HOST": HOST,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "1",
            "WEB_THREADS": "4",
            "BRIDGE_ACCESS_LOG": "0",
        }

    # --- setting up -------------------------------------------------------------------------

    def cli(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def configure(self) -> str:
        """Switch on the reply note and the opportunity, on a pipeline the fake GHL has."""
        pipeline = self.ghl.add_pipeline("Instantly leads", ["Replied", "Interested", "Booked"])
        db = store.connect(self.database)
        try:
            _, current = settings_mod.current(db)
            current["actions"]["reply_note"]["enabled"] = True
            opportunity = current["actions"]["opportunity"]
            opportunity.update(
                enabled=True, pipeline_id=pipeline["id"], stage_id=pipeline["stages"][1]["id"]
            )
            settings_mod.save(db, current)
        finally:
            db.close()
        return pipeline["name"]

    def start_bridge(self, env: dict[str, str]) -> None:
        """`instantly-ghl-bridge run` in a session of its own: the demo decides when it stops."""
        with open(self.log_path, "ab") as log:
            self.bridge = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"],
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        # A first start in a fresh clone compiles every module first: allow for a slow one.
        self._wait(self._answers, START_SECONDS, "the bridge to answer /healthz")

    def _answers(self) -> bool:
        self.assert_running()
        try:
            self.session.get(self.url + "/healthz", timeout=5)
        except (requests.ConnectionError, requests.Timeout):
            return False  # not listening yet, or its worker still booting
        return True

    def assert_running(self) -> None:
        if self.bridge is not None and self.bridge.poll() is not None:
            raise DemoFailed(f"the bridge exited with {self.bridge.returncode}; its log:")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # --- the events -------------------------------------------------------------------------

    def send(self, sent: list[Sent]) -> None:
        """Deliver each event as Instantly does: to the webhooks `webhook register` made in
        the fake Instantly, with the headers they carry (so the secret is theirs)."""
        for item in sent:
            hooks = self.instantly.subscribers(item.body["event_type"])
            if not hooks:
                raise DemoFailed(f"no webhook in the fake Instantly for {item.body['event_type']}")
            hook = hooks[0]
            answer = self.session.post(
                hook["target_hook_url"],
                json=item.body,
                # Instantly's deliveries carry axios's User-Agent (a captured request's).
                headers={**(hook["headers"] or {}), "User-Agent": "axios/0.21.4"},
                timeout=10,
            )
            if answer.status_code != 202:
                raise DemoFailed(f"{item.what}: the webhook answered {answer.status_code}")
            item.event_id = int(answer.json()["event_id"])

    def settle(self, sent: list[Sent]) -> dict[int, dict[str, Any]]:
        """Wait until the worker has finished with every event; their rows by id."""
        db = store.connect(self.database)
        try:

            def finished() -> dict[int, dict[str, Any]] | None:
                self.assert_running()
                rows = {item.event_id: inbox.get(db, item.event_id) for item in sent}
                done = all(row and row["status"] in FINAL for row in rows.values())
                return rows if done else None

            return self._wait(finished, SETTLE_SECONDS, "the worker to sync the events")
        finally:
            db.close()

    def outcome(self, item: Sent, row: dict[str, Any]) -> str:
        """One line on what became of an event, read from the bridge and from the fake GHL."""
        email = str(item.body.get("lead_email", "")).strip()
        head = f"#{item.event_id} {item.body['event_type']:<18} {email:<26}"
        if row["status"] == inbox.DEAD:
            return f"{head} dead-lettered: {_one_line(row.get('last_error') or '')}"
        if row["status"] != inbox.DONE:
            return f"{head} {row['status']}"
        contact = self.ghl.contact_by_email(email) or {}
        said = [f"tags {', '.join(contact.get('tags') or []) or '(none)'}"]
        if (contact.get("dndSettings") or {}).get("Email", {}).get("status") == "active":
            said.append("email do-not-disturb on")
        notes = len(self.ghl.notes.get(contact.get("id", ""), []))
        if notes:
            said.append(f"{notes} note")
        opportunities = [
            o for o in self.ghl.opportunities.values() if o.get("contactId") == contact.get("id")
        ]
        if opportunities:
            said.append(f"opportunity {opportunities[0].get('name')!r}")
        return f"{head} synced: GHL contact {contact.get('id', '?')}, {'; '.join(said)}"

    def check_login(self) -> None:
        """The password printed is the one the page takes."""
        page = self.session.get(self.url + "/login", timeout=10).text
        token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        answer = self.session.post(
            self.url + "/login",
            data={"password": self.password, "csrf_token": token},
            allow_redirects=False,
            timeout=10,
        )
        if answer.status_code != 302:
            raise DemoFailed(f"logging in to the page answered {answer.status_code}")

    # --- stopping ---------------------------------------------------------------------------

    def stop(self) -> float:
        """Stop the bridge as Ctrl-C stops `make run`; seconds it took."""
        self.session.close()  # an open keep-alive connection makes gunicorn's shutdown wait
        started = time.monotonic()
        if self.bridge is None:
            return 0.0
        if self.bridge.poll() is None:
            self.bridge.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.bridge.wait(timeout=STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.bridge.pid, signal.SIGKILL)  # anything left of its session
        self.bridge.wait(timeout=5)
        return time.monotonic() - started

    def _wait(self, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DemoFailed(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.1)


class DemoFailed(RuntimeError):
    """A step of the demo did not work; the message says which, with the bridge's log."""


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def free_port(wanted: int | None) -> int:
    """`wanted` if nothing listens there, else any free loopback port."""
    for port in ([wanted] if wanted else []) + [0]:
        with socket.socket() as sock:
            # As gunicorn binds: a port left in TIME_WAIT by the last demo is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise DemoFailed("no free port on 127.0.0.1")


def _stop_on_signals() -> None:
    # Ctrl-C and SIGTERM (a service manager, `timeout`) end the demo through the finally
    # blocks, so the bridge and the fakes stop and the folder is removed. SIGINT is set even
    # when the demo inherited it ignored (started in the background from a script), since a
    # Ctrl-C that does nothing would leave the bridge running.
    def raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)


def say(text: str = "") -> None:
    print(text, flush=True)


@contextlib.contextmanager
def _folder() -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="instantly-ghl-bridge-demo-"))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_demo(port: int, exit_after_setup: bool) -> int:
    """Everything, in order; the exit code."""
    with _folder() as workdir:
        demo = Demo(port, workdir)
        ghl_server = FakeGHLServer(demo.ghl)
        try:
            with serving(demo.instantly) as instantly_url:
                env = demo.env(ghl_server.start(), instantly_url)
                try:
                    return _steps(demo, env, exit_after_setup)
                finally:
                    took = demo.stop()
                    say(f"stopped the bridge in {took:.1f} s")
        except (DemoFailed, requests.RequestException) as exc:
            print(f"demo failed: {exc}\n{demo.log_tail()}", file=sys.stderr, flush=True)
            return 1
        finally:
            ghl_server.stop()


def _steps(demo: Demo, env: dict[str, str], exit_after_setup: bool) -> int:
    say("instantly-ghl-bridge demo: a fake GHL and a fake Instantly on this machine, no accounts")
    migrated = demo.cli(env, "migrate")
    if migrated.returncode != 0:
        raise DemoFailed(f"migrate failed:\n{migrated.stdout}{migrated.stderr}")
    pipeline = demo.configure()
    say(f"settings: the reply note and the opportunity (pipeline {pipeline!r}) are on")
    demo.start_bridge(env)
    say(f"bridge running at {demo.url}/ (web and worker; log: {demo.log_path})")

    registered = demo.cli(env, "webhook", "register", "--allow-private")
    if registered.returncode != 0:
        raise DemoFailed(f"webhook register failed:\n{registered.stdout}{registered.stderr}")
    say("webhook register (the fake Instantly's webhooks API):")
    for line in registered.stdout.splitlines():
        if line.startswith("  "):
            say(line)
    doctor = demo.cli(env, "doctor")
    last = (doctor.stdout.strip().splitlines() or ["(no output)"])[-1]
    if doctor.returncode != 0:
        raise DemoFailed(f"doctor failed:\n{doctor.stdout}{doctor.stderr}")
    say(f"doctor: {last}")

    sent = demo_events(datetime.now(UTC))
    demo.send(sent)
    say(
        f"the fake Instantly delivered {len(sent)} events to those webhooks: "
        + ", ".join(s.what for s in sent)
    )
    rows = demo.settle(sent)
    for item in sent:
        say("  " + demo.outcome(item, rows[item.event_id]))
    synced = sum(1 for r in rows.values() if r["status"] == inbox.DONE)
    dead = sum(1 for r in rows.values() if r["status"] == inbox.DEAD)
    say(
        f"{synced} synced, {dead} dead-lettered (the page's Dead letters shows why; Replay retries)"
    )
    demo.check_login()

    say()
    say(f"The page:  {demo.url}/")
    say(f"Password:  {demo.password}")
    say(f"Fake GHL's state (contacts, notes, calls): {env['GHL_BASE_URL']}/_fake/state")
    if exit_after_setup:
        return 0
    say(f"{READY_LINE} (the demo's data is thrown away).")
    while True:
        demo.assert_running()
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="the page's port (taken: any free one)"
    )
    parser.add_argument(
        "--exit-after-setup", action="store_true", help="stop once the events are synced"
    )
    args = parser.parse_args(argv)
    _stop_on_signals()
    try:
        code = run_demo(free_port(args.port), args.exit_after_setup)
    except KeyboardInterrupt:
        code = 0
    raise SystemExit(code)


if __name__ == "__main__":
    main()
