"""gunicorn's threaded worker, with each request read whole before a thread is given to it.

The stock gthread worker hands a connection to a thread as soon as its first byte arrives,
and the thread then blocks reading the rest: a few dozen clients trickling a header line
(or a body byte) every few seconds hold every thread, and Instantly's deliveries wait
behind them. Here the worker's event loop reads each request into memory, without
blocking, until its headers and body are complete; only then does a thread parse and
serve it, from memory. A request that is not complete within READ_DEADLINE_SECONDS is
answered 408 and closed, so a slow client costs a socket and a small buffer for a bounded
time, never a thread. TLS connections (gunicorn's own certfile) are served as gthread
serves them: the bridge expects TLS to end at a proxy in front of it (README).

It overrides parts of gunicorn 27's gthread worker that are not a public API (TConn,
enqueue_req, murder_pending, handle_request), so pyproject.toml holds gunicorn to 27.x;
tests/faults/test_slow_clients.py is what tells whether a new major version still fits.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import threading
import time
from enum import Enum
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from bridge.web.errors import MAX_BODY_BYTES

# A webhook is a few KiB sent at once; ten seconds is generous for any real client.
READ_DEADLINE_SECONDS = 10.0
# gunicorn refuses heads larger than its limit_request_* settings allow; past this many
# bytes without the blank line that ends a head, the thread is given the request to
# answer that refusal.
MAX_HEAD_BYTES = 64 * 1024
# All requests one worker holds in memory at once; past it, the connection feeding the
# excess is answered 503 rather than the worker's memory growing without bound.
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
RECV_BYTES = 64 * 1024
# A closing connection is read on (and what comes dropped) this long and this much at most:
# enough for the rest of a refused 1 MiB body, so its sender sees the 413.
LINGER_SECONDS = 2.0
LINGER_BYTES = 2 * MAX_BODY_BYTES


class Arrival(Enum):
    """How far the first request in a buffer has arrived."""

    PARTIAL = "partial"  # more bytes are needed
    WHOLE = "whole"  # a thread can parse and serve it without waiting on the socket
    OVERSIZED = "oversized"  # its body is larger than the app accepts: served at once, the
    # app answers 413 from what is here, and the connection is closed without draining


def arrival(data: bytes | bytearray) -> Arrival:
    """Whether the first HTTP/1.x request in `data` has fully arrived.

    Only framing is read here (where the head ends, Content-Length, chunked coding); a
    request malformed in any other way counts as whole, so gunicorn's parser answers it.
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return Arrival.WHOLE if len(data) > MAX_HEAD_BYTES else Arrival.PARTIAL
    body_start = head_end + 4
    framing = _framing_headers(bytes(data[:head_end]))
    if "transfer-encoding" in framing:
        if framing["transfer-encoding"].lower().rsplit(",", 1)[-1].strip() != "chunked":
            return Arrival.WHOLE  # gunicorn refuses it
        return _chunked_arrival(data, body_start)
    length = framing.get("content-length", "0").strip()
    if not length.isdigit():
        return Arrival.WHOLE  # gunicorn refuses it
    if int(length) > MAX_BODY_BYTES:
        return Arrival.OVERSIZED
    return Arrival.WHOLE if len(data) - body_start >= int(length) else Arrival.PARTIAL


def wants_continue(data: bytes | bytearray) -> bool:
    """Whether the request's head is in and asks for `100 Continue` before its body.

    Such a client (curl, for a large body) sends nothing more until it is answered, or
    until its own wait ends, so the event loop answers it as gunicorn would later.
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = bytes(data[:head_end])
    expect = _framing_headers(head).get("expect", "").strip().lower()
    return expect == "100-continue" and head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1")


_FRAMING = ("content-length", "transfer-encoding", "expect")


def _framing_headers(head: bytes) -> dict[str, str]:
    """Content-Length, Transfer-Encoding and Expect from a request head (first of each)."""
    found: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        key = name.strip().lower().decode("latin-1")
        if sep and key in _FRAMING and key not in found:
            found[key] = value.decode("latin-1")
    return found


def _chunked_arrival(data: bytes | bytearray, pos: int) -> Arrival:
    """Walk the chunks from `pos`: whole once the last chunk and trailers are in."""
    body = 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return Arrival.WHOLE if len(data) - pos > MAX_HEAD_BYTES else Arrival.PARTIAL
        size_text = bytes(data[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return Arrival.WHOLE  # gunicorn refuses it
        if size == 0:
            # The last chunk; the trailer section, empty or not, ends with a blank line.
            return Arrival.WHOLE if data.find(b"\r\n\r\n", line_end) >= 0 else Arrival.PARTIAL
        body += size
        if body > MAX_BODY_BYTES:
            return Arrival.OVERSIZED
        pos = line_end + 2 + size + 2
        if pos > len(data):
            return Arrival.PARTIAL


def _refusal(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_SLOW = _refusal(
    "408 Request Timeout", f"the request did not arrive within {READ_DEADLINE_SECONDS:.0f} s"
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
OVERLOADED = _refusal("503 Service Unavailable", "too many requests in progress; retry later")


class BufferedConn(TConn):
    """A connection whose next request is read into memory before a thread takes it."""

    def __init__(self, worker: BufferedThreadWorker, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.worker = worker
        self.buffered = bytearray()
        self.deadline = 0.0
        self.drain = True  # False: close after the response instead of reading what is left
        self.continued = False  # `100 Continue` sent for the request arriving
        self.lingered = 0  # bytes read and dropped while closing

    def init(self) -> None:
        """gthread's set-up (in the thread), then the parser reads the buffered request."""
        super().init()
        if self.buffered:
            self.parser.unreader.unread(bytes(self.buffered))
            self.buffered = bytearray()

    def close(self, graceful: bool = False) -> None:
        """A graceful close lingers in the event loop instead of blocking it.

        gthread's graceful close (after a `Connection: close` answer, or one whose body was
        not read) reads what the client still sends for up to 2 s, blocking, on the event
        loop's own thread: a client that neither sends nor hangs up stalls every other
        connection of the worker that long.
        """
        if graceful and threading.current_thread() is threading.main_thread():
            self.worker.linger(self)
        else:
            super().close(graceful)


class BufferedThreadWorker(ThreadWorker):
    """gthread, except that a thread only ever receives a request that has fully arrived."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.arriving: dict[BufferedConn, None] = {}  # in order of their deadlines
        self.buffered_bytes = 0
        self.lingering: dict[BufferedConn, float] = {}  # closing: until when to read on

    def accept(self, listener) -> None:
        """gthread's accept, making a BufferedConn."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock.setblocking(True)
        conn = BufferedConn(self, self.cfg, client_sock, client_addr, listener.getsockname())
        self.enqueue_req(conn)

    def enqueue_req(self, conn) -> None:
        """Wait in the event loop for the whole request; then hand it to a thread."""
        if self.cfg.is_ssl or not isinstance(conn, BufferedConn):
            super().enqueue_req(conn)
            return
        if conn.parser is not None:
            # Kept alive: the bytes of a pipelined next request may already be read.
            conn.buffered += conn.parser.unreader.take_buffered()
        conn.drain = True
        conn.continued = False
        state = arrival(conn.buffered) if conn.buffered else Arrival.PARTIAL
        if state is not Arrival.PARTIAL:
            self._serve(conn, state)
            return
        conn.sock.setblocking(False)
        conn.deadline = time.monotonic() + READ_DEADLINE_SECONDS
        self.arriving[conn] = None
        self.buffered_bytes += len(conn.buffered)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: BufferedConn, _client) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_arriving(conn)
            return
        if not data:  # the client went away
            self._close_arriving(conn)
            return
        if self.buffered_bytes + len(data) > MAX_BUFFERED_BYTES:
            self.log.warning("refused a request: %d bytes already buffered", self.buffered_bytes)
            self._close_arriving(conn, OVERLOADED)
            return
        conn.buffered += data
        self.buffered_bytes += len(data)
        state = arrival(conn.buffered)
        if state is not Arrival.PARTIAL:
            self._stop_waiting(conn)
            self._serve(conn, state)
        elif not conn.continued and wants_continue(conn.buffered):
            conn.continued = True
            self._send(conn, CONTINUE)

    def _serve(self, conn: BufferedConn, state: Arrival) -> None:
        conn.data_ready = True
        conn.drain = state is not Arrival.OVERSIZED
        super().enqueue_req(conn)

    def _stop_waiting(self, conn: BufferedConn) -> None:
        self.poller.unregister(conn.sock)
        del self.arriving[conn]
        self.buffered_bytes -= len(conn.buffered)

    def _close_arriving(self, conn: BufferedConn, answer: bytes = b"") -> None:
        self._stop_waiting(conn)
        if answer:
            self._send(conn, answer)
        self.nr_conns -= 1
        conn.close()

    @staticmethod
    def _send(conn: BufferedConn, data: bytes) -> None:
        """Best effort, never blocking: a client that does not read loses the answer."""
        with contextlib.suppress(OSError):
            conn.sock.send(data)

    def linger(self, conn: BufferedConn) -> None:
        """Close after the answer: send FIN, then read and drop what the client still sends
        until it hangs up, for at most LINGER_SECONDS and LINGER_BYTES, so the kernel does
        not reset the connection (and lose the answer) over unread bytes."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drop_more, conn))
        except (OSError, ValueError):
            conn.sock.close()
            return
        conn.lingered = 0
        self.lingering[conn] = time.monotonic() + LINGER_SECONDS

    def _drop_more(self, conn: BufferedConn, _client) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.lingered += len(data)
        if not data or conn.lingered > LINGER_BYTES:
            self._end_linger(conn)

    def _end_linger(self, conn: BufferedConn) -> None:
        del self.lingering[conn]
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def murder_pending(self) -> None:
        """gthread's sweep, then the requests and closing connections past their deadline
        (all of them on the way out: a stopping worker must not wait for slow clients)."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, until in self.lingering.items() if until <= now or not self.alive]:
            self._end_linger(conn)
        if not self.alive:
            for conn in list(self.arriving):
                self._close_arriving(conn)
            return
        expired = [conn for conn in self.arriving if conn.deadline <= now]
        for conn in expired:
            self._close_arriving(conn, TOO_SLOW)
        if expired:
            self.log.info(
                "closed %d connection(s) that sent no whole request within %.0f s",
                len(expired),
                READ_DEADLINE_SECONDS,
            )

    def handle_quit(self, sig, frame) -> None:
        """SIGQUIT and SIGINT (Ctrl-C, and the master passing it on): end the loop, as
        SIGTERM does, instead of gthread's shutting the thread pool down in the handler.
        That takes the pool's lock, which the loop the signal interrupted may hold while it
        hands a request to a thread; the worker then hangs until the master kills it. Not
        even a wake-up is sent from here (it takes a queue's lock too): the loop looks at
        `alive` at least once a second, then closes what waits and lets threads finish."""
        self.alive = False

    def handle_request(self, req, conn):
        """gthread's, except that the answer to an oversized body says `Connection: close`
        (and the thread does not drain the body, which could arrive as slowly as its sender
        likes): the connection closes after the answer, lingering in the event loop. Without
        the header a client could send its next request on a connection being closed."""
        if isinstance(conn, BufferedConn) and not conn.drain:
            req.must_close = True
        return super().handle_request(req, conn)
