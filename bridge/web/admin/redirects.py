"""Where the page may send a browser next: a path on this site, never another host."""

from __future__ import annotations

import unicodedata


def safe_next(target: str, default: str) -> str:
    r"""`target` when it is a path on this site, else `default`.

    Browsers drop tabs and newlines anywhere in a URL and read "\" as "/", so "/\t/evil"
    and "/\evil" lead to another host although they start with one "/"; a target holding
    a backslash, whitespace or any control, format or unassigned character is refused
    rather than cleaned.
    """
    if not target.startswith("/") or target[1:2] == "/":
        return default
    if any(ch == "\\" or ch.isspace() or unicodedata.category(ch).startswith("C") for ch in target):
        return default
    return target
