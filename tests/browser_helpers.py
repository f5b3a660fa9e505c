"""What the browser tests share: Debian's chromium, how it is launched, where screenshots go.
The `browser` fixture itself lives in conftest.py."""

from __future__ import annotations

from pathlib import Path

# Playwright cannot download a browser here; Debian's package is driven instead.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
