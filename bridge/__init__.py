"""instantly-ghl-bridge: Instantly webhooks in, GoHighLevel contacts out, once each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The web app (bridge.app.create_app). Imported on call, so the sync core, the store
    and the clients can be imported without Flask."""
    from bridge.app import create_app as build

    return build(test_config)
