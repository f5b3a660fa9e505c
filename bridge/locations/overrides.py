"""A location's settings: the bridge's, with the location's overrides laid over them."""

from __future__ import annotations

import copy
from typing import Any


def merged(settings: dict, overrides: dict) -> dict:
    """`settings` with `overrides` laid over: tables merge key by key, while a list or a
    value replaces the bridge's (an override's tags are the location's whole tag list)."""
    out = copy.deepcopy(settings)
    _lay(out, overrides)
    return out


def _lay(base: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _lay(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def without_locations(settings: dict) -> dict[str, Any]:
    """The settings a location's view is made from: all but the declarations of locations,
    workspaces and routes, which belong to the bridge."""
    return {k: v for k, v in settings.items() if k not in ("locations", "instantly", "routing")}
