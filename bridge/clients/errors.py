"""The base of what a failed call to GHL or Instantly raises: the HTTP status (0 for a
network error), a message fit to show a person, and how long the service asked us to wait.
Each client derives its own family from it, so `except GHLError` never catches Instantly's."""

from __future__ import annotations


class ServiceError(Exception):
    """A call to `service` failed."""

    service = "service"

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        self.status = status
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{self.service} {status or 'network error'}: {message}")
