"""A clock for tests: time moves only when the test moves it (`clock.now += …`) or something
sleeps on it, so pacing and windows are checked without waiting."""

from __future__ import annotations


class FakeClock:
    def __init__(self, now: float = 0.0):
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
