"""/metrics under gunicorn with several web processes: every scrape tells the whole story."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import WEBHOOK_SECRET, reply_payload
from tests.support.threads import map_in_threads

pytestmark = pytest.mark.slow

WORKERS = 3
STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn(env, db, tmp_path):
    port = free_port()
    proc_env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        **env,
        "WEB_CONCURRENCY": str(WORKERS),
        "WEB_THREADS": "1",
        "BRIDGE_ACCESS_LOG": "0",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:bridge.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "bridge:create_app()",
        ],
        env=proc_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            requests.get(url + "/metrics", timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("gunicorn did not start")
            time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def unauthorized_count(url: str) -> tuple[float, float]:
    body = requests.get(url + "/metrics", timeout=5).text
    values = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "bridge_webhook_deliveries_total":
                values[sample.labels["outcome"]] = sample.value
    return values.get("unauthorized", 0.0), values.get("accepted", 0.0)


def refused(url: str) -> int:
    return requests.post(
        url + "/webhooks/instantly",
        json=reply_payload(),
        headers={"X-Bridge-Secret": "wrong", "Connection": "close"},
        timeout=5,
    ).status_code


def test_webhook_outcomes_add_up_across_web_processes(gunicorn, env):
    counter_files = Path(env["BRIDGE_INSTANCE_PATH"]) / "metrics"
    sent = 0
    # Concurrent requests spread over the processes; send batches until at least two
    # processes have counted some (each keeps its own counter file), a bounded number.
    for _ in range(10):
        assert set(map_in_threads(refused, [gunicorn] * 16, max_workers=8)) == {401}
        sent += 16
        if len(list(counter_files.glob("counter_*.db"))) >= 2:
            break
    assert len(list(counter_files.glob("counter_*.db"))) >= 2, "requests never spread"
    accepted = requests.post(
        gunicorn + "/webhooks/instantly",
        json=reply_payload(),
        headers={"X-Bridge-Secret": WEBHOOK_SECRET, "Connection": "close"},
        timeout=5,
    )
    assert accepted.status_code == 202
    scrapes = {unauthorized_count(gunicorn) for _ in range(WORKERS * 3)}
    assert scrapes == {(float(sent), 1.0)}
