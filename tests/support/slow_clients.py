"""Slow HTTP clients, as an attacker without the webhook secret runs them.

Each holds one connection to the server and trickles its request: a header line at a time
(slowloris) or, after complete headers, a large announced body a byte at a time (slow
POST). None ever finishes its request on purpose; the point is what it costs the server.
`Lingerers` are the other end: each sends a whole request asking to close, then neither
reads the answer nor hangs up.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from tests.support.threads import join_all


@dataclass
class SlowClients:
    """`count` connections to host:port, half trickling headers and half a body."""

    host: str
    port: int
    count: int = 50
    interval: float = 5.0  # seconds between two trickled pieces
    body_length: int = 100_000
    closed_by_server: int = 0  # connections the server hung up on
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for i in range(self.count):
            target = self._trickle_headers if i % 2 == 0 else self._trickle_body
            thread = threading.Thread(target=self._run, args=(target,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        join_all(self._threads, timeout=self.interval + 5)

    def _run(self, target) -> None:
        # Like a real attacker, reconnect whenever the server hangs up, until stopped.
        while not self._stop.is_set():
            try:
                with socket.create_connection((self.host, self.port), timeout=10) as sock:
                    target(sock)
            except OSError:
                pass
            if not self._stop.is_set():
                with self._lock:
                    self.closed_by_server += 1
                self._stop.wait(0.2)

    def _trickle_headers(self, sock: socket.socket) -> None:
        sock.sendall(b"POST /webhooks/instantly HTTP/1.1\r\nHost: bridge\r\n")
        n = 0
        while not self._stop.wait(self.interval):
            n += 1
            sock.sendall(f"X-Slow-{n}: {'a' * 20}\r\n".encode())

    def _trickle_body(self, sock: socket.socket) -> None:
        sock.sendall(
            b"POST /webhooks/instantly HTTP/1.1\r\nHost: bridge\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {self.body_length}\r\n\r\n{{".encode()
        )
        while not self._stop.wait(self.interval):
            sock.sendall(b" ")


@dataclass
class Lingerers(SlowClients):
    """Connections that send a complete `Connection: close` request and then sit still."""

    def start(self) -> None:
        for _ in range(self.count):
            thread = threading.Thread(target=self._run, args=(self._sit,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _sit(self, sock: socket.socket) -> None:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
        self._stop.wait(self.interval)  # then close, reconnect and do it again
