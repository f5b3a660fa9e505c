"""`make demo`: the bridge syncs the demo's events, its page takes the printed password, and
Ctrl-C stops everything, all without reading the user's .env or touching their database."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from bridge.config import ENV_FILE_VAR
from tests.faults.procs import free_port
from tests.support import demo
from tests.support.demo import READY_LINE

ROOT = Path(__file__).resolve().parents[1]
SETUP_SECONDS = 120
STOP_SECONDS = 30
CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


class Output:
    """The demo's output, read by a thread so waiting for a line is bounded in time."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, marker: str, timeout: float) -> str:
        """Every line so far, once one contains `marker`; fails on timeout or end of output."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {marker!r} after {timeout} s:\n{self.text}") from None
            if line is None:
                raise AssertionError(f"the demo ended before {marker!r}:\n{self.text}")
            self.lines.append(line)
            if marker in line:
                return self.text

    def rest(self, timeout: float) -> str:
        self._thread.join(timeout=timeout)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return self.text

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.mark.parametrize("samples", ["captured", "built in"])
def test_the_demo_events_are_four_kinds_for_distinct_leads(samples, tmp_path, monkeypatch):
    if samples == "built in":
        monkeypatch.setattr(demo, "SAMPLES", tmp_path / "absent")
    elif not demo.SAMPLES.is_dir():
        pytest.skip(f"{demo.SAMPLES} not found: the captured deliveries are not beside the repo")
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    sent = demo.demo_events(now)
    kinds = [item.body["event_type"] for item in sent]
    assert kinds == ["reply_received", "lead_interested", "lead_unsubscribed", "reply_received"]
    leads = [item.body["lead_email"] for item in sent]
    assert len(set(leads)) == 4 and leads[3] == demo.REFUSED
    assert all(item.body["email"] == item.body["lead_email"] for item in sent)
    assert not set(demo.REPLY_FIELDS) & set(sent[2].body)  # an unsubscribe carries no reply
    stamps = [item.body["timestamp"] for item in sent]
    assert stamps == sorted(stamps) and stamps[-1] == "2026-12-02T11:59:59.000Z"


@pytest.fixture
def users_folder(tmp_path):
    """A folder with a configured user's .env, as a newcomer's clone might have."""
    (tmp_path / ".env").write_text(
        "GHL_BASE_URL=http://127.0.0.1:9\n"
        "GHL_TOKEN=users-real-token\n"
        f"BRIDGE_DATABASE={tmp_path / 'users.sqlite3'}\n"
        "BRIDGE_WEBHOOK_SECRET=users-secret\n"
    )
    return tmp_path


@pytest.mark.slow
def test_the_demo_syncs_its_events_and_stops_on_ctrl_c(users_folder):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != ENV_FILE_VAR}  # as a user's shell
    env.update(PYTHONPATH=str(ROOT), INSTANTLY_BASE_URL="http://127.0.0.1:9")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.demo", "--port", str(port)],
        cwd=users_folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(proc)
    try:
        text = output.until(READY_LINE, SETUP_SECONDS)
        assert "doctor: all checks passed" in text
        assert re.search(r"created +reply_received \(webhook ", text)
        outcomes = [line for line in output.lines if re.match(r"  #\d ", line)]
        assert len(outcomes) == 4, text
        assert sum("synced: GHL contact" in line for line in outcomes) == 3
        assert "lead_unsubscribed" in outcomes[2] and "email do-not-disturb on" in outcomes[2]
        assert "dead-lettered: GHL 422" in outcomes[3]
        assert "3 synced, 1 dead-lettered" in text

        page = re.search(r"The page: +(http://127\.0\.0\.1:(\d+)/)", text)
        password = re.search(r"Password: +(\S+)", text)
        assert page and password, text
        assert int(page.group(2)) == port
        with requests.Session() as browser:
            login = browser.get(page.group(1) + "login", timeout=10)
            token = CSRF_RE.search(login.text).group(1)
            answer = browser.post(
                page.group(1) + "login",
                data={"password": password.group(1), "csrf_token": token},
                timeout=10,
            )
            assert answer.status_code == 200 and answer.url == page.group(1), answer.url
            dead = browser.get(page.group(1) + "dead", timeout=10)
            assert dead.status_code == 200 and "blocked.lead@example.com" in dead.text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(timeout=STOP_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
    rest = output.rest(timeout=5)
    proc.stdout.close()
    assert code == 0, rest
    assert "stopped the bridge in" in rest
    workdir = Path(re.search(r"log: (\S+)/bridge\.log", rest).group(1))
    assert not workdir.exists()  # the demo's folder is removed
    assert not (users_folder / "users.sqlite3").exists()
    assert not (users_folder / "instance").exists()
    assert requests_refused(page.group(1))


def requests_refused(url: str) -> bool:
    """Nothing answers at the demo's address any more: the bridge stopped with it."""
    try:
        requests.get(url + "healthz", timeout=2)
    except requests.ConnectionError:
        return True
    return False
