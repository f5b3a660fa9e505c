"""Start and stop the bridge's processes the way the Procfile does, on loopback only."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import SECRET

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
GHL_TOKEN = "ghl-test-token"  # what tests.support.ghl_fake.FakeGHL expects by default
LOCATION_ID = "loc_test"
# The Procfile's web command; only the bind address is narrowed to loopback.
WEB_COMMAND = ["-m", "gunicorn", "-c", "python:bridge.gunicorn_conf"]
PRODUCT_APP = "bridge:create_app()"
# The bridge's app plus the baseline route (bench/app.py), for the throughput row.
BENCH_APP = "bench.app:create_app()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bridge_env(workdir: Path, ghl_url: str = "", port: int = 0, **extra: str) -> dict[str, str]:
    """The environment a production-like bridge runs with, on a fresh database in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "BRIDGE_INSTANCE_PATH": str(workdir / "instance"),
        "BRIDGE_DATABASE": str(workdir / "bridge.sqlite3"),
        "BRIDGE_WEBHOOK_SECRET": SECRET,
        "BRIDGE_SECRET_KEY": "bench-secret-key",
        "PORT": str(port or 8000),
    }
    if ghl_url:
        env |= {"GHL_BASE_URL": ghl_url, "GHL_TOKEN": GHL_TOKEN, "GHL_LOCATION_ID": LOCATION_ID}
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    """The Procfile's release step."""
    subprocess.run(
        [sys.executable, "-m", "bridge", "migrate"], env=env, check=True, capture_output=True
    )


def _log(workdir: Path, name: str):
    return open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process


@dataclass
class Server:
    url: str
    proc: subprocess.Popen

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by gunicorn's master and its workers."""
        return sum(_cpu_seconds(pid) for pid in [self.proc.pid, *_children(self.proc.pid)])


@contextlib.contextmanager
def web(workdir: Path, env: dict[str, str], port: int, app: str = PRODUCT_APP) -> Iterator[Server]:
    """gunicorn with the Procfile's settings on 127.0.0.1:port, serving `app`."""
    command = [sys.executable, *WEB_COMMAND, app, "--bind", f"127.0.0.1:{port}"]
    with _log(workdir, "web") as log:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
        try:
            _wait_for_port(port, proc, timeout=30)
            yield Server(f"http://127.0.0.1:{port}", proc)
        finally:
            stop(proc)


@contextlib.contextmanager
def worker(workdir: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """The Procfile's worker (`instantly-ghl-bridge worker`)."""
    with _log(workdir, "worker") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker"], env=env, cwd=ROOT, stdout=log, stderr=log
        )
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM this process (ours, by its handle), then SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{shlex.join(proc.args)} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
