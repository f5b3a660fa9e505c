"""The buffering worker's framing: when has a request fully arrived?

The worker hands a connection to a thread only once `arrival` says WHOLE (or OVERSIZED);
every strict prefix of a request must read PARTIAL, or a thread would block on the rest.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given
from hypothesis import strategies as st

from bridge.web.buffered_worker import (
    MAX_HEAD_BYTES,
    Arrival,
    BufferedThreadWorker,
    arrival,
    wants_continue,
)
from bridge.web.errors import MAX_BODY_BYTES

HEAD = b"POST /webhooks/instantly HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"


def with_length(body: bytes, name: bytes = b"Content-Length") -> bytes:
    return HEAD + name + b": " + str(len(body)).encode() + b"\r\n\r\n" + body


def chunked(pieces: list[bytes], trailer: bytes = b"") -> bytes:
    out = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    for piece in pieces:
        out += f"{len(piece):x}".encode() + b"\r\n" + piece + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


bodies = st.binary(max_size=300)
requests_ = st.one_of(
    bodies.map(with_length),
    bodies.map(lambda b: with_length(b, b"content-length")),
    st.lists(st.binary(min_size=1, max_size=40), max_size=6).map(chunked),
    st.lists(st.binary(min_size=1, max_size=40), max_size=3).map(
        lambda p: chunked(p, trailer=b"X-Checksum: abc\r\n")
    ),
    st.just(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n"),
)


@given(requests_, st.data())
def test_a_request_is_whole_only_once_every_byte_is_in(request: bytes, data) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(request) - 1))
    assert arrival(request[:cut]) is Arrival.PARTIAL
    assert arrival(request) is Arrival.WHOLE
    # The next request of a kept-alive connection may already follow it.
    assert arrival(request + b"POST / HTTP/1.1\r\n") is Arrival.WHOLE


def test_a_body_larger_than_the_app_accepts_is_served_at_once_for_its_413() -> None:
    head = HEAD + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
    assert arrival(head) is Arrival.OVERSIZED
    assert arrival(with_length(b"x" * MAX_BODY_BYTES)) is Arrival.WHOLE


def test_a_chunked_body_is_oversized_as_soon_as_its_chunks_pass_the_limit() -> None:
    piece = b"x" * (256 * 1024)
    sent = chunked([piece] * 5)
    prefix = sent[: sent.index(piece) + 4 * (len(piece) + 9) + 20]
    assert arrival(prefix) is Arrival.OVERSIZED
    assert arrival(chunked([piece] * 4)) is Arrival.WHOLE


def test_framing_gunicorn_refuses_is_left_to_gunicorn() -> None:
    # Whole at once: the thread's parser answers 400 without waiting for anything more.
    assert arrival(HEAD + b"Content-Length: ten\r\n\r\n") is Arrival.WHOLE
    assert arrival(HEAD + b"Transfer-Encoding: gzip\r\n\r\n") is Arrival.WHOLE
    assert arrival(HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n") is Arrival.WHOLE
    assert arrival(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEAD_BYTES // 6)) is Arrival.WHOLE


def test_only_a_complete_http11_head_with_the_expectation_is_answered_100() -> None:
    asks = HEAD + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    assert wants_continue(asks)
    assert not wants_continue(asks[:-2])  # the head is not complete yet
    assert not wants_continue(with_length(b"{}"))
    assert not wants_continue(asks.replace(b"HTTP/1.1", b"HTTP/1.0"))


def test_a_quit_signal_ends_the_loop_without_taking_the_thread_pools_lock() -> None:
    # The signal may arrive while the loop is handing a request to the pool, holding the
    # pool's lock; gthread's handler took that lock again and the worker hung until the
    # master's SIGKILL. Here the handler only marks the worker as stopping.
    worker = BufferedThreadWorker.__new__(BufferedThreadWorker)
    worker.alive = True
    worker.tpool = ThreadPoolExecutor(max_workers=1)
    handled: list[bool] = []

    def quit_twice() -> None:  # Ctrl-C: SIGINT from the terminal, SIGQUIT from the master
        worker.handle_quit(signal.SIGINT, None)
        worker.handle_quit(signal.SIGQUIT, None)
        handled.append(True)

    with worker.tpool._shutdown_lock:  # as the loop holds it inside submit()
        caller = threading.Thread(target=quit_twice, daemon=True)
        caller.start()
        caller.join(timeout=10)
    assert handled == [True] and not worker.alive
    worker.tpool.submit(lambda: None).result()  # the pool still runs what it was given
    worker.tpool.shutdown()
