"""Several fake Instantly workspaces behind one address, told apart by API key.

Instantly has no workspace id in its API: the key names the workspace. An agency's bridge
holds one key per workspace, so the fakes share one base URL and each answers only its own
key; a call with a key no workspace has is answered 401 by the first workspace, as Instantly
would, and recorded in `strangers`, so a test can fail on a key used where it does not belong.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tests.support.instantly_fake import FakeInstantly


@dataclass(frozen=True)
class StrangerCall:
    """A call whose key is none of the workspaces' (the key itself is never kept)."""

    method: str
    url: str


class InstantlyWorkspaces:
    """Dispatches each request to the FakeInstantly whose api_key it carries.

    It has FakeInstantly's `handle()`, so `instantly_server.serving(workspaces)` serves it.
    """

    def __init__(self, workspaces: dict[str, FakeInstantly]):
        if not workspaces:
            raise ValueError("give at least one workspace")
        keys = [fake.api_key for fake in workspaces.values()]
        if len(set(keys)) != len(keys):
            raise ValueError("two workspaces share an API key")
        self.workspaces = dict(workspaces)
        self.strangers: list[StrangerCall] = []
        self._by_key = {fake.api_key: fake for fake in workspaces.values()}
        self._lock = threading.Lock()

    def handle(
        self, method: str, url: str, headers: dict[str, str], body: bytes | str | None
    ) -> tuple[int, dict[str, str], str]:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        fake = self._by_key.get(key)
        if fake is None:
            with self._lock:
                self.strangers.append(StrangerCall(method.upper(), url))
            fake = next(iter(self.workspaces.values()))  # answers 401: not its key
        return fake.handle(method, url, headers, body)

    def assert_keys_known(self) -> None:
        """Fail (AssertionError) if any call carried a key that is no workspace's."""
        with self._lock:
            found = list(self.strangers)
        assert not found, "Instantly calls with a key of no workspace:\n" + "\n".join(
            f"  {call.method} {call.url}" for call in found
        )
