"""A bridge stack per test; every process it started is stopped, pass or fail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.harness import Stack


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    bridge = Stack(tmp_path / "stack")
    try:
        yield bridge
    finally:
        bridge.close()
        # Shown by pytest only when the test failed: what each process said last.
        print(bridge.tails(60))
