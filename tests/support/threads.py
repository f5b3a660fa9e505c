"""Threads a test starts, each joined with a timeout: a stuck thread fails its test instead
of hanging the run. They are daemon threads, so one left stuck cannot hold up pytest's exit
either (a ThreadPoolExecutor's threads would: its `with` block and the interpreter's exit
both wait for them without a timeout)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

JOIN_TIMEOUT = 60.0


def join_all(threads: Iterable[threading.Thread], timeout: float = JOIN_TIMEOUT) -> None:
    """Join every thread within `timeout` seconds in all; fail naming those still running."""
    threads = list(threads)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = [thread.name for thread in threads if thread.is_alive()]
    assert not alive, f"threads still running after {timeout} s: {alive}"


def map_in_threads(
    fn: Callable[[T], R], items: Iterable[T], max_workers: int, timeout: float = JOIN_TIMEOUT
) -> list[R]:
    """`list(ThreadPoolExecutor(max_workers).map(fn, items))` with its threads joined within
    `timeout` seconds: the items are taken in order, the results come back in order, and an
    exception is raised as map raises it (the first failed item's, in item order)."""
    work = list(enumerate(items))
    results: list[Any] = [None] * len(work)
    errors: dict[int, BaseException] = {}
    taking = threading.Lock()
    queue = iter(work)

    def run() -> None:
        while True:
            with taking:
                taken = next(queue, None)
            if taken is None:
                return
            index, item = taken
            try:
                results[index] = fn(item)
            except BaseException as exc:  # raised again below, in the calling thread
                errors[index] = exc

    threads = [
        threading.Thread(target=run, name=f"map-{n}", daemon=True)
        for n in range(min(max_workers, len(work)))
    ]
    for thread in threads:
        thread.start()
    join_all(threads, timeout)
    if errors:
        raise errors[min(errors)]
    return results
