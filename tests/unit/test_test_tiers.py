"""The test suite's own rules: every test carries its tier's marker, and the browser tests skip without Chromium
only outside CI (with ``CI=true`` a missing Chromium fails them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import chromium
from tests.cli import clean_environment
from tests.conftest import TESTS, TIERS, tier_of

ROOT = TESTS.parent
NOWHERE = "/nonexistent/chromium"


def test_a_test_file_gets_the_tier_of_its_directory() -> None:
    assert tier_of(TESTS / "unit" / "test_x.py") == "unit"
    assert tier_of(TESTS / "integration" / "deeper" / "test_y.py") == "integration"
    with pytest.raises(pytest.UsageError, match="belongs in one of"):
        tier_of(TESTS / "test_at_the_top.py")


def test_every_tier_directory_exists_and_every_test_file_is_in_one() -> None:
    assert all((TESTS / tier).is_dir() for tier in TIERS)
    assert {tier_of(path) for path in TESTS.rglob("test_*.py")} == set(TIERS)


def test_without_chromium_a_browser_test_is_skipped_outside_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match=f"no Chromium at {NOWHERE}"):
        chromium.require({chromium.EXECUTABLE_VARIABLE: NOWHERE})
    with pytest.raises(pytest.skip.Exception):
        chromium.require({chromium.EXECUTABLE_VARIABLE: NOWHERE, "CI": "false"})


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_without_chromium_a_browser_test_fails_in_ci(value: str) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"in CI \(CI=\w+\) the browser tests must run"):
        chromium.require({chromium.EXECUTABLE_VARIABLE: NOWHERE, "CI": value})


def test_with_chromium_a_browser_test_runs_in_ci_and_out(tmp_path: Path) -> None:
    present = tmp_path / "chromium"
    present.write_text("#!/bin/sh\n")
    present.chmod(0o755)
    chromium.require({chromium.EXECUTABLE_VARIABLE: str(present), "CI": "true"})
    chromium.require({chromium.EXECUTABLE_VARIABLE: str(present)})
    assert chromium.executable({}) == chromium.DEBIAN_EXECUTABLE


def _run_a_browser_test(**environment: str) -> subprocess.CompletedProcess[str]:
    """One review-page test in its own pytest, with Chromium nowhere to be found."""
    env = clean_environment(**{chromium.EXECUTABLE_VARIABLE: NOWHERE})
    env.pop("CI", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-m", "browser and integration",
         "tests/integration/test_review_page.py", "-k", "test_the_queue_loads_and_key_1_confirms"],
        cwd=ROOT,
        env=env | environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_the_suite_skips_the_browser_tests_without_chromium_outside_ci_and_fails_them_in_ci() -> None:
    outside = _run_a_browser_test()
    assert outside.returncode == 0, outside.stdout
    assert "1 skipped" in outside.stdout and f"no Chromium at {NOWHERE}" in outside.stdout
    in_ci = _run_a_browser_test(CI="true")
    assert in_ci.returncode == 1, in_ci.stdout
    assert "1 error" in in_ci.stdout and "the browser tests must run" in in_ci.stdout
