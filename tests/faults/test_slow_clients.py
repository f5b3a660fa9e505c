"""Slow clients, without the secret, must not keep Instantly's webhooks from being answered.

Fifty connections trickle their requests (half a header line every few seconds, half a
large announced body a byte at a time) for 30 s against gunicorn as the Procfile runs it,
while real deliveries arrive twice a second: every one is answered 2xx within a second.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from bridge.web.buffered_worker import READ_DEADLINE_SECONDS
from tests.faults.harness import HOST, Stack
from tests.faults.procs import wait_until
from tests.faults.scenario import replies
from tests.support.slow_clients import Lingerers, SlowClients

pytestmark = pytest.mark.slow

HOLD_SECONDS = 30.0
DELIVERY_EVERY = 0.5
ANSWER_WITHIN = 1.0


@pytest.mark.parametrize("kind", [SlowClients, Lingerers])
def test_slow_clients_do_not_stall_the_webhook(stack: Stack, kind: type[SlowClients]) -> None:
    stack.configure()
    stack.start_web(workers=2, threads=8)  # the Procfile's defaults
    attackers = kind(HOST, stack.port, count=50, interval=2.0)
    attackers.start()
    time.sleep(3.0)  # every attacker connected and holding
    answers: list[tuple[int, float]] = []
    try:
        deadline = time.monotonic() + HOLD_SECONDS
        for reply in replies(int(HOLD_SECONDS / DELIVERY_EVERY), emails=20, seed=13):
            if time.monotonic() >= deadline:
                break
            start = time.monotonic()
            try:
                # A new connection each time, as Instantly's deliveries come.
                answer = stack.post_event(reply.body, timeout=5, headers={"Connection": "close"})
                status = answer.status_code
            except OSError:
                status = 0  # timed out or refused: counted as a failure below
            answers.append((status, time.monotonic() - start))
            time.sleep(max(0.0, DELIVERY_EVERY - (time.monotonic() - start)))
    finally:
        attackers.stop()

    late = [(status, round(took, 2)) for status, took in answers if took >= ANSWER_WITHIN]
    refused = [status for status, _ in answers if status not in (200, 202)]
    sent = len(answers)
    assert sent >= HOLD_SECONDS / DELIVERY_EVERY * 0.9, (
        f"only {sent} deliveries in {HOLD_SECONDS} s"
    )
    assert not refused, f"{len(refused)} of {sent} deliveries failed: {refused[:10]}"
    assert not late, f"{len(late)} of {sent} answered after {ANSWER_WITHIN} s: {late[:10]}"
    stack.assert_running()


def _read_answers(sock: socket.socket, count: int, timeout: float = 15.0) -> list[int]:
    """The status codes of the next `count` final answers on a raw connection."""
    sock.settimeout(timeout)
    data = b""
    while data.count(b"HTTP/1.1 ") - data.count(b"HTTP/1.1 100 ") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    # gunicorn repeats the `100 Continue` the worker already sent, as HTTP allows.
    lines = data.decode("latin-1").splitlines()
    codes = [int(line.split()[1]) for line in lines if line.startswith("HTTP/1.1")]
    return [code for code in codes if code != 100]


def _raw(stack: Stack, body: bytes, *headers: str) -> bytes:
    head = [
        "POST /webhooks/instantly HTTP/1.1",
        "Host: bridge",
        "Content-Type: application/json",
        f"X-Bridge-Secret: {stack.secrets.webhook_secret}",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_requests_that_are_not_slow_are_served_as_before(stack: Stack) -> None:
    """Keep-alive, pipelining, chunked bodies and `Expect: 100-continue` all still work
    through the buffering worker, and oversized bodies are refused at once."""
    stack.configure()
    stack.start_web(workers=1, threads=2)
    deliveries = [json.dumps(r.body).encode() for r in replies(6, emails=6, seed=14)]

    # Kept alive: one connection, several deliveries.
    for body in deliveries[:2]:
        assert stack.post_event(body).status_code == 202

    # Two requests in one send (pipelined): two answers, in order.
    with socket.create_connection((HOST, stack.port)) as sock:
        two = [_raw(stack, b, f"Content-Length: {len(b)}") for b in deliveries[2:4]]
        sock.sendall(b"".join(two))
        assert _read_answers(sock, 2) == [202, 202]

    # Chunked: a small body is accepted; one over 1 MiB is refused like a long one.
    assert stack.post_event(iter([deliveries[4][:10], deliveries[4][10:]])).status_code == 202
    huge = iter([b'{"event_type":"reply_received","x":"' + b"a" * 65536] * 20 + [b'"}'])
    assert stack.post_event(huge).status_code == 413

    # Expect: 100-continue (curl does this for large bodies): told to continue at once.
    with socket.create_connection((HOST, stack.port)) as sock:
        body = deliveries[5]
        sock.sendall(_raw(stack, b"", "Expect: 100-continue", f"Content-Length: {len(body)}"))
        sock.settimeout(5)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert _read_answers(sock, 1) == [202]

    # A body announced larger than accepted is refused before it is sent.
    with socket.create_connection((HOST, stack.port)) as sock:
        sock.sendall(_raw(stack, b"", f"Content-Length: {2 * 1024 * 1024}"))
        assert _read_answers(sock, 1, timeout=5) == [413]

    assert stack.counts()["pending"] + stack.counts()["done"] == len(deliveries)


def test_a_request_that_never_completes_is_answered_408(stack: Stack) -> None:
    stack.configure()
    stack.start_web(workers=1, threads=2)
    with socket.create_connection((HOST, stack.port)) as sock:
        sock.sendall(b"POST /webhooks/instantly HTTP/1.1\r\nHost: bridge\r\n")
        assert _read_answers(sock, 1, timeout=READ_DEADLINE_SECONDS + 5) == [408]
    # The log is copied from gunicorn's pipe by a thread: give it a moment.
    wait_until(lambda: "sent no whole request within" in stack.web.log(), 5, "the log line")
