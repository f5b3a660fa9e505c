"""An open-loop HTTP load generator: requests go out on a fixed schedule, whatever the
server does, and latency is measured from each request's *scheduled* send time.

A closed-loop client (wrk, ab) waits for an answer before sending again, so a slow answer
delays the requests behind it and hides their wait ("coordinated omission"). Here request
i is due at start + i / rate; if every connection is busy it goes out late, and the wait
counts in its latency. Bounded: exactly `rate * duration` requests, and a hard deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Sample:
    index: int
    scheduled: float  # time.monotonic() when it was due
    sent: float
    done: float
    status: int

    @property
    def latency(self) -> float:
        """Seconds from the scheduled send to the full answer (includes any queueing)."""
        return self.done - self.scheduled


@dataclass
class Result:
    offered_rate: float
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unsent: int = 0  # still queued at the deadline
    elapsed: float = 0.0

    def latencies_ms(self, ok_only: bool = True) -> list[float]:
        return [s.latency * 1000 for s in self.samples if not ok_only or 200 <= s.status < 300]

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for s in self.samples:
            out[s.status] = out.get(s.status, 0) + 1
        return out

    @property
    def achieved_rate(self) -> float:
        return len(self.samples) / self.elapsed if self.elapsed else 0.0


def run(
    port: int,
    path: str,
    body_for: Callable[[int], bytes],
    headers: dict[str, str],
    rate: float,
    duration: float,
    connections: int,
    grace: float = 10.0,
) -> Result:
    """Send rate*duration POSTs to 127.0.0.1:port over `connections` kept-alive connections."""
    return asyncio.run(_run(port, path, body_for, headers, rate, duration, connections, grace))


async def _run(port, path, body_for, headers, rate, duration, connections, grace) -> Result:
    total = int(rate * duration)
    result = Result(offered_rate=rate)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    start = time.monotonic() + 0.2  # let every connection open first
    deadline = start + duration + grace
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    prefix = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"

    async def client() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while not queue.empty() and time.monotonic() < deadline:
            index = queue.get_nowait()
            due = start + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = body_for(index)
            request = f"{prefix}Content-Length: {len(body)}\r\n\r\n".encode() + body
            try:
                if conn is None:
                    conn = await asyncio.open_connection("127.0.0.1", port)
                sent = time.monotonic()
                status, keep = await asyncio.wait_for(
                    _exchange(*conn, request), timeout=max(0.1, deadline - sent)
                )
                result.samples.append(Sample(index, due, sent, time.monotonic(), status))
                if not keep:
                    conn[1].close()
                    conn = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                result.errors.append(f"request {index}: {type(exc).__name__}: {exc}")
                if conn is not None:
                    conn[1].close()
                    conn = None
        if conn is not None:
            conn[1].close()

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(connections)))
    result.elapsed = time.monotonic() - max(began, start)
    result.unsent = queue.qsize()
    return result


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool]:
    """Write one request, read one answer; returns (status, connection kept alive)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep
