"""The settings' text templates (tags, opportunity names): `{name}` placeholders only.

They are filled with values a lead can write (custom variables arrive beside, and can
shadow, Instantly's own keys), so they are never given to str.format: a format spec
(`{campaign_name:{step}}` with a step of `Z>20000000`) builds a string of any size, and an
attribute or index (`{step.__class__}`) reaches into Python objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# `{{` and `}}` are literal braces, as in str.format; a brace in any other place is not a
# placeholder the bridge fills.
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


class BadTemplate(ValueError):
    """A template holding something other than plain `{name}` placeholders."""


def names(template: str) -> list[str]:
    """The names of a template's plain placeholders, in order (anything else is ignored)."""
    return [m[1] for m in _TOKEN.finditer(template) if m[1]]


def check(template: str) -> list[str]:
    """The names of a template's placeholders; BadTemplate naming the first brace that is
    not a plain `{name}`, `{{` or `}}`."""
    for match in _TOKEN.finditer(template):
        if match[0] in ("{", "}"):
            raise BadTemplate(_why(template, match.start()))
    return names(template)


def fill(template: str, values: Mapping[str, str]) -> str:
    """The template with each `{name}` replaced by its value ('' when it has none).

    A brace that is not a plain placeholder stays as written: a template stored before
    validation refused it renders as text, never as a format spec.
    """

    def replace(match: re.Match[str]) -> str:
        if match[1]:
            return values.get(match[1]) or ""
        return match[0][0] if match[0] in ("{{", "}}") else match[0]

    return _TOKEN.sub(replace, template)


def _why(template: str, start: int) -> str:
    if template[start] == "}":
        return f"bad template {template!r}: a single '}}' at position {start}; write '}}}}'"
    depth, end = 0, start
    while end < len(template):
        depth += {"{": 1, "}": -1}.get(template[end], 0)
        end += 1
        if depth == 0:
            break
    if depth:
        return f"bad template {template!r}: the '{{' at position {start} is never closed"
    return (
        f"placeholder {template[start:end]} in {template!r} is not allowed: write a plain"
        " {name}, with no format spec, conversion, attribute or index"
    )
