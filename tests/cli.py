"""Running the real ``refund-sorter`` console script, as a user would, for the functional and integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).with_name("refund-sorter")
# A developer's own AWS and refund-sorter settings must not steer the CLI under test.
_OWN_SETTINGS = ("AWS_", "REFUND_SORTER_")


class CleanEnvironment(dict[str, str]):
    """A whole environment for the CLI: :func:`run_cli` passes it as it is, adding nothing from this process."""


def clean_environment(**extra: str) -> CleanEnvironment:
    """This process's environment without AWS_* / REFUND_SORTER_* variables, plus ``extra``.

    Whole, so that variables the test process set since (the integration fixtures point AWS_ENDPOINT_URL at the
    local stack) cannot come back: the CLI sees exactly this.
    """
    return CleanEnvironment({k: v for k, v in os.environ.items() if not k.startswith(_OWN_SETTINGS)} | extra)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``refund-sorter ARGS`` with this process's environment plus ``env`` (or exactly ``env``, if it is a
    :func:`clean_environment`).

    ``timeout`` only keeps a hanging command from hanging the suite; no test measures time with it.
    """
    return subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if isinstance(env, CleanEnvironment) else {**os.environ, **(env or {})},
        check=False,
    )


def results_of(completed: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    """The Results ``classify --json`` printed, one per line."""
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
