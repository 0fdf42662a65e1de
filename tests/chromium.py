"""Debian's Chromium, as the browser tests and ``make bench-review`` launch it through Playwright."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

# Debian's package (apt-get install chromium): Playwright's own browser download cannot work offline.
EXECUTABLE: Final = "/usr/bin/chromium"
ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=EXECUTABLE, args=list(ARGS))
