"""``make demo`` never uses someone else's stack: a taken port stops it before it starts anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from refund_sorter_cli.net import HOST, listen
from tests.cli import clean_environment

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("variable", "service"), [("REFUND_SORTER_MOTO_PORT", "moto"), ("REFUND_SORTER_API_PORT", "API")]
)
def test_the_demo_stops_in_one_line_when_its_port_is_taken(variable: str, service: str) -> None:
    # GIVEN another program (another `refund-sorter local`, say) listening on the port the demo would use
    with listen(0) as taken:
        port = taken.getsockname()[1]
        other = "REFUND_SORTER_API_PORT" if variable == "REFUND_SORTER_MOTO_PORT" else "REFUND_SORTER_MOTO_PORT"
        env = clean_environment(**{variable: str(port), other: "0"})
        # WHEN the demo runs
        completed = subprocess.run(
            [sys.executable, "-m", "tools.demo"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    # THEN it stops at once: one line naming the port and the variable to pick another, exit 2, nothing done
    assert completed.returncode == 2, completed.stdout + completed.stderr
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith(f"make demo: port {port} on {HOST} ({service}) is already in use")
    assert variable in line
    assert "uploading" not in completed.stdout and "starting" not in completed.stdout
