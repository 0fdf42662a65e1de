"""Debian's Chromium, as the browser tests and ``make bench-review`` launch it through Playwright.

The browser tests (marked ``browser``) need it. Outside CI a machine without it skips them and says why; in CI
(``CI`` set to true, as CI services set it) a missing Chromium fails them: there they must run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

    from playwright.sync_api import Browser, Playwright

# Debian's package (apt-get install chromium): Playwright's own browser download cannot work offline.
DEBIAN_EXECUTABLE: Final = "/usr/bin/chromium"
# Another Chromium (another distribution, macOS) can be named here.
EXECUTABLE_VARIABLE: Final = "CHROMIUM_EXECUTABLE"
ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)


def executable(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(EXECUTABLE_VARIABLE) or DEBIAN_EXECUTABLE


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=executable(), args=list(ARGS))


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(environ: Mapping[str, str] = os.environ) -> None:
    """Before a browser test: nothing when Chromium is there; else skip it with the reason, or, in CI, fail it."""
    import pytest

    path = executable(environ)
    if Path(path).is_file() and os.access(path, os.X_OK):
        return
    missing = f"no Chromium at {path} (make browser installs Debian's; {EXECUTABLE_VARIABLE} names another)"
    if in_ci(environ):
        pytest.fail(f"{missing}: in CI (CI={environ['CI']}) the browser tests must run", pytrace=False)
    pytest.skip(missing)
