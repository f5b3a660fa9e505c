"""Run the real bridge as processes for fault tests: gunicorn, `instantly-ghl-bridge worker`, the CLI.

Everything listens on and talks to 127.0.0.1 only. The fake GHL runs in the test process
(tests.support.ghl_server), so a test reads its recorded calls and their time-stamps directly.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlite_utils

from bridge import settings as settings_mod
from bridge.store import db as store
from bridge.store import inbox
from tests.faults.procs import HOST, ROOT, Proc, free_port, wait_until
from tests.support.ghl_fake import FakeGHL
from tests.support.ghl_server import FakeGHLServer

# The Procfile's web command; only the bind address is narrowed to loopback.
WEB_ARGV = ["-m", "gunicorn", "-c", "python:bridge.gunicorn_conf", "bridge:create_app()"]


@dataclass(frozen=True)
class Secrets:
    """Known secret values, distinctive enough that a leak is found by plain search."""

    webhook_secret: str = "whsec-7Qm2Lx9VtR4pN8sK"
    ghl_token: str = "pit-3f9c2e71-b84d-4a6e-9d15-c0ffee5ec2e7"
    secret_key: str = "sk-session-Zp4Yw8Hq1Ue6Rt3Jm9Bn"
    admin_password: str = "admin-pw-Kd5Xs2Vb7Nc4Lq8T"
    instantly_api_key: str = "inst-key-Hj6Gf3Pa9Wz1Ck7Ey5Mr"

    def values(self) -> dict[str, str]:
        return dict(self.__dict__)


LOCATION_ID = "loc_faults"


@dataclass
class Exchange:
    """One HTTP exchange with the bridge, kept for the checks on answers and leaks."""

    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class Stack:
    """A bridge on a fresh SQLite file in `workdir`, with a fake GHL on loopback."""

    workdir: Path
    secrets: Secrets = field(default_factory=Secrets)
    rate_limit: tuple[int, float] | None = (100, 10.0)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fake = FakeGHL(
            location_id=LOCATION_ID,
            token=self.secrets.ghl_token,
            validate=True,
            rate_limit=self.rate_limit,
        )
        self.ghl = FakeGHLServer(self.fake)
        self.ghl.start()
        self.port = free_port()
        self.web: Proc | None = None
        self.workers: list[Proc] = []
        self.cli_runs: list[tuple[list[str], int, str]] = []
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._db: sqlite_utils.Database | None = None
        self._logs = 0

    # --- set-up -----------------------------------------------------------------------------

    @property
    def database(self) -> Path:
        return self.workdir / "bridge.sqlite3"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment every bridge process of this stack runs with."""
        # BRIDGE_ENV_FILE: the test session's, so no process reads the repository's .env.
        kept = ("PATH", "HOME", "LANG", "TMPDIR", "BRIDGE_ENV_FILE")
        keep = {k: v for k, v in os.environ.items() if k in kept}
        return {
            **keep,
            "PYTHONUNBUFFERED": "1",
            "BRIDGE_INSTANCE_PATH": str(self.workdir / "instance"),
            "BRIDGE_DATABASE": str(self.database),
            "BRIDGE_WEBHOOK_SECRET": self.secrets.webhook_secret,
            "BRIDGE_SECRET_KEY": self.secrets.secret_key,
            "BRIDGE_ADMIN_PASSWORD": self.secrets.admin_password,
            "INSTANTLY_API_KEY": self.secrets.instantly_api_key,
            # Never the real Instantly: anything that tried would hit a closed loopback port.
            "INSTANTLY_BASE_URL": f"http://{HOST}:9",
            "GHL_TOKEN": self.secrets.ghl_token,
            "GHL_LOCATION_ID": LOCATION_ID,
            "GHL_BASE_URL": self.ghl.url,
            "PORT": str(self.port),
            **self.extra_env,
            **extra,
        }

    def configure(self, **sync: Any) -> None:
        """Migrate the database and store `sync.*` settings before any process starts."""
        db = self.db()
        store.migrate(db)
        _, current = settings_mod.current(db)
        current["sync"].update(sync)
        settings_mod.save(db, current)

    def db(self) -> sqlite_utils.Database:
        """The test's own connection to the bridge's database (WAL: reads never block)."""
        if self._db is None:
            self._db = store.connect(self.database)
        return self._db

    def _log_path(self, name: str) -> Path:
        self._logs += 1
        return self.workdir / f"{self._logs:02d}-{name}.log"

    # --- processes --------------------------------------------------------------------------

    def start_web(self, workers: int = 2, threads: int = 4) -> Proc:
        """gunicorn as the Procfile runs it, bound to loopback; returns once /healthz answers."""
        argv = [sys.executable, *WEB_ARGV, "--bind", f"{HOST}:{self.port}"]
        env = self.env(WEB_CONCURRENCY=str(workers), WEB_THREADS=str(threads))
        self.web = Proc("web", argv, env, self._log_path("web"))
        wait_until(self._web_answers, 30, "gunicorn to answer /healthz", interval=0.1)
        return self.web

    def _web_answers(self) -> bool:
        assert self.web is not None
        if not self.web.alive():
            raise AssertionError(f"gunicorn exited early:\n{self.web.log()[-3000:]}")
        try:
            requests.get(self.url + "/healthz", timeout=2)
        except (requests.ConnectionError, requests.Timeout):
            # Timeout: the master listens before its workers boot, which a busy machine
            # can take longer than 2 s to do; the request waited in the backlog.
            return False
        return True

    def start_worker(self, **env: str) -> Proc:
        """`instantly-ghl-bridge worker` as the Procfile runs it."""
        argv = [sys.executable, "-m", "bridge", "worker"]
        proc = Proc("worker", argv, self.env(**env), self._log_path("worker"))
        self.workers.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run one `bridge` command to completion; its output is kept for the leak checks."""
        done = subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        with self._lock:
            self.cli_runs.append((list(args), done.returncode, done.stdout + done.stderr))
        return done

    def close(self) -> None:
        """Stop every process this stack started, and the fake GHL; safe to call twice."""
        for session in self._sessions:
            session.close()  # an open keep-alive connection makes gunicorn's shutdown wait
        # A thread that would not stop fails the test, but only once everything is stopped.
        stuck: list[str] = []
        for stoppable in [*self.workers, *([self.web] if self.web else []), self.ghl]:
            try:
                stoppable.stop()
            except AssertionError as exc:
                stuck.append(str(exc))
        if self._db is not None:
            self._db.close()
            self._db = None
        assert not stuck, "; ".join(stuck)

    # --- HTTP to the bridge -----------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request to the bridge (thread-safe); the answer is recorded."""
        kwargs.setdefault("timeout", 30)
        response = self._session().request(method, self.url + path, **kwargs)
        with self._lock:
            self.exchanges.append(
                Exchange(method, path, response.status_code, dict(response.headers), response.text)
            )
        return response

    def post_event(self, body: Any, secret: str | None = None, **kwargs: Any) -> requests.Response:
        """POST /webhooks/instantly as Instantly does, with the shared-secret header."""
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        if secret is None:
            secret = self.secrets.webhook_secret
        if secret:
            headers["X-Bridge-Secret"] = secret
        if isinstance(body, dict | list):
            kwargs["json"] = body
        else:
            kwargs["data"] = body
        return self.request("POST", "/webhooks/instantly", headers=headers, **kwargs)

    # --- the bridge's state, read from its database -----------------------------------------

    def counts(self) -> dict[str, int]:
        return inbox.counts(self.db())

    def wait_all_final(self, expected: int, timeout: float) -> dict[str, int]:
        """Wait until `expected` events are stored and none is pending or processing."""

        def settled() -> dict[str, int] | None:
            self.assert_running()
            counts = self.counts()
            stored = sum(counts.values())
            busy = counts["pending"] + counts["processing"]
            return counts if stored >= expected and busy == 0 else None

        try:
            return wait_until(settled, timeout, f"{expected} events to reach a final status")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; queue is {self.counts()}\n{self.tails()}") from None

    def assert_running(self) -> None:
        """Fail at once, with its log, if a process died that the test did not end."""
        for proc in [*([self.web] if self.web else []), *self.workers]:
            if not proc.alive() and not proc.ended_by_test:
                raise AssertionError(
                    f"{proc.name} (pid {proc.pid}) exited with {proc.popen.returncode}:\n"
                    + "\n".join(proc.log().splitlines()[-40:])
                )

    # --- logs -------------------------------------------------------------------------------

    def logs(self) -> dict[str, str]:
        """Every log this stack's processes wrote, by file name, and the CLI outputs."""
        out = {path.name: path.read_text(errors="replace") for path in self._log_files()}
        for i, (args, code, text) in enumerate(self.cli_runs):
            out[f"cli-{i:03d} {shlex.join(args)} (exit {code})"] = text
        return out

    def _log_files(self) -> Iterator[Path]:
        return iter(sorted(self.workdir.glob("*.log")))

    def tails(self, lines: int = 30) -> str:
        """The end of every process log, for failure messages."""
        parts = []
        for path in self._log_files():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)
