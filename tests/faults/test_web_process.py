"""What gunicorn, run as the Procfile runs it, leaves outside its answers: its access log
and its control socket."""

from __future__ import annotations

import pytest

from tests.faults.harness import Stack
from tests.faults.procs import wait_until

pytestmark = pytest.mark.slow


def test_the_access_log_has_no_query_string_nor_referer(stack: Stack) -> None:
    stack.configure()
    stack.start_web(workers=1, threads=2)
    stack.request("GET", "/healthz?secret=qs-Secret-8Tn3", headers={"Referer": "/x?k=ref-9Wq2"})
    wait_until(lambda: "GET /healthz HTTP/1.1" in stack.web.log(), 5, "the access log line")
    log = stack.web.log()
    assert "qs-Secret-8Tn3" not in log
    assert "ref-9Wq2" not in log


def test_gunicorn_opens_no_control_socket(stack: Stack, tmp_path) -> None:
    # gunicorn puts it in $XDG_RUNTIME_DIR (else ~/.gunicorn), one path for all of a user's
    # gunicorns.
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    stack.extra_env["XDG_RUNTIME_DIR"] = str(runtime)
    stack.configure()
    stack.start_web(workers=1, threads=2)
    assert stack.request("GET", "/healthz").status_code == 200
    assert list(runtime.iterdir()) == []
