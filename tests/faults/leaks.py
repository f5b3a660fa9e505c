"""Finding secret values in what the bridge shows anyone: logs, answers, pages, CLI output."""

from __future__ import annotations

from tests.faults.harness import Stack

# Pages fetched at the end of a scenario and searched for secrets, besides every answer the
# scenario got on the way. The config pages and /metrics join this list when they exist
# (pages behind the login are fetched with a logged-in session by that change).
CHECKED_URLS: list[str] = ["/healthz"]
# A secret counts as leaked when any run of this many of its characters shows up: a
# truncated or partly masked value is still a leak.
FRAGMENT = 10


def fragments(secret: str, size: int = FRAGMENT) -> set[str]:
    """Every `size`-character run of `secret` (the whole value when it is shorter)."""
    if len(secret) <= size:
        return {secret}
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def find_leaks(secrets: dict[str, str], texts: dict[str, str]) -> list[str]:
    """Where each secret (or a fragment of it) appears: 'place: secret name, fragment'."""
    found = []
    for name, secret in secrets.items():
        pieces = fragments(secret)
        for place, text in texts.items():
            hit = next((piece for piece in pieces if piece in text), None)
            if hit is not None:
                at = text.index(hit)
                context = text[max(0, at - 80) : at + len(hit) + 40].replace("\n", " ")
                found.append(f"{place}: {name} ({hit!r}) in …{context}…")
    return found


def everything_shown(stack: Stack) -> dict[str, str]:
    """Every log line, every answer (headers and body) and every CLI output of the run."""
    texts = dict(stack.logs())
    for i, exchange in enumerate(stack.exchanges):
        headers = "\n".join(f"{k}: {v}" for k, v in exchange.headers.items())
        place = f"answer {i} to {exchange.method} {exchange.path} ({exchange.status})"
        texts[place] = f"{headers}\n\n{exchange.body}"
    return texts


def assert_no_secret_shown(stack: Stack) -> int:
    """Fetch CHECKED_URLS, then search everything shown; returns how many texts were searched."""
    for url in CHECKED_URLS:
        stack.request("GET", url)
    texts = everything_shown(stack)
    leaks = find_leaks(stack.secrets.values(), texts)
    assert not leaks, "secrets shown:\n" + "\n".join(leaks)
    return len(texts)
